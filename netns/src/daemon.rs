//! Starting and stopping the processes a hand-run `labnet up` leaves behind (wireguard-go,
//! the lab's dhcpd and dns). They run detached in their own session with output in a log
//! file; readiness is the daemon's own sd_notify READY=1 on a socket labnet listens on.
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// The Debian package of a program labnet starts (for the "install it" hint).
fn package_of(prog: &str) -> &'static str {
    match Path::new(prog).file_name().and_then(|n| n.to_str()) {
        Some("wireguard-go") => "wireguard-go",
        Some("nft") => "nftables",
        _ => "labnet (its own binary)",
    }
}

/// Spawns `argv` detached (new session, stdin /dev/null, stdout+stderr appended to `log`)
/// and returns its pid.
pub fn spawn_detached(
    argv: &[String],
    envs: &[(String, String)],
    log: &Path,
) -> Result<u32, Error> {
    let (prog, args) = argv.split_first().ok_or(Error::EmptyCommand)?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(log, e))?;
    let err = out.try_clone().map_err(|e| Error::io(log, e))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // A session of its own: ^C on the terminal that ran `labnet up` must not stop the lab.
    // SAFETY: the hook runs between fork and exec and only calls setsid(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::ToolMissing {
                tool: prog.clone(),
                package: package_of(prog).into(),
                source,
            }
        } else {
            Error::Spawn {
                program: prog.clone(),
                source,
            }
        }
    })?;
    Ok(child.id())
}

/// Starts a daemon that speaks sd_notify and waits until it says READY=1 (or exits, or the
/// timeout passes — both are errors that point at its log).
pub fn spawn_notify(
    name: &str,
    argv: &[String],
    log: &Path,
    notify_dir: &Path,
    timeout: Duration,
) -> Result<u32, Error> {
    std::fs::create_dir_all(notify_dir).map_err(|e| Error::io(notify_dir, e))?;
    let sock_path = notify_dir.join(format!("notify-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&sock_path);
    let sock = UnixDatagram::bind(&sock_path).map_err(|e| Error::io(&sock_path, e))?;
    let envs = vec![("NOTIFY_SOCKET".to_string(), sock_path.display().to_string())];
    let pid = spawn_detached(argv, &envs, log);
    let result = pid.and_then(|pid| {
        sock.set_read_timeout(Some(Duration::from_millis(50))).ok();
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = sock.recv(&mut buf) {
                if model::notify::says_ready(&buf[..n]) {
                    return Ok(pid);
                }
            }
            if !process_alive(pid) {
                return Err(Error::DaemonFailed {
                    name: name.into(),
                    what: "exited before it was ready".into(),
                    log: log.to_path_buf(),
                });
            }
            if Instant::now() > deadline {
                kill_and_wait(pid, Duration::from_secs(2));
                return Err(Error::DaemonFailed {
                    name: name.into(),
                    what: format!("did not report ready within {timeout:?}"),
                    log: log.to_path_buf(),
                });
            }
        }
    });
    let _ = std::fs::remove_file(&sock_path);
    result
}

/// Reaps `pid` if it is our child (a zombie still counts as "alive" for kill(0)).
fn reap(pid: u32) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    // Not our child (ECHILD) or still running: nothing to reap.
    let _ = waitpid(
        nix::unistd::Pid::from_raw(pid as i32),
        Some(WaitPidFlag::WNOHANG),
    );
}

pub fn process_alive(pid: u32) -> bool {
    reap(pid);
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    // Zombies of processes that are not our children linger until their parent reaps them.
    // The leader of a killed multi-threaded process (wireguard-go) turns zombie while its
    // other threads still exit and hold its files (the UAPI socket): alive until all are done.
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.tasks())
        .is_ok_and(|mut tasks| {
            tasks.any(|t| t.and_then(|t| t.stat()).is_ok_and(|st| st.state != 'Z'))
        })
}

/// The process's executable name (comm), used to make sure a recorded pid still belongs to
/// the process labnet started before signalling it.
pub fn process_comm(pid: u32) -> Option<String> {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .ok()
        .map(|st| st.comm)
}

pub fn process_cmdline(pid: u32) -> Vec<String> {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.cmdline())
        .map(|v| v.into_iter().filter(|s| !s.is_empty()).collect())
        .unwrap_or_default()
}

/// Pids of every process whose command line satisfies `matches`.
pub fn processes_where(matches: impl Fn(&[String]) -> bool) -> Vec<u32> {
    let Ok(all) = procfs::process::all_processes() else {
        return vec![];
    };
    all.flatten()
        .filter(|p| p.cmdline().is_ok_and(|argv| matches(&argv)))
        .map(|p| p.pid as u32)
        .collect()
}

/// SIGTERM, then SIGKILL after `grace` (zero grace: SIGKILL at once). Returns when the
/// process is gone.
pub fn kill_and_wait(pid: u32, grace: Duration) {
    let first = if grace.is_zero() {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    // A pidfd wakes us the moment the whole process (every thread) is gone, for children
    // and non-children alike; sleeping in 1 ms steps instead cost `down` tens of ms.
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd (or -1) we own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) } as i32;
    // SAFETY: kill(2) takes plain integers.
    unsafe { libc::kill(pid as i32, first) };
    let wait_exit = |limit: Duration| {
        let end = Instant::now() + limit;
        while process_alive(pid) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if pidfd >= 0 {
                let mut pfd = libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd on the stack, and nfds says one.
                unsafe { libc::poll(&mut pfd, 1, left.as_millis().clamp(1, 100) as i32) };
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        true
    };
    if !wait_exit(grace) {
        // SAFETY: kill(2) takes plain integers.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        wait_exit(Duration::from_secs(2));
    }
    if pidfd >= 0 {
        // SAFETY: pidfd was opened above, is owned here only, and is closed once.
        unsafe { libc::close(pidfd) };
    }
}

/// Pids of processes whose argv is exactly `[.., prog, arg]` with basename(argv0) == prog:
/// finds a wireguard-go serving IFACE when `up` was killed before it recorded the pid
/// (interface names are unique host-wide, so this matches only ours).
pub fn find_processes(prog: &str, arg: &str) -> Vec<u32> {
    processes_where(|argv| {
        argv.len() == 2
            && Path::new(&argv[0]).file_name().and_then(|s| s.to_str()) == Some(prog)
            && argv[1] == arg
    })
}
