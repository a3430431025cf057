//! `labnet vm`: QEMU VMs plugged into a lab.
//!
//! The flow, one module per step:
//! - [`naming`]: VM name checks, the stable MAC and tap name derived from (lab, name);
//! - [`initramfs`] (+ [`cpio`], [`modules`]): when no `--drive` is given, a busybox initramfs
//!   with the guest kernel's modules (resolved from modules.dep) and a tiny `/init`;
//! - [`qemu`]: the QEMU command line as pure data (golden-tested);
//! - [`tap`]: the tap device, made with TUNSETIFF/TUNSETPERSIST inside the lab namespace and
//!   attached to the bridge with ioctls ([`tuntap::tap`]; no netlink);
//! - [`supervise`]: spawns QEMU inside the namespace and stays with it: streams `run` output,
//!   removes the tap when QEMU ends (however it ends);
//! - [`virtiofs`]: the transport of `--share` and the virtiofsd daemons of a VM;
//! - [`gdb`], [`dump`]: the debugger on QEMU's gdbstub, and vmcores through QMP;
//! - [`manage`]: list / ip / ssh / console / stop for running VMs, from [`state`] files.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod accel;
pub mod cpio;
pub mod dump;
pub mod gdb;
pub mod image_boot;
pub mod initramfs;
pub mod kernel;
pub mod manage;
pub mod modules;
pub mod naming;
pub mod path;
pub mod qemu;
pub mod qmp;
pub mod ssh;
pub mod state;
pub mod supervise;
pub mod tap;
pub mod virtiofs;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument (labnet exits 2): `field` is the option or operand, as typed.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The VM is not in a state for what was asked (labnet exits 7): it runs and must not,
    /// it was started without what the command needs, a path is already as asked.
    #[error("VM {vm:?}: {state}; {remedy}")]
    Conflict {
        vm: String,
        /// What the VM is or has, e.g. "path1 has already failed".
        state: String,
        /// What to do instead, e.g. "`labnet vm path m restore path1` plugs it back".
        remedy: String,
    },
    #[error("--kernel {path}: {message}")]
    Kernel { path: String, message: String },
    #[error("lab {lab:?} is not up: {path} does not exist (run `labnet up {lab}` first)")]
    LabNotUp { lab: String, path: String },
    /// A state conflict, like [`Error::Conflict`] (labnet exits 7).
    #[error("VM {name:?} is already running in lab {lab:?} (qemu pid {pid}); stop it with `labnet vm stop {name}`")]
    AlreadyRunning { lab: String, name: String, pid: u32 },
    #[error("no VM {name:?} in lab {lab:?} ({dir} does not exist)")]
    NoSuchVm {
        lab: String,
        name: String,
        dir: String,
    },
    #[error("VM {name:?} is not running")]
    NotRunning { name: String },
    #[error("{program} not found{hint}")]
    MissingProgram { program: String, hint: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: nix::errno::Errno,
    },
    #[error(transparent)]
    Tap(#[from] tuntap::Error),
    #[error(transparent)]
    Model(#[from] model::Error),
    #[error(transparent)]
    Config(#[from] model::config::ConfigError),
    /// `--modules DIR` has no readable modules.dep.
    #[error("modules: --modules {dir}: cannot read modules.dep ({source}); pass the lib/modules/VERSION directory (run `depmod -b ROOT VERSION` if it has none)")]
    NoModulesDep { dir: String, source: std::io::Error },
    /// A `--module` that the guest kernel neither has as a module nor built in.
    #[error("modules: module {name:?} is neither in {dir}/modules.dep nor built in")]
    UnknownModule { name: String, dir: String },
    /// Waiting for the VM's QEMU process failed (the supervisor lost track of its child).
    #[error("VM {name:?}: waiting for qemu: {source}")]
    QemuWait {
        name: String,
        source: std::io::Error,
    },
    /// `vm path fail`: QEMU still shows the path's device after the unplug.
    #[error("VM {name:?}: qemu still has {device} plugged {secs} s after device_del")]
    StillPlugged {
        name: String,
        device: String,
        secs: u64,
    },
    /// `vm path fail`: QEMU has no usable block node under a path's device.
    #[error("VM {name:?}: qemu {}", match found { None => format!("has no block node {node}"), Some(n) => format!("block node {node}: unexpected {n}") })]
    BlockNode {
        name: String,
        node: String,
        /// The node as QEMU described it (JSON), when it is not a plain file under a driver.
        found: Option<String>,
    },
    /// QEMU could not be started, or quit before the guest ran (`vm run` exits 126).
    #[error("QEMU did not start: {program} {reason}")]
    QemuStart {
        /// The QEMU binary, as run.
        program: String,
        reason: QemuStartReason,
    },
    /// `--timeout` expired before the guest reported the command's status (`vm run`: 124).
    #[error(transparent)]
    TimedOut(Box<TimedOut>),
    /// The guest ended without reporting the command's status: a kernel panic, an init
    /// failure, no /init (`vm run`: 125).
    #[error(transparent)]
    GuestFailed(Box<GuestFailed>),
    /// A QMP exchange failed; `command` is None while connecting (greeting, capabilities).
    #[error("QMP {path}: {}{failure}", match command { Some(c) => format!("{c}: "), None => String::new() })]
    Qmp {
        path: String,
        command: Option<String>,
        failure: QmpFailure,
    },
    /// A program labnet runs could not be started at all.
    #[error("could not run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// A helper program ran and failed; `stderr` is what it said (trimmed).
    #[error("{program} failed ({status}){}", if stderr.is_empty() { String::new() } else { format!(": {stderr}") })]
    ProgramFailed {
        program: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// A file labnet wrote (a VM's state, a multipath path's backing) does not parse.
    #[error("{path}: corrupt {what}: {source}")]
    Corrupt {
        path: String,
        what: &'static str,
        source: serde_json::Error,
    },
    /// The VM has no active DHCP lease (in this boot) after the wait.
    #[error("VM {name:?} ({mac}) has no active lease in lab {lab:?}")]
    NoLease {
        lab: String,
        name: String,
        mac: String,
    },
    /// sshd in the guest did not let the user in within the wait.
    #[error("{name}: sshd at {ip} did not answer within {secs} s (last: {last}; serial log: {serial_log})")]
    SshdTimeout {
        name: String,
        ip: std::net::Ipv4Addr,
        secs: u64,
        /// ssh's last complaint.
        last: String,
        serial_log: String,
    },
    /// The guest's host key is not the one pinned for the VM: labnet refuses to connect.
    #[error("{name} ({ip}): host key verification failed: {detail}")]
    HostKeyChanged {
        name: String,
        ip: std::net::Ipv4Addr,
        detail: String,
    },
    /// `vm start --daemonize`: the detached supervisor exited before its VM ran (its exit
    /// status is the foreground `vm start`'s: the CLI passes it through).
    #[error("the supervisor of VM {name:?} exited ({status}): {log}")]
    SupervisorExited {
        name: String,
        status: std::process::ExitStatus,
        /// The supervisor's output (its `error: …` lines).
        log: String,
    },
    /// `vm start --daemonize`: the supervisor runs but its VM did not start in time.
    #[error("VM {name:?} did not start within {secs} s; see {log}")]
    StartTimedOut {
        name: String,
        secs: u64,
        log: String,
    },
    /// A `--share`'s virtiofsd exited, or made no socket, before QEMU could use it.
    #[error("virtiofsd for share {tag}: {}:\n{log_tail}", match exited { Some(s) => format!("exited ({s})"), None => format!("no socket after {secs} s") })]
    Virtiofsd {
        tag: String,
        /// How it ended; None: still running but without its socket after `secs`.
        exited: Option<std::process::ExitStatus>,
        secs: u64,
        log_tail: String,
    },
}

/// Why QEMU did not start ([`Error::QemuStart`]).
#[derive(Debug, thiserror::Error)]
pub enum QemuStartReason {
    /// It could not be executed at all (not found, not executable, ...).
    #[error("could not be run: {0}")]
    Spawn(#[source] std::io::Error),
    /// It quit before the guest ran (e.g. guest memory it cannot allocate); `log_tail` is
    /// the end of its qemu.log, which says why.
    #[error("exited at startup ({status}):\n{log_tail}")]
    ExitedAtStartup {
        status: std::process::ExitStatus,
        log_tail: String,
    },
    /// It runs but its QMP monitor did not answer within `secs` (labnet killed it).
    #[error("gave no QMP answer after {secs} s:\n{log_tail}")]
    NoQmpAnswer { secs: u64, log_tail: String },
}

/// How a QMP exchange failed ([`Error::Qmp`]).
#[derive(Debug, thiserror::Error)]
pub enum QmpFailure {
    /// Connecting to, reading from or writing to the socket (a read timeout included).
    #[error("{0}")]
    Io(#[source] std::io::Error),
    #[error("connection closed")]
    Closed,
    /// The first message was not QEMU's `{"QMP": ...}` greeting.
    #[error("unexpected greeting {0}")]
    Greeting(String),
    /// A line that is not JSON.
    #[error("bad reply {line:?}: {source}")]
    BadReply {
        line: String,
        source: serde_json::Error,
    },
    /// QEMU refused the command: its error class (e.g. `GenericError`, `DeviceNotFound`)
    /// and description.
    #[error("{class}: {desc}")]
    Refused { class: String, desc: String },
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: timed out after {secs} s (--timeout), {}; serial log: {serial_log}", if *reached_command { "before the command finished" } else { "before the guest reached the command" })]
pub struct TimedOut {
    pub name: String,
    pub secs: u64,
    pub reached_command: bool,
    pub serial_log: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{name}: {}{}, {exit}; serial log: {serial_log}\nlast console lines:\n{tail}",
    if *reached_command { "the guest ended while the command ran" } else { "the guest never reached the command" },
    match panic { Some(p) => format!(" (kernel panic: {p})"), None => " (init failure or no /init? no kernel panic seen)".into() })]
pub struct GuestFailed {
    pub name: String,
    pub reached_command: bool,
    /// The guest kernel's "Kernel panic - ..." line.
    pub panic: Option<String>,
    /// How QEMU ended.
    pub exit: String,
    pub serial_log: String,
    /// The console lines that led there.
    pub tail: String,
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    /// A bad argument: `field` is the option or operand the user typed.
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
    /// VM `vm` is not in a state for the command: what `state` it is in, and the `remedy`.
    pub fn conflict(vm: &str, state: impl Into<String>, remedy: impl Into<String>) -> Error {
        Error::Conflict {
            vm: vm.to_string(),
            state: state.into(),
            remedy: remedy.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Finds `prog` in $PATH (or takes it as a path when it contains a slash).
pub fn which(prog: &str) -> Option<std::path::PathBuf> {
    if prog.contains('/') {
        let p = std::path::PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .map(|d| d.join(prog))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
