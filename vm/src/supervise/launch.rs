//! A VM's life from tap to cleanup: reservation, tap, state file, QEMU, supervision, and
//! the removal of everything the run made, however it ends.
use std::path::{Path, PathBuf};

use super::spawn::{sigset, spawn_qemu, tail_lines, STOP_SIGNALS};
use super::watch::supervise;
use super::{Prepared, Timings};
use crate::state::{self, Status, VmState};
use crate::{tap, Error, QemuStartReason};

/// How the supervisor treats the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `vm run`: stream the command's output to stdout, return its exit status.
    /// `progress`: say on stderr what the guest is doing (lease, command started).
    Run { verbose: bool, progress: bool },
    /// `vm start`: wait for QEMU to end; optionally attach the console to this terminal.
    Start { attach_console: bool },
}

#[derive(Debug)]
pub struct Outcome {
    /// The guest command's exit status (run mode, when the end marker was seen).
    pub rc: Option<i32>,
    /// How QEMU ended.
    pub exit: String,
    pub timed_out: bool,
    /// Host-side times of the boot's milestones (run mode).
    pub timings: Timings,
    /// Run mode: the guest started the command (its begin marker was seen).
    pub reached_command: bool,
    /// The guest kernel's "Kernel panic - ..." line, if it panicked.
    pub panic: Option<String>,
}

/// Spawns QEMU and supervises it until it ends. `on_started` runs once QEMU is up (the
/// state file says running): the CLI prints its banner there.
pub fn launch(
    p: &Prepared,
    mode: Mode,
    on_started: &mut dyn FnMut(&VmState),
) -> Result<Outcome, Error> {
    let spec = &p.spec;
    // Stop signals become events of the loop below (sigtimedwait), not process death: the tap
    // must be removed whatever happens. Blocked before any thread starts so all inherit it.
    let set = sigset(&STOP_SIGNALS);
    if !p.caller_handles_signals {
        // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    }

    state::write_reservation(&p.lab, &spec.name, &spec.mac)?;
    if let Some(img) = &p.image {
        crate::ssh::pin(&p.lab, &spec.name, Some(&img.host_key))?;
    }
    tap::create(&p.lab, &p.bridge, &spec.tap, tap::invoking_uid())?;
    let mut st = VmState {
        name: spec.name.clone(),
        lab: p.lab.clone(),
        mac: spec.mac.clone(),
        tap: spec.tap.clone(),
        machine: spec.machine.as_str().into(),
        accel: spec.accel.as_str().into(),
        kernel: spec.kernel.display().to_string(),
        generated_initramfs: p.generated_initramfs,
        status: Status::Starting,
        supervisor_pid: std::process::id(),
        qemu_pid: None,
        started: state::now(),
        exit: None,
        dir: spec.dir.clone(),
        command_line: spec.command_line(),
        image: p.image.as_ref().map(|i| i.name.clone()),
        host_key: p.image.as_ref().map(|i| i.host_key.clone()),
        ephemeral: p.ephemeral,
        virtiofsd_pids: vec![],
    };
    let spawned = p.started.elapsed();
    // The virtiofsd daemons first: QEMU connects to their sockets as it starts.
    let mut daemons = crate::virtiofs::Daemons::default();
    let res = st
        .save()
        .and_then(|_| crate::virtiofs::Daemons::start(spec))
        .and_then(|d| {
            daemons = d;
            spawn_qemu(p)
        });
    let mut child = match res {
        Ok(c) => c,
        Err(e) => {
            daemons.stop();
            let _ = tap::delete(&p.lab, &spec.tap);
            st.status = Status::Stopped;
            st.exit = Some(format!("failed to start: {e}"));
            let _ = st.save();
            if p.ephemeral {
                // The error carries QEMU's own words; nothing else of this run is worth keeping.
                let _ = std::fs::remove_dir_all(&spec.dir);
            }
            return Err(e);
        }
    };
    st.qemu_pid = Some(child.id());
    st.virtiofsd_pids = daemons.pids();
    st.status = Status::Running;
    let saved = st.save();
    let outcome = match saved {
        Ok(()) => {
            let ready = p.started.elapsed();
            on_started(&st);
            supervise(p, &mut child, &mut daemons, mode).map(|mut o| {
                o.timings.qemu_spawned = Some(spawned);
                o.timings.qemu_ready = Some(ready);
                o
            })
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    };
    // Cleanup, whatever happened above.
    let _ = child.kill();
    let status = child.wait().ok();
    daemons.stop();
    let _ = tap::delete(&p.lab, &spec.tap);
    crate::ssh::close_master(&p.lab, &st);
    for f in [
        "console.sock",
        "qmp.sock",
        "qemu.pid",
        "gdb.sock",
        "kgdb.sock",
    ] {
        let _ = std::fs::remove_file(spec.dir.join(f));
    }
    if p.image.is_some() {
        let _ = std::fs::remove_file(spec.dir.join("overlay.qcow2"));
    }
    st.status = Status::Stopped;
    st.exit = Some(match (&outcome, status) {
        (Ok(o), _) => o.exit.clone(),
        (Err(e), Some(s)) => format!("{s}; supervisor error: {e}"),
        (Err(e), None) => format!("supervisor error: {e}"),
    });
    let _ = st.save();
    if !p.caller_handles_signals {
        // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    }
    // QEMU that quit with an error before the guest printed a thing did not really start
    // (e.g. guest memory it cannot allocate): its own log says why.
    let serial_empty = std::fs::metadata(spec.serial_log()).map_or(true, |m| m.len() == 0);
    let start_error = status
        .filter(|s| !s.success())
        .filter(|_| serial_empty && !matches!(&outcome, Ok(o) if o.timed_out))
        .map(|status| Error::QemuStart {
            program: spec.qemu.display().to_string(),
            reason: QemuStartReason::ExitedAtStartup {
                status,
                log_tail: tail_lines(&spec.dir.join("qemu.log"), 20),
            },
        });
    // A run that gave no exit status keeps its console log for a look, out of the VM dir
    // (a throwaway VM's dir goes, so `vm list` keeps no stale runs).
    let failed = !matches!(&outcome, Ok(o) if o.rc.is_some());
    let mut serial_log = spec.serial_log();
    if p.ephemeral {
        if failed && !serial_empty {
            let kept = failed_run_log(&p.lab, &spec.name);
            if let Some(d) = kept.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            if std::fs::rename(&serial_log, &kept).is_ok() {
                serial_log = kept;
            }
        }
        let _ = std::fs::remove_dir_all(&spec.dir);
        // Nothing of a throwaway VM stays: without its reservation the lab's dhcpd releases
        // its lease, and its name leaves the lab's DNS.
        let _ = std::fs::remove_file(model::reservation::file(&p.lab, &spec.name));
    }
    let outcome = outcome?;
    if outcome.rc.is_none() {
        if let Some(e) = start_error {
            return Err(e);
        }
    }
    if let Mode::Run { .. } = mode {
        if outcome.rc.is_none() {
            let serial = serial_log.display().to_string();
            if outcome.timed_out {
                return Err(Error::TimedOut(Box::new(crate::TimedOut {
                    name: spec.name.clone(),
                    secs: p.timeout.map_or(0, |t| t.as_secs()),
                    reached_command: outcome.reached_command,
                    serial_log: serial,
                })));
            }
            return Err(Error::GuestFailed(Box::new(crate::GuestFailed {
                name: spec.name.clone(),
                reached_command: outcome.reached_command,
                panic: outcome.panic.clone(),
                exit: outcome.exit.clone(),
                serial_log: serial,
                tail: lines_up_to(&serial_log, "Kernel panic - ", 12),
            })));
        }
    }
    Ok(outcome)
}

/// The last `n` lines of the file up to and including the first line containing `mark`
/// (the lines that led to a panic, not its call trace), or its last `n` lines.
fn lines_up_to(p: &Path, mark: &str, n: usize) -> String {
    let s = std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.contains(mark))
        .map_or(lines.len(), |i| i + 1);
    lines[end.saturating_sub(n)..end].join("\n")
}

/// Where a failed throwaway run's serial log is kept (the last one per name).
pub fn failed_run_log(lab: &str, name: &str) -> PathBuf {
    model::paths::lab_run_dir(lab)
        .join("failed-runs")
        .join(format!("{name}.serial.log"))
}
