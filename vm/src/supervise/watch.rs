//! The supervision loop: waits for QEMU, turns stop signals and a vanished lab into a
//! graceful stop, enforces --timeout, streams `vm run` output.
use std::os::unix::process::ExitStatusExt;
use std::process::Child;
use std::time::{Duration, Instant};

use super::run_tail::RunTail;
use super::spawn::{sigset, STOP_SIGNALS};
use super::{Mode, Outcome, Prepared};
use crate::qemu::Spec;
use crate::Error;

const POLL_NS: libc::c_long = 5_000_000;

pub(super) fn supervise(
    p: &Prepared,
    child: &mut Child,
    daemons: &mut crate::virtiofs::Daemons,
    mode: Mode,
) -> Result<Outcome, Error> {
    let spec = &p.spec;
    let set = sigset(&STOP_SIGNALS);
    let t0 = Instant::now();
    let mut tail = match mode {
        Mode::Run { verbose, progress } => {
            RunTail::new(verbose, progress.then(|| spec.name.clone()))
        }
        Mode::Start { .. } => RunTail::new(false, None),
    };
    tail.origin = p.started;
    let mut console = None;
    if let Mode::Start {
        attach_console: true,
    } = mode
    {
        let sock = spec.console_sock();
        console = Some(std::thread::spawn(move || {
            crate::manage::attach_console_path(&sock)
        }));
    }
    let mut stop_started: Option<Instant> = None;
    let mut marker_seen_at: Option<Instant> = None;
    let mut killed_after_marker = false;
    let mut last_lab_check = Instant::now();
    let mut timed_out = false;
    let mut out: Box<dyn std::io::Write> = match &p.run_output {
        Some(f) => Box::new(std::fs::File::create(f).map_err(|e| Error::io(f, e))?),
        None => Box::new(std::io::stdout()),
    };
    loop {
        if let Some(s) = child.try_wait().map_err(|source| Error::QemuWait {
            name: spec.name.clone(),
            source,
        })? {
            if let Mode::Run { .. } = mode {
                tail.poll(&spec.serial_log(), &mut out);
            }
            if let Some(c) = console {
                // QEMU closed the socket; the console thread restores the terminal and ends.
                let _ = c.join();
            }
            let mut timings = std::mem::take(&mut tail.timings);
            timings.qemu_exit = Some(p.started.elapsed());
            let exit = if killed_after_marker && s.signal() == Some(libc::SIGKILL) {
                "qemu stopped by labnet after the command ended".to_string()
            } else {
                format!("qemu {s}")
            };
            return Ok(Outcome {
                rc: tail.rc,
                exit,
                timed_out,
                timings,
                reached_command: tail.begun,
                panic: tail.panic.clone(),
            });
        }
        // Every 5 ms: how soon the end marker and QEMU's exit are seen (~2.5 ms late on
        // average; one read and one waitpid per round).
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: POLL_NS,
        };
        let sig = if p.caller_handles_signals {
            // A process-directed signal may go to a thread waiting for it: leave it to the
            // caller's handler.
            std::thread::sleep(Duration::from_nanos(POLL_NS as u64));
            0
        } else {
            // SAFETY: `set` and `ts` are initialised locals; a null siginfo pointer is allowed.
            unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) }
        };
        if sig > 0 && stop_started.is_none() {
            stop_started = Some(Instant::now());
            request_stop(spec, p.generated_initramfs);
        }
        // `labnet down` removed the lab under the VM: its network is gone for good, so the
        // VM goes too (instead of running on, unreachable, in an orphaned namespace).
        if stop_started.is_none() && last_lab_check.elapsed() > Duration::from_millis(500) {
            last_lab_check = Instant::now();
            daemons.check(&spec.name);
            if !model::paths::netns_path(&p.lab).exists() {
                eprintln!("{}: lab {} is gone; stopping the VM", spec.name, p.lab);
                stop_started = Some(Instant::now());
                request_stop(spec, p.generated_initramfs);
            }
        }
        if let Mode::Run { .. } = mode {
            tail.poll(&spec.serial_log(), &mut out);
            if tail.rc.is_some() && marker_seen_at.is_none() {
                marker_seen_at = Some(Instant::now());
                // The command ended and the init synced before saying so; an initramfs guest
                // has nothing else to flush, so QEMU may end now rather than after the guest's
                // own reset. With no disk either (only the initramfs and shares, whose writes
                // the sync already handed to the host), SIGKILL: QEMU's orderly exit on
                // SIGTERM (like its QMP `quit`) took 30-250 ms more (bench/RESULTS.md); a
                // disk's image (qcow2 metadata) gets that orderly close.
                if p.generated_initramfs {
                    let disks = spec.drive.is_some() || spec.multipath.is_some();
                    // (the user's own QEMU arguments may hold a disk too)
                    let sig = if !disks && spec.extra.is_empty() {
                        killed_after_marker = true;
                        libc::SIGKILL
                    } else {
                        libc::SIGTERM
                    };
                    // SAFETY: kill(2) on our own unreaped child's pid: it cannot be reused.
                    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
                }
            }
        }
        if let Some(t) = p.timeout {
            if !timed_out && t0.elapsed() > t {
                timed_out = true;
                let _ = child.kill();
            }
        }
        // The guest powers off right after the marker; if it does not, stop waiting.
        if marker_seen_at.is_some_and(|m| m.elapsed() > Duration::from_secs(10)) {
            let _ = child.kill();
        }
        if stop_started.is_some_and(|s| s.elapsed() > Duration::from_secs(30)) {
            let _ = child.kill();
        }
    }
}

/// A graceful stop: an initramfs guest has nothing to flush, so QEMU may quit at once;
/// a disk guest gets an ACPI power button press.
pub fn request_stop(spec: &Spec, generated_initramfs: bool) {
    if let Ok(mut q) = crate::qmp::Qmp::connect(&spec.qmp_sock(), Duration::from_secs(2)) {
        let _ = q.execute(if generated_initramfs {
            "quit"
        } else {
            "system_powerdown"
        });
    }
}
