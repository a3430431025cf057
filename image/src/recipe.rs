//! What goes into an image's root, and the mmdebstrap command that makes it. The recipe's
//! hash names the cached root tarball, so a second image with the same suite, mirror and
//! packages skips the download and the package installation.
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Bump when the mmdebstrap invocation changes in a way the fields below do not show.
const RECIPE_VERSION: u32 = 1;

/// What every labnet image has: systemd as init, networkd (DHCP) + resolved, sshd, a kernel
/// with its initramfs, busybox (wget, udhcpc) and iproute2.
pub const BASE_PACKAGES: &[&str] = &[
    "busybox",
    "dbus",
    "initramfs-tools",
    "iproute2",
    "kmod",
    "linux-image-amd64",
    "openssh-server",
    "systemd",
    "systemd-resolved",
    "systemd-sysv",
    "udev",
];

/// Documentation, man pages and translations are left out (dpkg path-exclude): a smaller
/// tree makes `mkfs.ext4 -d` and the qcow2 conversion faster.
const PATH_EXCLUDES: &[&str] = &[
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/locale/*",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    pub suite: String,
    pub mirror: String,
    /// BASE_PACKAGES plus the user's, sorted, without duplicates.
    pub packages: Vec<String>,
}

impl Recipe {
    pub fn new(suite: &str, mirror: &str, extra: &[String]) -> Result<Recipe> {
        if suite.is_empty()
            || !suite
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(Error::invalid(
                "--suite",
                format!("{suite:?} is not a suite name"),
            ));
        }
        if !(mirror.starts_with("http://")
            || mirror.starts_with("https://")
            || mirror.starts_with("file:/"))
        {
            return Err(Error::invalid(
                "--mirror",
                format!("{mirror:?}: expected an http(s):// or file:/ URL"),
            ));
        }
        for p in extra {
            let ok = !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.:=/~".contains(&b));
            if !ok {
                return Err(Error::invalid(
                    "--package",
                    format!("{p:?} is not a package name"),
                ));
            }
        }
        let mut packages: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
        packages.extend(extra.iter().cloned());
        packages.sort();
        packages.dedup();
        Ok(Recipe {
            suite: suite.into(),
            mirror: mirror.trim_end_matches('/').into(),
            packages,
        })
    }

    /// The cache key of the root tarball: a hash of everything that goes into mmdebstrap.
    pub fn key(&self) -> String {
        let canon = format!(
            "v{RECIPE_VERSION}\n{}",
            self.mmdebstrap_args(Path::new("OUT")).join("\n")
        );
        format!("{:016x}", crate::fnv1a(canon.as_bytes()))
    }

    /// mmdebstrap in unshare mode (the package scripts run chrooted inside a user namespace,
    /// never on the host), writing a tarball to `out`.
    pub fn mmdebstrap_args(&self, out: &Path) -> Vec<String> {
        let mut a = vec![
            "--mode=unshare".to_string(),
            "--variant=apt".into(),
            "--format=tar".into(),
            format!("--include={}", self.packages.join(",")),
        ];
        a.extend(
            PATH_EXCLUDES
                .iter()
                .map(|p| format!("--dpkgopt=path-exclude={p}")),
        );
        a.extend([
            self.suite.clone(),
            out.display().to_string(),
            self.mirror.clone(),
        ]);
        a
    }

    /// The cached tarball for this recipe: CACHE/rootfs/KEY.tar.
    pub fn tarball(&self) -> PathBuf {
        crate::cache_dir()
            .join("rootfs")
            .join(format!("{}.tar", self.key()))
    }
}

/// The Debian mirror the host's apt uses: the first `URIs:` of
/// /etc/apt/sources.list.d/debian.sources (deb822), else the first `deb URL` line of
/// /etc/apt/sources.list.
pub fn host_mirror() -> Result<String> {
    let deb822 = Path::new("/etc/apt/sources.list.d/debian.sources");
    let list = Path::new("/etc/apt/sources.list");
    let from822 = std::fs::read_to_string(deb822)
        .ok()
        .and_then(|t| mirror_from_deb822(&t));
    let fromlist = || {
        std::fs::read_to_string(list)
            .ok()
            .and_then(|t| mirror_from_list(&t))
    };
    from822.or_else(fromlist).ok_or_else(|| {
        Error::invalid(
            "--mirror",
            format!(
                "no Debian mirror found in {} or {}; give one (e.g. --mirror http://HOST/debian)",
                deb822.display(),
                list.display()
            ),
        )
    })
}

fn mirror_from_deb822(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|v| v.split_whitespace().next())
        .map(str::to_string)
}

fn mirror_from_list(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next()? != "deb" {
            return None;
        }
        // Skip "[options]".
        let mut u = w.next()?;
        if u.starts_with('[') {
            while !u.ends_with(']') {
                u = w.next()?;
            }
            u = w.next()?;
        }
        Some(u.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_mmdebstrap_command() {
        let r = Recipe::new(
            "bookworm",
            "http://deb.debian.org/debian/",
            &["nftables".into(), "busybox".into()],
        )
        .unwrap();
        let mut s = r
            .mmdebstrap_args(Path::new("/var/cache/labnet/rootfs/KEY.tar"))
            .join("\n");
        s.push_str(&format!("\nkey={}\n", r.key()));
        crate::golden::check("mmdebstrap.args", &s);
    }

    #[test]
    fn key_follows_the_inputs() {
        let a = Recipe::new("bookworm", "http://m/debian", &[]).unwrap();
        assert_eq!(
            a.key(),
            Recipe::new("bookworm", "http://m/debian/", &["busybox".into()])
                .unwrap()
                .key()
        );
        assert_ne!(
            a.key(),
            Recipe::new("trixie", "http://m/debian", &[]).unwrap().key()
        );
        assert_ne!(
            a.key(),
            Recipe::new("bookworm", "http://n/debian", &[])
                .unwrap()
                .key()
        );
        assert_ne!(
            a.key(),
            Recipe::new("bookworm", "http://m/debian", &["vim".into()])
                .unwrap()
                .key()
        );
    }

    #[test]
    fn bad_inputs_name_the_flag() {
        assert!(Recipe::new("../x", "http://m", &[])
            .unwrap_err()
            .to_string()
            .starts_with("--suite"));
        assert!(Recipe::new("bookworm", "ftp://m", &[])
            .unwrap_err()
            .to_string()
            .starts_with("--mirror"));
        assert!(Recipe::new("bookworm", "http://m", &["a b".into()])
            .unwrap_err()
            .to_string()
            .starts_with("--package"));
    }

    #[test]
    fn mirrors_from_apt_sources() {
        let d = "Types: deb\n# http://snapshot/x\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\nURIs: http://sec/x\n";
        assert_eq!(
            mirror_from_deb822(d).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let l = "# c\ndeb-src http://a/debian bookworm main\ndeb [signed-by=/k.gpg arch=amd64] http://b/debian bookworm main\n";
        assert_eq!(mirror_from_list(l).as_deref(), Some("http://b/debian"));
    }
}
