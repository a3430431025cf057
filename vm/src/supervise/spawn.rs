//! Spawning QEMU inside the lab's network namespace, with stop signals blocked in the
//! supervisor and unblocked in QEMU.
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Prepared;
use crate::{Error, QemuStartReason};

/// How long QEMU has to answer on its QMP socket before it counts as not started.
const QMP_ANSWER_WAIT: Duration = Duration::from_secs(30);

pub(super) const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

pub(super) fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value to hand sigemptyset, which initialises it;
    // sigaddset only writes into that local set.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for &g in sigs {
            libc::sigaddset(&mut s, g);
        }
        s
    }
}

pub(super) fn spawn_qemu(p: &Prepared) -> Result<Child, Error> {
    let spec = &p.spec;
    let nsp = model::paths::netns_path(&p.lab);
    let ns = std::fs::File::open(&nsp).map_err(|e| Error::io(&nsp, e))?;
    let log = spec.dir.join("qemu.log");
    let logf = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
    let mut cmd = Command::new(&spec.qemu);
    cmd.args(spec.args())
        .stdin(Stdio::null())
        .stdout(logf.try_clone().map_err(|e| Error::io(&log, e))?)
        .stderr(logf);
    let ns_fd = ns.as_raw_fd();
    // SAFETY: the hook runs between fork and exec and makes only async-signal-safe calls on
    // fds that stay open until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Only async-signal-safe calls here (we are between fork and exec).
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Own process group: a terminal's Ctrl-C reaches the supervisor, which stops
            // the VM properly, not QEMU directly.
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            let empty = sigset(&[]);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let start_error = |reason| Error::QemuStart {
        program: spec.qemu.display().to_string(),
        reason,
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| start_error(QemuStartReason::Spawn(e)))?;
    drop(ns);
    // QEMU is up once its QMP monitor answers qmp_capabilities; an early exit is a
    // configuration error. The socket alone is not enough: QEMU listens on it before it
    // makes the machine, and can still quit after (e.g. guest memory it cannot allocate),
    // while a command is answered from its main loop, which runs only once the machine is
    // made. (`vm start --daemonize` counts the VM as running from here.)
    let t0 = Instant::now();
    let sock = spec.qmp_sock();
    while !(sock.exists() && crate::qmp::Qmp::connect(&sock, Duration::from_secs(1)).is_ok()) {
        if let Ok(Some(s)) = child.try_wait() {
            return Err(start_error(QemuStartReason::ExitedAtStartup {
                status: s,
                log_tail: tail_lines(&log, 20),
            }));
        }
        if t0.elapsed() > QMP_ANSWER_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(start_error(QemuStartReason::NoQmpAnswer {
                secs: QMP_ANSWER_WAIT.as_secs(),
                log_tail: tail_lines(&log, 20),
            }));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

pub fn tail_lines(p: &Path, n: usize) -> String {
    let s = std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
