//! /etc/netns/LAB/{resolv.conf,nsswitch.conf}: what `ip netns exec LAB` bind-mounts over the
//! host's, so lookups inside the lab go to the lab's DNS only. Written by `up`, restored by
//! `down` (a file that was there is saved aside and put back).
use std::path::{Path, PathBuf};

use crate::config::Lab;
use crate::Error;

pub fn etc_netns_dir(lab: &str) -> PathBuf {
    std::env::var_os("LABNET_ETC_NETNS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/netns"))
        .join(lab)
}

/// The resolv.conf `ip netns exec LAB` bind-mounts: labnet's DNS on the bridge address.
pub fn resolv_conf(lab: &Lab) -> String {
    format!(
        "# Written by labnet for lab {}; `labnet down {}` removes it.\nnameserver {}\nsearch {}\n",
        lab.name, lab.name, lab.bridge.address.addr, lab.dns.zone
    )
}

/// Keeps lookups inside the lab off the host's resolver (no systemd-resolved, no mdns).
pub const NSSWITCH_CONF: &str =
    "# Written by labnet: lab lookups use only /etc/hosts and the lab's DNS.\nhosts: files dns\n";

/// True when the file holds exactly `expected`.
pub fn file_matches(path: &Path, expected: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s == expected)
}

pub fn make_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Writes `text` to `path` atomically; a file that is there moves to `save_to` first.
pub fn write_file(path: &Path, text: &str, save_to: Option<&Path>) -> Result<(), Error> {
    if let Some(s) = save_to {
        if path.exists() {
            std::fs::rename(path, s).map_err(|e| Error::io(path, e))?;
        }
    }
    model::paths::write_atomic(path, text.as_bytes(), false).map_err(|e| Error::io(path, e))
}

/// Removes a directory labnet made, unless someone put files of their own in it.
pub fn remove_dir(path: &Path) -> Result<(), Error> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        // Someone put their own files there: leave the directory (nothing lost).
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Removes a file labnet wrote and puts back the one it replaced, if any.
pub fn restore_file(path: &Path, saved: Option<&Path>) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(path, e)),
    }
    if let Some(s) = saved {
        if s.exists() {
            std::fs::rename(s, path).map_err(|e| Error::io(s, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn etc_netns_files_golden() {
        let lab = crate::Lab::embedded_default();
        let text = format!(
            "# resolv.conf\n{}# nsswitch.conf\n{}",
            super::resolv_conf(&lab),
            super::NSSWITCH_CONF
        );
        testkit::golden!("etc-netns-sepian.txt", &text);
    }
}
