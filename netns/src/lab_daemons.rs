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
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.status())
        .is_ok_and(|st| st.sigcgt & 1 == 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// SigCgt tells a shell with a HUP trap (reloads) from a plain sleep (dies of it).
    #[test]
    fn catches_sighup_reads_the_caught_mask() {
        use std::os::unix::process::CommandExt;
        let mut sh = std::process::Command::new("sh");
        sh.args(["-c", "trap 'echo hup' HUP; while :; do sleep 0.1; done"]);
        // A shell cannot trap a signal ignored when it started (POSIX), and a test run
        // under nohup inherits SIGHUP ignored: give the shell the default disposition.
        // SAFETY: between fork and exec only signal(2), which is async-signal-safe.
        unsafe {
            sh.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut trapping = sh.spawn().unwrap();
        let mut plain = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = trapping.id();
        testkit::wait_for("the shell's HUP trap", Duration::from_secs(10), || {
            catches_sighup(pid)
        });
        assert!(!catches_sighup(plain.id()));
        for c in [&mut trapping, &mut plain] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert!(!catches_sighup(pid), "a reaped process catches nothing");
    }
}
