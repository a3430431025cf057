//! kmount: mount CephFS inside a test guest from a `ceph mon dump`, without mount.ceph.
//! Runs in busybox initramfs guests, so: no clap, no async, built static (see crate docs).
//! The secret never comes from argv and never reaches a child process.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
use mountgen::plan::{self, Auth, MountRequest, MsMode, Syntax, PRESET_SEED};
use mountgen::{monmap, render, secret, sys, Secret};
use std::io::{Read, Write};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: kmount [OPTIONS] MOUNTPOINT
Mount CephFS with the kernel client from `ceph mon dump` output (no mount.ceph needed).

Monitor map (one of; JSON, json-pretty, quorum_status JSON, text dump or a ceph.conf):
  --mon-dump FILE|-        read it from FILE or stdin
  --mon-dump-cmd CMD       run CMD with /bin/sh -c and read its stdout
                           (e.g. \"ssh host 'cd ceph/build && . ./vstart_environment.sh && ceph mon dump --format=json'\")
  --mon-host ADDRS         a mon_host value instead, e.g. \"[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0]\"
                           (then give --fsid for the new syntax)
  --cmd-timeout SECS       kill --mon-dump-cmd/--fs-ls-cmd after SECS (default 60)
What to mount:
  --name NAME              cephx user, without \"client.\" (default: the only client in --keyring)
  --fs NAME                CephFS name (needed for the new syntax)
  --path PATH              path inside CephFS (default /)
  --fsid UUID              cluster fsid (default: from the dump; must match it)
  --mountpoint DIR         where to mount (or give MOUNTPOINT); created if missing
How:
  --syntax auto|new|old    device syntax (default auto: new if the kernel has it, 5.17+)
  --ms-mode MODE           legacy|crc|secure|prefer-crc|prefer-secure
                           (default: v2 addresses with prefer-crc, v1 if the cluster has no v2)
  --quorum-only            only monitors in the dump's quorum list
  --preset testing         add norequire_active_mds,noshare (the Ceph docs' kernel testing options)
  -o OPTS                  more kernel options, comma separated (no secret/key/name here)
  --fs-ls FILE|--fs-ls-cmd CMD   check --fs against `ceph fs ls --format=json` first
Secret (never on the command line):
  --keyring FILE           keyring with [client.NAME] key = ...
  --secret-file FILE       file holding the base64 key (`ceph auth get-key` output) or a keyring
  --secret-stdin           read the key (or a keyring) from stdin
Extras:
  --conf-out FILE          write a minimal ceph.conf (fsid + mon_host) to FILE
  --debug                  enable dynamic debug for ceph and libceph before mounting
  --no-modprobe            do not try to load modules
  --dry-run                print every step instead of doing it (inputs are still read)
  --show-secret            print the secret in --dry-run output and messages
  -h, --help               this text
  -V, --version            print kmount's version
";

/// A bad command line (kmount prints the usage and exits 2); names the flag.
#[derive(Debug, thiserror::Error)]
enum UsageError {
    #[error("{flag} needs a value")]
    NeedsValue { flag: String },
    #[error("--ms-mode: {0}")]
    MsMode(#[source] mountgen::Error),
    #[error("--preset: unknown preset {0:?} (known: testing)")]
    UnknownPreset(String),
    #[error(
        "--secret: secrets are not taken from the command line (they end up in \
             /proc/PID/cmdline and shell history); use --keyring, --secret-file or --secret-stdin"
    )]
    SecretOnCommandLine,
    #[error("--cmd-timeout: {0:?} is not a number of seconds")]
    CmdTimeout(String),
    #[error("unknown option {0} (see --help)")]
    UnknownOption(String),
    #[error("more than one mount point given")]
    TwoMountPoints,
}

/// Why a mount did not happen (kmount exits 1). Names the flag or file at fault; the
/// secret is never part of one (only its source and entity).
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("no mount point given (MOUNTPOINT or --mountpoint)")]
    NoMountPoint,
    #[error("only one input can come from stdin (--mon-dump -, --keyring -, --secret-file -, --fs-ls -, --secret-stdin)")]
    StdinTwice,
    #[error("give only one of --keyring, --secret-file, --secret-stdin")]
    SecretSourcesTwice,
    #[error("give only one of --mon-dump, --mon-dump-cmd and --mon-host")]
    MonSourcesTwice,
    #[error("no monitor map: give --mon-dump FILE|-, --mon-dump-cmd CMD or --mon-host ADDRS")]
    NoMonMap,
    /// A bad dump, keyring, fs list or plan (the library names the origin and field).
    #[error(transparent)]
    Input(#[from] mountgen::Error),
    /// `flag`'s input file (None: stdin) could not be read.
    #[error("{flag}: {}: {source}", match path { Some(p) => format!("cannot read {p}"), None => "reading stdin".to_string() })]
    Read {
        flag: &'static str,
        path: Option<String>,
        source: std::io::Error,
    },
    /// `--mon-dump-cmd`/`--fs-ls-cmd` did not give its output.
    #[error("{flag}: {}", failure.describe(cmd))]
    Cmd {
        flag: &'static str,
        cmd: String,
        failure: CmdFailure,
    },
    /// No --name, and the secret's source (if any) does not name exactly one client.
    #[error("no --name given{}", match origin { Some(o) => format!(" and {o} does not hold exactly one [client.*] section"), None => String::new() })]
    NoName { origin: Option<String> },
    #[error("--syntax auto: cannot read the kernel release: {0}")]
    KernelRelease(#[source] std::io::Error),
    #[error("--syntax: {0} (or auto)")]
    Syntax(#[source] mountgen::Error),
    /// `entity` is `client.NAME`: the key itself is never shown.
    #[error("add_key(ceph, {entity}): {source}")]
    AddKey {
        entity: String,
        source: std::io::Error,
    },
    #[error("--conf-out: no fsid known (give --fsid)")]
    ConfOutNoFsid,
    #[error("--conf-out: mkdir {dir}: {source}")]
    ConfOutMkdir { dir: String, source: std::io::Error },
    #[error("--conf-out: cannot write {path}: {source}")]
    ConfOutWrite {
        path: String,
        source: std::io::Error,
    },
    #[error("mkdir {target}: {source}")]
    Mkdir {
        target: String,
        source: std::io::Error,
    },
    /// mount(2) failed; `call` is the syscall as printed (a secret only with --show-secret),
    /// `why` kmount's reading of the errno (may be empty).
    #[error("{call}: {source}{}{why}", if why.is_empty() { "" } else { ": " })]
    Mount {
        call: String,
        source: std::io::Error,
        why: String,
    },
}

/// How a `--mon-dump-cmd`/`--fs-ls-cmd` failed.
#[derive(Debug)]
enum CmdFailure {
    Spawn(std::io::Error),
    TimedOut { secs: u64 },
    Wait(std::io::Error),
    Failed(std::process::ExitStatus),
    ReaderPanicked,
    Read(std::io::Error),
    NotUtf8,
}

impl CmdFailure {
    fn describe(&self, cmd: &str) -> String {
        match self {
            CmdFailure::Spawn(e) => format!("cannot run /bin/sh: {e}"),
            CmdFailure::TimedOut { secs } => {
                format!("`{cmd}` still running after {secs}s; killed (--cmd-timeout)")
            }
            CmdFailure::Wait(e) => format!("waiting for `{cmd}`: {e}"),
            CmdFailure::Failed(status) => format!("`{cmd}` failed ({status})"),
            CmdFailure::ReaderPanicked => "reader thread failed".to_string(),
            CmdFailure::Read(e) => format!("reading output of `{cmd}`: {e}"),
            CmdFailure::NotUtf8 => format!("`{cmd}` printed non-UTF-8 output"),
        }
    }
}

#[derive(Default)]
struct Args {
    mon_dump: Option<String>,
    mon_dump_cmd: Option<String>,
    mon_host: Option<String>,
    name: Option<String>,
    fs: Option<String>,
    path: Option<String>,
    fsid: Option<String>,
    mountpoint: Option<String>,
    syntax: Option<String>,
    ms_mode: Option<MsMode>,
    quorum_only: bool,
    options: Vec<String>,
    fs_ls: Option<String>,
    fs_ls_cmd: Option<String>,
    keyring: Option<String>,
    secret_file: Option<String>,
    secret_stdin: bool,
    conf_out: Option<String>,
    debug: bool,
    no_modprobe: bool,
    dry_run: bool,
    show_secret: bool,
    cmd_timeout: Duration,
}

fn parse_args(argv: Vec<String>) -> Result<Option<Args>, UsageError> {
    let mut a = Args {
        cmd_timeout: Duration::from_secs(60),
        ..Args::default()
    };
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        // Accept --opt=value as well as --opt value.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut val = |what: &str| -> Result<String, UsageError> {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| UsageError::NeedsValue {
                    flag: what.to_string(),
                })
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--mon-dump" => a.mon_dump = Some(val("--mon-dump")?),
            "--mon-dump-cmd" => a.mon_dump_cmd = Some(val("--mon-dump-cmd")?),
            "--mon-host" => a.mon_host = Some(val("--mon-host")?),
            "--name" => a.name = Some(val("--name")?),
            "--fs" => a.fs = Some(val("--fs")?),
            "--path" => a.path = Some(val("--path")?),
            "--fsid" => a.fsid = Some(val("--fsid")?),
            "--mountpoint" => a.mountpoint = Some(val("--mountpoint")?),
            "--syntax" => a.syntax = Some(val("--syntax")?),
            "--ms-mode" => a.ms_mode = Some(val("--ms-mode")?.parse().map_err(UsageError::MsMode)?),
            "--quorum-only" => a.quorum_only = true,
            "--preset" => match val("--preset")?.as_str() {
                "testing" | "seed" => a.options.extend(PRESET_SEED.iter().map(|s| s.to_string())),
                p => return Err(UsageError::UnknownPreset(p.to_string())),
            },
            "-o" | "--options" => a.options.extend(
                val("-o")?
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "--fs-ls" => a.fs_ls = Some(val("--fs-ls")?),
            "--fs-ls-cmd" => a.fs_ls_cmd = Some(val("--fs-ls-cmd")?),
            "--keyring" => a.keyring = Some(val("--keyring")?),
            "--secret-file" => a.secret_file = Some(val("--secret-file")?),
            "--secret-stdin" => a.secret_stdin = true,
            "--secret" => return Err(UsageError::SecretOnCommandLine),
            "--conf-out" => a.conf_out = Some(val("--conf-out")?),
            "--cmd-timeout" => {
                let v = val("--cmd-timeout")?;
                let secs: u64 = v.parse().map_err(|_| UsageError::CmdTimeout(v.clone()))?;
                a.cmd_timeout = Duration::from_secs(secs);
            }
            "--debug" => a.debug = true,
            "--no-modprobe" => a.no_modprobe = true,
            "--dry-run" | "-n" => a.dry_run = true,
            "--show-secret" => a.show_secret = true,
            s if s.starts_with('-') && s != "-" => {
                return Err(UsageError::UnknownOption(s.to_string()))
            }
            _ => {
                if a.mountpoint.replace(arg).is_some() {
                    return Err(UsageError::TwoMountPoints);
                }
            }
        }
    }
    Ok(Some(a))
}

/// Runs `cmd` with /bin/sh -c and returns its stdout; stderr passes through. Killed after
/// `timeout` (an ssh to a dead host would otherwise hang the guest's boot).
fn run_cmd(cmd: &str, what: &'static str, timeout: Duration) -> Result<String, Error> {
    let fail = |failure| Error::Cmd {
        flag: what,
        cmd: cmd.to_string(),
        failure,
    };
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(CmdFailure::Spawn(e)))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut b = Vec::new();
        stdout.read_to_end(&mut b).map(|_| b)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(CmdFailure::TimedOut {
                    secs: timeout.as_secs(),
                }));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(fail(CmdFailure::Wait(e))),
        }
    };
    // A grandchild may keep stdout open; the status decides.
    if !status.success() {
        return Err(fail(CmdFailure::Failed(status)));
    }
    let out = reader
        .join()
        .map_err(|_| fail(CmdFailure::ReaderPanicked))?
        .map_err(|e| fail(CmdFailure::Read(e)))?;
    String::from_utf8(out).map_err(|_| fail(CmdFailure::NotUtf8))
}

fn read_input(path: &str, what: &'static str) -> Result<String, Error> {
    let fail = |path: Option<&str>, source| Error::Read {
        flag: what,
        path: path.map(str::to_string),
        source,
    };
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| fail(None, e))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(|e| fail(Some(path), e))
    }
}

struct Ctx {
    dry: bool,
}

impl Ctx {
    /// Prints a step; in dry-run mode that is all that happens.
    fn step(&self, s: &str) {
        if self.dry {
            println!("{s}");
        } else {
            eprintln!("kmount: {s}");
        }
    }
}

/// Busybox guests usually have no debugfs mounted; dynamic_debug's control file lives there
/// unless the kernel also offers /proc/dynamic_debug.
fn ensure_debugfs(ctx: &Ctx) {
    if sys::DYNDBG_CONTROL
        .iter()
        .any(|c| std::path::Path::new(c).exists())
    {
        return;
    }
    if std::path::Path::new("/sys/kernel/debug").is_dir() {
        ctx.step("mount(\"debugfs\", \"/sys/kernel/debug\", \"debugfs\", 0, \"\")");
        if let Err(e) = sys::mount("debugfs", "/sys/kernel/debug", "debugfs", 0, "") {
            warn(&format!("mounting debugfs on /sys/kernel/debug: {e}"));
        }
    }
}

fn warn(s: &str) {
    eprintln!("kmount: warning: {s}");
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.iter().any(|a| a == "--version" || a == "-V") {
        println!("kmount {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let args = match parse_args(argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kmount: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kmount: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Result<(), Error> {
    let ctx = Ctx { dry: a.dry_run };
    let target = a.mountpoint.clone().ok_or(Error::NoMountPoint)?;
    let dash = |o: &Option<String>| o.as_deref() == Some("-");
    let stdin_readers = [
        dash(&a.mon_dump),
        dash(&a.keyring),
        dash(&a.secret_file),
        dash(&a.fs_ls),
        a.secret_stdin,
    ];
    if stdin_readers.iter().filter(|b| **b).count() > 1 {
        return Err(Error::StdinTwice);
    }
    if [a.keyring.is_some(), a.secret_file.is_some(), a.secret_stdin]
        .iter()
        .filter(|b| **b)
        .count()
        > 1
    {
        return Err(Error::SecretSourcesTwice);
    }

    // 1. The monitor map.
    let sources = [
        a.mon_dump.is_some(),
        a.mon_dump_cmd.is_some(),
        a.mon_host.is_some(),
    ];
    if sources.iter().filter(|b| **b).count() > 1 {
        return Err(Error::MonSourcesTwice);
    }
    let (map, origin) = if let Some(p) = &a.mon_dump {
        let origin = if p == "-" {
            "stdin".to_string()
        } else {
            p.clone()
        };
        (
            monmap::parse(&read_input(p, "--mon-dump")?, &origin),
            origin,
        )
    } else if let Some(c) = &a.mon_dump_cmd {
        let origin = format!("`{c}`");
        (
            monmap::parse(&run_cmd(c, "--mon-dump-cmd", a.cmd_timeout)?, &origin),
            origin,
        )
    } else if let Some(h) = &a.mon_host {
        (
            monmap::parse_mon_host(h, "--mon-host"),
            "--mon-host".to_string(),
        )
    } else {
        return Err(Error::NoMonMap);
    };
    let map = map?;
    ctx.step(&format!(
        "# mon map from {origin} ({}): {} mon(s), fsid {}",
        map.format.as_str(),
        map.mons.len(),
        map.fsid.as_deref().unwrap_or("unknown")
    ));

    // 2. The secret (keyring text may also name the user).
    let secret_src: Option<(String, String)> = if let Some(p) = &a.keyring {
        Some((read_input(p, "--keyring")?, p.clone()))
    } else if let Some(p) = &a.secret_file {
        Some((read_input(p, "--secret-file")?, p.clone()))
    } else if a.secret_stdin {
        Some((read_input("-", "--secret-stdin")?, "stdin".into()))
    } else {
        None
    };
    let name = match (&a.name, &secret_src) {
        (Some(n), _) => n.strip_prefix("client.").unwrap_or(n).to_string(),
        (None, Some((t, origin))) => {
            let clients: Vec<String> = secret::keyring_entities(t)
                .into_iter()
                .filter_map(|e| e.strip_prefix("client.").map(String::from))
                .collect();
            match clients.as_slice() {
                [one] => one.clone(),
                _ => {
                    return Err(Error::NoName {
                        origin: Some(origin.clone()),
                    })
                }
            }
        }
        (None, None) => return Err(Error::NoName { origin: None }),
    };
    let secret: Option<Secret> = match &secret_src {
        Some((t, origin)) => {
            let entity = format!("client.{name}");
            let r = if a.keyring.is_some() {
                secret::keyring_secret(t, &entity, origin)
            } else {
                secret::secret_from_text(t, &entity, origin)
            };
            Some(r?)
        }
        None => {
            warn("no --keyring/--secret-file/--secret-stdin: mounting without a cephx secret");
            None
        }
    };

    // 3. Syntax.
    let syntax = match a.syntax.as_deref().unwrap_or("auto") {
        "auto" => {
            if sys::kernel_has_mount_syntax_v2() {
                ctx.step(&format!(
                    "# syntax: new ({} exists)",
                    sys::MOUNT_SYNTAX_V2_PARAM
                ));
                Syntax::New
            } else {
                let rel = sys::kernel_release().map_err(Error::KernelRelease)?;
                let s = plan::syntax_for_kernel(&rel)?;
                ctx.step(&format!("# syntax: {} (kernel {rel})", s.as_str()));
                s
            }
        }
        s => s.parse::<Syntax>().map_err(Error::Syntax)?,
    };

    // 4. The plan, first with key= (the secret goes to the keyring).
    let mut req = MountRequest::new(&name, a.fs.as_deref(), syntax);
    req.path = a.path.clone().unwrap_or_else(|| "/".into());
    req.fsid = a.fsid.clone();
    req.ms_mode = a.ms_mode;
    req.quorum_only = a.quorum_only;
    req.options = a.options.clone();
    req.auth = if secret.is_some() {
        Auth::Key
    } else {
        Auth::None
    };
    let mut plan = plan::build(&map, &req)?;
    for n in &plan.notes {
        warn(n);
    }

    // 5. Optional fs existence check.
    if let Some(fs) = &plan.fs {
        let ls = match (&a.fs_ls, &a.fs_ls_cmd) {
            (Some(p), _) => Some((read_input(p, "--fs-ls")?, p.clone())),
            (None, Some(c)) => Some((run_cmd(c, "--fs-ls-cmd", a.cmd_timeout)?, format!("`{c}`"))),
            (None, None) => None,
        };
        if let Some((t, origin)) = ls {
            monmap::check_fs_exists(&t, fs, &origin)?;
        }
    }

    // 6. Modules.
    if !a.no_modprobe {
        let mut mods: Vec<&str> = Vec::new();
        if !sys::filesystem_available("ceph") {
            mods.push("ceph");
        }
        if plan.ms_mode.is_some_and(MsMode::may_encrypt) {
            // msgr2 secure mode needs AES-GCM; without it libceph loops on
            // "failed to allocate gcm tfm context".
            mods.push("gcm");
        }
        for m in mods {
            ctx.step(&format!("modprobe {m}"));
            if !ctx.dry {
                match sys::which("modprobe") {
                    Some(mp) => match Command::new(mp).arg(m).status() {
                        Ok(s) if s.success() => {}
                        Ok(s) => warn(&format!("modprobe {m} failed ({s}); continuing")),
                        Err(e) => warn(&format!("modprobe {m}: {e}; continuing")),
                    },
                    None if m == "gcm" => warn(
                        "no modprobe in PATH; ms_mode secure needs the kernel's gcm, ghash-generic, \
                         gf128mul, ctr and aes crypto (built in or insmod'ed), else the mount fails \
                         after mount_timeout with \"failed to allocate gcm tfm context\" in dmesg",
                    ),
                    None => warn(&format!("no modprobe in PATH; not loading {m}")),
                }
            }
        }
        if !ctx.dry && !sys::filesystem_available("ceph") {
            warn("ceph is not in /proc/filesystems; the mount will likely fail with ENODEV");
        }
    }

    // 7. The secret into the kernel keyring (mount.ceph's way), else secret=.
    if let Some(s) = &secret {
        let desc = format!("client.{name}");
        let payload = if a.show_secret {
            format!("base64 {}", s.base64())
        } else {
            format!(
                "<{}-byte key from {}>",
                s.raw().len(),
                secret_src.as_ref().map(|x| x.1.as_str()).unwrap_or("?")
            )
        };
        ctx.step(&format!(
            "add_key(\"ceph\", \"{desc}\", {payload}, KEY_SPEC_PROCESS_KEYRING)"
        ));
        if !ctx.dry {
            match sys::add_ceph_key(&desc, s.raw()) {
                Ok(_) => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV) | Some(libc::ENOSYS)) => {
                    warn(&format!(
                        "the kernel has no \"ceph\" key type ({e}); passing secret= instead, \
                         which is hidden in /proc/mounts but visible to mount(2) tracing"
                    ));
                    plan = plan.with_auth(&Auth::Secret(s.clone()));
                }
                Err(source) => {
                    return Err(Error::AddKey {
                        entity: desc,
                        source,
                    })
                }
            }
        }
    }

    // 8. Minimal ceph.conf for the guest's `ceph` CLI.
    if let Some(path) = &a.conf_out {
        let fsid = plan.fsid.clone().ok_or(Error::ConfOutNoFsid)?;
        let conf = map.minimal_conf(&fsid);
        ctx.step(&format!("write {path}:"));
        if ctx.dry {
            print!("{conf}");
        } else {
            if let Some(dir) = std::path::Path::new(path).parent() {
                std::fs::create_dir_all(dir).map_err(|source| Error::ConfOutMkdir {
                    dir: dir.display().to_string(),
                    source,
                })?;
            }
            std::fs::write(path, conf).map_err(|source| Error::ConfOutWrite {
                path: path.clone(),
                source,
            })?;
        }
    }

    // 9. Kernel debug output.
    if a.debug {
        for m in ["ceph", "libceph"] {
            let line = format!("module {m} +p");
            // Where it will go (debugfs is mounted first when needed); both possible files named.
            ctx.step(&format!(
                "echo '{line}' > {}",
                sys::DYNDBG_CONTROL
                    .iter()
                    .rev()
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" (or, if present, ")
                    + ")"
            ));
            if !ctx.dry {
                ensure_debugfs(&ctx);
                let ok = sys::DYNDBG_CONTROL.iter().any(|c| {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(c)
                        .and_then(|mut f| f.write_all(line.as_bytes()))
                        .is_ok()
                });
                if !ok {
                    warn(&format!(
                        "could not write {line:?} to {} (CONFIG_DYNAMIC_DEBUG? debugfs mounted? module loaded?)",
                        sys::DYNDBG_CONTROL.join(" or ")
                    ));
                }
            }
        }
    }

    // 10. The mount.
    if !std::path::Path::new(&target).is_dir() {
        ctx.step(&format!("mkdir -p {}", render::shell_quote(&target)));
        if !ctx.dry {
            std::fs::create_dir_all(&target).map_err(|source| Error::Mkdir {
                target: target.clone(),
                source,
            })?;
        }
    }
    ctx.step(&render::mount_syscall(&plan, &target, a.show_secret));
    if ctx.dry {
        println!(
            "# shell equivalent: {}",
            render::mount_command(&plan, &target, a.show_secret)
        );
        if let (Some(s), true) = (&secret, a.show_secret) {
            let fallback = plan.with_auth(&Auth::Secret(s.clone()));
            println!(
                "# without the ceph key type: {}",
                render::mount_command(&fallback, &target, true)
            );
        }
        return Ok(());
    }
    sys::mount(
        &plan.source,
        &target,
        plan.fstype,
        plan.flags,
        &plan.data(true),
    )
    .map_err(|e| {
        let mut why = sys::explain_mount_errno(&e, plan.fs.as_deref(), &plan.path);
        if plan.ms_mode.is_some_and(MsMode::may_encrypt) && e.raw_os_error() == Some(libc::EHOSTUNREACH) {
            why.push_str("; with ms_mode secure also check dmesg for \"failed to allocate gcm tfm context\" (gcm/ghash/gf128mul modules)");
        }
        Error::Mount {
            call: render::mount_syscall(&plan, &target, a.show_secret),
            source: e,
            why,
        }
    })?;
    println!("kmount: mounted {} on {target}", plan.source);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_error(args: &[&str]) -> UsageError {
        match parse_args(args.iter().map(|s| s.to_string()).collect()) {
            Err(e) => e,
            Ok(_) => panic!("{args:?} parsed"),
        }
    }

    #[test]
    fn usage_errors_name_the_flag() {
        assert!(
            matches!(usage_error(&["--fs"]), UsageError::NeedsValue { flag } if flag == "--fs")
        );
        assert!(matches!(
            usage_error(&["--cmd-timeout=soon"]),
            UsageError::CmdTimeout(v) if v == "soon"
        ));
        assert!(matches!(
            usage_error(&["--secret=AQBz"]),
            UsageError::SecretOnCommandLine
        ));
        assert!(!usage_error(&["--secret=AQBz"]).to_string().contains("AQBz"));
        assert!(matches!(
            usage_error(&["/a", "/b"]),
            UsageError::TwoMountPoints
        ));
        assert_eq!(
            usage_error(&["--bogus"]).to_string(),
            "unknown option --bogus (see --help)"
        );
    }

    #[test]
    fn an_unreadable_input_names_its_flag_and_file() {
        let e = read_input("/nonexistent/keyring", "--keyring").unwrap_err();
        assert!(
            matches!(&e, Error::Read { flag: "--keyring", path: Some(p), .. } if p == "/nonexistent/keyring"),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("--keyring: cannot read /nonexistent/keyring: "));
    }
}
