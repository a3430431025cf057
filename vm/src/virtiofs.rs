//! virtiofs shares: which transport a `--share` gets (virtiofs when the Rust `virtiofsd` is
//! in PATH, 9p otherwise), and the virtiofsd daemons of a running VM: one per share, started
//! before QEMU (QEMU connects to their sockets at startup), watched while it runs, and killed
//! with their sockets removed when it ends. Each gets PR_SET_PDEATHSIG, so a killed
//! supervisor does not leave one behind.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::qemu::{Share, Spec, Transport};
use crate::Error;

/// How long a virtiofsd gets to make its socket.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// Gives every share its transport and returns the one line that says which was chosen.
pub fn choose(shares: &mut [Share]) -> Option<String> {
    if shares.is_empty() {
        return None;
    }
    let daemon = crate::which("virtiofsd");
    let transport = if daemon.is_some() {
        Transport::Virtiofs
    } else {
        Transport::NineP
    };
    for s in shares.iter_mut() {
        s.transport = transport;
    }
    let tags = shares
        .iter()
        .map(|s| format!("{}{}", s.tag, if s.readonly { " (ro)" } else { "" }))
        .collect::<Vec<_>>()
        .join(", ");
    Some(match daemon {
        Some(d) => format!("shares {tags}: virtiofs ({})", d.display()),
        None => format!(
            "shares {tags}: 9p (no virtiofsd in PATH; `cargo install virtiofsd` for virtiofs)"
        ),
    })
}

/// The running virtiofsd of one share.
struct Daemon {
    tag: String,
    child: Child,
    sock: PathBuf,
    log: PathBuf,
    /// Its exit was already reported.
    reported: bool,
}

/// The virtiofsd daemons of one VM.
#[derive(Default)]
pub struct Daemons {
    running: Vec<Daemon>,
}

impl Daemons {
    /// Starts a virtiofsd for each virtiofs share of `spec` and waits for its socket.
    pub fn start(spec: &Spec) -> Result<Daemons, Error> {
        let mut d = Daemons::default();
        for (i, s) in spec.shares.iter().enumerate() {
            if s.transport != Transport::Virtiofs {
                continue;
            }
            if let Err(e) = d.start_one(spec, i, s) {
                d.stop();
                return Err(e);
            }
        }
        Ok(d)
    }

    fn start_one(&mut self, spec: &Spec, i: usize, s: &Share) -> Result<(), Error> {
        let bin = crate::which("virtiofsd").ok_or_else(|| Error::MissingProgram {
            program: "virtiofsd".into(),
            hint: " in PATH (it was there when the VM was prepared)".into(),
        })?;
        let sock = spec.virtiofs_sock(i);
        let _ = std::fs::remove_file(&sock);
        let log = spec.dir.join(format!("virtiofsd{i}.log"));
        let logf = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--socket-path")
            .arg(&sock)
            .arg("--shared-dir")
            .arg(&s.path)
            .args(["--tag", &s.tag, "--cache", "auto"]);
        if s.readonly {
            cmd.arg("--readonly");
        }
        cmd.stdin(Stdio::null())
            .stdout(logf.try_clone().map_err(|e| Error::io(&log, e))?)
            .stderr(logf);
        // SAFETY: the hook runs between fork and exec and only calls prctl(2) and
        // pthread_sigmask(3), which are async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                // The supervisor blocks its stop signals; the daemon must see SIGTERM.
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            program: bin.display().to_string(),
            source,
        })?;
        let t0 = Instant::now();
        while !sock.exists() {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || t0.elapsed() > SOCKET_WAIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Virtiofsd {
                    tag: s.tag.clone(),
                    exited,
                    secs: SOCKET_WAIT.as_secs(),
                    log_tail: crate::supervise::tail_lines(&log, 10),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.running.push(Daemon {
            tag: s.tag.clone(),
            child,
            sock,
            log,
            reported: false,
        });
        Ok(())
    }

    /// PIDs of the daemons (for the VM's state file).
    pub fn pids(&self) -> Vec<u32> {
        self.running.iter().map(|d| d.child.id()).collect()
    }

    /// Called from the supervision loop: a daemon that ended while the VM runs leaves its
    /// share dead in the guest; say so once, with its last words.
    pub fn check(&mut self, vm: &str) {
        for d in &mut self.running {
            if d.reported {
                continue;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                d.reported = true;
                eprintln!(
                    "{vm}: virtiofsd of share {} exited ({st}); the share is gone in the guest:\n{}",
                    d.tag,
                    crate::supervise::tail_lines(&d.log, 5)
                );
            }
        }
    }

    /// Kills the daemons, reaps them and removes their sockets.
    pub fn stop(&mut self) {
        for mut d in self.running.drain(..) {
            // virtiofsd ends by itself when QEMU closes its connection; a TERM first lets it
            // leave cleanly if it has not yet.
            // SAFETY: kill(2) on the PID of our own child, not yet reaped (so not reused).
            unsafe { libc::kill(d.child.id() as libc::pid_t, libc::SIGTERM) };
            let t0 = Instant::now();
            while matches!(d.child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = d.child.kill();
            let _ = d.child.wait();
            let _ = std::fs::remove_file(&d.sock);
            // virtiofsd's own lock file beside its socket.
            let mut pid_file = d.sock.clone().into_os_string();
            pid_file.push(".pid");
            let _ = std::fs::remove_file(pid_file);
        }
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The guest's mount of one share: the generated init's and the image's.
pub fn mount_command(share: &Share, mountpoint: &Path) -> String {
    let q = crate::initramfs::shell_quote;
    let ro = if share.readonly { ",ro" } else { "" };
    match share.transport {
        Transport::NineP => format!(
            "mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288{ro} {} {}",
            q(&share.tag),
            q(&mountpoint.display().to_string())
        ),
        Transport::Virtiofs => format!(
            "mount -t virtiofs{} {} {}",
            if share.readonly { " -o ro" } else { "" },
            q(&share.tag),
            q(&mountpoint.display().to_string())
        ),
    }
}
