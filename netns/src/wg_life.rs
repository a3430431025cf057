//! The life of a userspace WireGuard uplink: labnet makes wireguard-go's TUN (persistent),
//! starts `wireguard-go IFACE` detached in the foreground (its real pid, no daemonizing fork
//! to chase), waits for its UAPI socket, and on `down` stops it — also a crashed `up`'s, which
//! may have been SIGKILLed between fork and exec. Configuring the device is [`crate::wg`].
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{daemon, wg, Error};

fn wireguard_go() -> String {
    std::env::var("LABNET_WIREGUARD_GO").unwrap_or_else(|_| "wireguard-go".into())
}

/// The TUN wireguard-go attaches to by name. Persistent, so wireguard-go's exit only detaches
/// (a TUN that dies with its last descriptor is unregistered on the exiting process's path:
/// tens of ms of RCU waits that `down` would sit through); the device goes with the lab's
/// namespace, or as a root link if it was never moved.
pub fn create_tun(iface: &str) -> Result<(), Error> {
    let i = iface.to_string();
    crate::nsfs::in_netns(None, move || {
        Ok(crate::tun::create_persistent(
            &i,
            crate::tun::Kind::Tun,
            None,
        )?)
    })
}

/// Starts wireguard-go for `iface` with its output in `log`; returns its pid.
pub fn start(iface: &str, log: &Path) -> Result<u32, Error> {
    let argv = vec![wireguard_go(), iface.to_string()];
    let envs = vec![("WG_PROCESS_FOREGROUND".to_string(), "1".to_string())];
    daemon::spawn_detached(&argv, &envs, log)
}

/// Waits until wireguard-go (pid `pid`) answers on its UAPI socket.
pub fn wait(iface: &str, pid: u32, log: &Path) -> Result<(), Error> {
    wg::wait_for_uapi(iface, pid, Duration::from_secs(5), log)
}

/// True when something already serves `iface`'s UAPI socket.
pub fn uapi_taken(iface: &str) -> bool {
    std::os::unix::net::UnixStream::connect(wg::uapi_socket(iface)).is_ok()
}

/// Consecutive empty looks (5 ms apart) before a crashed `up`'s wireguard-go counts as gone:
/// spans a fork→exec that is slow under load.
const QUIET_CHECKS: u32 = 5;

/// Stops the wireguard-go serving `iface` (recorded as `pid`, if `up` got that far) and
/// removes its socket file once nothing answers on it.
pub fn stop(iface: &str, pid: Option<u32>) -> Result<(), Error> {
    // A SIGKILL of `up` can land between fork and exec of wireguard-go, so a recorded pid may
    // still be labnet's copy, and an unrecorded one shows up only once it has exec'd: keep
    // looking until several checks in a row find nothing. SIGKILL: wireguard-go's graceful
    // exit takes ~40 ms and only removes what is removed here anyway.
    let deadline = Instant::now() + Duration::from_millis(500);
    // The usual case, a finished `up`: the recorded pid is wireguard-go; no hunting.
    let ours = |p: u32| {
        daemon::process_comm(p).as_deref() == Some("wireguard-go")
            && daemon::process_cmdline(p).last().map(String::as_str) == Some(iface)
    };
    let mut quiet = match pid {
        Some(p) if ours(p) => {
            daemon::kill_and_wait(p, Duration::ZERO);
            QUIET_CHECKS
        }
        _ => 0,
    };
    while quiet < QUIET_CHECKS && Instant::now() < deadline {
        let mut pids = daemon::find_processes("wireguard-go", iface);
        let mut pending = false;
        if let Some(p) = pid {
            if daemon::process_alive(p) {
                if daemon::process_comm(p).as_deref() == Some("wireguard-go") {
                    if !pids.contains(&p) {
                        pids.push(p);
                    }
                } else {
                    pending = daemon::process_cmdline(p).iter().any(|a| a == "up");
                }
            }
        }
        for p in &pids {
            daemon::kill_and_wait(*p, Duration::ZERO);
        }
        quiet = if pids.is_empty() && !pending {
            quiet + 1
        } else {
            0
        };
        if quiet < QUIET_CHECKS {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    // The socket file outlives a SIGKILLed wireguard-go; remove it once nothing answers on it
    // (the listener closes with the process's last thread).
    let sock = wg::uapi_socket(iface);
    let until = Instant::now() + Duration::from_millis(300);
    while sock.exists() {
        if std::os::unix::net::UnixStream::connect(&sock).is_err() {
            let _ = std::fs::remove_file(&sock);
            break;
        }
        if Instant::now() > until {
            return Err(Error::ForeignProcess {
                what: format!("{} is still served by it; not removed", sock.display()),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    // The TUN is persistent: it goes with the lab's namespace, or as the RootLink recorded
    // before it if it was never moved.
    Ok(())
}
