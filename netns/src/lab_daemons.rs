//! The lab's daemons a hand-run `up` starts (dhcpd, dns): started and waited for (sd_notify
//! READY), found dead by a later `up` (which restarts them), stopped by `down`. Each record
//! keeps the exact command line, so a reused pid is never taken for labnet's daemon.
use std::time::Duration;

use crate::plan::DaemonSpec;
use crate::state::Resource;
use crate::{daemon, paths, Error};

const DAEMON_READY: Duration = Duration::from_secs(20);

/// Starts `d` for lab `lab` (log and notify socket in the lab's run dir); returns its pid.
pub fn start(lab: &str, d: &DaemonSpec) -> Result<u32, Error> {
    let dir = paths::lab_run_dir(lab);
    daemon::spawn_notify(
        &d.name,
        &d.argv,
        &dir.join(format!("{}.log", d.name)),
        &dir,
        DAEMON_READY,
    )
}

/// True when `pid` runs the exact command line labnet started (pids get reused).
pub fn daemon_is_ours(pid: u32, exe: &str) -> bool {
    daemon::process_alive(pid) && daemon::process_cmdline(pid).join("\0") == exe
}

/// The recorded daemons that no longer run: (name, argv).
pub fn dead(records: &[Resource]) -> Vec<(String, Vec<String>)> {
    records
        .iter()
        .filter_map(|r| match r {
            Resource::Daemon { name, pid, exe } if !pid.is_some_and(|p| daemon_is_ours(p, exe)) => {
                Some((name.clone(), exe.split('\0').map(String::from).collect()))
            }
            _ => None,
        })
        .collect()
}

/// Stops a recorded daemon (found by its command line when `up` died before recording the pid).
pub fn stop(pid: Option<u32>, exe: &str) {
    let mut pids: Vec<u32> = pid
        .iter()
        .copied()
        .filter(|p| daemon_is_ours(*p, exe))
        .collect();
    if pid.is_none() {
        pids.extend(daemon::processes_where(|argv| argv.join("\0") == exe));
    }
    for p in pids {
        daemon::kill_and_wait(p, Duration::from_secs(5));
    }
}

/// Whether `pid` catches SIGHUP (bit 0 of SigCgt in /proc/PID/status): a daemon that reloads
/// its config on SIGHUP rather than dying of it.
fn catches_sighup(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & 1 == 1)
}

/// Has the running daemon `d` (`pid`) read its config again: SIGHUP when it reloads on it,
/// else a restart (stop, start, READY). Returns its pid afterwards.
pub fn reload(lab: &str, d: &DaemonSpec, pid: Option<u32>) -> Result<u32, Error> {
    let exe = d.argv.join("\0");
    if let Some(p) = pid.filter(|p| daemon_is_ours(*p, &exe) && catches_sighup(*p)) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .map_err(|e| Error::sys(&format!("SIGHUP to the lab's {}", d.name), e))?;
        return Ok(p);
    }
    stop(pid, &exe);
    start(lab, d)
}
