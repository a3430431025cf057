//! `labnet mount` (owned by the mountgen work).
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mountgen::plan::{self, Auth, MountRequest, MsMode, Syntax, PRESET_SEED};
use mountgen::{monmap, render, secret};
use std::io::Read;

pub const MOUNT_EXAMPLES: &str = "\
Examples:
  labnet mount --mon-dump mon_dump.json --name fs --fs a /mnt              # mount -t ceph ... line
  labnet mount --mon-dump mon_dump.json --name fs --fs a --keyring fs.keyring --format fstab
  ssh cephhost ceph mon dump --format=json | labnet mount --mon-dump - --name fs --fs a --format json";

#[derive(Clone, Copy, ValueEnum)]
pub enum SyntaxArg {
    /// New if the kernel (--kernel-release, default the running one) is 5.17 or later.
    Auto,
    New,
    Old,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum MsModeArg {
    Legacy,
    Crc,
    Secure,
    PreferCrc,
    PreferSecure,
}

impl From<MsModeArg> for MsMode {
    fn from(m: MsModeArg) -> MsMode {
        match m {
            MsModeArg::Legacy => MsMode::Legacy,
            MsModeArg::Crc => MsMode::Crc,
            MsModeArg::Secure => MsMode::Secure,
            MsModeArg::PreferCrc => MsMode::PreferCrc,
            MsModeArg::PreferSecure => MsMode::PreferSecure,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Preset {
    /// The Ceph docs' kernel testing options: norequire_active_mds,noshare.
    #[value(alias = "seed")]
    Testing,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AuthArg {
    /// `secret=…` (redacted unless --show-secret); the default when a secret is given.
    Secret,
    /// `key=client.NAME`: the secret is already in the kernel keyring (what kmount does).
    Key,
    /// No cephx option.
    None,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    /// The `mount -t ceph …` command line, shell-quoted.
    Cmd,
    /// The exact mount(2) call.
    Syscall,
    /// An /etc/fstab line.
    Fstab,
    /// A systemd .mount unit.
    Unit,
    /// JSON with every field.
    Json,
    /// All of the above, labelled.
    All,
}

#[derive(Args)]
pub struct MountArgs {
    /// `ceph mon dump` output (JSON, json-pretty, quorum_status JSON or text) or a ceph.conf; `-` = stdin.
    #[arg(long, value_name = "FILE", required_unless_present = "mon_host")]
    mon_dump: Option<String>,
    /// A mon_host value instead of a dump, e.g. "[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0]".
    #[arg(long, conflicts_with = "mon_dump")]
    mon_host: Option<String>,
    /// cephx user without "client." (vstart creates "fs").
    #[arg(long)]
    name: String,
    /// CephFS name (vstart creates "a"); needed for the new syntax.
    #[arg(long)]
    fs: Option<String>,
    /// Path inside CephFS.
    #[arg(long, default_value = "/")]
    path: String,
    /// Cluster fsid; must match the dump's if it has one.
    #[arg(long)]
    fsid: Option<String>,
    /// Where the file system is mounted.
    #[arg(default_value = "/mnt")]
    mountpoint: String,
    /// Device syntax: new (NAME@FSID.FS=/PATH, mon_addr=) or old (MON:/PATH).
    #[arg(long, value_enum, default_value = "auto")]
    syntax: SyntaxArg,
    /// Kernel release deciding --syntax auto (default: the running kernel).
    #[arg(long, value_name = "REL")]
    kernel_release: Option<String>,
    /// Default: v2 addresses with prefer-crc (v1 without ms_mode if the cluster has no v2).
    #[arg(long, value_enum)]
    ms_mode: Option<MsModeArg>,
    /// Only monitors in the dump's quorum list.
    #[arg(long)]
    quorum_only: bool,
    /// Add a named set of options.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// More kernel options, comma separated (repeatable).
    #[arg(short = 'o', long = "options", value_name = "OPTS")]
    options: Vec<String>,
    /// Keyring holding [client.NAME] key = ….
    #[arg(long, group = "secret_src")]
    keyring: Option<String>,
    /// File with the base64 key (`ceph auth get-key`) or a keyring.
    #[arg(long, group = "secret_src")]
    secret_file: Option<String>,
    /// Read the key from stdin.
    #[arg(long, group = "secret_src")]
    secret_stdin: bool,
    /// How the printed mount authenticates.
    #[arg(long, value_enum)]
    auth: Option<AuthArg>,
    /// Print the secret instead of <redacted>.
    #[arg(long)]
    show_secret: bool,
    /// `ceph fs ls --format=json` output to check --fs against.
    #[arg(long, value_name = "FILE")]
    fs_ls: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "cmd")]
    format: OutFormat,
}

fn read(path: &str, what: &str) -> Result<String> {
    if path == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .with_context(|| format!("{what}: reading stdin"))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("{what}: cannot read {path}"))
    }
}

pub fn mount(a: MountArgs) -> Result<()> {
    if a.secret_stdin && a.mon_dump.as_deref() == Some("-") {
        bail!("--secret-stdin and --mon-dump - cannot both read stdin");
    }
    let map = match (&a.mon_dump, &a.mon_host) {
        (Some(p), _) => monmap::parse(&read(p, "--mon-dump")?, if p == "-" { "stdin" } else { p })?,
        (None, Some(h)) => monmap::parse_mon_host(h, "--mon-host")?,
        (None, None) => bail!("give --mon-dump or --mon-host"),
    };
    let syntax = match a.syntax {
        SyntaxArg::New => Syntax::New,
        SyntaxArg::Old => Syntax::Old,
        SyntaxArg::Auto => {
            let rel = match &a.kernel_release {
                Some(r) => r.clone(),
                None => mountgen::sys::kernel_release()
                    .context("--syntax auto: reading the kernel release")?,
            };
            plan::syntax_for_kernel(&rel)?
        }
    };
    let name = a
        .name
        .strip_prefix("client.")
        .unwrap_or(&a.name)
        .to_string();
    let entity = format!("client.{name}");
    let secret = if let Some(p) = &a.keyring {
        Some(secret::keyring_secret(&read(p, "--keyring")?, &entity, p)?)
    } else if let Some(p) = &a.secret_file {
        Some(secret::secret_from_text(
            &read(p, "--secret-file")?,
            &entity,
            p,
        )?)
    } else if a.secret_stdin {
        Some(secret::secret_from_text(
            &read("-", "--secret-stdin")?,
            &entity,
            "stdin",
        )?)
    } else {
        None
    };
    let auth = match (a.auth, secret) {
        (Some(AuthArg::None), _) => Auth::None,
        (Some(AuthArg::Key), _) => Auth::Key,
        (Some(AuthArg::Secret) | None, Some(s)) => Auth::Secret(s),
        (Some(AuthArg::Secret), None) => {
            bail!("--auth secret needs --keyring, --secret-file or --secret-stdin")
        }
        (None, None) => Auth::None,
    };
    let mut req = MountRequest::new(&name, a.fs.as_deref(), syntax);
    req.path = a.path.clone();
    req.fsid = a.fsid.clone();
    req.ms_mode = a.ms_mode.map(Into::into);
    req.quorum_only = a.quorum_only;
    if let Some(Preset::Testing) = a.preset {
        req.options
            .extend(PRESET_SEED.iter().map(|s| s.to_string()));
    }
    req.options.extend(
        a.options
            .iter()
            .flat_map(|o| o.split(','))
            .filter(|s| !s.is_empty())
            .map(String::from),
    );
    req.auth = auth;
    let p = plan::build(&map, &req)?;
    if let (Some(fs), Some(ls)) = (&p.fs, &a.fs_ls) {
        monmap::check_fs_exists(&read(ls, "--fs-ls")?, fs, ls)?;
    }
    for n in &p.notes {
        eprintln!("labnet mount: note: {n}");
    }
    let (t, r) = (a.mountpoint.as_str(), a.show_secret);
    let helper = match a.format {
        OutFormat::Fstab | OutFormat::Unit | OutFormat::All => helper_plan(&a, &p, &name)?,
        _ => p.clone(),
    };
    match a.format {
        OutFormat::Cmd => println!("{}", render::mount_command(&p, t, r)),
        OutFormat::Syscall => println!("{}", render::mount_syscall(&p, t, r)),
        OutFormat::Fstab => println!("{}", render::fstab_line(&helper, t, r)),
        OutFormat::Unit => print!("{}", render::systemd_unit(&helper, t, r)),
        OutFormat::Json => print!("{}", render::to_json(&p, t, r)),
        OutFormat::All => {
            println!("# command\n{}\n", render::mount_command(&p, t, r));
            println!("# mount(2)\n{}\n", render::mount_syscall(&p, t, r));
            println!("# /etc/fstab\n{}\n", render::fstab_line(&helper, t, r));
            println!(
                "# /etc/systemd/system/{}\n{}",
                render::unit_name(t),
                render::systemd_unit(&helper, t, r)
            );
            print!("# json\n{}", render::to_json(&p, t, r));
        }
    }
    Ok(())
}

/// The plan as fstab lines and .mount units need it. Those are mounted by mount(8), which
/// runs mount.ceph: it reads a bare key file itself (`secretfile=`) or, given only `name=`,
/// finds the key in /etc/ceph/ceph.client.NAME.keyring. So they never carry the secret
/// inline (unless --show-secret asks for exactly that).
fn helper_plan(a: &MountArgs, p: &plan::MountPlan, name: &str) -> Result<plan::MountPlan> {
    if a.show_secret || matches!(a.auth, Some(AuthArg::Key | AuthArg::None)) || !p.has_secret() {
        return Ok(p.clone());
    }
    let standard = format!("/etc/ceph/ceph.client.{name}.keyring");
    let keyring = match (&a.secret_file, &a.keyring) {
        (Some(f), _) => {
            if !read(f, "--secret-file")?.contains('[') {
                let abs = std::path::absolute(f).with_context(|| format!("--secret-file {f}"))?;
                return Ok(p.with_auth(&Auth::SecretFile(abs.display().to_string())));
            }
            f
        }
        (None, Some(k)) => k,
        (None, None) => bail!(
            "--format fstab/unit: mount.ceph reads the key when it mounts, so give it a file: \
             --secret-file FILE (the bare key, `ceph auth get-key client.{name}`) or --keyring \
             FILE (or --show-secret to put the secret inline)"
        ),
    };
    let abs = std::path::absolute(keyring).with_context(|| keyring.to_string())?;
    if abs != std::path::Path::new(&standard) {
        eprintln!(
            "labnet mount: note: mount.ceph finds the key of client.{name} in {standard}: \
             install -m 600 {} {standard}",
            abs.display()
        );
    }
    Ok(p.with_auth(&Auth::None))
}
