//! CI's fuzzing step: builds the libFuzzer driver (`libfuzzer/`) with stable rustc's coverage
//! instrumentation (`-C passes=sancov-module` and SanitizerCoverage's LLVM options, the flags
//! cargo-fuzz passes, no sanitizer and no nightly), then fuzzes every target for
//! `LABNET_FUZZ_SECS` seconds (default 12), starting from its committed corpus. A crash,
//! a timeout (> 10 s on one input) or memory over 2 GiB fails the test; the input is left in
//! the artifacts directory the failure names (add it to `corpus/TARGET/` with the fix).
//!
//! Needs a C++ compiler (libfuzzer-sys builds libFuzzer): `.ci/install-deps.sh` installs g++.
//! Minutes of build and fuzzing, so it is ignored in a plain `cargo test`; CI runs it with
//! `--include-ignored`.
use std::path::{Path, PathBuf};
use std::process::Command;

const FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg=fuzzing",
];

fn host_triple() -> String {
    let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("host triple")
}

/// Builds the driver; returns the binary.
fn build(crate_dir: &Path) -> PathBuf {
    let target_dir = crate_dir.join("../target/libfuzzer");
    let triple = host_triple();
    // --target keeps the flags off build scripts and proc macros (they run on the host and
    // have no libFuzzer runtime to link). Not --locked: the driver's lock file follows the
    // workspace crates' dependencies as they change (cargo adds what is new, keeps the rest).
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", &triple])
        .arg("--manifest-path")
        .arg(crate_dir.join("libfuzzer/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", FLAGS.join(" "))
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("cargo build");
    assert!(status.success(), "building the libFuzzer driver failed");
    target_dir.join(triple).join("release/labnet-libfuzzer")
}

#[test]
#[ignore = "builds and runs the libFuzzer targets (minutes); CI runs it with --include-ignored"]
fn every_target_survives_bounded_fuzzing() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let secs: u64 = std::env::var("LABNET_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let bin = build(crate_dir);
    let work = testkit::temp_dir("libfuzzer");
    let mut failed = vec![];
    for (name, _) in labnet_fuzz::TARGETS {
        // New inputs go to a scratch corpus (first directory); the committed one is only read.
        let scratch = work.path().join(name);
        let artifacts = crate_dir.join("../target/libfuzzer/artifacts").join(name);
        std::fs::create_dir_all(&scratch).expect("scratch corpus");
        std::fs::create_dir_all(&artifacts).expect("artifacts dir");
        // The targets' scratch files go under `work` too, so nothing is left in /tmp.
        let out = Command::new(&bin)
            .env("TMPDIR", work.path())
            .env("LABNET_FUZZ_TARGET", name)
            .arg(&scratch)
            .arg(crate_dir.join("corpus").join(name))
            .arg(format!("-max_total_time={secs}"))
            // A fixed seed: a CI run explores the same inputs again (LABNET_FUZZ_SEED varies it).
            .arg(format!(
                "-seed={}",
                std::env::var("LABNET_FUZZ_SEED").unwrap_or_else(|_| "1".into())
            ))
            .arg("-timeout=10")
            .arg("-rss_limit_mb=2048")
            .arg("-max_len=4096")
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .output()
            .expect("run the fuzzer");
        let log = String::from_utf8_lossy(&out.stderr);
        let stats: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("stat::number_of_executed_units") || l.contains("DONE"))
            .collect();
        eprintln!("{name}: {} {stats:?}", out.status);
        if !out.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- {name} failed; input saved under {}:\n{}",
                artifacts.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "fuzz targets failed: {failed:?}");
}
