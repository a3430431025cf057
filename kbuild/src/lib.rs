//! From a kernel tree to a bootable bzImage + vmlinux with labnet's config fragment
//! (`labnet kernel build`), and the fragment merge that asks the tree's Kconfig what it made
//! of each option (`labnet kernel-config --merge`).
//!
//! Everything runs `make` in the tree (`make -C TREE [O=OBJDIR] ARCH=x86_64 ...`): the
//! kernel's own build system decides, labnet only picks the base config, merges the fragment,
//! checks that Kconfig kept what labnet relies on, and copies the results out.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mountgen::kconfig::{self, CephBuild, Opt, Outcome};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{tool} not found: install it (apt-get install {package}); the kernel build needs it")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{path}: {message}")]
    Tree { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("`make {target}` failed ({status}); last lines of {log}:\n{tail}")]
    Make {
        target: String,
        status: String,
        log: String,
        tail: String,
    },
    #[error("Kconfig dropped or changed {} required option(s) (see above): {}", .lost.len(), .lost.join(", "))]
    RequiredLost { lost: Vec<String> },
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The config a build starts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base {
    /// `make tinyconfig`: the smallest kernel, fastest to build (what CI uses).
    Tinyconfig,
    /// `make defconfig`: the x86_64 default config (seed 000's start).
    Defconfig,
    /// The tree's existing `.config`.
    Keep,
}

/// A `--base` that is none of [`Base`]'s names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected tinyconfig, defconfig or keep")]
pub struct BadBase(pub String);

impl std::str::FromStr for Base {
    type Err = BadBase;
    fn from_str(s: &str) -> Result<Self, BadBase> {
        match s {
            "tinyconfig" => Ok(Base::Tinyconfig),
            "defconfig" => Ok(Base::Defconfig),
            "keep" => Ok(Base::Keep),
            _ => Err(BadBase(s.into())),
        }
    }
}

/// Host programs (and headers) a kernel build needs, with the Debian package to install.
const TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "gcc"),
    ("ld", "binutils"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("bc", "bc"),
    ("perl", "perl"),
];
const HEADERS: &[(&str, &str, &str)] = &[
    ("/usr/include/gelf.h", "libelf (gelf.h)", "libelf-dev"),
    (
        "/usr/include/openssl/ssl.h",
        "openssl headers",
        "libssl-dev",
    ),
];

/// `prog` found in PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Checks the build tools, naming the first missing one and its package.
pub fn check_tools() -> Result<(), Error> {
    for &(tool, package) in TOOLS {
        if which(tool).is_none() {
            return Err(Error::MissingTool { tool, package });
        }
    }
    for &(file, tool, package) in HEADERS {
        if !Path::new(file).exists() {
            return Err(Error::MissingTool { tool, package });
        }
    }
    Ok(())
}

/// Where `make` runs: the source tree, and the object dir when it is not the tree itself.
#[derive(Clone, Debug)]
pub struct Tree {
    pub src: PathBuf,
    pub obj: Option<PathBuf>,
}

impl Tree {
    /// Checks that `src` is a kernel source tree.
    pub fn new(src: &Path, obj: Option<&Path>) -> Result<Tree, Error> {
        let src = std::fs::canonicalize(src).map_err(|e| io(src, e))?;
        if !src.join("Kconfig").is_file() || !src.join("arch/x86").is_dir() {
            return Err(Error::Tree {
                path: src.display().to_string(),
                message: "not a kernel source tree (no Kconfig, or no arch/x86)".into(),
            });
        }
        let obj = match obj {
            None => None,
            Some(o) => {
                std::fs::create_dir_all(o).map_err(|e| io(o, e))?;
                Some(std::fs::canonicalize(o).map_err(|e| io(o, e))?)
            }
        };
        Ok(Tree { src, obj })
    }

    /// The directory that holds `.config`, `vmlinux` and `arch/x86/boot/bzImage`.
    pub fn out_dir(&self) -> &Path {
        self.obj.as_deref().unwrap_or(&self.src)
    }

    pub fn config(&self) -> PathBuf {
        self.out_dir().join(".config")
    }

    fn make(&self) -> Command {
        let mut c = Command::new("make");
        c.arg("-C").arg(&self.src);
        if let Some(o) = &self.obj {
            c.arg(format!("O={}", o.display()));
        }
        // ARCH=x86_64 (not the default x86): 64BIT is then forced on, also from tinyconfig.
        c.arg("ARCH=x86_64");
        c
    }
}

/// Runs one make target, appending its output to `log`; on a TTY, one status line with the
/// newest output line and the elapsed time.
fn run_make(
    tree: &Tree,
    args: &[String],
    log: &Path,
    progress: bool,
    env: &[(&str, &Path)],
) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| io(log, e))?;
    writeln!(f, "### make {}", args.join(" ")).map_err(|e| io(log, e))?;
    let mut cmd = tree.make();
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io(Path::new("make"), e))?;
    // Both streams into one sequence of lines, in arrival order, for the log and the status.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io(
            Path::new("make"),
            std::io::Error::other("no output pipes"),
        ));
    };
    let readers: Vec<_> = [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ]
    .into_iter()
    .map(|r| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    })
    .collect();
    drop(tx);
    let start = Instant::now();
    let mut last_draw = Instant::now() - Duration::from_secs(1);
    let mut tail: std::collections::VecDeque<String> = Default::default();
    for line in rx {
        let _ = writeln!(f, "{line}");
        if progress && last_draw.elapsed() > Duration::from_millis(200) {
            let t = start.elapsed().as_secs();
            let shown: String = line.trim().chars().take(60).collect();
            eprint!(
                "\r\x1b[K[{:2}:{:02}] make {}: {shown}",
                t / 60,
                t % 60,
                args[0]
            );
            last_draw = Instant::now();
        }
        tail.push_back(line);
        if tail.len() > 30 {
            tail.pop_front();
        }
    }
    for r in readers {
        let _ = r.join();
    }
    let status = child.wait().map_err(|e| io(Path::new("make"), e))?;
    if progress {
        eprint!("\r\x1b[K");
    }
    if !status.success() {
        return Err(Error::Make {
            target: args.join(" "),
            status: status.to_string(),
            log: log.display().to_string(),
            tail: tail.into_iter().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(())
}

/// What a merge did: the fragment's textual changes to the `.config`, and what the tree's
/// Kconfig made of each option afterwards (`None` when no tree was there to ask).
#[derive(Debug)]
pub struct MergeReport {
    pub config: PathBuf,
    pub backup: Option<PathBuf>,
    pub changes: Vec<kconfig::Change>,
    pub outcomes: Option<Vec<Outcome>>,
}

impl MergeReport {
    /// Options Kconfig dropped or changed.
    pub fn lost(&self) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .flatten()
            .filter(|o| !o.kept())
            .collect()
    }
    /// Required options Kconfig dropped or changed.
    pub fn required_lost(&self) -> Vec<&Outcome> {
        self.lost().into_iter().filter(|o| o.required).collect()
    }
    /// The report: every textual change, then every option Kconfig did not keep.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.changes {
            s.push_str(&format!("set {c}\n"));
        }
        match &self.outcomes {
            None => s.push_str("not checked against Kconfig (no kernel tree): run `make olddefconfig` in the tree\n"),
            Some(outs) => {
                for o in outs.iter().filter(|o| !o.kept()) {
                    s.push_str(&format!("kconfig {o}\n"));
                }
                let lost = self.lost().len();
                s.push_str(&format!(
                    "{} option(s) requested, {} kept by Kconfig, {} dropped or changed ({} required)\n",
                    outs.len(),
                    outs.len() - lost,
                    lost,
                    self.required_lost().len()
                ));
            }
        }
        s
    }
}

/// Merges `opts` into `config`, keeping the previous file as `<config>.old`, then runs
/// `make olddefconfig` on it in `tree` (when given) and compares, like `merge_config.sh`.
/// `log`: where make's output goes (default: `<config>.labnet-merge.log`).
pub fn merge(
    config: &Path,
    tree: Option<&Tree>,
    opts: &[Opt],
    log: Option<&Path>,
) -> Result<MergeReport, Error> {
    let old = std::fs::read_to_string(config).map_err(|e| io(config, e))?;
    let entries: Vec<(&str, &str)> = opts.iter().map(|o| (o.name, o.value)).collect();
    let (new, changes) = kconfig::merge(&old, &entries);
    let mut backup_name = config.as_os_str().to_owned();
    backup_name.push(".old");
    let backup = PathBuf::from(backup_name);
    std::fs::write(&backup, &old).map_err(|e| io(&backup, e))?;
    std::fs::write(config, new).map_err(|e| io(config, e))?;
    let outcomes = match tree {
        None => None,
        Some(t) => {
            let abs = std::fs::canonicalize(config).map_err(|e| io(config, e))?;
            let default_log = {
                let mut l = abs.as_os_str().to_owned();
                l.push(".labnet-merge.log");
                PathBuf::from(l)
            };
            let log = log.map(Path::to_path_buf).unwrap_or(default_log);
            // KCONFIG_CONFIG: the .config to work on, wherever it is.
            run_make(
                t,
                &["olddefconfig".to_string()],
                &log,
                false,
                &[("KCONFIG_CONFIG", &abs)],
            )?;
            // Kconfig itself saves the file it rewrites as .old: put the pre-merge one back.
            std::fs::write(&backup, &old).map_err(|e| io(&backup, e))?;
            let fin = std::fs::read_to_string(config).map_err(|e| io(config, e))?;
            Some(kconfig::check(&fin, opts))
        }
    };
    Ok(MergeReport {
        config: config.to_path_buf(),
        backup: Some(backup),
        changes,
        outcomes,
    })
}

/// Finds the tree whose Kconfig judges `config`: the directory holding it when that is a
/// source tree or an `O=` object dir (it has a Makefile).
pub fn tree_of(config: &Path) -> Option<Tree> {
    let dir = std::fs::canonicalize(config).ok()?.parent()?.to_path_buf();
    if dir.join("Kconfig").is_file() {
        return Tree::new(&dir, None).ok();
    }
    // An O= dir: its generated Makefile names the source tree.
    let mk = std::fs::read_to_string(dir.join("Makefile")).ok()?;
    let src = mk.lines().find_map(|l| {
        l.trim()
            .strip_prefix("include ")
            .and_then(|p| p.strip_suffix("/Makefile"))
            .map(PathBuf::from)
    })?;
    Tree::new(&src, Some(&dir)).ok()
}

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub tree: Tree,
    pub base: Base,
    pub jobs: usize,
    /// Copy bzImage, vmlinux, .config and the make log here.
    pub out: Option<PathBuf>,
    pub ceph: CephBuild,
    pub vm: bool,
    /// A status line on stderr while make runs.
    pub progress: bool,
}

#[derive(Clone, Debug)]
pub struct Built {
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    pub elapsed: Duration,
    /// Wanted (not required) options Kconfig did not keep.
    pub notes: Vec<String>,
}

/// Base config, fragment, `olddefconfig` check, `make bzImage` (which builds vmlinux), copy out.
pub fn build(o: &BuildOptions) -> Result<Built, Error> {
    check_tools()?;
    let start = Instant::now();
    let t = &o.tree;
    let log_dir = o.out.clone().unwrap_or_else(|| t.out_dir().to_path_buf());
    std::fs::create_dir_all(&log_dir).map_err(|e| io(&log_dir, e))?;
    let log = log_dir.join("build.log");
    let _ = std::fs::remove_file(&log);
    let config = t.config();
    match o.base {
        Base::Tinyconfig => run_make(t, &["tinyconfig".into()], &log, o.progress, &[])?,
        Base::Defconfig => run_make(t, &["defconfig".into()], &log, o.progress, &[])?,
        Base::Keep => {
            if !config.is_file() {
                return Err(Error::Tree {
                    path: config.display().to_string(),
                    message: "--base keep: no .config (run make defconfig, or use --base)".into(),
                });
            }
        }
    }
    let opts = kconfig::options(o.ceph, o.vm);
    let report = merge(&config, Some(t), &opts, Some(&log))?;
    let lost = report.required_lost();
    if !lost.is_empty() {
        return Err(Error::RequiredLost {
            lost: lost.iter().map(|o| o.to_string()).collect(),
        });
    }
    let notes = report.lost().iter().map(|o| o.to_string()).collect();
    run_make(
        t,
        &[format!("-j{}", o.jobs.max(1)), "bzImage".into()],
        &log,
        o.progress,
        &[],
    )
    .map_err(|e| match e {
        Error::Make {
            status, log, tail, ..
        } => Error::Make {
            target: "bzImage".into(),
            status,
            log,
            tail,
        },
        e => e,
    })?;
    let mut built = Built {
        bzimage: t.out_dir().join("arch/x86/boot/bzImage"),
        vmlinux: t.out_dir().join("vmlinux"),
        config: config.clone(),
        log: log.clone(),
        elapsed: start.elapsed(),
        notes,
    };
    if let Some(out) = &o.out {
        for (from, name) in [
            (&built.bzimage, "bzImage"),
            (&built.vmlinux, "vmlinux"),
            (&built.config, "config"),
        ] {
            let to = out.join(name);
            let tmp = out.join(format!(".{name}.tmp"));
            std::fs::copy(from, &tmp).map_err(|e| io(from, e))?;
            std::fs::rename(&tmp, &to).map_err(|e| io(&to, e))?;
        }
        built.bzimage = out.join("bzImage");
        built.vmlinux = out.join("vmlinux");
        built.config = out.join("config");
    }
    Ok(built)
}

/// True when stderr is a terminal (progress line wanted).
pub fn stderr_is_tty() -> bool {
    std::io::stderr().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_parses() {
        assert_eq!("tinyconfig".parse::<Base>().unwrap(), Base::Tinyconfig);
        assert_eq!("keep".parse::<Base>().unwrap(), Base::Keep);
        let e = "allyes".parse::<Base>().unwrap_err();
        assert_eq!(e, BadBase("allyes".into()));
        assert_eq!(
            e.to_string(),
            "\"allyes\": expected tinyconfig, defconfig or keep"
        );
    }

    #[test]
    fn not_a_tree() {
        let d = testkit::temp_dir("kbuild");
        let e = Tree::new(d.path(), None).unwrap_err().to_string();
        assert!(e.contains("not a kernel source tree"), "{e}");
    }

    #[test]
    fn merge_without_tree_keeps_old_and_says_unchecked() {
        let d = testkit::temp_dir("kbuild");
        let c = d.path().join(".config");
        std::fs::write(&c, "CONFIG_CEPH_FS=m\n").unwrap();
        let opts = kconfig::options(CephBuild::Builtin, false);
        let r = merge(&c, None, &opts, None).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join(".config.old")).unwrap(),
            "CONFIG_CEPH_FS=m\n"
        );
        assert!(std::fs::read_to_string(&c)
            .unwrap()
            .contains("CONFIG_CEPH_FS=y\n"));
        assert!(r.render().contains("set CONFIG_CEPH_FS: m -> y"));
        assert!(r.render().contains("not checked against Kconfig"));
        assert!(tree_of(&c).is_none());
    }
}
