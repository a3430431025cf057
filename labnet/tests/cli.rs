//! The CLI's own checks that need no root: config errors are reported before anything on the
//! system is touched, naming the file and the field. (Also makes `cargo test --workspace`
//! build the `labnet` binary that the end-to-end tests in tests/ run.)
use std::process::Command;

fn labnet(args: &[&str], config_dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_labnet"))
        .args(args)
        .env("LABNET_CONFIG_DIR", config_dir)
        .env("LABNET_RUN_DIR", config_dir.join("run"))
        .output()
        .unwrap()
}

#[test]
fn unknown_lab_names_the_missing_file() {
    let tmp = testkit::temp_dir("cli");
    let dir = tmp.path();
    let out = labnet(&["status", "nosuchlab"], dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "no config for lab \"nosuchlab\": {}/nosuchlab.toml does not exist",
            dir.display()
        )),
        "{err}"
    );

    std::fs::write(
        dir.join("bad.toml"),
        "name = \"bad\"\n[dhcp]\nlease_secs = \"long\"\n",
    )
    .unwrap();
    let out = labnet(&["up", "bad"], dir);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}/bad.toml", dir.display())) && err.contains("lease_secs"),
        "{err}"
    );
    assert!(
        !dir.join("run").join("bad.json").exists(),
        "a bad config must not leave state"
    );
}
