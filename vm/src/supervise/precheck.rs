//! Input checks without side effects, run before anything is made.
use std::path::{Path, PathBuf};

use super::Options;
use crate::state::{self, VmState};
use crate::{naming, Error};

/// The bridge VMs plug into: from the record `labnet up` wrote (the bridge that really
/// exists), else from the lab's config.
pub fn resolve_bridge(lab: &str, config: Option<&Path>) -> Result<String, Error> {
    if let Ok(Some(model::state::LabState {
        config: Some(built),
        ..
    })) = model::state::LabState::load(lab)
    {
        return Ok(built.bridge.name);
    }
    Ok(model::Lab::load(Some(lab), config)?.bridge.name)
}

/// Input checks that need no side effects (also run by a daemonizing parent, so bad input
/// fails in the foreground): arguments that agree, qemu present, kernel readable, lab up,
/// name free.
pub fn precheck(o: &Options) -> Result<PathBuf, Error> {
    // Bad arguments first (exit 2), before what the host or the lab lacks.
    naming::check_name(&o.name)?;
    if o.cpus == 0 {
        return Err(Error::invalid("--cpus", "must be at least 1"));
    }
    if o.run.is_some() && (o.drive.is_some() || o.initrd.is_some()) {
        return Err(Error::invalid(
            "--run",
            "runs a command through the generated initramfs; not with --drive or --initrd",
        ));
    }
    if !o.add.is_empty() && (o.drive.is_some() || o.initrd.is_some()) {
        return Err(Error::invalid(
            "--add",
            "adds files to the generated initramfs; not with --drive or --initrd",
        ));
    }
    if o.overlay && o.drive.is_none() {
        return Err(Error::invalid(
            "--overlay",
            "needs --drive (the base image)",
        ));
    }
    let qemu = match &o.qemu {
        Some(q) => q.clone(),
        None => crate::which("qemu-system-x86_64").ok_or_else(|| Error::MissingProgram {
            program: "qemu-system-x86_64".into(),
            hint: " in PATH (apt-get install qemu-system-x86)".into(),
        })?,
    };
    let kerr = |m: String| Error::Kernel {
        path: o.kernel.display().to_string(),
        message: m,
    };
    let md = std::fs::metadata(&o.kernel).map_err(|e| kerr(e.to_string()))?;
    if !md.is_file() {
        return Err(kerr("not a regular file".into()));
    }
    std::fs::File::open(&o.kernel).map_err(|e| kerr(e.to_string()))?;
    if md.len() < 4096 {
        return Err(kerr(format!("only {} bytes: not a kernel image", md.len())));
    }
    let nsp = model::paths::netns_path(&o.lab);
    if !nsp.exists() {
        return Err(Error::LabNotUp {
            lab: o.lab.clone(),
            path: nsp.display().to_string(),
        });
    }
    let busy = state::try_lock(&o.lab, &o.name)?.is_none();
    if let Some(st) = VmState::load(&o.lab, &o.name)? {
        if busy || st.qemu_alive() {
            return Err(Error::AlreadyRunning {
                lab: o.lab.clone(),
                name: o.name.clone(),
                pid: st.qemu_pid.unwrap_or(0),
            });
        }
    }
    Ok(qemu)
}
