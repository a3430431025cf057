//! The CephFS test kernel config fragment of seeds 000 (everything built in) and 001 (ceph as
//! modules), and a merge into an existing `.config` like `scripts/kconfig/merge_config.sh`.
//!
//! Seed 000 lists `CONFIG_FSCACHE` and `CONFIG_FSCACHE_STATS` without a value, which
//! merge_config.sh ignores; seed 001 sets them `=y`, which is what is meant. DEBUG_FS is added
//! because kmount `--debug` writes to dynamic_debug's control file in debugfs.
use std::fmt;

/// Whether the Ceph code is built in or built as modules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CephBuild {
    /// Seed 000: `=y`, no modules to install in the guest.
    Builtin,
    /// Seed 001: `CONFIG_CEPH_LIB=m`, `CONFIG_CEPH_FS=m`, reloadable with modprobe.
    Modules,
}

/// (option, value) pairs of the fragment. Values are `y`, `m` or `n`.
pub fn fragment_entries(build: CephBuild) -> Vec<(&'static str, &'static str)> {
    let ceph = match build {
        CephBuild::Builtin => "y",
        CephBuild::Modules => "m",
    };
    vec![
        ("CONFIG_CEPH_LIB", ceph),
        ("CONFIG_CEPH_FS", ceph),
        ("CONFIG_CEPH_FSCACHE", "y"),
        ("CONFIG_CEPH_FS_POSIX_ACL", "y"),
        ("CONFIG_CEPH_FS_SECURITY_LABEL", "y"),
        ("CONFIG_CEPH_LIB_PRETTYDEBUG", "y"),
        ("CONFIG_DEBUG_FS", "y"),
        ("CONFIG_DYNAMIC_DEBUG", "y"),
        ("CONFIG_DYNAMIC_DEBUG_CORE", "y"),
        ("CONFIG_FRAME_POINTER", "y"),
        ("CONFIG_FSCACHE", "y"),
        ("CONFIG_FSCACHE_STATS", "y"),
        ("CONFIG_FS_ENCRYPTION", "y"),
        ("CONFIG_FS_ENCRYPTION_ALGS", "y"),
        ("CONFIG_KGDB", "y"),
        ("CONFIG_KGDB_SERIAL_CONSOLE", "y"),
        ("CONFIG_XFS_FS", "y"),
    ]
}

/// The fragment as a file for `merge_config.sh`.
pub fn fragment(build: CephBuild) -> String {
    let mut s = format!(
        "# CephFS kernel client test fragment (labnet), ceph {}\n",
        match build {
            CephBuild::Builtin => "built in",
            CephBuild::Modules => "as modules",
        }
    );
    for (k, v) in fragment_entries(build) {
        s.push_str(&format!("{k}={v}\n"));
    }
    s
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
