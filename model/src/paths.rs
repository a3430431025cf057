//! Where labnet keeps state. Runtime state (gone after a reboot, like the lab itself) lives in
//! /run/labnet; durable state (DHCP leases) in /var/lib/labnet/LAB. Both can be moved with
//! LABNET_RUN_DIR / LABNET_STATE_DIR (tests use that).
use std::path::PathBuf;

pub fn run_dir() -> PathBuf {
    std::env::var_os("LABNET_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/labnet"))
}

/// Durable per-lab state: /var/lib/labnet/LAB (leases, hosts file).
pub fn state_dir(lab: &str) -> PathBuf {
    std::env::var_os("LABNET_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/labnet"))
        .join(lab)
}

/// The persisted record of what `up` created: /run/labnet/LAB.json.
pub fn lab_state_file(lab: &str) -> PathBuf {
    run_dir().join(format!("{lab}.json"))
}

/// Per-lab runtime dir: /run/labnet/LAB (daemon pid files, logs, VMs under vms/).
pub fn lab_run_dir(lab: &str) -> PathBuf {
    run_dir().join(lab)
}

/// VM runtime state: /run/labnet/LAB/vms/NAME.
pub fn vms_dir(lab: &str) -> PathBuf {
    lab_run_dir(lab).join("vms")
}

/// DHCP reservations registered at run time (by `labnet vm`): one JSON file per VM.
pub fn reservations_dir(lab: &str) -> PathBuf {
    lab_run_dir(lab).join("reservations")
}

/// Where named network namespaces are bind-mounted, as `ip netns` does.
pub const NETNS_DIR: &str = "/run/netns";

/// The network namespace's bind mount, as `ip netns` makes it.
pub fn netns_path(lab: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(lab)
}

/// Replaces `path` atomically: writes a hidden sibling temp file, optionally fsyncs it, and
/// renames it over `path`, so readers (dhcpd, dns, `down`) never see half a file. The temp
/// name is unique per process and call: two writers of one file (a VM's supervisor and `vm
/// stop`) each rename a whole file, the last one wins, and neither writes into the other's.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}.{seq}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if sync {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers of one file at once (a supervisor and `vm stop` on one VM's state): every
    /// read sees one writer's whole file, never a mix, and no temp file is left.
    #[test]
    fn concurrent_atomic_writers_never_mix_their_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        let long = vec![b'L'; 4096];
        let short = vec![b's'; 100];
        std::thread::scope(|s| {
            for bytes in [&long, &short] {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..300 {
                        write_atomic(p, bytes, false).unwrap();
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..300 {
                    if let Ok(got) = std::fs::read(&p) {
                        assert!(
                            got == long || got == short,
                            "mixed file of {} bytes",
                            got.len()
                        );
                    }
                }
            });
        });
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("state.json")]);
    }
}
