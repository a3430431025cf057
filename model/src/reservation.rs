//! Run-time DHCP reservations: `labnet vm` writes one file per VM into
//! [`paths::reservations_dir`] (`NAME.json`); dhcpd watches the dir and gives that MAC its
//! hostname (and address, when one is set). Both sides use [`RuntimeReservation`].
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::{config::parse_mac, paths, Error};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeReservation {
    /// The VM that holds it (shown by `labnet leases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<String>,
    /// `52:54:00:12:34:56`.
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

/// One reservation file, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub mac: [u8; 6],
    pub ip: Option<Ipv4Addr>,
    /// The file's hostname, else its VM's name.
    pub hostname: Option<String>,
    /// The file's VM name, else the file's stem.
    pub vm: Option<String>,
}

/// The file for VM `name` of `lab`.
pub fn file(lab: &str, name: &str) -> PathBuf {
    paths::reservations_dir(lab).join(format!("{name}.json"))
}

/// Writes VM `name`'s reservation (its hostname is its name) atomically.
pub fn write(lab: &str, name: &str, mac: &str) -> Result<(), Error> {
    let p = file(lab, name);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let r = RuntimeReservation {
        vm: Some(name.into()),
        mac: mac.into(),
        hostname: Some(name.into()),
        ip: None,
    };
    let mut bytes = serde_json::to_vec_pretty(&r).map_err(|source| Error::CorruptState {
        path: p.clone(),
        source,
    })?;
    bytes.push(b'\n');
    paths::write_atomic(&p, &bytes, false).map_err(|e| Error::io(&p, e))
}

/// Why a reservation file was skipped (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("mac: expected a MAC like 52:54:00:12:34:56, got {0:?}")]
    Mac(String),
}

/// Reads and checks one file.
pub fn read(p: &Path) -> Result<Loaded, ReadError> {
    let text = std::fs::read_to_string(p).map_err(ReadError::Io)?;
    let r: RuntimeReservation = serde_json::from_str(&text).map_err(ReadError::Json)?;
    let mac = parse_mac(&r.mac).ok_or(ReadError::Mac(r.mac.clone()))?;
    Ok(Loaded {
        mac,
        ip: r.ip,
        hostname: r.hostname.or_else(|| r.vm.clone()),
        vm: r
            .vm
            .or_else(|| p.file_stem().map(|s| s.to_string_lossy().into_owned())),
    })
}

/// Reads `DIR/*.json` in name order; bad files are reported by name and skipped. A missing dir
/// means no reservations.
pub fn load_dir(dir: &Path) -> (Vec<Loaded>, Vec<String>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let (mut out, mut errs) = (vec![], vec![]);
    for p in files {
        match read(&p) {
            Ok(r) => out.push(r),
            Err(e) => errs.push(format!("{}: skipped: {e}", p.display())),
        }
    }
    (out, errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_by_vm_read_by_dhcpd() {
        let d = testkit::temp_dir("res");
        std::env::set_var("LABNET_RUN_DIR", d.path());
        write("lab1", "vm1", "52:54:00:aa:bb:01").unwrap();
        let text = std::fs::read_to_string(file("lab1", "vm1")).unwrap();
        testkit::golden!("reservation-vm1.json", &text);
        std::fs::write(
            paths::reservations_dir("lab1").join("bad.json"),
            r#"{"mac":"nope"}"#,
        )
        .unwrap();
        let (ok, errs) = load_dir(&paths::reservations_dir("lab1"));
        assert_eq!(
            ok,
            vec![Loaded {
                mac: [0x52, 0x54, 0, 0xaa, 0xbb, 1],
                ip: None,
                hostname: Some("vm1".into()),
                vm: Some("vm1".into()),
            }]
        );
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("bad.json: skipped: mac"), "{errs:?}");
    }
}
