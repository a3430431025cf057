//! `labnet vm dump NAME FILE`: the guest's memory as an ELF vmcore, written by QEMU itself
//! through QMP `dump-guest-memory` (paging off: physical memory as PT_LOAD segments, plus the
//! guest's VMCOREINFO note when its kernel told the vmcoreinfo device where that is), the
//! format drgn and crash read.
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::state::VmState;
use crate::Error;

/// A written vmcore.
#[derive(Debug)]
pub struct Dump {
    pub path: PathBuf,
    /// It carries the guest's VMCOREINFO note (drgn and crash want it). Without it the guest
    /// kernel never told QEMU where that is: no FW_CFG_SYSFS/KEXEC, or a PVH boot (no ACPI).
    pub vmcoreinfo: bool,
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
    let qmp_path = st.dir.join("qmp.sock");
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
    let vmcoreinfo = has_vmcoreinfo(&path)?;
    Ok(Dump { path, vmcoreinfo })
}

/// Whether the ELF core's notes (at its start, before the memory) hold a VMCOREINFO note.
fn has_vmcoreinfo(path: &Path) -> Result<bool, Error> {
    use object::read::elf::{FileHeader, ProgramHeader};
    use std::io::Read;
    let mut head = vec![];
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let bad = |e: object::read::Error| Error::invalid("FILE", format!("{}: {e}", path.display()));
    let h = object::elf::FileHeader64::<object::Endianness>::parse(&*head).map_err(bad)?;
    let endian = h.endian().map_err(bad)?;
    for ph in h.program_headers(endian, &*head).map_err(bad)? {
        if let Ok(Some(mut notes)) = ph.notes(endian, &*head) {
            while let Ok(Some(n)) = notes.next() {
                if n.name() == b"VMCOREINFO" {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
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
    use super::*;

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
