//! qcow2 overlays over a `--drive` base, made with qemu-img.
use std::path::Path;
use std::process::Command;

use crate::qemu::Disk;
use crate::Error;

/// The overlay of an image's disk for this boot only: vm_dir/overlay.qcow2, made fresh at
/// start and removed when QEMU ends.
pub(super) fn boot_overlay(dir: &Path, base: &Disk) -> Result<Disk, Error> {
    let ov = dir.join("overlay.qcow2");
    let _ = std::fs::remove_file(&ov);
    qemu_img_overlay(base, &ov, "--image")?;
    Ok(Disk {
        path: ov,
        format: "qcow2".into(),
    })
}

fn qemu_img_overlay(base: &Disk, ov: &Path, flag: &str) -> Result<(), Error> {
    let qemu_img = crate::which("qemu-img").ok_or_else(|| Error::MissingProgram {
        program: "qemu-img".into(),
        hint: format!(" (needed for {flag}; apt-get install qemu-utils)"),
    })?;
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(&base.path)
        .args(["-F", &base.format])
        .arg(ov)
        .output()
        .map_err(|e| Error::io("qemu-img", e))?;
    if !out.status.success() {
        // The base was probed already: a failure here is the host's (space, permissions).
        return Err(Error::ProgramFailed {
            program: format!("qemu-img create (the {flag} overlay {})", ov.display()),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// The per-VM qcow2 overlay (durable: state_dir(LAB)/vms/NAME/overlay.qcow2), created once
/// over the base and reused by later starts, so the VM keeps its disk; the base is only read.
pub(super) fn make_overlay(
    lab: &str,
    name: &str,
    base: &Disk,
    notes: &mut Vec<String>,
) -> Result<Disk, Error> {
    let dir = model::paths::state_dir(lab).join("vms").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let ov = dir.join("overlay.qcow2");
    if ov.exists() {
        notes.push(format!(
            "reusing overlay {} (delete it to start over from the base)",
            ov.display()
        ));
    } else {
        qemu_img_overlay(base, &ov, "--overlay")?;
        notes.push(format!(
            "overlay {} over {}",
            ov.display(),
            base.path.display()
        ));
    }
    Ok(Disk {
        path: ov,
        format: "qcow2".into(),
    })
}
