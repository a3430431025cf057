//! `vm start --image NAME`: boots a per-boot qcow2 overlay of a `labnet image` (the base is
//! only read), with the image's own kernel and initrd unless `--kernel` is given. The guest
//! learns its name and the lab's ssh key from the kernel command line (the image's
//! labnet-guest-setup reads `labnet.ssh_key=`), and its host key is pinned from the
//! image's manifest.
use std::path::PathBuf;

use crate::qemu::Machine;
use crate::supervise::Options;
use crate::Error;

/// What a VM booted from an image carries through its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBoot {
    pub name: String,
    /// The image's ssh host key, "TYPE BASE64".
    pub host_key: String,
}

/// The kernel to boot for `--image` without `--kernel`: the image's own.
pub fn default_kernel(img: &image::store::Image) -> PathBuf {
    img.kernel()
}

/// Points `o` at the image: overlay of its disk, root=/dev/vda, the VM's hostname and the
/// lab's ssh key on the command line; the image's initrd when booting its kernel.
/// `own_kernel`: no --kernel was given. `machine_given`: the user chose --machine.
pub fn apply(
    o: &mut Options,
    img: &image::store::Image,
    own_kernel: bool,
    machine_given: bool,
) -> Result<(), Error> {
    if o.drive.is_some() {
        return Err(Error::invalid(
            "--image",
            "boots the image's disk; not with --drive",
        ));
    }
    if o.overlay {
        return Err(Error::invalid(
            "--overlay",
            "--image always boots an overlay",
        ));
    }
    let disk = img.disk();
    if !disk.is_file() {
        return Err(Error::invalid(
            "--image",
            format!(
                "{}: {} missing (rebuild the image)",
                img.manifest.name,
                disk.display()
            ),
        ));
    }
    if own_kernel && o.initrd.is_none() {
        o.initrd = Some(img.initrd());
    }
    o.drive = Some(disk);
    if !machine_given {
        o.machine = Machine::Q35;
    }
    let key = crate::ssh::lab_public_key(&o.lab)?.replace(' ', ":");
    // A TCG boot on a busy host can take minutes: systemd's default 90 s wait for a device
    // (ttyS0 for the serial getty) ran out there and `vm console` had no login prompt.
    let mut append = format!(
        "root=/dev/vda rw systemd.hostname={} labnet.ssh_key={key} \
         systemd.default_device_timeout_sec=600",
        o.name
    );
    if let Some(user) = o.append.take() {
        append.push(' ');
        append.push_str(&user);
    }
    o.append = Some(append);
    o.image = Some(ImageBoot {
        name: img.manifest.name.clone(),
        host_key: img.manifest.host_key.clone(),
    });
    Ok(())
}
