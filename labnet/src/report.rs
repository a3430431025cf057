//! How a labnet run ends: a failure is printed once as `error: …` with its cause chain (no
//! backtrace unless `--debug`) and ends the process with the status its kind carries
//! ([`exit`]: a bad argument 2, a state conflict 7, ...; 1 for anything else) unless a
//! command says otherwise (e.g. `vm run`'s 124/125/126); printing commands die quietly of
//! SIGPIPE on a closed stdout; commands that change the system check for root first.
use std::fmt;
use std::process::ExitCode;

/// An error that ends the process with a specific exit status.
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub error: anyhow::Error,
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl std::error::Error for Coded {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// `error` that makes labnet exit with `code`.
pub fn with_code(code: u8, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        error: error.into(),
    })
}

/// The lines `labnet` prints for a failure (without `--debug`): `error: TOP` then one
/// `  caused by: …` per cause, skipping a cause its parent's message already quotes (a
/// thiserror `{source}`), so nothing is said twice.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut said: Vec<String> = vec![];
    for cause in e.chain() {
        let s = cause.to_string();
        if s.is_empty() || said.iter().any(|p| p.contains(s.as_str())) {
            continue;
        }
        said.push(s);
    }
    let mut out = String::new();
    for (i, s) in said.iter().enumerate() {
        out.push_str(if i == 0 { "error: " } else { "  caused by: " });
        out.push_str(s);
        out.push('\n');
    }
    if !has_net_admin() && e.chain().any(is_permission_error) {
        out.push_str(
            "  hint: labnet needs root (CAP_NET_ADMIN) for this; run it as root, e.g. with sudo\n",
        );
    }
    out
}

/// labnet's exit statuses (documented in `labnet --help`, the man page and the README).
/// `vm run` and `vm ssh` pass the guest command's own status through instead.
pub mod exit {
    /// A failure at run time (anything not below).
    pub const FAILURE: u8 = 1;
    /// Bad usage (clap exits 2 itself) or a bad config: the file and field are named.
    pub const USAGE: u8 = 2;
    /// `status`/`doctor` found the lab not as configured; `kernel build` lost an option.
    pub const NOT_AS_CONFIGURED: u8 = 3;
    /// Needs root (CAP_NET_ADMIN) or was refused by the system (EPERM/EACCES).
    pub const PERMISSION: u8 = 4;
    /// A host tool labnet runs is not installed (the Debian package is named).
    pub const TOOL_MISSING: u8 = 5;
    /// A process labnet started or needs is not running (a daemon died before READY,
    /// wireguard-go exited before its socket came up).
    pub const NOT_RUNNING: u8 = 6;
    /// The arguments are fine but the VM (or image, or the system) is not in a state for
    /// the command: a VM already running, or running for `vm rm`; started without
    /// --gdb/--multipath; a `vm path` already failed or active; an image that exists; a name
    /// `up` needs taken. The message says what state it is in and what to do.
    pub const CONFLICT: u8 = 7;
}

/// A usage error found after parsing (e.g. two labs given that disagree).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// A command that needs root run without it.
#[derive(Debug, thiserror::Error)]
#[error("labnet {what} needs root (CAP_NET_ADMIN): it works on network namespaces, links and /run/labnet; run it as root, e.g. `sudo labnet {what} …`")]
pub struct NeedsRoot {
    pub what: String,
}

fn netns_code(e: &netns::Error) -> Option<u8> {
    use netns::Error as N;
    match e {
        N::Config(_) => Some(exit::USAGE),
        N::Model(model::Error::Config(_)) => Some(exit::USAGE),
        N::ToolMissing { .. } => Some(exit::TOOL_MISSING),
        N::NotRunning { .. } | N::DaemonFailed { .. } => Some(exit::NOT_RUNNING),
        N::Conflict { .. } | N::NotOurs { .. } => Some(exit::CONFLICT),
        N::Step { source, .. } | N::Repair { source, .. } => netns_code(source),
        N::UndoAfterFailure { error, .. } => netns_code(error),
        _ => None,
    }
}

fn vm_code(e: &vm::Error) -> Option<u8> {
    use vm::Error as V;
    match e {
        V::Invalid { .. } | V::Config(_) | V::Model(model::Error::Config(_)) => Some(exit::USAGE),
        // A --kernel that is no kernel image, a --modules dir without modules.dep, a
        // --module the kernel lacks: bad arguments.
        V::Kernel { .. } | V::NoModulesDep { .. } | V::UnknownModule { .. } => Some(exit::USAGE),
        V::MissingProgram { .. } => Some(exit::TOOL_MISSING),
        V::NotRunning { .. } | V::Virtiofsd { .. } => Some(exit::NOT_RUNNING),
        V::Conflict { .. } | V::AlreadyRunning { .. } => Some(exit::CONFLICT),
        // `vm start --daemonize`: the supervisor's own status (what a foreground `vm start`
        // would have ended with); killed by a signal, it is a process that died.
        V::SupervisorExited { status, .. } => Some(
            status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .filter(|&c| c != 0)
                .unwrap_or(exit::NOT_RUNNING),
        ),
        _ => None,
    }
}

fn image_code(e: &image::Error) -> Option<u8> {
    use image::Error as I;
    match e {
        I::Invalid { .. } => Some(exit::USAGE),
        I::MissingProgram { .. } => Some(exit::TOOL_MISSING),
        I::Exists { .. } => Some(exit::CONFLICT),
        _ => None,
    }
}

/// The status a failure ends labnet with: one a command set ([`with_code`]) wins, then the
/// first cause of a known kind, else [`exit::FAILURE`].
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if let Some(c) = e.chain().find_map(|c| c.downcast_ref::<Coded>()) {
        return c.code;
    }
    for c in e.chain() {
        let code = if let Some(n) = c.downcast_ref::<netns::Error>() {
            netns_code(n)
        } else if let Some(v) = c.downcast_ref::<vm::Error>() {
            vm_code(v)
        } else if let Some(i) = c.downcast_ref::<image::Error>() {
            image_code(i)
        } else if c.is::<model::config::ConfigError>() || c.is::<Usage>() {
            Some(exit::USAGE)
        } else if let Some(model::Error::Config(_)) = c.downcast_ref::<model::Error>() {
            Some(exit::USAGE)
        } else if c.is::<NeedsRoot>() {
            Some(exit::PERMISSION)
        } else {
            None
        };
        if let Some(code) = code {
            return code;
        }
    }
    if !has_net_admin() && e.chain().any(is_permission_error) {
        return exit::PERMISSION;
    }
    exit::FAILURE
}

/// Prints the failure and returns the exit status it carries.
pub fn report(e: &anyhow::Error, debug: bool) -> ExitCode {
    let code = exit_code(e);
    if debug {
        // The full chain and, when captured, the backtrace (anyhow's Debug form).
        eprintln!("error: {e:?}");
    } else {
        eprint!("{}", error_text(e));
    }
    ExitCode::from(code)
}

fn is_permission_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.kind() == std::io::ErrorKind::PermissionDenied;
    }
    if let Some(n) = e.downcast_ref::<nix::errno::Errno>() {
        return matches!(n, nix::errno::Errno::EPERM | nix::errno::Errno::EACCES);
    }
    false
}

/// CAP_NET_ADMIN is in this process's effective set (/proc/self/status CapEff).
pub fn has_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    procfs::process::Process::myself()
        .and_then(|p| p.status())
        .is_ok_and(|st| st.capeff & (1 << CAP_NET_ADMIN) != 0)
}

/// Fails up front, before anything is read or locked, when `what` needs root and this
/// process lacks CAP_NET_ADMIN (instead of a bare EPERM somewhere half-way).
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if has_net_admin() {
        return Ok(());
    }
    Err(NeedsRoot { what: what.into() }.into())
}

/// A closed stdout ends a printing command the Unix way, silently by SIGPIPE (like `ls |
/// head`), instead of a "failed printing to stdout" panic. Commands that supervise
/// something (a daemon, a VM) keep Rust's default of ignoring SIGPIPE: they must always
/// clean up, and they treat a failed write as nothing worse.
pub fn die_quietly_on_closed_stdout() {
    // SAFETY: called first thing in main, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Quoting {
        path: String,
        source: std::io::Error,
    }

    #[test]
    fn chain_without_repeats() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(Quoting {
            path: "/x".into(),
            source: io,
        })
        .context("loading lab a");
        assert_eq!(
            error_text(&e).lines().take(2).collect::<Vec<_>>(),
            ["error: loading lab a", "  caused by: /x: no such file"]
        );
    }

    #[test]
    fn multi_line_messages_stay_multi_line() {
        let e = anyhow::anyhow!("f.toml: TOML parse error at line 1\n  |\n1 | x\n  | ^");
        assert!(
            error_text(&e).starts_with("error: f.toml: TOML parse error at line 1\n  |\n1 | x\n")
        );
    }

    /// Error kinds map to the documented statuses through any context.
    #[test]
    fn kinds_map_to_exit_codes() {
        let config = netns::Error::Config(model::config::ConfigError::Field {
            file: "lab.toml".into(),
            field: "bridge.address".into(),
            message: "expected a CIDR".into(),
        });
        assert_eq!(
            exit_code(&anyhow::Error::new(config).context("labnet up x")),
            exit::USAGE
        );
        let nft = netns::Error::ToolMissing {
            tool: "nft".into(),
            package: "nftables".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let step = netns::Error::Step {
            step: "nft table ip labnet in x".into(),
            source: Box::new(nft),
        };
        assert_eq!(
            exit_code(&anyhow::Error::new(step).context("up")),
            exit::TOOL_MISSING
        );
        let root = anyhow::Error::new(NeedsRoot { what: "up".into() });
        assert_eq!(exit_code(&root), exit::PERMISSION);
        let dead = netns::Error::Step {
            step: "wait for wireguard-go wg0".into(),
            source: Box::new(netns::Error::NotRunning {
                what: "wireguard-go for wg0".into(),
            }),
        };
        assert_eq!(exit_code(&anyhow::Error::new(dead)), exit::NOT_RUNNING);
        assert_eq!(exit_code(&anyhow::anyhow!("something else")), exit::FAILURE);
        // A status a command chose wins over the kind.
        let coded = with_code(125, anyhow::Error::new(NeedsRoot { what: "x".into() }));
        assert_eq!(exit_code(&coded), 125);
    }

    /// vm's kinds: a missing tool, a VM or a VM's daemon not running, a daemonized
    /// supervisor's own status; other run-time failures are 1.
    #[test]
    fn vm_kinds_map_to_exit_codes() {
        use std::os::unix::process::ExitStatusExt;
        let code = |e: vm::Error| exit_code(&anyhow::Error::new(e).context("vm"));
        assert_eq!(
            code(vm::Error::MissingProgram {
                program: "virtiofsd".into(),
                hint: String::new(),
            }),
            exit::TOOL_MISSING
        );
        assert_eq!(
            code(vm::Error::NotRunning { name: "k1".into() }),
            exit::NOT_RUNNING
        );
        assert_eq!(
            code(vm::Error::Kernel {
                path: "/x/bzImage".into(),
                message: "only 12 bytes: not a kernel image".into(),
            }),
            exit::USAGE
        );
        assert_eq!(
            code(vm::Error::UnknownModule {
                name: "cephx".into(),
                dir: "/lib/modules/6.1".into(),
            }),
            exit::USAGE
        );
        assert_eq!(
            code(vm::Error::Virtiofsd {
                tag: "src".into(),
                exited: Some(std::process::ExitStatus::from_raw(1 << 8)),
                secs: 10,
                log_tail: String::new(),
            }),
            exit::NOT_RUNNING
        );
        let exited = |raw| vm::Error::SupervisorExited {
            name: "k1".into(),
            status: std::process::ExitStatus::from_raw(raw),
            log: "error: QEMU did not start".into(),
        };
        assert_eq!(code(exited(126 << 8)), 126);
        assert_eq!(code(exited(libc::SIGKILL)), exit::NOT_RUNNING);
        let nolease = vm::Error::NoLease {
            lab: "x".into(),
            name: "k1".into(),
            mac: "52:54:00:00:00:01".into(),
        };
        assert_eq!(code(nolease), exit::FAILURE);
    }

    /// "You typed it wrong" (2) and "the VM is not in a state for that" (7) differ: a
    /// script can tell them apart, through any context.
    #[test]
    fn bad_arguments_and_state_conflicts_differ() {
        let code = |e: vm::Error| exit_code(&anyhow::Error::new(e).context("vm"));
        assert_eq!(
            code(vm::Error::invalid("--cpus", "must be at least 1")),
            exit::USAGE
        );
        let failed = vm::Error::conflict(
            "m",
            "path1 has already failed",
            "`labnet vm path m restore path1` plugs it back",
        );
        assert_eq!(
            failed.to_string(),
            "VM \"m\": path1 has already failed; `labnet vm path m restore path1` plugs it back"
        );
        assert_eq!(code(failed), exit::CONFLICT);
        assert_eq!(
            code(vm::Error::AlreadyRunning {
                lab: "x".into(),
                name: "k1".into(),
                pid: 42,
            }),
            exit::CONFLICT
        );
        // The other crates' conflicts and bad arguments go the same way.
        let exists = image::Error::Exists {
            name: "deb".into(),
            dir: "/var/lib/labnet/images/deb".into(),
        };
        assert_eq!(
            exit_code(&anyhow::Error::new(exists).context("image build")),
            exit::CONFLICT
        );
        assert_eq!(
            exit_code(&anyhow::Error::new(image::Error::invalid(
                "--format", "\"x\"?"
            ))),
            exit::USAGE
        );
        let taken = netns::Error::Conflict {
            what: "link lxbr exists".into(),
        };
        assert_eq!(exit_code(&anyhow::Error::new(taken)), exit::CONFLICT);
        // Distinct from every other documented status.
        let others = [
            exit::FAILURE,
            exit::USAGE,
            exit::NOT_AS_CONFIGURED,
            exit::PERMISSION,
            exit::TOOL_MISSING,
            exit::NOT_RUNNING,
        ];
        assert!(!others.contains(&exit::CONFLICT));
    }

    #[test]
    fn code_survives_context() {
        let e = with_code(125, anyhow::anyhow!("kernel panic")).context("vm run");
        assert_eq!(
            e.chain()
                .find_map(|c| c.downcast_ref::<Coded>())
                .unwrap()
                .code,
            125
        );
        assert!(error_text(&e).contains("caused by: kernel panic"));
    }
}
