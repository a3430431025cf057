//! Item 6: a bounce box endpoint whose name does not resolve is reported as "cannot resolve
//! HOST", before anything is touched. The lookup runs in a network namespace of its own
//! (`unshare -n`, no interfaces up): no query leaves the machine, it fails at once.
use labnet_tests::*;
use std::process::Command;

#[test]
#[ignore = "needs root (unshare -n)"]
fn unresolvable_endpoint_is_named() {
    require_root();
    let mut c = Cleanup::default();
    let dir = temp_dir(&mut c, "endpoint");
    let key = dir.join("wg.key");
    std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
    let cfg = dir.join("lcep.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"lcep\"\n[bridge]\nname = \"lcepbr\"\naddress = \"10.75.0.1/24\"\n\
             [uplink]\nkind = \"wireguard\"\ninterface = \"lcepwg\"\naddress = \"192.168.20.1/24\"\n\
             private_key_file = \"{}\"\npeer_public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n\
             endpoint = \"lcnohost.invalid:51820\"\n",
            key.display()
        ),
    )
    .unwrap();
    let out = run(Command::new("unshare")
        .args([
            "-n",
            labnet_bin().to_str().unwrap(),
            "up",
            "lcep",
            "--config",
        ])
        .arg(&cfg)
        .envs(labnet_env(&dir)));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        err.contains("uplink.endpoint: cannot resolve lcnohost.invalid"),
        "{err}"
    );
    assert!(
        !dir.join("run").join("lcep.json").exists(),
        "nothing was made"
    );
}
