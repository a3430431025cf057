//! `systemd-analyze verify` (systemd 252 in CI) on the installed units of real instances:
//! templates plus drop-ins, ExecStart pointing at a real executable. Any warning fails.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The distribution's unit directory (for sysinit.target, network-online.target, ...).
fn system_unit_dir() -> &'static str {
    ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).join("sysinit.target").exists())
        .expect("systemd's unit directory with sysinit.target; install the systemd package (.ci/install-deps.sh)")
}

/// Runs verify with only `root`'s units and the distribution's: never the host's /etc.
/// Returns (success, stderr).
fn verify(root: &Path, units: &[String]) -> (bool, String) {
    let path = format!(
        "{}:{}",
        root.join(units::UNIT_DIR).display(),
        system_unit_dir()
    );
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units)
        .env("SYSTEMD_UNIT_PATH", path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("systemd-analyze (package systemd, see .ci/install-deps.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn instances(lab: &str) -> Vec<String> {
    units::TEMPLATES
        .iter()
        .map(|t| units::instance(t, lab))
        .collect()
}

/// A real executable standing in for labnet at an awkward path (space and '%').
fn fake_bin(dir: &Path) -> PathBuf {
    let d = dir.join("opt dir %1");
    std::fs::create_dir_all(&d).unwrap();
    let bin = d.join("labnet");
    std::fs::copy("/bin/true", &bin).unwrap();
    bin
}

#[test]
fn verify_default_and_config_labs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let bin = fake_bin(tmp.path());
    let files = units::generate(&default_lab(), &opts(&bin, None)).unwrap();
    units::install(&root, "sepian", &files, true).unwrap();
    let cfg = tmp.path().join("cfg dir/wg$lab.toml");
    let files = units::generate(&wg_lab(), &opts(&bin, Some(cfg.to_str().unwrap()))).unwrap();
    units::install(&root, "wglab", &files, false).unwrap();

    let mut all = instances("sepian");
    all.extend(instances("wglab"));
    let (ok, stderr) = verify(&root, &all);
    assert!(
        ok && stderr.trim().is_empty(),
        "systemd-analyze verify {all:?}:\n{stderr}"
    );
}

#[test]
fn verify_catches_a_broken_unit() {
    // The harness must be able to fail: a drop-in with an unknown key and a missing binary.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let bin = fake_bin(tmp.path());
    let files = units::generate(&default_lab(), &opts(&bin, None)).unwrap();
    units::install(root, "sepian", &files, false).unwrap();
    let d = root
        .join(units::UNIT_DIR)
        .join("labnet-dns@sepian.service.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("zz.conf"), "[Service]\nProtectSytem=strict\n").unwrap();
    let (_, stderr) = verify(root, &instances("sepian"));
    assert!(stderr.contains("ProtectSytem"), "{stderr}");

    std::fs::remove_file(&bin).unwrap();
    let (ok, stderr) = verify(root, &instances("sepian"));
    assert!(!ok && stderr.contains("is not executable"), "{stderr}");
}
