//! `labnet units print|install|remove` through the built binary (no root needed: nothing
//! here touches the host's systemd; install/remove use --root in a temp dir).
use labnet_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../units/tests/golden/default")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `labnet ARGS` with the config dir pointed at an empty temp dir, so the host's
/// /etc/labnet never leaks in.
fn cli(cfg_dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(labnet_bin());
    c.args(args).env("LABNET_CONFIG_DIR", cfg_dir);
    c
}

#[test]
fn units_print_matches_the_goldens() {
    let mut c = Cleanup::default();
    let tmp = temp_dir(&mut c, "units");
    let out = must(&mut cli(
        &tmp,
        &["units", "print", "--labnet-bin", "/usr/local/bin/labnet"],
    ));
    for rel in [
        "labnet@.service",
        "labnet-dhcpd@.service",
        "labnet-dns@.service",
        "labnet@sepian.service.d/labnet.conf",
    ] {
        let header = format!("# ==> /etc/systemd/system/{rel} <==\n");
        let at = out
            .find(&header)
            .unwrap_or_else(|| panic!("no {rel} in:\n{out}"));
        assert!(
            out[at + header.len()..].starts_with(&golden(rel)),
            "{rel} differs from the golden:\n{out}"
        );
    }
}

#[test]
fn units_print_runs_this_binary_by_absolute_path() {
    let mut c = Cleanup::default();
    let tmp = temp_dir(&mut c, "units");
    let out = run(&mut cli(&tmp, &["units", "print"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = std::fs::canonicalize(labnet_bin()).unwrap();
    assert!(
        stdout.contains(&format!(
            "\nExecStart={} up --no-daemons %i\n",
            bin.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\nExecStart={} dhcpd %i\n", bin.display())),
        "{stdout}"
    );
    // It is a build tree binary: labnet says so.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--labnet-bin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn units_print_broken_config_names_file_and_field() {
    let mut c = Cleanup::default();
    let tmp = temp_dir(&mut c, "units");
    let cfg = tmp.join("broken.toml");
    std::fs::write(
        &cfg,
        "name = \"brk\"\n[bridge]\naddress = \"192.168.0.1\"\n",
    )
    .unwrap();
    let out = run(&mut cli(
        &tmp,
        &["units", "print", "--config", cfg.to_str().unwrap()],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "broken config accepted:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "units printed for a broken config");
    assert!(
        stderr.contains(cfg.to_str().unwrap()) && stderr.contains("bridge.address"),
        "{stderr}"
    );

    std::fs::write(
        &cfg,
        "name = \"brk\"\n[dhcp]\nrange_begin = \"192.168.0.100\"\n",
    )
    .unwrap();
    let out = run(&mut cli(
        &tmp,
        &["units", "print", "--config", cfg.to_str().unwrap()],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(cfg.to_str().unwrap()) && stderr.contains("range_begin"),
        "{stderr}"
    );

    // A lab with no config at all is an error too, naming where it looked.
    let out = run(&mut cli(&tmp, &["units", "print", "nosuchlab"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchlab.toml"));
}

#[test]
fn units_install_and_remove_under_root() {
    let mut c = Cleanup::default();
    let tmp = temp_dir(&mut c, "units");
    let root = tmp.join("root");
    std::fs::create_dir(&root).unwrap();
    let cfg = tmp.join("my lab.toml");
    std::fs::write(
        &cfg,
        "name = \"clilab\"\n[bridge]\nname = \"br-cli\"\naddress = \"10.66.0.1/24\"\n",
    )
    .unwrap();
    let r = root.to_str().unwrap();
    // A relative --config: the units must carry the absolute path.
    let out = must(
        cli(
            &tmp,
            &[
                "units",
                "install",
                "clilab",
                "--config",
                "my lab.toml",
                "--enable",
                "--root",
                r,
                "--labnet-bin",
                "/usr/local/bin/labnet",
            ],
        )
        .current_dir(&tmp),
    );
    assert!(out.contains("enabled"), "{out}");
    let u = root.join("etc/systemd/system");
    let dropin = std::fs::read_to_string(u.join("labnet@clilab.service.d/labnet.conf")).unwrap();
    let abs = std::fs::canonicalize(&cfg).unwrap();
    assert!(
        dropin.contains(&format!(
            "ExecStart=/usr/local/bin/labnet up --no-daemons --config \"{}\" %i\n",
            abs.display()
        )),
        "{dropin}"
    );
    assert!(
        dropin.contains("Description=labnet lab clilab: br-cli 10.66.0.1/24, isolated"),
        "{dropin}"
    );
    let dns = std::fs::read_to_string(u.join("labnet-dns@clilab.service.d/labnet.conf")).unwrap();
    assert!(
        dns.contains(&format!("LoadCredential=lab.toml:{}\n", abs.display())),
        "{dns}"
    );
    let link = u.join("multi-user.target.wants/labnet@clilab.service");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        PathBuf::from("/etc/systemd/system/labnet@.service")
    );

    let out = must(&mut cli(&tmp, &["units", "remove", "clilab", "--root", r]));
    assert!(out.contains("removed"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
