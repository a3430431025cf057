//! `labnet mount` and `labnet kernel-config` as a user runs them (no root needed).
use labnet_tests::labnet_bin;
use std::path::PathBuf;
use std::process::Command;

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mountgen/tests/fixtures/ceph-samples")
}

fn s(name: &str) -> String {
    samples().join(name).to_str().unwrap().to_string()
}

fn labnet(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(labnet_bin())
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const KEY: &str = "AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==";

#[test]
fn mount_json_matches_the_seed_form() {
    let c = "3mon-v2v1-127.0.0.1-vstartports";
    let dump = s(&format!("{c}.mon_dump.json-pretty"));
    let kr = s(&format!("{c}.auth_get_client.fs.keyring"));
    let args = [
        "mount",
        "--mon-dump",
        &dump,
        "--name",
        "fs",
        "--fs",
        "a",
        "--keyring",
        &kr,
        "--ms-mode",
        "crc",
        "--preset",
        "seed",
        "--syntax",
        "new",
        "--format",
        "json",
        "/mnt",
    ];
    let (ok, out, err) = labnet(&args);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["source"], "fs@0d11e97a-bb59-47ec-9a31-a3ee664e88ef.a=/");
    assert_eq!(v["data"], "mon_addr=127.0.0.1:40762/127.0.0.1:40764/127.0.0.1:40766,ms_mode=crc,name=fs,secret=<redacted>,norequire_active_mds,noshare");
    assert_eq!(v["unit_name"], "mnt.mount");
    assert!(!out.contains(KEY));

    let mut shown = args.to_vec();
    shown.insert(1, "--show-secret");
    let (ok, out, _) = labnet(&shown);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["data"]
        .as_str()
        .unwrap()
        .contains(&format!("secret={KEY}")));
}

#[test]
fn mount_old_syntax_for_an_old_kernel_from_text_dump() {
    let (ok, out, err) = labnet(&[
        "mount",
        "--mon-dump",
        &s("1mon-v2v1-127.0.0.1.mon_dump.txt"),
        "--name",
        "fs",
        "--fs",
        "a",
        "--kernel-release",
        "5.10.0-28-amd64",
        "--auth",
        "key",
        "/mnt/ceph",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "mount -t ceph 127.0.0.1:6789:/ /mnt/ceph -o name=fs,key=client.fs,mds_namespace=a,fsid=9c5e8523-e32c-4ca9-80da-df6e8fddd9bf");
}

#[test]
fn mount_errors_are_clear() {
    let (ok, _, err) = labnet(&[
        "mount",
        "--mon-dump",
        &s("1mon-v1only-msgr2false-127.0.0.1.mon_dump.json"),
        "--name",
        "fs",
        "--fs",
        "a",
        "--ms-mode",
        "secure",
    ]);
    assert!(!ok);
    assert!(
        err.contains("no v2 mon address: ms_mode=secure needs one"),
        "{err}"
    );
    let (ok, _, err) = labnet(&[
        "mount",
        "--mon-dump",
        &s("1mon-v2only-msgr1false-127.0.0.1-nofs.mon_dump.json"),
        "--name",
        "fs",
        "--fs",
        "a",
        "--syntax",
        "new",
        "--fs-ls",
        &s("1mon-v2only-msgr1false-127.0.0.1-nofs.fs_ls.json"),
    ]);
    assert!(!ok);
    assert!(
        err.contains("no such fs \"a\": the cluster has no file systems"),
        "{err}"
    );
    let (ok, _, err) = labnet(&[
        "mount",
        "--mon-dump",
        &s("1mon-v2v1-127.0.0.1.fs_ls.txt"),
        "--name",
        "fs",
    ]);
    assert!(!ok);
    assert!(
        err.contains("fs_ls.txt: not recognised: expected `ceph mon dump` output"),
        "{err}"
    );
    let (ok, _, err) = labnet(&["mount", "--mon-dump", &s("README.txt"), "--name", "fs"]);
    assert!(!ok);
    assert!(err.contains("README.txt: mon_host: missing"), "{err}");
}

#[test]
fn kernel_config_prints_and_merges() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../mountgen/tests/golden");
    let (ok, out, _) = labnet(&["kernel-config"]);
    assert!(ok);
    assert_eq!(
        out,
        std::fs::read_to_string(golden.join("kconfig.builtin")).unwrap()
    );
    let (ok, out, _) = labnet(&["kernel-config", "--modules"]);
    assert!(ok);
    assert_eq!(
        out,
        std::fs::read_to_string(golden.join("kconfig.modules")).unwrap()
    );

    let dir = testkit::temp_dir("kcfg");
    let cfg = dir.path().join(".config");
    std::fs::write(
        &cfg,
        "CONFIG_64BIT=y\n# CONFIG_CEPH_FS is not set\nCONFIG_CEPH_LIB=y\nCONFIG_XFS_FS=m\n",
    )
    .unwrap();
    let (ok, out, err) = labnet(&[
        "kernel-config",
        "--modules",
        "--merge",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("set CONFIG_CEPH_LIB: y -> m\nset CONFIG_CEPH_FS: n -> m\n"),
        "{out}"
    );
    assert!(out.contains("set CONFIG_XFS_FS: m -> y"), "{out}");
    // Not in a kernel tree: merged as text, and it says Kconfig did not check it.
    assert!(out.contains("not checked against Kconfig"), "{out}");
    let merged = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        merged
            .starts_with("CONFIG_64BIT=y\nCONFIG_CEPH_FS=m\nCONFIG_CEPH_LIB=m\nCONFIG_XFS_FS=y\n"),
        "{merged}"
    );
    assert!(merged.contains("\nCONFIG_DYNAMIC_DEBUG=y\n"));
    assert!(merged.contains("\nCONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y\n"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".config.old")).unwrap(),
        "CONFIG_64BIT=y\n# CONFIG_CEPH_FS is not set\nCONFIG_CEPH_LIB=y\nCONFIG_XFS_FS=m\n"
    );
    // A second merge changes nothing.
    let (ok, out, _) = labnet(&[
        "kernel-config",
        "--modules",
        "--merge",
        cfg.to_str().unwrap(),
    ]);
    assert!(ok);
    assert!(!out.contains("set "), "{out}");
    // --no-vm leaves the VM part out.
    let (ok, out, _) = labnet(&["kernel-config", "--no-vm"]);
    assert!(ok);
    assert_eq!(
        out,
        std::fs::read_to_string(golden.join("kconfig.builtin-novm")).unwrap()
    );
}
