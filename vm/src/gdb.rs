//! `labnet vm gdb NAME`: gdb on the guest kernel's vmlinux, connected to QEMU's gdbstub.
//! A VM started with `--gdb` has the stub on a unix socket in its runtime dir (no TCP port in
//! any namespace) and boots with `nokaslr`, so the symbols of vmlinux match the running
//! kernel. The tree's `vmlinux-gdb.py` (the kernel's lx-* helpers) loads when it is there.
//! `--kgdb` instead: the kernel's own stub (KGDB over `kgdboc=ttyS1`), reached through the
//! VM's second serial line, a unix socket beside the first; the guest enters it on `kgdbwait`
//! or SysRq-G.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::state::VmState;
use crate::Error;

/// What gdb connects to and loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The gdbstub's unix socket.
    pub sock: PathBuf,
    /// The kernel's ELF image, when one is known (the booted vmlinux or the one beside a
    /// build tree's bzImage); without it gdb still shows registers, without symbols.
    pub vmlinux: Option<PathBuf>,
    /// `vmlinux-gdb.py` beside that vmlinux.
    pub script: Option<PathBuf>,
}

/// The gdb target of a running VM started with `--gdb` (QEMU's gdbstub), or with `--kgdb`
/// when `kgdb` (the guest kernel's KGDB on its second serial line).
pub fn target(st: &VmState, kgdb: bool) -> Result<Target, Error> {
    if !st.qemu_alive() {
        return Err(Error::NotRunning {
            name: st.name.clone(),
        });
    }
    let (sock, flag) = if kgdb {
        (crate::qemu::kgdb_sock(&st.dir), "--kgdb")
    } else {
        (crate::qemu::gdb_sock(&st.dir), "--gdb")
    };
    if !sock.exists() {
        return Err(Error::conflict(
            &st.name,
            format!("it was started without {flag} (no {})", sock.display()),
            format!(
                "restart it with {flag}: `labnet vm stop {}`, then `labnet vm start --name {} … {flag}`",
                st.name, st.name
            ),
        ));
    }
    let vmlinux = vmlinux_of(Path::new(&st.kernel));
    let script = vmlinux
        .as_ref()
        .and_then(|v| v.parent())
        .map(|d| d.join("vmlinux-gdb.py"))
        .filter(|p| p.is_file());
    Ok(Target {
        sock,
        vmlinux,
        script,
    })
}

/// The booted kernel when it is an ELF (a PVH boot), else the vmlinux beside the bzImage.
pub(crate) fn vmlinux_of(kernel: &Path) -> Option<PathBuf> {
    let mut magic = [0u8; 4];
    let is_elf = std::fs::File::open(kernel)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && &magic == b"\x7fELF";
    if is_elf {
        return Some(kernel.to_path_buf());
    }
    crate::kernel::beside(kernel).map(|(v, _)| v)
}

/// The gdb command line: the vmlinux (with auto-loading of its vmlinux-gdb.py allowed),
/// `target remote SOCK`, then the caller's own gdb arguments (e.g. `-batch -ex ...`).
pub fn command(gdb: &Path, t: &Target, extra: &[String]) -> Command {
    let mut c = Command::new(gdb);
    c.arg("-q");
    if let Some(s) = &t.script {
        if let Some(dir) = s.parent() {
            c.arg("-iex")
                .arg(format!("add-auto-load-safe-path {}", dir.display()));
        }
    }
    if let Some(v) = &t.vmlinux {
        c.arg(v);
    }
    c.arg("-ex")
        .arg(format!("target remote {}", t.sock.display()));
    c.args(extra);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let t = Target {
            sock: "/run/labnet/lab/vms/k1/gdb.sock".into(),
            vmlinux: Some("/src/linux/vmlinux".into()),
            script: Some("/src/linux/vmlinux-gdb.py".into()),
        };
        let c = command(Path::new("gdb"), &t, &["-batch".into()]);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "-q",
                "-iex",
                "add-auto-load-safe-path /src/linux",
                "/src/linux/vmlinux",
                "-ex",
                "target remote /run/labnet/lab/vms/k1/gdb.sock",
                "-batch"
            ]
        );
    }

    #[test]
    fn vmlinux_beside_a_bzimage_or_the_elf_itself() {
        let d = tempfile::tempdir().unwrap();
        let elf = d.path().join("vmlinux");
        std::fs::write(&elf, b"\x7fELF\x02\x01\x01").unwrap();
        assert_eq!(vmlinux_of(&elf), Some(elf.clone()));
        let other = d.path().join("Image");
        std::fs::write(&other, b"MZ").unwrap();
        assert_eq!(
            vmlinux_of(&other),
            Some(std::fs::canonicalize(&elf).unwrap())
        );
        assert_eq!(vmlinux_of(&d.path().join("missing")), None);
    }
}
