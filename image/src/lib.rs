//! `labnet image`: Debian root disk images for long-lived lab VMs (seed 000's "create a VM").
//!
//! One module per step:
//! - [`recipe`]: what goes into the root (suite, mirror, packages) and the mmdebstrap command;
//!   its hash keys the cached root tarball;
//! - [`guest`]: the files labnet writes into the root (networkd, sshd, getty, the boot-time
//!   setup script), as pure data (golden-tested);
//! - [`build`]: mmdebstrap (unshare mode, tar) → extract → configure → host key → kernel out
//!   → `mkfs.ext4 -d` → qcow2; no loop mount, no chroot on the host;
//! - [`store`]: the image directory (`/var/lib/labnet/images/NAME`: disk, kernel, initrd,
//!   manifest.json), list and rm.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod build;
pub mod guest;
pub mod recipe;
pub mod store;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{program} not found{hint}")]
    MissingProgram { program: String, hint: String },
    #[error(
        "suite {suite:?} does not exist on {mirror} (no Release file); try bookworm or trixie"
    )]
    UnknownSuite { suite: String, mirror: String },
    #[error(
        "not enough space in {path}: {free_mib} MiB free, the build needs about {need_mib} MiB"
    )]
    DiskFull {
        path: String,
        free_mib: u64,
        need_mib: u64,
    },
    #[error("no image {name:?} ({dir} does not exist; `labnet image list` shows the images)")]
    NoSuchImage { name: String, dir: String },
    #[error("image {name:?} already exists in {dir} (`labnet image rm {name}` first)")]
    Exists { name: String, dir: String },
    #[error("{what} failed ({status}){detail}")]
    Command {
        what: String,
        status: String,
        detail: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        if source.raw_os_error() == Some(libc::ENOSPC) {
            let p = path.as_ref();
            return Error::DiskFull {
                path: p.display().to_string(),
                free_mib: free_bytes(p.parent().unwrap_or(p)).unwrap_or(0) >> 20,
                need_mib: 0,
            };
        }
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    pub fn invalid(field: &str, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where images live: $LABNET_IMAGE_DIR, else /var/lib/labnet/images.
pub fn images_dir() -> PathBuf {
    std::env::var_os("LABNET_IMAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/labnet/images"))
}

/// Where build inputs are cached (the mmdebstrap tarballs, keyed by recipe hash):
/// $LABNET_CACHE_DIR, else /var/cache/labnet.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("LABNET_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/labnet"))
}

/// Bytes available to us on the file system holding `dir` (or its nearest existing parent).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let mut d = dir;
    while !d.exists() {
        d = d.parent()?;
    }
    let s = nix::sys::statvfs::statvfs(d).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Finds `prog` in $PATH (plus the sbin dirs, where mkfs.ext4 lives).
pub fn which(prog: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .map(|d| d.join(prog))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// FNV-1a 64 over `bytes`: a fixed hash for cache keys (not for security).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// An image name: like a VM name (1-63 of a-z, 0-9, '-', '.', not starting with '.' or '-').
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
        && !name.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "NAME",
            format!("{name:?} is not a valid image name (1-63 of a-z, 0-9, '-', '.', '_')"),
        ))
    }
}

/// "4G", "512M", "1T" (binary units; no suffix: bytes) → bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (s, 1u64),
        Some((i, _)) => {
            let m = match s[i..].to_ascii_uppercase().trim_end_matches(['I', 'B']) {
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => {
                    return Err(Error::invalid(
                        "--size",
                        format!("{s:?}: expected e.g. 4G or 512M"),
                    ))
                }
            };
            (&s[..i], m)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| Error::invalid("--size", format!("{s:?}: expected e.g. 4G or 512M")))?;
    let bytes = n.saturating_mul(mult);
    if bytes < 1 << 30 {
        return Err(Error::invalid(
            "--size",
            format!("{s:?}: at least 1G (the kernel and its modules alone take ~400M)"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
pub(crate) mod golden {
    /// image/tests/golden/NAME (LABNET_BLESS=1 rewrites it).
    pub fn check(name: &str, actual: &str) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
        testkit::check_golden(dir.join(name), actual);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("1536M").unwrap(), 1536 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        for bad in ["", "x", "4Q", "100M", "-1G"] {
            assert!(
                parse_size(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("--size"),
                "{bad}"
            );
        }
    }

    #[test]
    fn names() {
        assert!(check_name("bookworm").is_ok());
        assert!(check_name("test-1.2").is_ok());
        for bad in ["", ".x", "-x", "A", "a/b", &"x".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
