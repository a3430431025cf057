//! `labnet vm dump NAME FILE`: the guest's memory as an ELF vmcore, written by QEMU itself
//! through QMP `dump-guest-memory` (paging off: physical memory as PT_LOAD segments, plus the
//! guest's VMCOREINFO note when its kernel told the vmcoreinfo device where that is), the
//! format drgn and crash read. When QEMU had no note (a PVH boot: see [`guest_note`]), labnet
//! reads it from the dumped memory with the vmlinux's symbols and adds it to the file.
mod elf_core;
mod guest_note;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use guest_note::Missing;

use crate::state::VmState;
use crate::Error;

/// A written vmcore.
#[derive(Debug)]
pub struct Dump {
    pub path: PathBuf,
    pub vmcoreinfo: Vmcoreinfo,
}

/// Where the vmcore's VMCOREINFO note (drgn and crash want it) came from.
#[derive(Debug)]
pub enum Vmcoreinfo {
    /// QEMU's vmcoreinfo device: the guest kernel's fw_cfg driver told it where the note is.
    Qemu,
    /// Read from the dumped guest memory through this vmlinux's symbols, and added by labnet.
    GuestMemory { vmlinux: PathBuf },
    /// None: QEMU had none and the guest memory gave none either, for this reason.
    Missing(Missing),
}

/// Writes the vmcore of the running VM to `file` (made absolute: QEMU opens it). The guest
/// is paused while QEMU writes and runs on afterwards.
pub fn dump(st: &VmState, file: &Path) -> Result<Dump, Error> {
    if !st.qemu_alive() {
        return Err(Error::NotRunning {
            name: st.name.clone(),
        });
    }
    let path = absolute(file)?;
    let qmp_path = crate::qemu::qmp_sock(&st.dir);
    // QMP answers when the whole file is written: allow for a big guest on a slow disk.
    let mut q = crate::qmp::Qmp::connect(&qmp_path, Duration::from_secs(3600))?;
    q.execute_with(
        "dump-guest-memory",
        Some(serde_json::json!({
            "paging": false,
            "protocol": format!("file:{}", path.display()),
            "format": "elf",
        })),
    )?;
    let vmcoreinfo = complete(&path, Path::new(&st.kernel))?;
    Ok(Dump { path, vmcoreinfo })
}

/// Adds the guest's VMCOREINFO note to the vmcore at `path` when QEMU wrote none and the
/// booted `kernel`'s vmlinux finds it in the guest's memory.
fn complete(path: &Path, kernel: &Path) -> Result<Vmcoreinfo, Error> {
    use elf_core::CoreError;
    let missing = |why| Ok(Vmcoreinfo::Missing(why));
    let core = match elf_core::Core::open(path) {
        Ok(c) => c,
        Err(CoreError::Io(e)) => return Err(e),
        Err(CoreError::Layout(why)) => return missing(Missing::Layout(why)),
    };
    if !core.notes(b"VMCOREINFO").is_empty() {
        return Ok(Vmcoreinfo::Qemu);
    }
    let Some(vmlinux) = crate::gdb::vmlinux_of(kernel) else {
        return missing(Missing::NoVmlinux(kernel.display().to_string()));
    };
    let note = match guest_note::Symbols::of_vmlinux(&vmlinux)
        .and_then(|syms| guest_note::find(&core, &syms))
    {
        Ok(n) => n,
        Err(why) => return missing(why),
    };
    match core.add_note(path, &note) {
        Ok(()) => Ok(Vmcoreinfo::GuestMemory { vmlinux }),
        Err(CoreError::Io(e)) => Err(e),
        Err(CoreError::Layout(why)) => missing(Missing::Layout(why)),
    }
}

/// `file` as an absolute path whose directory exists.
fn absolute(file: &Path) -> Result<PathBuf, Error> {
    let name = file
        .file_name()
        .ok_or_else(|| Error::invalid("FILE", format!("{}: not a file name", file.display())))?;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::elf_core::{encode_note, tests::synthetic};
    use super::*;

    #[test]
    fn completes_only_a_core_without_the_note_and_only_from_a_kernel_with_symbols() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmcore");
        let plain = synthetic(&[(0, &[0u8; 8192])]);
        std::fs::write(&p, &plain).unwrap();
        // No vmlinux known (no ELF at --kernel, none beside it).
        let bz = d.path().join("bzImage");
        std::fs::write(&bz, b"MZ not an ELF").unwrap();
        let r = complete(&p, &bz).unwrap();
        assert!(
            matches!(r, Vmcoreinfo::Missing(Missing::NoVmlinux(_))),
            "{r:?}"
        );
        // An ELF without the kernel's symbols (this test binary): no note, the file as it was.
        let r = complete(&p, &std::env::current_exe().unwrap()).unwrap();
        assert!(
            matches!(r, Vmcoreinfo::Missing(Missing::Vmlinux { .. })),
            "{r:?}"
        );
        assert_eq!(std::fs::read(&p).unwrap(), plain);
        // QEMU's own note: nothing else is looked at.
        let c = elf_core::Core::open(&p).unwrap();
        c.add_note(&p, &encode_note(b"VMCOREINFO\0", 0, b"OSRELEASE=6.1\n"))
            .unwrap();
        assert!(matches!(complete(&p, &bz).unwrap(), Vmcoreinfo::Qemu));
        // Not a core QEMU writes: no note, and why.
        std::fs::write(&p, b"\x7fELF but nothing more").unwrap();
        let r = complete(&p, &bz).unwrap();
        assert!(
            matches!(r, Vmcoreinfo::Missing(Missing::Layout(_))),
            "{r:?}"
        );
    }

    #[test]
    fn file_is_made_absolute() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        assert_eq!(absolute(&d.path().join("core")).unwrap(), real.join("core"));
        assert!(absolute(&d.path().join("missing/core"))
            .unwrap_err()
            .to_string()
            .contains("missing"));
        assert!(absolute(Path::new("/")).is_err());
    }
}
