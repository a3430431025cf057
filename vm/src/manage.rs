//! Running VMs: list, stop, console, and stale cleanup (a tap left by a supervisor that was
//! SIGKILLed is removed the next time anyone looks at that VM).
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::state::{self, Status, VmState};
use crate::{tap, Error};

/// A VM as `vm list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VmInfo {
    pub name: String,
    pub state: String,
    pub pid: Option<u32>,
    pub mac: String,
    pub tap: String,
    pub ip: Option<std::net::Ipv4Addr>,
    pub uptime_secs: Option<u64>,
    pub machine: String,
    pub accel: String,
}

/// Loads the VM's state; a VM whose QEMU and supervisor are both gone is tidied up
/// (tap deleted, marked stopped).
pub fn load(lab: &str, name: &str) -> Result<VmState, Error> {
    let mut st = VmState::load(lab, name)?.ok_or_else(|| Error::NoSuchVm {
        lab: lab.into(),
        name: name.into(),
        dir: state::vm_dir(lab, name).display().to_string(),
    })?;
    tidy(&mut st);
    Ok(st)
}

fn tidy(st: &mut VmState) {
    if st.status != Status::Stopped && !st.qemu_alive() && !st.supervisor_alive() {
        let _ = tap::delete(&st.lab, &st.tap);
        leftovers(st);
        st.status = Status::Stopped;
        st.exit.get_or_insert_with(|| "supervisor gone".into());
        let _ = st.save();
    }
}

/// What a VM leaves when its supervisor is gone: the ssh connection and, for an image VM,
/// the per-boot overlay.
fn leftovers(st: &VmState) {
    crate::ssh::close_master(&st.lab, st);
    if st.image.is_some() {
        let _ = std::fs::remove_file(st.dir.join("overlay.qcow2"));
    }
}

/// A throwaway `vm run` VM whose supervisor died before removing it: removed now (unless
/// someone holds its lock, i.e. a new run of that name is being prepared). True if gone.
fn forget_throwaway(st: &VmState) -> bool {
    match state::try_lock(&st.lab, &st.name) {
        Ok(Some(_lock)) => {
            let _ = std::fs::remove_file(model::reservation::file(&st.lab, &st.name));
            std::fs::remove_dir_all(&st.dir).is_ok()
        }
        _ => false,
    }
}

/// `vm rm`: forgets a stopped VM: its runtime dir (state, logs), its DHCP reservation, a
/// kept failed-run log, and with `disk` its durable overlay. Returns what was removed.
pub fn remove(lab: &str, name: &str, disk: bool) -> Result<Vec<String>, Error> {
    crate::naming::check_name(name)?;
    let dir = state::vm_dir(lab, name);
    if let Some(mut st) = VmState::load(lab, name)? {
        tidy(&mut st);
        if st.status != Status::Stopped && st.qemu_alive() {
            return Err(Error::conflict(
                name,
                "it is running",
                format!("stop it first: `labnet vm stop {name}`"),
            ));
        }
    }
    let mut removed = vec![];
    let overlay_dir = model::paths::state_dir(lab).join("vms").join(name);
    let mut paths = vec![
        dir.clone(),
        model::reservation::file(lab, name),
        crate::supervise::failed_run_log(lab, name),
    ];
    if disk {
        paths.push(overlay_dir.clone());
    }
    if !paths.iter().any(|p| p.exists()) {
        return Err(Error::NoSuchVm {
            lab: lab.into(),
            name: name.into(),
            dir: dir.display().to_string(),
        });
    }
    {
        // Held while removing, so a start of the same name cannot interleave.
        let _lock = state::lock_within(lab, name, Duration::from_secs(2))?.ok_or_else(|| {
            Error::AlreadyRunning {
                lab: lab.into(),
                name: name.into(),
                pid: 0,
            }
        })?;
        for p in paths {
            let gone = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            match gone {
                Ok(()) => removed.push(p.display().to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p, e)),
            }
        }
    }
    // try_lock made the dir again to hold the lock file in it.
    let _ = std::fs::remove_dir_all(&dir);
    Ok(removed)
}

/// The address the guest itself reported on its console in this boot (the generated
/// initramfs prints `labnet-init: lease IP on eth0`; serial.log starts empty each boot).
pub fn guest_reported_lease(st: &VmState) -> Option<std::net::Ipv4Addr> {
    let log = std::fs::read(st.dir.join("serial.log")).ok()?;
    let log = String::from_utf8_lossy(&log);
    log.lines()
        .rev()
        .find_map(|l| l.split("labnet-init: lease ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ip| ip.parse().ok())
}

/// The active lease of `mac` in the lab's lease log granted (or renewed) since `since` (unix
/// secs): a lease left from the VM's previous boot does not count. (The `ip_of` the
/// functions here take; read with the lease log's own reader, `model::lease`.)
pub fn lease_ip(lab: &str, mac: &str, since: u64) -> Option<std::net::Ipv4Addr> {
    let leases = model::lease::load(&model::paths::state_dir(lab)).ok()?;
    let now = model::lease::now_secs();
    leases
        .into_iter()
        .filter(|l| {
            l.mac.eq_ignore_ascii_case(mac)
                && l.start >= since
                && l.state_at(now) == model::lease::LeaseState::Active
        })
        .max_by_key(|l| l.start)
        .map(|l| l.ip)
}

/// All VMs of the lab; `ip_of(mac, since)` looks up a lease granted since the VM started.
pub fn list(
    lab: &str,
    ip_of: &dyn Fn(&str, u64) -> Option<std::net::Ipv4Addr>,
) -> Result<Vec<VmInfo>, Error> {
    let mut out = vec![];
    for mut st in state::list(lab)? {
        tidy(&mut st);
        let running = st.status != Status::Stopped && st.qemu_alive();
        if !running && st.ephemeral && forget_throwaway(&st) {
            continue;
        }
        out.push(VmInfo {
            name: st.name.clone(),
            state: if running {
                "running".into()
            } else {
                "stopped".into()
            },
            pid: if running { st.qemu_pid } else { None },
            mac: st.mac.clone(),
            tap: st.tap.clone(),
            ip: if running { lease_of(&st, ip_of) } else { None },
            uptime_secs: running.then(|| st.uptime()),
            machine: st.machine.clone(),
            accel: st.accel.clone(),
        });
    }
    Ok(out)
}

/// The VM's address in this boot: an active dhcpd lease for its MAC granted since it
/// started (`ip_of(mac, since)`), and for the generated initramfs also the one the guest
/// reported (lease times have 1 s resolution; the previous boot's lease may share the second).
pub fn lease_of(
    st: &VmState,
    ip_of: &dyn Fn(&str, u64) -> Option<std::net::Ipv4Addr>,
) -> Option<std::net::Ipv4Addr> {
    let ip = ip_of(&st.mac, st.started)?;
    if st.generated_initramfs && guest_reported_lease(st) != Some(ip) {
        return None;
    }
    Some(ip)
}

/// Stops a VM: QMP `system_powerdown` (or `quit` for an initramfs guest, which has no state
/// to save), SIGKILL after `timeout`; then waits for the supervisor to clean up, or cleans
/// up itself when there is none. Returns how it ended.
pub fn stop(lab: &str, name: &str, timeout: Duration) -> Result<String, Error> {
    let mut st = load(lab, name)?;
    if st.status == Status::Stopped || !st.qemu_alive() {
        let _ = tap::delete(&st.lab, &st.tap);
        if st.status != Status::Stopped && !st.supervisor_alive() {
            st.status = Status::Stopped;
            let _ = st.save();
        }
        if st.status == Status::Stopped {
            return Err(Error::NotRunning { name: name.into() });
        }
    }
    let qmp = crate::qemu::qmp_sock(&st.dir);
    let how = match crate::qmp::Qmp::connect(&qmp, Duration::from_secs(3)) {
        Ok(mut q) => {
            let cmd = if st.generated_initramfs {
                "quit"
            } else {
                "system_powerdown"
            };
            q.execute(cmd)
                .map(|_| cmd.to_string())
                .unwrap_or_else(|e| format!("{cmd} failed: {e}"))
        }
        Err(e) => format!("no QMP ({e})"),
    };
    let t0 = Instant::now();
    let mut killed = false;
    while st.qemu_alive() {
        if !killed && t0.elapsed() > timeout {
            if let Some(pid) = st.qemu_pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let how = if killed {
        format!("{how}, then SIGKILL after {} s", timeout.as_secs())
    } else {
        how
    };
    if st.supervisor_pid == std::process::id() {
        // Supervised by a thread of this process (`labnet test`): that thread cleans up and
        // records how the VM ended, and its caller joins it; writing here would only race it.
        return Ok(how);
    }
    // The supervisor removes the tap and marks the state; give it a moment.
    let t1 = Instant::now();
    while st.supervisor_alive() && t1.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = tap::delete(&st.lab, &st.tap);
    leftovers(&st);
    if let Ok(Some(mut now)) = VmState::load(lab, name) {
        if now.status != Status::Stopped {
            now.status = Status::Stopped;
            now.exit = Some(if killed {
                "killed by vm stop".into()
            } else {
                format!("stopped by vm stop ({how})")
            });
            let _ = now.save();
        }
    }
    Ok(how)
}

/// `vm console`: connects this terminal to the VM's serial console socket.
pub fn console(lab: &str, name: &str) -> Result<(), Error> {
    let st = load(lab, name)?;
    if st.status == Status::Stopped {
        return Err(Error::NotRunning { name: name.into() });
    }
    eprintln!("[connected to {name}'s console; Ctrl-] detaches]");
    let r = attach_console_path(&st.dir.join("console.sock"));
    eprintln!("\r\n[detached]");
    r
}

struct RawTerm(Option<nix::sys::termios::Termios>);

impl RawTerm {
    fn enter() -> RawTerm {
        use nix::sys::termios::*;
        let stdin = std::io::stdin();
        match tcgetattr(&stdin) {
            Ok(orig) => {
                let mut raw = orig.clone();
                cfmakeraw(&mut raw);
                let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
                RawTerm(Some(orig))
            }
            Err(_) => RawTerm(None),
        }
    }
}

impl Drop for RawTerm {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Bridges stdin/stdout and the console socket until the socket closes (VM gone) or the
/// user types Ctrl-] (0x1d).
pub fn attach_console_path(sock: &Path) -> Result<(), Error> {
    let mut s = UnixStream::connect(sock).map_err(|e| Error::io(sock, e))?;
    let _raw = RawTerm::enter();
    let mut stdout = std::io::stdout();
    let stdin_fd = std::io::stdin().as_raw_fd();
    let mut fds = [
        libc::pollfd {
            fd: stdin_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let mut buf = [0u8; 4096];
    let mut stdin_open = true;
    loop {
        let nfds = if stdin_open { 2 } else { 1 };
        let (start, n) = if stdin_open { (0, nfds) } else { (1, 1) };
        // SAFETY: `fds[start..]` holds at least `n` initialised pollfds for the whole call.
        let r = unsafe { libc::poll(fds[start..].as_mut_ptr(), n as _, 500) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("poll", e));
        }
        if fds[1].revents != 0 {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(n) => {
                    let _ = stdout.write_all(&buf[..n]);
                    let _ = stdout.flush();
                }
            }
        }
        if stdin_open && fds[0].revents != 0 {
            // SAFETY: reads at most buf.len() bytes into `buf`, which outlives the call.
            let n = unsafe { libc::read(stdin_fd, buf.as_mut_ptr() as *mut _, buf.len()) };
            if n <= 0 {
                stdin_open = false;
                continue;
            }
            let data = &buf[..n as usize];
            if let Some(i) = data.iter().position(|&b| b == 0x1d) {
                let _ = s.write_all(&data[..i]);
                return Ok(());
            }
            if s.write_all(data).is_err() {
                return Ok(());
            }
        }
        fds[0].revents = 0;
        fds[1].revents = 0;
    }
}

/// `program args` set up to run inside the lab's namespace; the returned file (the
/// namespace) must stay open until the command is spawned.
pub fn lab_command(
    lab: &str,
    program: &str,
    args: &[String],
) -> Result<(std::process::Command, std::fs::File), Error> {
    use std::os::unix::process::CommandExt;
    let nsp = model::paths::netns_path(lab);
    let ns = std::fs::File::open(&nsp).map_err(|_| Error::LabNotUp {
        lab: lab.into(),
        path: nsp.display().to_string(),
    })?;
    let bin = crate::which(program).ok_or_else(|| Error::MissingProgram {
        program: program.into(),
        hint: " in PATH".into(),
    })?;
    let fd = ns.as_raw_fd();
    let mut cmd = std::process::Command::new(bin);
    cmd.args(args);
    // SAFETY: the hook runs between fork and exec and only calls setns(2) (async-signal-safe)
    // on `fd`, which `ns` keeps open until after the spawn.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok((cmd, ns))
}

/// Runs `program args` inside the lab's namespace (for `vm ssh`), returning its exit code.
pub fn exec_in_lab(lab: &str, program: &str, args: &[String]) -> Result<i32, Error> {
    let (mut cmd, _ns) = lab_command(lab, program, args)?;
    let st = cmd.status().map_err(|source| Error::Spawn {
        program: program.into(),
        source,
    })?;
    Ok(st.code().unwrap_or(255))
}

/// Runs `program args` inside the lab's namespace and returns its stdout (stderr and stdin
/// detached); fails when it exits non-zero.
pub fn output_in_lab(lab: &str, program: &str, args: &[String]) -> Result<Vec<u8>, Error> {
    let (mut cmd, _ns) = lab_command(lab, program, args)?;
    let out = cmd
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            program: program.into(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::ProgramFailed {
            program: program.into(),
            status: out.status,
            stderr: String::new(),
        });
    }
    Ok(out.stdout)
}

/// Stops every running VM of the lab (for `labnet down`: a VM's tap keeps the namespace's
/// bridge port busy and its QEMU would outlive the lab). Returns (name, outcome) pairs.
pub fn stop_all(lab: &str, timeout: Duration) -> Vec<(String, Result<String, Error>)> {
    let mut out = vec![];
    for mut st in state::list(lab).unwrap_or_default() {
        tidy(&mut st);
        if st.status != Status::Stopped && st.qemu_alive() {
            out.push((st.name.clone(), stop(lab, &st.name, timeout)));
        }
    }
    out
}
