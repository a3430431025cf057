//! Per-VM runtime state: model::paths::vms_dir(LAB)/NAME/state.json, next to the serial
//! log, console and QMP sockets. Written atomically by the supervisor; read by list/stop/ip.
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Starting,
    Running,
    Stopped,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmState {
    pub name: String,
    pub lab: String,
    pub mac: String,
    pub tap: String,
    pub machine: String,
    pub accel: String,
    pub kernel: String,
    /// Booted the generated initramfs (no disk): nothing to lose, so stop may just quit.
    pub generated_initramfs: bool,
    pub status: Status,
    pub supervisor_pid: u32,
    pub qemu_pid: Option<u32>,
    /// Unix seconds.
    pub started: u64,
    /// How QEMU ended, once it did.
    pub exit: Option<String>,
    pub dir: PathBuf,
    pub command_line: String,
    /// The `labnet image` it booted (an overlay of), if any.
    #[serde(default)]
    pub image: Option<String>,
    /// The ssh host key the VM must present ("TYPE BASE64"): its image's.
    #[serde(default)]
    pub host_key: Option<String>,
    /// A throwaway `vm run` VM: once stopped, nothing of it is kept (vm list skips it).
    #[serde(default)]
    pub ephemeral: bool,
    /// The virtiofsd of each virtiofs share, while it runs.
    #[serde(default)]
    pub virtiofsd_pids: Vec<u32>,
}

pub fn vm_dir(lab: &str, name: &str) -> PathBuf {
    model::paths::vms_dir(lab).join(name)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl VmState {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn load(lab: &str, name: &str) -> Result<Option<VmState>, Error> {
        Self::load_dir(&vm_dir(lab, name))
    }

    pub fn load_dir(dir: &Path) -> Result<Option<VmState>, Error> {
        let p = Self::file(dir);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| Error::Corrupt {
                    path: p.display().to_string(),
                    what: "VM state",
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, e)),
        }
    }

    pub fn save(&self) -> Result<(), Error> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io(&self.dir, e))?;
        let p = Self::file(&self.dir);
        let bytes = serde_json::to_vec_pretty(self).expect("state serializes");
        model::paths::write_atomic(&p, &bytes, false).map_err(|e| Error::io(&p, e))
    }

    /// QEMU still runs (and the pid was not reused: its command line names our dir).
    pub fn qemu_alive(&self) -> bool {
        self.qemu_pid
            .is_some_and(|pid| pid_cmdline_contains(pid, &self.dir.display().to_string()))
    }

    pub fn supervisor_alive(&self) -> bool {
        self.supervisor_pid != std::process::id() && pid_cmdline_contains(self.supervisor_pid, "vm")
    }

    pub fn uptime(&self) -> u64 {
        now().saturating_sub(self.started)
    }
}

pub fn pid_cmdline_contains(pid: u32, needle: &str) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.cmdline())
        .is_ok_and(|argv| argv.iter().any(|a| a.contains(needle)))
}

/// All VMs with a state dir in the lab, by name.
pub fn list(lab: &str) -> Result<Vec<VmState>, Error> {
    let dir = model::paths::vms_dir(lab);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = vec![];
    for e in rd.flatten() {
        if let Some(s) = VmState::load_dir(&e.path())? {
            out.push(s);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The DHCP reservation the lab's dhcpd watches (contract in the common brief):
/// reservations_dir(LAB)/NAME.json = {"vm","mac","hostname"}.
pub fn write_reservation(lab: &str, name: &str, mac: &str) -> Result<(), Error> {
    Ok(model::reservation::write(lab, name, mac)?)
}

/// Takes the VM's lock, waiting up to `wait` for it. A lock can be held a moment longer than
/// its owner keeps it: a child forked by another thread of the same process (QEMU, virtiofsd
/// being spawned) shares the lock's open file until it execs. `Ok(None)`: still held.
pub fn lock_within(
    lab: &str,
    name: &str,
    wait: std::time::Duration,
) -> Result<Option<std::fs::File>, Error> {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(f) = try_lock(lab, name)? {
            return Ok(Some(f));
        }
        if t0.elapsed() >= wait {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Takes the VM's lock (vm_dir/lock, flock): held by the supervisor for the VM's whole life,
/// so two starts of one name cannot race. `Ok(None)`: someone else holds it.
pub fn try_lock(lab: &str, name: &str) -> Result<Option<std::fs::File>, Error> {
    use std::os::fd::AsRawFd;
    let dir = vm_dir(lab, name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let p = dir.join("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| Error::io(&p, e))?;
    // SAFETY: flock(2) on an fd that `f` owns and keeps open; no memory involved.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(Some(f))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A process is told by its command line: any argument containing the needle.
    #[test]
    fn cmdline_of_a_running_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30.5")
            .spawn()
            .unwrap();
        let pid = child.id();
        // Until the child has exec'd, its command line is empty.
        testkit::wait_for("sleep's exec", std::time::Duration::from_secs(10), || {
            pid_cmdline_contains(pid, "sleep")
        });
        assert!(pid_cmdline_contains(pid, "30.5"));
        assert!(!pid_cmdline_contains(pid, "qemu"));
        child.kill().unwrap();
        child.wait().unwrap();
        // Gone: no command line.
        assert!(!pid_cmdline_contains(pid, "sleep"));
    }

    /// A state file that does not parse is named, as a typed error (not "no such VM").
    #[test]
    fn corrupt_state_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        assert!(VmState::load_dir(d.path()).unwrap().is_none());
        std::fs::write(VmState::file(d.path()), b"{\"name\": \"k1\", ").unwrap();
        let e = VmState::load_dir(d.path()).unwrap_err();
        match &e {
            Error::Corrupt { path, what, .. } => {
                assert!(path.ends_with("/state.json"), "{path}");
                assert_eq!(*what, "VM state");
            }
            e => panic!("{e:?}"),
        }
        assert!(
            e.to_string().contains("state.json: corrupt VM state: "),
            "{e}"
        );
    }
}
