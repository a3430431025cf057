//! Running targets: each is one `vm run` through the vm library (its own VM name, the
//! generated initramfs, its timeout), up to `jobs` at once. A target's verdict comes from
//! how the run ended: the command's status, the vm library's `TimedOut`, or its
//! `GuestFailed` with the kernel's panic line.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::file::Target;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The command exited 0.
    Pass,
    /// The command exited non-zero, or the guest ended without its status (no panic seen).
    Fail,
    /// The target's timeout expired.
    Timeout,
    /// The guest kernel panicked.
    Panic,
    /// The VM could not be run (QEMU did not start, the lab is not up, a bad file, ...).
    Error,
    /// Not run: the matrix was interrupted first.
    Skipped,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Timeout => "TIMEOUT",
            Verdict::Panic => "PANIC",
            Verdict::Error => "ERROR",
            Verdict::Skipped => "SKIPPED",
        }
    }
}

/// How one target ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetResult {
    pub name: String,
    pub lab: String,
    pub kernel: PathBuf,
    pub verdict: Verdict,
    /// From preparing the VM to its end.
    pub duration: Duration,
    /// The command's exit status, when the guest reported it.
    pub rc: Option<i32>,
    /// One line: why it did not pass (empty for a pass).
    pub message: String,
    /// The console lines that led to the end (a failure's), for the report.
    pub console_tail: String,
    /// The command's output (stdout and stderr, as the guest's console carried them).
    pub output: String,
    /// The kept serial console of a target that did not pass.
    pub console: Option<PathBuf>,
}

/// Where a target's command output and (on failure) console go.
pub fn output_file(logs: &Path, name: &str) -> PathBuf {
    logs.join(format!("{name}.out"))
}
pub fn console_file(logs: &Path, name: &str) -> PathBuf {
    logs.join(format!("{name}.console.log"))
}

/// What a report keeps of a command's output: its end (a runaway test can print a lot).
const OUTPUT_KEEP: usize = 64 * 1024;

/// Runs one target as its own VM and forgets the VM afterwards (its console is kept in
/// `logs` when it did not pass).
pub fn run_target(t: &Target, o: vm::supervise::Options, logs: &Path) -> TargetResult {
    let t0 = Instant::now();
    let out = output_file(logs, &t.name);
    let lab = o.lab.clone();
    let mut o = o;
    o.run_output = Some(out.clone());
    o.ephemeral = false;
    let mut launched = false;
    let res = vm::supervise::prepare(&o).and_then(|p| {
        launched = true;
        vm::supervise::launch(
            &p,
            vm::supervise::Mode::Run {
                verbose: false,
                progress: false,
            },
            &mut |_| {},
        )
    });
    let duration = t0.elapsed();
    let mut r = TargetResult {
        name: t.name.clone(),
        lab: lab.clone(),
        kernel: t.kernel.clone(),
        verdict: Verdict::Pass,
        duration,
        rc: None,
        message: String::new(),
        console_tail: String::new(),
        output: String::new(),
        console: None,
    };
    match res {
        Ok(outcome) => {
            r.rc = outcome.rc;
            if outcome.rc != Some(0) {
                r.verdict = Verdict::Fail;
                r.message = match outcome.rc {
                    Some(rc) => format!("exit status {rc}"),
                    None => format!("no exit status ({})", outcome.exit),
                };
            }
        }
        Err(vm::Error::TimedOut(to)) => {
            r.verdict = Verdict::Timeout;
            r.message = format!(
                "timed out after {} s {}",
                to.secs,
                if to.reached_command {
                    "while the command ran"
                } else {
                    "before the guest reached the command"
                }
            );
        }
        Err(vm::Error::GuestFailed(g)) => {
            r.console_tail = g.tail.clone();
            match &g.panic {
                Some(p) => {
                    r.verdict = Verdict::Panic;
                    r.message = p.clone();
                }
                None => {
                    r.verdict = Verdict::Fail;
                    r.message = format!(
                        "{} without an exit status ({}; no kernel panic seen)",
                        if g.reached_command {
                            "the guest ended while the command ran"
                        } else {
                            "the guest never reached the command"
                        },
                        g.exit
                    );
                }
            }
        }
        Err(e) => {
            r.verdict = Verdict::Error;
            r.message = e.to_string();
        }
    }
    r.output = read_tail(&out, OUTPUT_KEEP);
    if launched {
        let serial = vm::state::vm_dir(&lab, &t.name).join("serial.log");
        if r.verdict != Verdict::Pass {
            let kept = console_file(logs, &t.name);
            if std::fs::copy(&serial, &kept).is_ok() {
                if r.console_tail.is_empty() {
                    r.console_tail = vm::supervise::tail_lines(&kept, 12);
                }
                r.console = Some(kept);
            }
        }
        // Its state, serial log and DHCP reservation: the VM was this run's only.
        let _ = vm::manage::remove(&lab, &t.name, false);
    }
    r
}

fn read_tail(p: &Path, keep: usize) -> String {
    let b = std::fs::read(p).unwrap_or_default();
    let from = b.len().saturating_sub(keep);
    String::from_utf8_lossy(&b[from..]).into_owned()
}

/// One target of a matrix run: the target, and the VM options it runs with (checked).
pub struct Planned {
    pub target: Target,
    pub options: vm::supervise::Options,
}

/// Runs every target, up to `jobs` at once, calling `done` as each ends (in the order they
/// end); returns the results in the file's order. When `stop` becomes true the running VMs
/// are told to quit and the targets not started yet are skipped.
pub fn run_all(
    plan: Vec<Planned>,
    jobs: usize,
    logs: &Path,
    stop: &AtomicBool,
    done: &mut dyn FnMut(&TargetResult),
) -> Vec<TargetResult> {
    let n = plan.len();
    let next = AtomicUsize::new(0);
    let running: Mutex<Vec<(String, String)>> = Mutex::new(vec![]);
    let (tx, rx) = mpsc::channel::<(usize, TargetResult)>();
    let mut results: Vec<Option<TargetResult>> = vec![None; n];
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, n.max(1)) {
            let tx = tx.clone();
            let (plan, next, running) = (&plan, &next, &running);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(p) = plan.get(i) else { break };
                let r = if stop.load(Ordering::SeqCst) {
                    skipped(p)
                } else {
                    let id = (p.options.lab.clone(), p.target.name.clone());
                    lock(running).push(id.clone());
                    let mut r = run_target(&p.target, p.options.clone(), logs);
                    lock(running).retain(|x| *x != id);
                    if stop.load(Ordering::SeqCst) && r.verdict != Verdict::Pass {
                        // Its VM was quit under it: say so rather than what that looked like.
                        r.verdict = Verdict::Fail;
                        r.message = "interrupted: its VM was stopped".into();
                    }
                    r
                };
                if tx.send((i, r)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut stopped = false;
        let mut received = 0;
        while received < n {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((i, r)) => {
                    done(&r);
                    results[i] = Some(r);
                    received += 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if !stopped && stop.load(Ordering::SeqCst) {
                stopped = true;
                for (lab, name) in lock(&running).iter() {
                    quit(lab, name);
                }
            }
        }
    });
    results
        .into_iter()
        .zip(&plan)
        .map(|(r, p)| r.unwrap_or_else(|| skipped(p)))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn skipped(p: &Planned) -> TargetResult {
    TargetResult {
        name: p.target.name.clone(),
        lab: p.options.lab.clone(),
        kernel: p.target.kernel.clone(),
        verdict: Verdict::Skipped,
        duration: Duration::ZERO,
        rc: None,
        message: "not run: interrupted".into(),
        console_tail: String::new(),
        output: String::new(),
        console: None,
    }
}

/// Ends a running target's VM at once (QMP quit): its supervisor then reports it ended
/// without a status and cleans up as always.
fn quit(lab: &str, name: &str) {
    let sock = vm::state::vm_dir(lab, name).join("qmp.sock");
    if let Ok(mut q) = vm::qmp::Qmp::connect(&sock, Duration::from_secs(2)) {
        let _ = q.execute("quit");
    }
}
