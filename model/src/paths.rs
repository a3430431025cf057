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

/// The network namespace's bind mount, as `ip netns` makes it.
pub fn netns_path(lab: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(lab)
}

/// Replaces `path` atomically: writes a hidden sibling temp file, optionally fsyncs it, and
/// renames it over `path`, so readers (dhcpd, dns, `down`) never see half a file.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8], sync: bool) -> std::io::Result<()> {
    use std::io::Write;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
