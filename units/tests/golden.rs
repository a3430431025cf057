//! Every generated unit and drop-in against a golden file under tests/golden/CASE/.
//! `LABNET_BLESS=1 cargo test -p units --test golden` rewrites them.
mod common;
use common::*;
use std::path::{Path, PathBuf};

fn golden_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case)
}

fn check(case: &str, files: &[units::UnitFile]) {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    testkit::check_golden_tree(golden_dir(case), &files);
}

#[test]
fn golden_default_lab() {
    let files = units::generate(&default_lab(), &opts(Path::new(BIN), None)).unwrap();
    check("default", &files);
}

#[test]
fn golden_wireguard_lab_with_config_file() {
    let files = units::generate(&wg_lab(), &opts(Path::new(BIN), Some(WG_CONFIG))).unwrap();
    check("wireguard-config", &files);
}

/// A binary and config path that need quoting and specifier escaping.
#[test]
fn golden_awkward_paths() {
    let files = units::generate(
        &wg_lab(),
        &opts(
            Path::new("/opt/lab net/bin/labnet"),
            Some("/srv/labs 100%/wg$lab.toml"),
        ),
    )
    .unwrap();
    check("awkward-paths", &files);
}

/// The drop-in for a user's own service in the lab (`units print --for-service`).
#[test]
fn golden_service_dropin() {
    let f = units::service_dropin("sepian", "resolver-probe.service").unwrap();
    assert_eq!(
        f.path,
        Path::new("resolver-probe.service.d/labnet-sepian.conf")
    );
    testkit::check_golden(golden_dir("for-service").join(&f.path), &f.text);
    for bad in ["x", ".service", "a b.service", "x.socket"] {
        let e = units::service_dropin("sepian", bad)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--for-service"), "{e}");
    }
    assert!(units::service_dropin("a/b", "x.service").is_err());
}

#[test]
fn generated_text_has_the_contract() {
    let files = units::generate(&wg_lab(), &opts(Path::new(BIN), Some(WG_CONFIG))).unwrap();
    let get = |p: &str| {
        &files
            .iter()
            .find(|f| f.path == Path::new(p))
            .unwrap_or_else(|| panic!("no {p}"))
            .text
    };
    let lab = get("labnet@.service");
    assert!(lab.contains("\nType=oneshot\n") && lab.contains("\nRemainAfterExit=yes\n"));
    assert!(lab.contains("\nExecStart=/usr/local/bin/labnet up --no-daemons %i\n"));
    assert!(lab.contains("\nExecStop=/usr/local/bin/labnet down %i\n"));
    assert!(lab.contains("\nKillMode=control-group\n"));
    // No mount namespace for the unit that bind-mounts /run/netns/LAB.
    for k in [
        "ProtectSystem=",
        "ProtectHome=",
        "PrivateTmp=",
        "ReadWritePaths=",
        "PrivateMounts=",
        "DynamicUser=",
    ] {
        assert!(
            !lab.lines().any(|l| l.starts_with(k)),
            "lab unit must not set {k}"
        );
    }
    for (unit, sub) in [
        ("labnet-dhcpd@.service", "dhcpd"),
        ("labnet-dns@.service", "dns"),
    ] {
        let t = get(unit);
        assert!(t.contains("\nType=notify\n"), "{unit}");
        assert!(
            t.contains("\nNetworkNamespacePath=/run/netns/%i\n"),
            "{unit}"
        );
        assert!(
            t.contains(&format!("\nExecStart=/usr/local/bin/labnet {sub} %i\n")),
            "{unit}"
        );
        assert!(
            !t.lines()
                .any(|l| l.starts_with("Exec") && l.contains("--enter-netns")),
            "{unit}"
        );
        assert!(
            t.contains("\nBindsTo=labnet@%i.service\n")
                && t.contains("\nAfter=labnet@%i.service\n"),
            "{unit}"
        );
        assert!(t.contains("\nStateDirectory=labnet/%i\n"), "{unit}");
        assert!(
            t.contains("\nDynamicUser=yes\n") && t.contains("\nNoNewPrivileges=yes\n"),
            "{unit}"
        );
        assert!(
            t.contains("\nProtectSystem=strict\n") && t.contains("\nProtectHome=yes\n"),
            "{unit}"
        );
        assert!(t.contains("\nRestart=on-failure\n"), "{unit}");
        assert!(
            !t.contains("RuntimeDirectory="),
            "{unit}: would delete /run/labnet/%i on stop"
        );
        let d = get(&format!("{}.d/labnet.conf", unit.replace("@.", "@wglab.")));
        assert!(
            d.contains("\nLoadCredential=lab.toml:/etc/labnet/wglab.toml\n"),
            "{d}"
        );
        assert!(
            d.contains(&format!(
                "\nExecStart=\nExecStart=/usr/local/bin/labnet {sub} %i --config %d/lab.toml\n"
            )),
            "{d}"
        );
    }
    assert!(get("labnet-dhcpd@.service")
        .contains("\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW\n"));
    assert!(get("labnet-dns@.service").contains("\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"));
    let d = get("labnet@wglab.service.d/labnet.conf");
    assert!(d.contains("\nExecStart=\nExecStart=/usr/local/bin/labnet up --no-daemons --config /etc/labnet/wglab.toml %i\n"), "{d}");
    assert!(d.contains("Description=labnet lab wglab: br-wg 10.77.0.1/24, WireGuard wg-wglab via 192.168.20.2\n"), "{d}");
    // Nothing refers to a build tree.
    for f in &files {
        assert!(
            !f.text.contains("target/") && !f.text.contains(env!("CARGO_MANIFEST_DIR")),
            "{}",
            f.path.display()
        );
    }
}

#[test]
fn default_lab_has_no_daemon_dropins() {
    let files = units::generate(&default_lab(), &opts(Path::new(BIN), None)).unwrap();
    let paths: Vec<String> = files.iter().map(|f| f.path.display().to_string()).collect();
    assert_eq!(
        paths,
        [
            "labnet@.service",
            "labnet-dhcpd@.service",
            "labnet-dns@.service",
            "labnet@sepian.service.d/labnet.conf"
        ]
    );
    assert!(!files[3].text.contains("ExecStart"), "{}", files[3].text);
}
