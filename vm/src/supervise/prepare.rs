//! Turns [`Options`] into a [`Prepared`] launch: the QEMU command line, the generated
//! initramfs and the disk overlays.
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::overlay::{boot_overlay, make_overlay};
use super::{precheck, resolve_bridge, Options, Prepared};
use crate::initramfs::{self, InitSpec};
use crate::qemu::{self, Disk, Machine, Spec};
use crate::state;
use crate::{accel, naming, Error};

/// Guesses the modules dir for a distro kernel `.../boot/vmlinuz-VER`:
/// `.../lib/modules/VER` (an unpacked package) or `/lib/modules/VER`.
pub fn guess_modules_dir(kernel: &Path) -> Option<PathBuf> {
    let fname = kernel.file_name()?.to_str()?;
    let ver = fname
        .strip_prefix("vmlinuz-")
        .or_else(|| fname.strip_prefix("bzImage-"))?;
    let parent = std::fs::canonicalize(kernel)
        .ok()?
        .parent()?
        .parent()?
        .to_path_buf();
    [
        parent.join("lib/modules").join(ver),
        PathBuf::from("/lib/modules").join(ver),
    ]
    .into_iter()
    .find(|d| d.join("modules.dep").exists())
}

/// Validates the options and decides the QEMU command line; builds the initramfs (or the
/// overlay) in the VM's directory.
pub fn prepare(o: &Options) -> Result<Prepared, Error> {
    let started = Instant::now();
    let qemu_bin = precheck(o)?;
    let lock = state::try_lock(&o.lab, &o.name)?.ok_or_else(|| Error::AlreadyRunning {
        lab: o.lab.clone(),
        name: o.name.clone(),
        pid: 0,
    })?;
    let bridge = resolve_bridge(&o.lab, o.config.as_deref())?;
    let dir = state::vm_dir(&o.lab, &o.name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for f in [
        "console.sock",
        "qmp.sock",
        "serial.log",
        "qemu.pid",
        "qemu.log",
        "state.json",
        "gdb.sock",
        "kgdb.sock",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    // The last run's virtiofsd logs and lock files.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if e.file_name().to_string_lossy().starts_with("virtiofs") {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let mut notes = vec![];
    let mut shares = o.shares.clone();
    let shares_line = crate::virtiofs::choose(&mut shares);
    notes.extend(shares_line.clone());
    let (accel, accel_reason) = accel::choose(o.accel);
    let choice = crate::kernel::choose(
        &o.kernel,
        o.machine == Machine::Microvm,
        o.pvh,
        &model::paths::run_dir().join("kernels"),
    );
    let pvh = choice.pvh;
    let kernel = choice.kernel.clone();
    // --timings: the kernel's notices mark its start on the console (see Timings).
    let append = match (o.timings, &o.append) {
        (false, a) => a.clone(),
        (true, None) => Some("loglevel=6".to_string()),
        (true, Some(a)) => Some(format!("loglevel=6 {a}")),
    };
    let mut append = append.unwrap_or_default();
    // --gdb, --kgdb: the kernel where its symbols say it is; --kgdb: KGDB on ttyS1.
    if o.kgdb {
        append.insert_str(0, "kgdboc=ttyS1 ");
    }
    if o.gdb || o.kgdb {
        append.insert_str(0, "nokaslr ");
    }
    // An image's guest cannot list virtiofs tags (no sysfs for them in 6.1): its
    // labnet-guest-setup mounts the ones named here.
    let virtiofs_tags: Vec<String> = shares
        .iter()
        .filter(|s| s.transport == qemu::Transport::Virtiofs)
        .map(|s| format!("{}{}", s.tag, if s.readonly { ":ro" } else { "" }))
        .collect();
    if o.image.is_some() && !virtiofs_tags.is_empty() {
        append.push_str(&format!(" labnet.virtiofs={}", virtiofs_tags.join(",")));
    }
    let append = Some(append.trim().to_string()).filter(|a| !a.is_empty());
    let kernel = std::fs::canonicalize(&kernel).unwrap_or(kernel);

    let drive = match &o.drive {
        None => None,
        Some(base) => {
            let base_abs = std::fs::canonicalize(base)
                .map_err(|e| Error::invalid("--drive", format!("{}: {e}", base.display())))?;
            let disk = Disk::probe(&base_abs)
                .map_err(|e| Error::invalid("--drive", format!("{}: {e}", base.display())))?;
            if o.image.is_some() {
                Some(boot_overlay(&dir, &disk)?)
            } else if o.overlay {
                Some(make_overlay(&o.lab, &o.name, &disk, &mut notes)?)
            } else {
                Some(disk)
            }
        }
    };
    let multipath = match &o.multipath {
        None => None,
        Some(f) => {
            let abs = std::fs::canonicalize(f)
                .map_err(|e| Error::invalid("--multipath", format!("{}: {e}", f.display())))?;
            let disk = Disk::probe(&abs)
                .map_err(|e| Error::invalid("--multipath", format!("{}: {e}", f.display())))?;
            let (serial, wwn) = naming::multipath_ids(&o.lab, &o.name);
            Some((disk, serial, wwn))
        }
    };

    let generated = o.drive.is_none() && o.initrd.is_none();
    let initrd = if generated {
        let out = dir.join("initramfs.cpio");
        build_initramfs(o, &shares, &out, &mut notes)?;
        Some(out)
    } else {
        o.initrd.clone()
    };
    let spec = Spec {
        qemu: qemu_bin,
        name: o.name.clone(),
        machine: o.machine,
        accel,
        mem: o.mem.clone(),
        cpus: o.cpus,
        kernel,
        initrd,
        append: qemu::cmdline_for(o.machine, accel, pvh, choice.hz, append.as_deref()),
        dir,
        tap: naming::tap_for(&o.lab, &o.name),
        mac: naming::mac_for(&o.lab, &o.name),
        vhost: Path::new("/dev/vhost-net").exists(),
        drive,
        shares,
        multipath,
        extra: o.extra_qemu.clone(),
        pvh,
        // An image's guest is a real machine: `reboot` in it restarts it.
        allow_reboot: o.image.is_some(),
        gdb: o.gdb,
        kgdb: o.kgdb,
    };
    Ok(Prepared {
        spec,
        lab: o.lab.clone(),
        bridge,
        accel_reason,
        notes,
        boot: choice.line,
        started,
        generated_initramfs: generated,
        timeout: o.timeout,
        ephemeral: o.ephemeral,
        lock,
        image: o.image.clone(),
        shares_line,
        run_output: o.run_output.clone(),
        caller_handles_signals: o.caller_handles_signals,
    })
}

fn build_initramfs(
    o: &Options,
    shares: &[qemu::Share],
    out: &Path,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    let busybox = initramfs::find_busybox()?;
    let mdir = match &o.modules {
        Some(m) => Some(m.clone()),
        None => {
            let g = guess_modules_dir(&o.kernel);
            if let Some(d) = &g {
                notes.push(format!(
                    "using modules from {} (pass --modules to choose)",
                    d.display()
                ));
            }
            g
        }
    };
    let mut modules = vec![];
    if let Some(d) = &mdir {
        let db = crate::modules::ModuleDb::load(d)?;
        let mut wanted: Vec<String> = vec![];
        wanted.push(match o.machine {
            Machine::Microvm => "virtio_mmio".into(),
            Machine::Q35 => "virtio_pci".into(),
        });
        wanted.push("virtio_net".into());
        for s in shares {
            match s.transport {
                qemu::Transport::NineP => wanted.extend(["9pnet_virtio".into(), "9p".into()]),
                qemu::Transport::Virtiofs => wanted.push("virtiofs".into()),
            }
        }
        if o.multipath.is_some() {
            wanted.extend(["virtio_scsi".into(), "sd_mod".into()]);
        }
        wanted.extend(o.extra_modules.iter().cloned());
        modules = db.resolve(&wanted)?;
    } else if !o.extra_modules.is_empty() {
        return Err(Error::invalid(
            "--module",
            "needs --modules DIR (the guest kernel's lib/modules/VERSION)",
        ));
    }
    let spec = InitSpec {
        hostname: o.name.clone(),
        modules,
        shares: shares.to_vec(),
        run: o.run.clone(),
    };
    initramfs::build(
        out,
        &initramfs::Contents {
            busybox: &busybox,
            spec: &spec,
            modules_dir: mdir.as_deref(),
            add: &o.add,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_dir_guess() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-x")).unwrap();
        std::fs::write(d.path().join("lib/modules/6.1.0-x/modules.dep"), "").unwrap();
        let k = d.path().join("boot/vmlinuz-6.1.0-x");
        std::fs::write(&k, b"k").unwrap();
        assert_eq!(
            guess_modules_dir(&k).unwrap(),
            std::fs::canonicalize(d.path())
                .unwrap()
                .join("lib/modules/6.1.0-x")
        );
        assert!(guess_modules_dir(&d.path().join("bzImage")).is_none());
    }
}
