//! The test file: `[defaults]` and one `[[target]]` per run. Every key is the `labnet vm run`
//! flag of the same name (`kernel`, `modules`, `module`, `share`, `add`, `append`, `mem`,
//! `cpus`, `machine`, `accel`, `timeout`, `lab`), plus `name`, `command` or `script`, and
//! `tree` (a kernel build tree: its `arch/x86/boot/bzImage`), and `image` (a `labnet image`
//! booted instead, the command run over ssh). A target's key replaces the
//! default's (lists too). Relative paths are relative to the file's directory.
//!
//! [`parse`] checks the file alone (syntax, keys, names, one kernel and one command per
//! target); [`Target::options`] then checks what the files it names (kernel, shares, added
//! files) — both before any VM starts.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vm::initramfs::RunCmd;

use crate::Error;

/// Without `timeout`: generous for a TCG boot plus a test.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// Where a target's `script` lands in the generated initramfs (run with `sh`).
pub const SCRIPT_IN_GUEST: &str = "/labnet-test/script";

/// One `[[target]]` (or `[defaults]`) as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: Option<String>,
    command: Option<String>,
    script: Option<PathBuf>,
    kernel: Option<PathBuf>,
    tree: Option<PathBuf>,
    modules: Option<PathBuf>,
    module: Option<Vec<String>>,
    share: Option<Vec<String>>,
    add: Option<Vec<String>>,
    lab: Option<String>,
    timeout: Option<u64>,
    mem: Option<String>,
    cpus: Option<u32>,
    machine: Option<String>,
    accel: Option<String>,
    append: Option<String>,
    image: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    defaults: Entry,
    #[serde(default)]
    target: Vec<Entry>,
}

/// What the target boots and runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A shell command line (`command = "…"`).
    Shell(String),
    /// A host script (`script = "…"`), added to the initramfs and run with `sh`.
    Script(PathBuf),
}

/// One target, defaults applied, paths made absolute.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    /// None: the lab `labnet test` was given (`--lab`, $LABNET_LAB, ...).
    pub lab: Option<String>,
    /// The kernel to boot; empty for an image target booting the image's own kernel.
    pub kernel: PathBuf,
    /// A `labnet image` to boot (an overlay of it) instead of the generated initramfs; the
    /// command then runs over ssh.
    pub image: Option<String>,
    pub command: Command,
    pub modules: Option<PathBuf>,
    pub module: Vec<String>,
    pub share: Vec<String>,
    pub add: Vec<String>,
    pub timeout: Duration,
    pub mem: Option<String>,
    pub cpus: Option<u32>,
    pub machine: Option<String>,
    pub accel: Option<String>,
    pub append: Option<String>,
}

/// Reads and parses a test file (see [`parse`]).
pub fn load(path: &Path) -> Result<Vec<Target>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    parse(&text, &base).map_err(|e| e.in_file(path))
}

/// Parses a test file's text; relative paths are taken from `base`. Touches no files.
pub fn parse(text: &str, base: &Path) -> Result<Vec<Target>, Error> {
    let doc: Doc = toml::from_str(text).map_err(|e| Error::Syntax(e.to_string()))?;
    if doc.defaults.name.is_some() {
        return Err(Error::field(
            "defaults.name",
            "a name belongs to one [[target]]",
        ));
    }
    if doc.target.is_empty() {
        return Err(Error::field("target", "no [[target]] in the file"));
    }
    let mut out: Vec<Target> = vec![];
    for (i, t) in doc.target.iter().enumerate() {
        let at = |field: &str| match &t.name {
            Some(n) => format!("target[{i}] ({n}).{field}"),
            None => format!("target[{i}].{field}"),
        };
        let name = t
            .name
            .clone()
            .ok_or_else(|| Error::field(&at("name"), "missing"))?;
        vm::naming::check_name(&name).map_err(|_| {
            Error::field(
                &at("name"),
                format!("{name:?}: 1-63 of a-z, 0-9, '-' (it is the target's VM name)"),
            )
        })?;
        if out.iter().any(|o| o.name == name) {
            return Err(Error::field(&at("name"), format!("{name:?} appears twice")));
        }
        let d = &doc.defaults;
        let path = |p: &PathBuf| absolute(p, base);
        // The target's own kernel/tree wins over the defaults' as a pair.
        let (kernel, tree) = if t.kernel.is_some() || t.tree.is_some() {
            (&t.kernel, &t.tree)
        } else {
            (&d.kernel, &d.tree)
        };
        let kernel =
            match (kernel, tree) {
                (Some(_), Some(_)) => {
                    return Err(Error::field(&at("kernel"), "give kernel or tree, not both"))
                }
                (Some(k), None) => path(k),
                (None, Some(tr)) => path(tr).join("arch/x86/boot/bzImage"),
                (None, None) if t.image.is_some() || d.image.is_some() => PathBuf::new(),
                (None, None) => return Err(Error::field(
                    &at("kernel"),
                    "missing (kernel = \"…/bzImage\" or tree = \"…/linux\", here or in [defaults])",
                )),
            };
        let (command, script) = if t.command.is_some() || t.script.is_some() {
            (&t.command, &t.script)
        } else {
            (&d.command, &d.script)
        };
        let command = match (command, script) {
            (Some(_), Some(_)) => {
                return Err(Error::field(
                    &at("command"),
                    "give command or script, not both",
                ))
            }
            (Some(c), None) if c.trim().is_empty() => {
                return Err(Error::field(&at("command"), "empty"))
            }
            (Some(c), None) => Command::Shell(c.clone()),
            (None, Some(s)) => Command::Script(path(s)),
            (None, None) => {
                return Err(Error::field(
                    &at("command"),
                    "missing (command = \"…\" or script = \"…\", here or in [defaults])",
                ))
            }
        };
        let timeout = t.timeout.or(d.timeout).unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout == 0 {
            return Err(Error::field(&at("timeout"), "must be at least 1 s"));
        }
        let or = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        let list = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| {
            a.clone().or_else(|| b.clone()).unwrap_or_default()
        };
        // Shares and added files are HOST[:…]: only the host part is a path.
        let share = list(&t.share, &d.share)
            .iter()
            .map(|s| absolute_host_part(s, base))
            .collect();
        let add = list(&t.add, &d.add)
            .iter()
            .map(|s| absolute_host_part(s, base))
            .collect();
        out.push(Target {
            lab: or(&t.lab, &d.lab),
            kernel,
            image: or(&t.image, &d.image),
            command,
            modules: t.modules.as_ref().or(d.modules.as_ref()).map(path),
            module: list(&t.module, &d.module),
            share,
            add,
            timeout: Duration::from_secs(timeout),
            mem: or(&t.mem, &d.mem),
            cpus: t.cpus.or(d.cpus),
            machine: or(&t.machine, &d.machine),
            accel: or(&t.accel, &d.accel),
            append: or(&t.append, &d.append),
            name,
        });
    }
    Ok(out)
}

fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

fn absolute(p: &Path, base: &Path) -> PathBuf {
    let p = expand_home(p);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// `HOST:REST` (a share's `DIR[:TAG]`, an add's `HOST:/GUEST`) with HOST made absolute.
fn absolute_host_part(s: &str, base: &Path) -> String {
    match s.split_once(':') {
        Some((h, rest)) => format!("{}:{rest}", absolute(Path::new(h), base).display()),
        None => absolute(Path::new(s), base).display().to_string(),
    }
}

impl Target {
    /// The VM the target runs as: its name, in its lab (or `lab`), the generated initramfs
    /// running its command. Checks the files it names; errors name the target and the key.
    pub fn options(&self, lab: &str) -> Result<vm::supervise::Options, Error> {
        let lab = self.lab.as_deref().unwrap_or(lab);
        let at = |field: &str| format!("target {}: {field}", self.name);
        let bad = |field: &str| {
            let f = at(field);
            move |e: vm::Error| Error::field(&f, e.to_string())
        };
        if self.image.is_some() {
            return self.image_options(lab);
        }
        let mut o = vm::supervise::Options::new(lab, &self.name, &self.kernel);
        if !self.kernel.is_file() {
            let hint = if self.kernel.ends_with("arch/x86/boot/bzImage") {
                " (build the tree: labnet kernel build --tree DIR)"
            } else {
                ""
            };
            return Err(Error::field(
                &at("kernel"),
                format!("{}: no such file{hint}", self.kernel.display()),
            ));
        }
        o.modules = self.modules.clone();
        o.extra_modules = self.module.clone();
        o.add = self
            .add
            .iter()
            .map(|s| vm::initramfs::parse_add(s))
            .collect::<Result<_, _>>()
            .map_err(bad("add"))?;
        o.run = Some(match &self.command {
            Command::Shell(c) => RunCmd::Shell(c.clone()),
            Command::Script(s) => {
                if !s.is_file() {
                    return Err(Error::field(
                        &at("script"),
                        format!("{}: no such file", s.display()),
                    ));
                }
                o.add.push((s.clone(), SCRIPT_IN_GUEST.into()));
                RunCmd::Argv(vec!["sh".into(), SCRIPT_IN_GUEST.into()])
            }
        });
        o.timeout = Some(self.timeout);
        self.machine_options(&mut o)?;
        Ok(o)
    }

    /// What both kinds of target set alike: shares, machine, memory, CPUs, accelerator and
    /// the kernel command line. A machine not given stays the default of its kind (microvm;
    /// an image's q35, set by `image_boot::apply`).
    fn machine_options(&self, o: &mut vm::supervise::Options) -> Result<(), Error> {
        let bad = |field: &str| {
            let f = format!("target {}: {field}", self.name);
            move |e: vm::Error| Error::field(&f, e.to_string())
        };
        o.shares = self
            .share
            .iter()
            .map(|s| vm::qemu::Share::parse(s))
            .collect::<Result<_, _>>()
            .map_err(bad("share"))?;
        if let Some(m) = &self.machine {
            o.machine = vm::qemu::Machine::parse(m).map_err(bad("machine"))?;
        }
        if let Some(m) = &self.mem {
            o.mem = m.clone();
        }
        if let Some(c) = self.cpus {
            o.cpus = c;
        }
        if let Some(a) = &self.accel {
            o.accel = vm::accel::Choice::parse(a).map_err(bad("accel"))?;
        }
        o.append = self.append.clone();
        Ok(())
    }

    /// An image target's VM: an overlay of the image booting its kernel (or the target's),
    /// started like `vm start --image`; its command runs over ssh, so the VM has none.
    fn image_options(&self, lab: &str) -> Result<vm::supervise::Options, Error> {
        let at = |field: &str| format!("target {}: {field}", self.name);
        let bad = |field: &str| {
            let f = at(field);
            move |e: vm::Error| Error::field(&f, e.to_string())
        };
        let name = self.image.as_deref().unwrap_or_default();
        let img =
            image::store::load(name).map_err(|e| Error::field(&at("image"), e.to_string()))?;
        let own_kernel = self.kernel.as_os_str().is_empty();
        let kernel = if own_kernel {
            vm::image_boot::default_kernel(&img)
        } else {
            self.kernel.clone()
        };
        if !kernel.is_file() {
            return Err(Error::field(
                &at(if own_kernel { "image" } else { "kernel" }),
                format!("{}: no such file", kernel.display()),
            ));
        }
        if let Command::Script(s) = &self.command {
            if !s.is_file() {
                return Err(Error::field(
                    &at("script"),
                    format!("{}: no such file", s.display()),
                ));
            }
        }
        if !self.add.is_empty() || !self.module.is_empty() || self.modules.is_some() {
            return Err(Error::field(
                &at("image"),
                "an image target boots the image's disk: add, module and modules are for the generated initramfs",
            ));
        }
        let mut o = vm::supervise::Options::new(lab, &self.name, &kernel);
        self.machine_options(&mut o)?;
        vm::image_boot::apply(&mut o, &img, own_kernel, self.machine.is_some())
            .map_err(bad("image"))?;
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, Path::new("/t")).unwrap_err().to_string()
    }

    #[test]
    fn defaults_apply_and_targets_override() {
        let t = parse(
            r#"
[defaults]
tree = "linux"
timeout = 60
module = ["ceph"]
command = "true"

[[target]]
name = "a"

[[target]]
name = "b"
kernel = "/boot/vmlinuz-6.1"
module = []
script = "t/b.sh"
share = ["src:src", "/abs"]
add = ["kmount:/bin/kmount"]
timeout = 5
"#,
            Path::new("/t"),
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].kernel, Path::new("/t/linux/arch/x86/boot/bzImage"));
        assert_eq!(t[0].command, Command::Shell("true".into()));
        assert_eq!(t[0].module, ["ceph"]);
        assert_eq!(t[0].timeout, Duration::from_secs(60));
        assert_eq!(t[1].kernel, Path::new("/boot/vmlinuz-6.1"));
        assert_eq!(t[1].command, Command::Script("/t/t/b.sh".into()));
        assert!(t[1].module.is_empty());
        assert_eq!(t[1].share, ["/t/src:src", "/abs"]);
        assert_eq!(t[1].add, ["/t/kmount:/bin/kmount"]);
        assert_eq!(t[1].timeout, Duration::from_secs(5));
    }

    #[test]
    fn mistakes_name_the_target_and_key() {
        assert!(
            err("[[target]]\nname = \"a\"\nkernal = \"x\"\n").contains("unknown field `kernal`")
        );
        assert_eq!(
            err("[[target]]\nname = \"a\"\ncommand = \"true\"\n"),
            "target[0] (a).kernel: missing (kernel = \"…/bzImage\" or tree = \"…/linux\", here or in [defaults])"
        );
        assert_eq!(
            err("[[target]]\nname = \"a\"\nkernel = \"k\"\n"),
            "target[0] (a).command: missing (command = \"…\" or script = \"…\", here or in [defaults])"
        );
        assert_eq!(
            err("[[target]]\nname = \"A b\"\nkernel = \"k\"\ncommand = \"x\"\n"),
            "target[0] (A b).name: \"A b\": 1-63 of a-z, 0-9, '-' (it is the target's VM name)"
        );
        assert_eq!(
            err("[defaults]\nkernel = \"k\"\ncommand = \"x\"\n[[target]]\nname = \"a\"\n[[target]]\nname = \"a\"\n"),
            "target[1] (a).name: \"a\" appears twice"
        );
        assert_eq!(
            err("[[target]]\nname = \"a\"\nkernel = \"k\"\ntree = \"t\"\ncommand = \"x\"\n"),
            "target[0] (a).kernel: give kernel or tree, not both"
        );
        assert_eq!(
            err("[defaults]\nkernel = \"k\"\n"),
            "target: no [[target]] in the file"
        );
        assert_eq!(
            err("[defaults]\nname = \"x\"\n[[target]]\nname = \"a\"\n"),
            "defaults.name: a name belongs to one [[target]]"
        );
        assert_eq!(
            err("[[target]]\nname = \"a\"\nkernel = \"k\"\ncommand = \"x\"\ntimeout = 0\n"),
            "target[0] (a).timeout: must be at least 1 s"
        );
    }

    #[test]
    fn options_check_the_files() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("bzImage");
        std::fs::write(&k, vec![0u8; 8192]).unwrap();
        let text = format!(
            "[[target]]\nname = \"a\"\nkernel = \"{}\"\nscript = \"s.sh\"\nmachine = \"q35\"\nmem = \"512M\"\n",
            k.display()
        );
        let t = &parse(&text, d.path()).unwrap()[0];
        let e = t.options("lab1").unwrap_err().to_string();
        assert!(
            e.starts_with("target a: script: ") && e.ends_with("s.sh: no such file"),
            "{e}"
        );
        std::fs::write(d.path().join("s.sh"), "echo hi\n").unwrap();
        let o = t.options("lab1").unwrap();
        assert_eq!(o.lab, "lab1");
        assert_eq!(o.name, "a");
        assert_eq!(o.machine, vm::qemu::Machine::Q35);
        assert_eq!(o.mem, "512M");
        assert_eq!(
            o.run,
            Some(RunCmd::Argv(vec!["sh".into(), SCRIPT_IN_GUEST.into()]))
        );
        assert_eq!(
            o.add,
            [(d.path().join("s.sh"), SCRIPT_IN_GUEST.to_string())]
        );
        assert_eq!(o.timeout, Some(Duration::from_secs(DEFAULT_TIMEOUT_SECS)));

        let t = &parse(
            "[[target]]\nname = \"b\"\ntree = \"nolinux\"\ncommand = \"x\"\nlab = \"own\"\n",
            d.path(),
        )
        .unwrap()[0];
        let e = t.options("lab1").unwrap_err().to_string();
        assert!(
            e.ends_with("(build the tree: labnet kernel build --tree DIR)"),
            "{e}"
        );
        let t = &parse(
            &format!("[[target]]\nname = \"c\"\nkernel = \"{}\"\ncommand = \"x\"\nshare = [\"nodir:x\"]\n", k.display()),
            d.path(),
        )
        .unwrap()[0];
        let e = t.options("lab1").unwrap_err().to_string();
        assert!(e.starts_with("target c: share: --share: "), "{e}");
    }

    /// The README's CephFS example parses, with the keys it documents.
    #[test]
    fn cephfs_example_parses() {
        let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cephfs.toml"));
        let t = load(p).unwrap();
        let dir = p.parent().unwrap();
        assert_eq!(
            t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["cephfs-write-read", "cephfs-debug"]
        );
        assert_eq!(
            t[0].kernel,
            expand_home(Path::new("~/linux/arch/x86/boot/bzImage"))
        );
        assert_eq!(t[0].timeout, Duration::from_secs(300));
        assert_eq!(
            t[0].add[1],
            format!("{}:/etc/ceph/fs.keyring", dir.join("fs.keyring").display())
        );
        let Command::Shell(c) = &t[0].command else {
            panic!("{:?}", t[0].command)
        };
        for step in [
            "kmount --mon-dump /etc/ceph/mon_dump.json",
            "> /mnt/labnet-test-f",
            "umount /mnt",
        ] {
            assert!(c.contains(step), "{c}");
        }
    }
}
