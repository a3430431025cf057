//! KVM or TCG. KVM only when it can really run a normal guest: /dev/kvm opens, answers
//! KVM_GET_API_VERSION with 12, the CPU has VMX/SVM, and the host's KVM is not the PVM
//! flavour (kvm_pvm: guests hang at the jump into the kernel unless the guest kernel is
//! PVM-enabled, machine.md §3). When unsure: TCG, with the reason.
use crate::qemu::Accel;
use std::os::fd::AsRawFd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Auto,
    Kvm,
    Tcg,
}

impl Choice {
    pub fn parse(s: &str) -> Result<Choice, crate::Error> {
        match s {
            "auto" => Ok(Choice::Auto),
            "kvm" => Ok(Choice::Kvm),
            "tcg" => Ok(Choice::Tcg),
            _ => Err(crate::Error::invalid(
                "--accel",
                format!("{s:?}: expected auto, kvm or tcg"),
            )),
        }
    }
}

/// (accelerator, why) for the given choice.
pub fn choose(c: Choice) -> (Accel, String) {
    match c {
        Choice::Kvm => (Accel::Kvm, "kvm (requested)".into()),
        Choice::Tcg => (Accel::Tcg, "tcg (requested)".into()),
        Choice::Auto => match kvm_usable() {
            Ok(()) => (Accel::Kvm, "kvm (/dev/kvm works)".into()),
            Err(why) => (Accel::Tcg, format!("tcg, no KVM: {why}")),
        },
    }
}

// <linux/kvm.h>: KVM_GET_API_VERSION = _IO(KVMIO, 0x00), KVMIO = 0xAE.
nix::ioctl_none!(kvm_get_api_version, 0xAE, 0x00);

/// Why KVM cannot run a normal guest here (the reason `choose` gives for TCG).
#[derive(Debug, thiserror::Error)]
pub enum NoKvm {
    #[error("/dev/kvm: {0}")]
    Open(std::io::Error),
    #[error("/dev/kvm: KVM_GET_API_VERSION returned {0}, not 12")]
    ApiVersion(i32),
    #[error("/dev/kvm: KVM_GET_API_VERSION: {0}")]
    ApiVersionFailed(nix::errno::Errno),
    #[error("host KVM is kvm-pvm, which runs only PVM-enabled guest kernels")]
    Pvm,
    #[error("the CPU has no vmx/svm flag")]
    NoVirtualization,
}

pub fn kvm_usable() -> Result<(), NoKvm> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(NoKvm::Open)?;
    // SAFETY: KVM_GET_API_VERSION takes no argument; `f` keeps the fd open.
    match unsafe { kvm_get_api_version(f.as_raw_fd()) } {
        Ok(12) => {}
        Ok(v) => return Err(NoKvm::ApiVersion(v)),
        Err(e) => return Err(NoKvm::ApiVersionFailed(e)),
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return Err(NoKvm::Pvm);
    }
    let hw = <procfs::CpuInfo as procfs::Current>::current().is_ok_and(|c| {
        c.flags(0)
            .is_some_and(|f| f.iter().any(|f| *f == "vmx" || *f == "svm"))
    });
    if !hw {
        return Err(NoKvm::NoVirtualization);
    }
    Ok(())
}
