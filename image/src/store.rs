//! The image directory: IMAGES/NAME/{disk.qcow2|disk.raw, vmlinuz, initrd.img,
//! ssh_host_ed25519_key.pub, manifest.json}. The manifest is written last, so a directory
//! without one is an interrupted build, not an image.
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    pub suite: String,
    pub mirror: String,
    /// Every package asked for (labnet's base set plus --package), sorted.
    pub packages: Vec<String>,
    /// Build date, UTC, RFC 3339.
    pub created: String,
    /// The file system size (the disk's virtual size), bytes.
    pub size_bytes: u64,
    /// "qcow2" or "raw".
    pub format: String,
    /// File names inside the image directory.
    pub disk: String,
    pub kernel: String,
    pub initrd: String,
    /// `uname -r` of the image's own kernel.
    pub kernel_release: String,
    /// The guest's ssh host key (one known_hosts key: "ssh-ed25519 AAAA..."), generated at
    /// build; labnet pins VMs of this image to it.
    pub host_key: String,
    /// kmount was installed at /usr/local/bin/kmount.
    pub kmount: bool,
    /// The cached root tarball's recipe key (same key: same packages).
    pub recipe_key: String,
    pub build_secs: f64,
}

impl Manifest {
    pub const FILE: &'static str = "manifest.json";
}

/// An image on disk: its directory and manifest.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Image {
    pub fn disk(&self) -> PathBuf {
        self.dir.join(&self.manifest.disk)
    }
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(&self.manifest.kernel)
    }
    pub fn initrd(&self) -> PathBuf {
        self.dir.join(&self.manifest.initrd)
    }
}

pub fn image_dir(name: &str) -> PathBuf {
    crate::images_dir().join(name)
}

/// Loads image NAME from the image store.
pub fn load(name: &str) -> Result<Image> {
    crate::check_name(name)?;
    load_dir(&image_dir(name), name)
}

fn load_dir(dir: &Path, name: &str) -> Result<Image> {
    let p = dir.join(Manifest::FILE);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoSuchImage {
                name: name.into(),
                dir: dir.display().to_string(),
            })
        }
        Err(e) => return Err(Error::io(&p, e)),
    };
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(&p.display().to_string(), format!("corrupt manifest: {e}")))?;
    Ok(Image {
        dir: dir.to_path_buf(),
        manifest,
    })
}

/// Every image in the store, by name (directories without a manifest are skipped).
pub fn list() -> Result<Vec<Image>> {
    let dir = crate::images_dir();
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(Error::io(&dir, e)),
    };
    let mut out = vec![];
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || !e.path().join(Manifest::FILE).exists() {
            continue;
        }
        out.push(load_dir(&e.path(), &name)?);
    }
    out.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name));
    Ok(out)
}

/// Removes image NAME (its whole directory).
pub fn remove(name: &str) -> Result<PathBuf> {
    let img = load(name)?;
    std::fs::remove_dir_all(&img.dir).map_err(|e| Error::io(&img.dir, e))?;
    Ok(img.dir)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a unix time (civil-from-days, no time crate needed).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951782400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1796154645), "2026-12-01T19:50:45Z");
    }
}
