//! The CephFS test kernel config fragment of seeds 000 (everything built in) and 001 (ceph as
//! modules), and a merge into an existing `.config` like `scripts/kconfig/merge_config.sh`.
//!
//! Seed 000 lists `CONFIG_FSCACHE` and `CONFIG_FSCACHE_STATS` without a value, which
//! merge_config.sh ignores; seed 001 sets them `=y`, which is what is meant. DEBUG_FS is added
//! because kmount `--debug` writes to dynamic_debug's control file in debugfs.
use std::collections::BTreeMap;
use std::fmt;

/// Whether the Ceph code is built in or built as modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CephBuild {
    /// Seed 000: `=y`, no modules to install in the guest.
    Builtin,
    /// Seed 001: `CONFIG_CEPH_LIB=m`, `CONFIG_CEPH_FS=m`, reloadable with modprobe.
    Modules,
}

/// Which part of the fragment an option belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// What any labnet guest needs: boot (PVH, bzImage), devices, shares, console, network.
    Vm,
    /// The seeds' CephFS client and debug options.
    Ceph,
}

/// One option of the fragment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opt {
    pub name: &'static str,
    /// `y`, `m` or `n`.
    pub value: &'static str,
    pub part: Part,
    /// Losing it (Kconfig drops or changes it) makes `--merge` fail: labnet relies on it.
    pub required: bool,
}

const fn opt(name: &'static str, part: Part, required: bool) -> Opt {
    Opt {
        name,
        value: "y",
        part,
        required,
    }
}

/// The `--vm` part, all built in (a leading `-`: is not set, as in [`CEPH`]). Besides the devices QEMU gives a labnet guest, it holds what
/// the options' dependencies need on a `tinyconfig` base (64BIT, PCI, HYPERVISOR_GUEST, ...),
/// and what virtme-ng's init needs to boot the same kernel (overlayfs, ptys, inotify, ...).
const VM: &[(&str, bool)] = &[
    ("CONFIG_64BIT", true),
    ("CONFIG_SMP", false),
    ("CONFIG_PRINTK", true),
    ("CONFIG_PRINTK_TIME", false),
    ("CONFIG_BUG", false),
    ("CONFIG_MULTIUSER", true),
    ("CONFIG_FUTEX", false),
    ("CONFIG_EPOLL", false),
    ("CONFIG_SIGNALFD", false),
    ("CONFIG_TIMERFD", false),
    ("CONFIG_EVENTFD", false),
    ("CONFIG_SHMEM", false),
    ("CONFIG_AIO", false),
    ("CONFIG_FILE_LOCKING", false),
    ("CONFIG_POSIX_TIMERS", false),
    ("CONFIG_FHANDLE", false),
    ("CONFIG_BINFMT_ELF", true),
    ("CONFIG_BINFMT_SCRIPT", true),
    ("CONFIG_BLK_DEV_INITRD", true),
    ("CONFIG_HYPERVISOR_GUEST", true),
    ("CONFIG_PARAVIRT", false),
    ("CONFIG_PVH", true),
    ("CONFIG_ACPI", true),
    ("CONFIG_PCI", true),
    ("CONFIG_TTY", true),
    ("CONFIG_UNIX98_PTYS", false),
    // Boot time: the 256 BSD pty pairs pty_init registers cost ~0.15 s of a TCG boot
    // (initcall_debug, bench/RESULTS.md); the guest's ptys are UNIX98 ones (devpts).
    ("-CONFIG_LEGACY_PTYS", false),
    ("CONFIG_SERIAL_8250", true),
    ("CONFIG_SERIAL_8250_CONSOLE", true),
    ("CONFIG_VIRTIO_MENU", true),
    ("CONFIG_VIRTIO", true),
    ("CONFIG_VIRTIO_PCI", true),
    ("CONFIG_VIRTIO_MMIO", true),
    ("CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES", true),
    ("CONFIG_VIRTIO_CONSOLE", true),
    ("CONFIG_HW_RANDOM", false),
    ("CONFIG_HW_RANDOM_VIRTIO", true),
    ("CONFIG_NET", true),
    ("CONFIG_INET", true),
    ("CONFIG_UNIX", true),
    ("CONFIG_PACKET", true),
    ("CONFIG_NETDEVICES", true),
    ("CONFIG_NET_CORE", true),
    ("CONFIG_VIRTIO_NET", true),
    ("CONFIG_BLOCK", true),
    ("CONFIG_BLK_DEV", true),
    ("CONFIG_VIRTIO_BLK", true),
    ("CONFIG_SCSI", true),
    ("CONFIG_SCSI_LOWLEVEL", true),
    ("CONFIG_SCSI_VIRTIO", true),
    ("CONFIG_BLK_DEV_SD", true),
    ("CONFIG_MD", false),
    ("CONFIG_BLK_DEV_DM", false),
    ("CONFIG_DM_MULTIPATH", false),
    ("CONFIG_DEVTMPFS", true),
    ("CONFIG_DEVTMPFS_MOUNT", false),
    ("CONFIG_PROC_FS", true),
    ("CONFIG_PROC_SYSCTL", false),
    ("CONFIG_SYSFS", true),
    ("CONFIG_TMPFS", true),
    ("CONFIG_INOTIFY_USER", false),
    ("CONFIG_OVERLAY_FS", false),
    ("CONFIG_EXT4_FS", false),
    ("CONFIG_NETWORK_FILESYSTEMS", true),
    ("CONFIG_NET_9P", true),
    ("CONFIG_NET_9P_VIRTIO", true),
    ("CONFIG_9P_FS", true),
    ("CONFIG_9P_FS_POSIX_ACL", false),
    ("CONFIG_FUSE_FS", true),
    ("CONFIG_VIRTIO_FS", true),
    // `labnet vm dump`: the guest tells QEMU's vmcoreinfo device where its VMCOREINFO is,
    // through the fw_cfg driver (found through ACPI; _CMDLINE lets `qemu_fw_cfg.ioport=`
    // name it by hand); the note exists with CRASH_CORE, which only KEXEC selects.
    ("CONFIG_FW_CFG_SYSFS", true),
    ("CONFIG_FW_CFG_SYSFS_CMDLINE", true),
    ("CONFIG_KEXEC", true),
];

/// The Ceph part (seeds 000/001); a leading `-` means "is not set" (the unwinder is a
/// Kconfig choice: the other members must be unset for FRAME_POINTER's to win). `SECURITY`, `DEBUG_KERNEL`, `UNWINDER_FRAME_POINTER` and
/// `VT` are what `CEPH_FS_SECURITY_LABEL`, `KGDB`, `FRAME_POINTER` and `KGDB_SERIAL_CONSOLE`
/// depend on; without them Kconfig drops those silently.
const CEPH: &[(&str, bool)] = &[
    ("CONFIG_CEPH_LIB", true),
    ("CONFIG_CEPH_FS", true),
    ("CONFIG_CEPH_FSCACHE", false),
    ("CONFIG_CEPH_FS_POSIX_ACL", false),
    ("CONFIG_SECURITY", false),
    ("CONFIG_CEPH_FS_SECURITY_LABEL", false),
    ("CONFIG_CEPH_LIB_PRETTYDEBUG", false),
    ("CONFIG_DEBUG_FS", true),
    ("CONFIG_DYNAMIC_DEBUG", true),
    ("CONFIG_DYNAMIC_DEBUG_CORE", true),
    ("CONFIG_DEBUG_KERNEL", false),
    ("CONFIG_UNWINDER_FRAME_POINTER", false),
    ("-CONFIG_UNWINDER_ORC", false),
    ("-CONFIG_UNWINDER_GUESS", false),
    ("CONFIG_FRAME_POINTER", false),
    ("CONFIG_FSCACHE", false),
    ("CONFIG_FSCACHE_STATS", false),
    ("CONFIG_FS_ENCRYPTION", false),
    ("CONFIG_FS_ENCRYPTION_ALGS", false),
    ("CONFIG_VT", false),
    ("CONFIG_KGDB", false),
    ("CONFIG_KGDB_SERIAL_CONSOLE", false),
    ("CONFIG_XFS_FS", false),
];

/// The fragment's options: the `--vm` part (when `vm`) and the Ceph part.
pub fn options(build: CephBuild, vm: bool) -> Vec<Opt> {
    // A leading `-` means "is not set".
    let entry = |n: &'static str, part, r| match n.strip_prefix('-') {
        Some(n) => Opt {
            value: "n",
            ..opt(n, part, r)
        },
        None => opt(n, part, r),
    };
    let mut v = Vec::new();
    if vm {
        v.extend(VM.iter().map(|&(n, r)| entry(n, Part::Vm, r)));
    }
    for &(n, r) in CEPH {
        let mut o = entry(n, Part::Ceph, r);
        if build == CephBuild::Modules && matches!(n, "CONFIG_CEPH_LIB" | "CONFIG_CEPH_FS") {
            o.value = "m";
        }
        v.push(o);
    }
    if build == CephBuild::Modules {
        v.push(opt("CONFIG_MODULES", Part::Ceph, true));
    }
    v
}

/// (option, value) pairs of the fragment, for [`merge`].
pub fn fragment_entries(build: CephBuild, vm: bool) -> Vec<(&'static str, &'static str)> {
    options(build, vm)
        .into_iter()
        .map(|o| (o.name, o.value))
        .collect()
}

/// The fragment as a file for `merge_config.sh` (or `labnet kernel-config --merge`).
pub fn fragment(build: CephBuild, vm: bool) -> String {
    let mut s = format!(
        "# labnet guest kernel fragment: {}CephFS client, ceph {}\n",
        if vm { "VM devices and boot, " } else { "" },
        match build {
            CephBuild::Builtin => "built in",
            CephBuild::Modules => "as modules",
        }
    );
    let mut part = None;
    for o in options(build, vm) {
        if part != Some(o.part) {
            s.push_str(match o.part {
                Part::Vm => "# --vm: PVH and bzImage boot, virtio-pci/mmio, console, net, disks, 9p, virtiofs, vmcoreinfo\n",
                Part::Ceph => "# CephFS client and debugging\n",
            });
            part = Some(o.part);
        }
        if o.value == "n" {
            s.push_str(&format!("# {} is not set\n", o.name));
        } else {
            s.push_str(&format!("{}={}\n", o.name, o.value));
        }
    }
    s
}

/// The options a `.config` sets: `CONFIG_X=v` lines, and `n` for `# CONFIG_X is not set`.
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for l in text.lines() {
        if let Some(rest) = l
            .strip_prefix("# ")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            if rest.starts_with("CONFIG_") {
                m.insert(rest.to_string(), "n".to_string());
            }
        } else if l.starts_with("CONFIG_") {
            if let Some((k, v)) = l.split_once('=') {
                m.insert(k.to_string(), v.to_string());
            }
        }
    }
    m
}

/// What Kconfig (`make olddefconfig`) made of one requested option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub option: &'static str,
    pub wanted: &'static str,
    /// The final value; `None` when the option is absent (unknown to this tree's Kconfig, or
    /// its menu is off), `Some("n")` for "is not set".
    pub got: Option<String>,
    pub required: bool,
}

impl Outcome {
    /// Kept as requested (`n` also matches an absent option).
    pub fn kept(&self) -> bool {
        match &self.got {
            Some(g) => g == self.wanted,
            None => self.wanted == "n",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.required { "required" } else { "wanted" };
        match &self.got {
            Some(g) if g == "n" => write!(
                f,
                "{}: dropped ({what} {}, now is not set)",
                self.option, self.wanted
            ),
            Some(g) => write!(
                f,
                "{}: changed ({what} {}, now {g})",
                self.option, self.wanted
            ),
            None => write!(
                f,
                "{}: dropped ({what} {}, absent from the final .config)",
                self.option, self.wanted
            ),
        }
    }
}

/// Compares the final `.config` (after `make olddefconfig`) with the requested options, like
/// `merge_config.sh`'s "Value requested ... not in final .config" warnings; one [`Outcome`] per
/// option, in fragment order.
pub fn check(final_config: &str, opts: &[Opt]) -> Vec<Outcome> {
    let m = parse_config(final_config);
    opts.iter()
        .map(|o| Outcome {
            option: o.name,
            wanted: o.value,
            got: m.get(o.name).cloned(),
            required: o.required,
        })
        .collect()
}

/// One change a merge made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub option: String,
    /// Previous value (`None` = absent, `Some("n")` = "is not set").
    pub old: Option<String>,
    pub new: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.old {
            None => write!(f, "{}: (absent) -> {}", self.option, self.new),
            Some(o) => write!(f, "{}: {} -> {}", self.option, o, self.new),
        }
    }
}

/// Merges `entries` into a `.config` text. Existing `CONFIG_X=…` and `# CONFIG_X is not set`
/// lines are replaced in place, missing options are appended. Returns the new text and the
/// changes (unchanged options are not listed). Run `make olddefconfig` afterwards.
pub fn merge(config: &str, entries: &[(&str, &str)]) -> (String, Vec<Change>) {
    let mut lines: Vec<String> = config.lines().map(String::from).collect();
    let mut changes = Vec::new();
    for (opt, val) in entries {
        let want = if *val == "n" {
            format!("# {opt} is not set")
        } else {
            format!("{opt}={val}")
        };
        let set_prefix = format!("{opt}=");
        let unset = format!("# {opt} is not set");
        let pos = lines
            .iter()
            .position(|l| l.starts_with(&set_prefix) || l.trim() == unset);
        match pos {
            Some(i) => {
                let old = lines[i]
                    .strip_prefix(&set_prefix)
                    .map(String::from)
                    .unwrap_or_else(|| "n".into());
                if old != *val {
                    changes.push(Change {
                        option: opt.to_string(),
                        old: Some(old),
                        new: val.to_string(),
                    });
                    lines[i] = want;
                }
            }
            None => {
                changes.push(Change {
                    option: opt.to_string(),
                    old: None,
                    new: val.to_string(),
                });
                lines.push(want);
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    (out, changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_and_appends() {
        let cfg = "CONFIG_A=y\n# CONFIG_CEPH_FS is not set\nCONFIG_CEPH_LIB=m\nCONFIG_XFS_FS=y\n";
        let (out, ch) = merge(
            cfg,
            &[
                ("CONFIG_CEPH_FS", "y"),
                ("CONFIG_CEPH_LIB", "y"),
                ("CONFIG_XFS_FS", "y"),
                ("CONFIG_KGDB", "y"),
            ],
        );
        assert_eq!(
            out,
            "CONFIG_A=y\nCONFIG_CEPH_FS=y\nCONFIG_CEPH_LIB=y\nCONFIG_XFS_FS=y\nCONFIG_KGDB=y\n"
        );
        let s: Vec<String> = ch.iter().map(ToString::to_string).collect();
        assert_eq!(
            s,
            [
                "CONFIG_CEPH_FS: n -> y",
                "CONFIG_CEPH_LIB: m -> y",
                "CONFIG_KGDB: (absent) -> y"
            ]
        );
        // Idempotent.
        let (again, ch2) = merge(&out, &[("CONFIG_CEPH_FS", "y")]);
        assert_eq!(again, out);
        assert!(ch2.is_empty());
    }

    #[test]
    fn no_prefix_confusion() {
        // CONFIG_CEPH_FS must not match CONFIG_CEPH_FSCACHE.
        let (out, _) = merge("CONFIG_CEPH_FSCACHE=y\n", &[("CONFIG_CEPH_FS", "m")]);
        assert_eq!(out, "CONFIG_CEPH_FSCACHE=y\nCONFIG_CEPH_FS=m\n");
    }
}
