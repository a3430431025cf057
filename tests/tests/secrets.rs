//! No `labnet` error message echoes a secret (issue 17, item 7): `labnet mount` options and
//! key inputs, and lab configs with a key where it does not belong. No root needed.
use labnet_tests::labnet_bin;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const CEPH_KEY: &str = "AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==";
const WG_KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";

/// `labnet ARGS` with `stdin`: (success, stdout + stderr).
fn labnet(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(labnet_bin())
        .args(args)
        .env("LABNET_CONFIG_DIR", "/nonexistent-labnet-test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let o = child.wait_with_output().unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), out)
}

fn assert_not_echoed(secret: &str, out: &str, what: &str) {
    let s: Vec<char> = secret.chars().collect();
    for w in s.windows(12) {
        let piece: String = w.iter().collect();
        assert!(
            !out.contains(&piece),
            "{what}: the output quotes {piece:?} of the secret:\n{out}"
        );
    }
}

#[test]
fn labnet_mount_errors_never_quote_a_secret() {
    let dump = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../mountgen/tests/fixtures/ceph-samples/3mon-v2v1-127.0.0.1-vstartports.mon_dump.json-pretty");
    let dump = dump.display().to_string();
    let tmp = testkit::temp_dir("labnet-secrets");
    let dir = tmp.path();
    let keyring = dir.join("fs.keyring");
    std::fs::write(&keyring, format!("[client.fs]\n\tkey = {CEPH_KEY}\n")).unwrap();
    let kr = keyring.display().to_string();
    for opt in [
        format!("secret= {CEPH_KEY}"),
        format!("secret={CEPH_KEY}"),
        format!("key={CEPH_KEY}"),
        CEPH_KEY.to_string(),
        format!("mykey={CEPH_KEY} x"),
    ] {
        let (ok, out) = labnet(
            &[
                "mount",
                "--mon-dump",
                &dump,
                "--name",
                "fs",
                "--fs",
                "a",
                "--keyring",
                &kr,
                "-o",
                &opt,
                "/mnt",
            ],
            "",
        );
        assert!(!ok, "-o {opt:?} accepted: {out}");
        assert_not_echoed(CEPH_KEY, &out, &format!("labnet mount -o {opt:?}"));
    }
    // The keyring where the mon dump belongs.
    let (ok, out) = labnet(
        &[
            "mount",
            "--mon-dump",
            &kr,
            "--name",
            "fs",
            "--fs",
            "a",
            "--keyring",
            &kr,
        ],
        "",
    );
    assert!(!ok, "{out}");
    assert_not_echoed(CEPH_KEY, &out, "labnet mount --mon-dump KEYRING");
}

#[test]
fn lab_config_errors_never_quote_a_key() {
    let tmp = testkit::temp_dir("labnet-secrets");
    let dir = tmp.path();
    let base = "name = \"lsx\"\n[bridge]\nname = \"lsxbr\"\naddress = \"10.79.0.1/24\"\n\
                [uplink]\nkind = \"wireguard\"\ninterface = \"lsxwl\"\naddress = \"192.168.20.1/24\"\n\
                peer_public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nendpoint = \"127.0.0.1:51820\"\n";
    for (i, extra) in [
        format!("private_key = \"{WG_KEY}\"\n"),
        format!("private_key_file = {WG_KEY}\n"),
        format!("private_key_file = \"{WG_KEY}\"\n"),
        format!("private_key_file = \"/k\"\npersistent_keepalive = \"{WG_KEY}\"\n"),
    ]
    .iter()
    .enumerate()
    {
        let cfg = dir.join(format!("lab{i}.toml"));
        std::fs::write(&cfg, format!("{base}{extra}")).unwrap();
        let cfg = cfg.display().to_string();
        for cmd in [
            &["up", "lsx", "--config", &cfg][..],
            &["status", "lsx", "--config", &cfg],
        ] {
            let (ok, out) = labnet(cmd, "");
            assert!(!ok, "{cmd:?}: {out}");
            if cmd[0] == "up" {
                assert!(out.contains(&cfg), "the error names the file: {out}");
            }
            assert_not_echoed(WG_KEY, &out, &format!("{cmd:?} with {extra:?}"));
        }
    }
}
