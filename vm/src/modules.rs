//! Which kernel modules to insmod in the guest, and in what order: read from the guest
//! kernel's own `modules.dep` / `modules.softdep` / `modules.alias` / `modules.builtin`
//! (as `modprobe --show-depends` does), so no host modprobe or matching kernel is needed.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::Error;

#[derive(Debug, Default)]
pub struct ModuleDb {
    dir: PathBuf,
    /// normalized name -> (path relative to dir, deps as normalized names)
    mods: HashMap<String, (String, Vec<String>)>,
    soft_pre: HashMap<String, Vec<String>>,
    soft_post: HashMap<String, Vec<String>>,
    aliases: HashMap<String, Vec<String>>,
    builtin: HashSet<String>,
}

/// `virtio-net`, `virtio_net`, `kernel/drivers/net/virtio_net.ko` -> `virtio_net`.
pub fn normalize(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.split(".ko").next().unwrap_or(base);
    base.replace('-', "_")
}

impl ModuleDb {
    /// Reads DIR/modules.dep (required) and the optional softdep/alias/builtin files.
    pub fn load(dir: &Path) -> Result<ModuleDb, Error> {
        let dep_path = dir.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).map_err(|source| Error::NoModulesDep {
            dir: dir.display().to_string(),
            source,
        })?;
        let mut db = ModuleDb {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        for line in dep.lines() {
            let Some((m, deps)) = line.split_once(':') else {
                continue;
            };
            db.mods.insert(
                normalize(m),
                (
                    m.to_string(),
                    deps.split_whitespace().map(normalize).collect(),
                ),
            );
        }
        if let Ok(s) = std::fs::read_to_string(dir.join("modules.softdep")) {
            for line in s.lines() {
                let mut w = line.split_whitespace();
                if w.next() != Some("softdep") {
                    continue;
                }
                let Some(m) = w.next().map(normalize) else {
                    continue;
                };
                let mut post = false;
                for t in w {
                    match t {
                        "pre:" => post = false,
                        "post:" => post = true,
                        n => {
                            let map = if post {
                                &mut db.soft_post
                            } else {
                                &mut db.soft_pre
                            };
                            map.entry(m.clone()).or_default().push(n.to_string());
                        }
                    }
                }
            }
        }
        if let Ok(s) = std::fs::read_to_string(dir.join("modules.alias")) {
            for line in s.lines() {
                let mut w = line.split_whitespace();
                if let (Some("alias"), Some(a), Some(m)) = (w.next(), w.next(), w.next()) {
                    // Only plain aliases (crypto-crc32c); device globs are for udev.
                    if !a.contains('*') && !a.contains(':') {
                        db.aliases
                            .entry(a.to_string())
                            .or_default()
                            .push(normalize(m));
                    }
                }
            }
        }
        if let Ok(s) = std::fs::read_to_string(dir.join("modules.builtin")) {
            db.builtin.extend(s.lines().map(normalize));
        }
        Ok(db)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Relative path of a module file.
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.mods.get(name).map(|(p, _)| p.as_str())
    }

    /// The insmod order (relative paths) for `wanted`: dependencies first, softdep `pre:`
    /// modules before, `post:` after. Built-in modules are skipped; an unknown required name
    /// is an error naming it; unknown softdeps are ignored (modprobe does the same).
    pub fn resolve(&self, wanted: &[String]) -> Result<Vec<String>, Error> {
        let mut out = vec![];
        let mut seen = HashSet::new();
        for w in wanted {
            let n = normalize(w);
            if !self.mods.contains_key(&n)
                && !self.builtin.contains(&n)
                && !self.aliases.contains_key(w.as_str())
            {
                return Err(Error::UnknownModule {
                    name: w.clone(),
                    dir: self.dir.display().to_string(),
                });
            }
            self.visit(w, &mut seen, &mut out, 0);
        }
        Ok(out)
    }

    fn visit(&self, name: &str, seen: &mut HashSet<String>, out: &mut Vec<String>, depth: usize) {
        let n = normalize(name);
        if depth > 64 || !seen.insert(n.clone()) {
            return;
        }
        let Some((path, deps)) = self.mods.get(&n) else {
            // Not a module file: maybe an alias (softdeps name "crc32c", "crypto-crc32c").
            if let Some(targets) = self.aliases.get(name) {
                for t in targets {
                    self.visit(t, seen, out, depth + 1);
                }
            }
            return;
        };
        for p in self.soft_pre.get(&n).into_iter().flatten() {
            self.visit(p, seen, out, depth + 1);
        }
        // modules.dep lists the leaves last; modprobe loads them from the end.
        for d in deps.iter().rev() {
            self.visit(d, seen, out, depth + 1);
        }
        out.push(path.clone());
        for p in self.soft_post.get(&n).into_iter().flatten() {
            self.visit(p, seen, out, depth + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/lib/libcrc32c.ko:\n\
             kernel/crypto/crc32c_generic.ko:\n\
             kernel/arch/x86/crypto/crc32c-intel.ko:\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("modules.softdep"),
            "# x\nsoftdep libcrc32c pre: crc32c\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("modules.alias"),
            "alias crc32c crc32c_intel\nalias crc32c crc32c_generic\nalias pci:v00001AF4d* virtio_pci\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("modules.builtin"),
            "kernel/drivers/tty/serial/8250/8250.ko\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn deps_first_then_module() {
        let d = fake();
        let db = ModuleDb::load(d.path()).unwrap();
        let order = db
            .resolve(&["virtio_mmio".into(), "virtio-net".into()])
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_mmio.ko",
                "kernel/net/core/failover.ko",
                "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/net/virtio_net.ko",
            ]
        );
    }

    #[test]
    fn softdeps_through_aliases() {
        let d = fake();
        let db = ModuleDb::load(d.path()).unwrap();
        let order = db.resolve(&["libcrc32c".into()]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/arch/x86/crypto/crc32c-intel.ko",
                "kernel/crypto/crc32c_generic.ko",
                "kernel/lib/libcrc32c.ko"
            ]
        );
    }

    #[test]
    fn builtin_skipped_unknown_named() {
        let d = fake();
        let db = ModuleDb::load(d.path()).unwrap();
        assert!(db.resolve(&["8250".into()]).unwrap().is_empty());
        let e = db.resolve(&["ceph".into()]).unwrap_err();
        assert!(
            matches!(&e, Error::UnknownModule { name, dir } if name == "ceph" && Path::new(dir) == d.path()),
            "{e:?}"
        );
        assert!(e.to_string().contains("\"ceph\" is neither in"), "{e}");
        let e = ModuleDb::load(Path::new("/nonexistent")).unwrap_err();
        assert!(
            matches!(&e, Error::NoModulesDep { dir, .. } if dir == "/nonexistent"),
            "{e:?}"
        );
        assert!(e.to_string().contains("--modules /nonexistent"), "{e}");
    }

    /// Against the real Debian 6.1 tree when CI unpacked it: the order machine.md measured.
    #[test]
    #[ignore = "needs the Debian kernel .ci/install-deps.sh unpacks (CI runs --include-ignored)"]
    fn debian_kernel_ceph_chain() {
        let dir = Path::new("/var/cache/labnet-kernel/lib/modules/6.1.0-56-amd64");
        assert!(
            dir.join("modules.dep").exists(),
            "{} not unpacked (.ci/install-deps.sh)",
            dir.display()
        );
        let db = ModuleDb::load(dir).unwrap();
        let order = db.resolve(&["ceph".into()]).unwrap();
        let names: Vec<String> = order.iter().map(|p| normalize(p)).collect();
        assert_eq!(
            names,
            [
                "netfs",
                "fscache",
                "crc32c_intel",
                "crc32c_generic",
                "libcrc32c",
                "libceph",
                "ceph"
            ]
        );
    }
}
