//! Shared helpers for mountgen's integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ceph-samples")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

pub fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The four captured clusters.
pub const CLUSTERS: &[&str] = &[
    "1mon-v1only-msgr2false-127.0.0.1",
    "1mon-v2only-msgr1false-127.0.0.1-nofs",
    "1mon-v2v1-127.0.0.1",
    "3mon-v2v1-127.0.0.1-vstartports",
    // Captured by the mountgen work with the same cluster-up.sh (IP=fd00:6d67::1, and
    // NMONS=3 MSGR=1 IP=192.168.251.1, each in its own pb-mgv netns); both were also mounted
    // from a TCG guest with kmount (new and old syntax).
    "1mon-v2v1-fd00-6d67--1-ipv6",
    "3mon-v1only-msgr2false-192.168.251.1-vstartports",
];

/// Every kind of address source captured per cluster.
pub const INPUTS: &[&str] = &[
    "mon_dump.json",
    "mon_dump.json-pretty",
    "mon_dump.txt",
    "quorum_status.json",
    "generate-minimal-conf.txt",
    "ceph.conf",
];

/// Compares `actual` with the golden file `tests/golden/NAME`; `LABNET_BLESS=1` rewrites it.
pub fn check_golden(name: &str, actual: &str) {
    testkit::golden!(name, actual);
}
