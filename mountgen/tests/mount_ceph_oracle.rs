//! The old-syntax plans are checked against the real mount.ceph (ceph-common, 16.2 on
//! Debian 12): it is run under strace with each sample ceph.conf and ms_mode, and the
//! mount(2) source and data it produces are compared with ours. Pacific's mount.ceph knows
//! only the old syntax. Known, intended differences: we also pass `fsid=` (newer mount.ceph
//! does too), and with no ms_mode on a v2-only cluster we fall back to v2 + prefer-crc where
//! pacific gives up ("unable to determine mon addresses").
mod common;
use common::*;
use mountgen::plan::{self, Auth, MountRequest, MsMode, Syntax};
use mountgen::{monmap, secret};
use std::collections::BTreeSet;
use std::process::Command;

fn unhex(s: &str) -> String {
    let b: Vec<u8> = s
        .split("\\x")
        .filter(|p| !p.is_empty())
        .map(|h| u8::from_str_radix(&h[..2], 16).unwrap())
        .collect();
    String::from_utf8(b).unwrap()
}

/// Runs mount.ceph under strace; returns (add_key succeeded, Some((source, data))) if it
/// reached mount(2).
fn run_mount_ceph(
    conf: &str,
    key: &str,
    mode: Option<MsMode>,
    mnt: &str,
) -> (bool, Option<(String, String)>, String) {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let mut opts = format!("conf={conf},name=fs,secret={key},mds_namespace=a,mount_timeout=2");
    if let Some(m) = mode {
        opts.push_str(&format!(",ms_mode={m}"));
    }
    let out = Command::new("strace")
        .args(["-f", "-xx", "-s", "4096", "-e", "trace=add_key,mount", "-o"])
        .arg(&trace)
        .args(["mount.ceph", ":/", mnt, "-n", "-o", &opts])
        .output()
        .expect("strace and mount.ceph (strace, ceph-common in .ci/install-deps.sh)");
    let tr = std::fs::read_to_string(&trace).unwrap();
    let log = format!(
        "{}{}\n{tr}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let added = tr
        .lines()
        .any(|l| l.contains("add_key(") && !l.contains("= -1"));
    let m = tr
        .lines()
        .find(|l| l.contains(" mount(") || l.starts_with("mount(") || l.contains("] mount("))
        .map(|l| {
            let s: Vec<String> = l.split('"').skip(1).step_by(2).map(unhex).collect();
            (s[0].clone(), s[3].clone())
        });
    (added, m, log)
}

fn optset(data: &str) -> BTreeSet<String> {
    data.split(',')
        .filter(|o| !o.starts_with("fsid="))
        .map(String::from)
        .collect()
}

#[test]
#[ignore = "needs root (mount.ceph's mount(2) call)"]
fn old_syntax_matches_mount_ceph() {
    testkit::require_root();
    let mnt = tempfile::tempdir().unwrap();
    let mnt = mnt.path().to_str().unwrap();
    let key = "AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==";
    let mut compared = 0;
    for c in CLUSTERS {
        // One conf per cluster keeps this quick (mount.ceph starts a whole CephContext);
        // golden::formats_agree shows the other formats give the same plans.
        for input in ["generate-minimal-conf.txt"] {
            let conf = fixture(&format!("{c}.{input}"));
            let map = monmap::parse(&std::fs::read_to_string(&conf).unwrap(), input).unwrap();
            for mode in std::iter::once(None).chain(MsMode::ALL.into_iter().map(Some)) {
                let (added, theirs, log) = run_mount_ceph(conf.to_str().unwrap(), key, mode, mnt);
                let mut req = MountRequest::new("fs", Some("a"), Syntax::Old);
                req.ms_mode = mode;
                req.options = vec!["mount_timeout=2".into()];
                req.auth = if added {
                    Auth::Key
                } else {
                    Auth::Secret(secret::Secret::from_base64(key).unwrap())
                };
                let ours = plan::build(&map, &req);
                let what = format!("{c}.{input} ms_mode={mode:?}");
                match (&ours, theirs) {
                    (Ok(p), Some((src, data))) => {
                        assert_eq!(p.source, src, "{what}: source\n{log}");
                        assert_eq!(
                            optset(&p.data(true)),
                            optset(&data),
                            "{what}: options\n{log}"
                        );
                        compared += 1;
                    }
                    (Err(_), None) => {
                        assert!(
                            log.contains("unable to determine mon addresses"),
                            "{what}:\n{log}"
                        );
                    }
                    // Intended: without ms_mode a v2-only cluster still gets a mount from us.
                    (Ok(p), None) if mode.is_none() && p.ms_mode == Some(MsMode::PreferCrc) => {
                        assert!(
                            log.contains("unable to determine mon addresses"),
                            "{what}:\n{log}"
                        );
                    }
                    (o, t) => panic!("{what}: ours {o:?}, mount.ceph {t:?}\n{log}"),
                }
            }
        }
    }
    // v2v1 clusters (3): all 6 modes; v1-only (2): default + legacy; v2-only: the 4 v2
    // modes.
    assert_eq!(compared, 3 * 6 + 2 * 2 + 4, "comparisons made");
}
