//! Running targets: each is one `vm run` through the vm library (its own VM name, the
//! generated initramfs, its timeout), up to `jobs` at once. A target's verdict comes from
//! how the run ended: the command's status, the vm library's `TimedOut`, or its
//! `GuestFailed` with the kernel's panic line.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::file::{Command, Target};

/// Looks up the lab's dhcpd lease of a MAC granted since a time: `(lab, mac, since)`
/// (the lease file is the binary's business, not this crate's).
pub type LeaseFn = fn(&str, &str, u64) -> Option<std::net::Ipv4Addr>;

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
pub fn run_target(
    t: &Target,
    o: vm::supervise::Options,
    logs: &Path,
    ip_of: LeaseFn,
) -> TargetResult {
    if t.image.is_some() {
        return run_image_target(t, o, logs, ip_of);
    }
    let t0 = Instant::now();
    let out = output_file(logs, &t.name);
    let lab = o.lab.clone();
    let mut o = o;
    o.caller_handles_signals = true;
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
        forget(&mut r, vm::manage::remove(&lab, &t.name, false));
    }
    r
}

/// How an image target's command ended.
enum SshEnd {
    Status(Option<i32>),
    TimedOut(&'static str),
    Failed(String),
}

/// An image target: the VM started from the image (supervised on this thread's helper, as
/// `vm start --image --daemonize` would be), its lease and sshd waited for, the command run
/// over ssh; the target's timeout covers all of it. The VM is stopped and removed after.
fn run_image_target(
    t: &Target,
    o: vm::supervise::Options,
    logs: &Path,
    ip_of: LeaseFn,
) -> TargetResult {
    let t0 = Instant::now();
    let deadline = t0 + t.timeout;
    let out = output_file(logs, &t.name);
    let lab = o.lab.clone();
    let mut o = o;
    o.caller_handles_signals = true;
    o.ephemeral = false;
    let mut r = TargetResult {
        name: t.name.clone(),
        lab: lab.clone(),
        kernel: o.kernel.clone(),
        verdict: Verdict::Pass,
        duration: Duration::ZERO,
        rc: None,
        message: String::new(),
        console_tail: String::new(),
        output: String::new(),
        console: None,
    };
    let p = match vm::supervise::prepare(&o) {
        Ok(p) => p,
        Err(e) => {
            r.verdict = Verdict::Error;
            r.message = e.to_string();
            r.duration = t0.elapsed();
            return r;
        }
    };
    let (end, launched) = std::thread::scope(|s| {
        let sup = s.spawn(|| {
            vm::supervise::launch(
                &p,
                vm::supervise::Mode::Start {
                    attach_console: false,
                },
                &mut |_| {},
            )
        });
        let end = ssh_run(t, &lab, deadline, &out, ip_of, &sup);
        if let Ok(Some(st)) = vm::state::VmState::load(&lab, &t.name) {
            vm::ssh::close_master(&lab, &st);
        }
        let _ = vm::manage::stop(&lab, &t.name, Duration::from_secs(10));
        let launched = sup.join().ok();
        (end, launched)
    });
    // Its lock goes with it: `remove` below needs the VM unlocked.
    drop(p);
    r.duration = t0.elapsed();
    let serial = vm::state::vm_dir(&lab, &t.name).join("serial.log");
    let panic = match &launched {
        Some(Ok(outcome)) => outcome.panic.clone(),
        _ => None,
    }
    .or_else(|| panic_line(&serial));
    match (panic, end) {
        (Some(p), _) => {
            r.verdict = Verdict::Panic;
            r.message = p;
        }
        (None, SshEnd::Status(Some(0))) => {}
        (None, SshEnd::Status(rc)) => {
            r.rc = rc;
            r.verdict = Verdict::Fail;
            r.message = match rc {
                Some(rc) => format!("exit status {rc}"),
                None => "ssh ended without an exit status (killed by a signal)".into(),
            };
        }
        (None, SshEnd::TimedOut(when)) => {
            r.verdict = Verdict::Timeout;
            r.message = format!("timed out after {} s {when}", t.timeout.as_secs());
        }
        (None, SshEnd::Failed(m)) => {
            r.verdict = match launched {
                Some(Err(_)) | None => Verdict::Error,
                Some(Ok(_)) => Verdict::Fail,
            };
            r.message = m;
        }
    }
    if r.verdict == Verdict::Pass {
        r.rc = Some(0);
    }
    r.output = read_tail(&out, OUTPUT_KEEP);
    if r.verdict != Verdict::Pass {
        let kept = console_file(logs, &t.name);
        if std::fs::copy(&serial, &kept).is_ok() {
            r.console_tail = vm::supervise::tail_lines(&kept, 12);
            r.console = Some(kept);
        }
    }
    // Its state, serial log, overlay disk and DHCP reservation: the VM was this run's only.
    forget(&mut r, vm::manage::remove(&lab, &t.name, true));
    r
}

/// A target's VM that could not be removed is said in its result, not left unmentioned.
fn forget(r: &mut TargetResult, removed: Result<Vec<String>, vm::Error>) {
    if let Err(e) = removed {
        if !r.message.is_empty() {
            r.message.push_str("; ");
        }
        r.message.push_str(&format!(
            "its VM was not removed ({e}): `labnet vm rm {}`",
            r.name
        ));
    }
}

/// Waits for the VM's sshd and runs the target's command (a script goes on ssh's stdin to
/// `sh -s`), its output into `out`, all by `deadline`.
fn ssh_run<T>(
    t: &Target,
    lab: &str,
    deadline: Instant,
    out: &Path,
    ip_of: LeaseFn,
    sup: &std::thread::ScopedJoinHandle<'_, T>,
) -> SshEnd {
    let left = || deadline.saturating_duration_since(Instant::now());
    // The supervisor writes the VM's state once QEMU is up. Read raw: `manage::load` would
    // take this process (the supervisor) for gone and tidy the starting VM away.
    let st = loop {
        match vm::state::VmState::load(lab, &t.name) {
            Ok(Some(st)) if st.qemu_alive() => break st,
            _ if sup.is_finished() => return SshEnd::Failed("the VM ended before it ran".into()),
            _ if left().is_zero() => return SshEnd::TimedOut("before QEMU started"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let ip = match vm::ssh::wait_ready(lab, &st, "root", left(), &|mac, since| {
        ip_of(lab, mac, since)
    }) {
        Ok(ip) => ip,
        Err(_) if left().is_zero() => return SshEnd::TimedOut("before sshd answered"),
        Err(e) => return SshEnd::Failed(e.to_string()),
    };
    let mut args = match vm::ssh::options(lab, &st) {
        Ok(a) => a,
        Err(e) => return SshEnd::Failed(e.to_string()),
    };
    args.push(format!("root@{ip}"));
    let stdin = match &t.command {
        Command::Shell(c) => {
            args.extend(["--".into(), c.clone()]);
            std::process::Stdio::null()
        }
        Command::Script(s) => {
            args.extend(["--".into(), "sh".into(), "-s".into()]);
            match std::fs::File::open(s) {
                Ok(f) => f.into(),
                Err(e) => return SshEnd::Failed(format!("{}: {e}", s.display())),
            }
        }
    };
    let spawned = std::fs::File::create(out)
        .and_then(|f| Ok((f.try_clone()?, f)))
        .map_err(|e| format!("{}: {e}", out.display()))
        .and_then(|(o1, o2)| {
            let (mut cmd, _ns) =
                vm::manage::lab_command(lab, "ssh", &args).map_err(|e| e.to_string())?;
            cmd.stdin(stdin)
                .stdout(o1)
                .stderr(o2)
                .spawn()
                .map_err(|e| format!("ssh: {e}"))
        });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return SshEnd::Failed(e),
    };
    let serial = vm::state::vm_dir(lab, &t.name).join("serial.log");
    let mut polls = 0u32;
    let end = loop {
        match child.try_wait() {
            Ok(Some(status)) => return SshEnd::Status(status.code()),
            Err(e) => return SshEnd::Failed(format!("ssh: {e}")),
            Ok(None) => {}
        }
        if left().is_zero() {
            break SshEnd::TimedOut("while the command ran");
        }
        // A guest that panicked (or ended) does not close the connection: ssh would wait out
        // its keepalives (~45 s) while an image's guest reboots (image VMs may reboot). The
        // caller tells the panic from the console, checked here once a second.
        polls += 1;
        if polls.is_multiple_of(10) && panic_line(&serial).is_some() {
            break SshEnd::Failed("the guest kernel panicked".into());
        }
        if sup.is_finished() {
            break SshEnd::Failed("the VM ended while the command ran".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    end
}

/// The guest kernel's panic line in its console log, if it panicked.
fn panic_line(serial: &Path) -> Option<String> {
    let b = std::fs::read(serial).ok()?;
    String::from_utf8_lossy(&b)
        .lines()
        .find_map(|l| l.find("Kernel panic - ").map(|i| l[i..].trim().to_string()))
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
    ip_of: LeaseFn,
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
                    let mut r = run_target(&p.target, p.options.clone(), logs, ip_of);
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
