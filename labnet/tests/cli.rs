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

/// A temp dir with LABNET_* pointing into it, removed on drop.
struct Env {
    dir: std::path::PathBuf,
}

impl Env {
    fn new(tag: &str) -> Env {
        let dir = std::env::temp_dir().join(format!("lc-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Env { dir }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_labnet"));
        c.args(args)
            .env("LABNET_CONFIG_DIR", &self.dir)
            .env("LABNET_RUN_DIR", self.dir.join("run"))
            .env("LABNET_STATE_DIR", self.dir.join("state"))
            .env_remove("LABNET_LAB")
            .env_remove("RUST_BACKTRACE");
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }

    /// A valid lab config `NAME.toml` in the config dir.
    fn lab(&self, name: &str, extra: &str) {
        std::fs::write(
            self.dir.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\n[bridge]\nname = \"{name}br\"\naddress = \"10.79.0.1/24\"\n\
                 [dhcp]\nrange_start = \"10.79.0.100\"\nrange_end = \"10.79.0.150\"\n{extra}"
            ),
        )
        .unwrap();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Item 1: a command writing into a pipe nobody reads any more (`labnet leases --json |
/// head -0`) ends quietly (SIGPIPE, like ls or cat), never with a panic and exit 101.
#[test]
fn closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let e = Env::new("pipe");
    e.lab("lcpipe", "");
    let mon = "[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0]";
    let fsid = "11111111-2222-3333-4444-555555555555";
    let cases: &[&[&str]] = &[
        &["leases", "lcpipe", "--json"],
        &["leases", "lcpipe"],
        &["status", "lcpipe"],
        &["status", "lcpipe", "--json"],
        &["doctor", "lcpipe"],
        &[
            "units",
            "print",
            "lcpipe",
            "--labnet-bin",
            "/usr/bin/labnet",
        ],
        &[
            "mount",
            "--mon-host",
            mon,
            "--name",
            "fs",
            "--fs",
            "a",
            "--fsid",
            fsid,
        ],
        &[
            "mount",
            "--mon-host",
            mon,
            "--name",
            "fs",
            "--fs",
            "a",
            "--fsid",
            fsid,
            "--format",
            "all",
        ],
        &["kernel-config"],
        &["list", "--json"],
        &["completions", "bash"],
        &["man"],
        &["--help"],
    ];
    for args in cases {
        let (r, w) = nix::unistd::pipe().unwrap();
        // The reader is gone before labnet writes a byte: every write hits EPIPE.
        drop(r);
        let out = e.cmd(args).stdout(w).output().unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "labnet {args:?}: {err}"
        );
        assert!(
            out.status.signal() == Some(libc::SIGPIPE) || out.status.code() == Some(0),
            "labnet {args:?} ended {:?}: {err}",
            out.status
        );
    }
}

/// Item 4: the lab is chosen the same way everywhere: positional LAB, --lab (before or
/// after the subcommand), $LABNET_LAB; `labnet list --json` shows every lab.
#[test]
fn one_way_to_choose_the_lab() {
    let e = Env::new("lab");
    e.lab("lcsel", "");
    // `vm list LAB` and `leases --lab LAB` (both refused before).
    for args in [
        &["vm", "list", "lcsel", "--json"][..],
        &["vm", "list", "--lab", "lcsel", "--json"],
        &["--lab", "lcsel", "vm", "list", "--json"],
        &["leases", "--lab", "lcsel", "--json"],
        &["leases", "lcsel", "--json"],
    ] {
        let out = e.run(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "[]", "{args:?}");
    }
    // $LABNET_LAB is the default; a lab that does not exist is named in the error.
    let out = e
        .cmd(&["leases"])
        .env("LABNET_LAB", "lcnope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no config for lab \"lcnope\""),
        "{}",
        stderr(&out)
    );
    let out = e
        .cmd(&["leases", "--json"])
        .env("LABNET_LAB", "lcsel")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // LAB and --lab disagreeing is an error (bad usage: exit 2), not a silent pick.
    let out = e.run(&["status", "lcsel", "--lab", "other"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("two labs given"), "{}", stderr(&out));

    std::fs::write(
        e.dir.join("lcbad.toml"),
        "name = \"lcbad\"\n[dhcp]\nlease_secs = \"x\"\n",
    )
    .unwrap();
    let out = e.run(&["list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let state = |n: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing from {v}"))["state"]
            .clone()
    };
    assert_eq!(state("lcsel"), "down");
    assert_eq!(state("lcbad"), "invalid");
    assert_eq!(state("sepian"), "down");
}

/// Item 5: completion scripts that the shells accept, a man page that renders, kmount
/// --version, and no "seed" left in the help texts.
#[test]
fn completions_and_man_page() {
    let e = Env::new("compl");
    let dir = &e.dir;
    for (shell, check) in [("bash", "bash"), ("zsh", "zsh")] {
        let out = e.run(&["completions", shell]);
        assert!(out.status.success(), "{}", stderr(&out));
        let f = dir.join(format!("labnet.{shell}"));
        std::fs::write(&f, &out.stdout).unwrap();
        assert!(stdout(&out).contains("kernel-config"), "{shell}");
        if shell == "zsh" && Command::new("zsh").arg("-c").arg("true").output().is_err() {
            continue; // zsh is not a CI dependency; bash is.
        }
        let ok = Command::new(check).arg("-n").arg(&f).output().unwrap();
        assert!(ok.status.success(), "{check} -n: {}", stderr(&ok));
    }
    let fish = e.run(&["completions", "fish"]);
    assert!(stdout(&fish).contains("complete -c labnet"));

    let man = e.run(&["man"]);
    assert!(man.status.success());
    let page = dir.join("labnet.1");
    std::fs::write(&page, &man.stdout).unwrap();
    let shown = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(&page)
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(shown.status.success(), "man -l: {}", stderr(&shown));
    let text = stdout(&shown);
    assert!(
        text.contains("NAME") && text.contains("labnet - Private lab networks"),
        "{text}"
    );
    let pages = dir.join("man1");
    let out = e.run(&["man", "--dir", pages.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pages.join("labnet-vm-run.1").exists());

    // Every command's help, recursively: no "seed" (that every argument has a help text is
    // checked on the clap definition itself, in main.rs).
    let mut todo = vec![vec![]];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = e.run(&args);
        let help = stdout(&out);
        assert!(out.status.success(), "{args:?}");
        assert!(
            !help.to_lowercase().contains("seed"),
            "{args:?} mentions seeds:\n{help}"
        );
        let mut in_cmds = false;
        for line in help.lines() {
            if line == "Commands:" {
                in_cmds = true;
                continue;
            }
            if line.is_empty() || !line.starts_with("  ") {
                in_cmds = false;
            }
            // A command's line; deeper-indented ones continue a wrapped description.
            if in_cmds && !line.starts_with("   ") {
                let name = line.split_whitespace().next().unwrap().to_string();
                if name != "help" {
                    let mut p = path.clone();
                    p.push(name);
                    todo.push(p);
                }
            }
        }
    }
}

/// Item 6: `error: …` with the causes, never a backtrace (RUST_BACKTRACE=1 too) unless
/// --debug; a TOML error keeps its snippet; a missing config is said once; a run without
/// CAP_NET_ADMIN is told it needs root before anything is touched.
#[test]
fn errors_are_reported_once_without_backtrace() {
    let e = Env::new("err");
    std::fs::write(
        e.dir.join("lcbad.toml"),
        "name = \"lcbad\"\n[dhcp]\nlease_secs = \"long\"\n",
    )
    .unwrap();
    let out = e
        .cmd(&["status", "lcbad"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        !err.contains("backtrace") && !err.contains("Stack"),
        "{err}"
    );
    // The snippet: the line itself and the caret line under it.
    assert!(err.contains("\n3 | lease_secs = \"long\"\n"), "{err}");
    assert!(err.contains("^^^^^^"), "{err}");

    let out = e.run(&["leases", "lcmissing"]);
    let err = stderr(&out);
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = e
        .cmd(&["--debug", "leases", "lcmissing"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("Stack backtrace"), "{}", stderr(&out));

    // Without CAP_NET_ADMIN (the bounding set dropped, so not even root has it).
    e.lab("lcroot", "");
    let out = Command::new("setpriv")
        .args([
            "--bounding-set",
            "-net_admin",
            "--inh-caps",
            "-net_admin",
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_labnet"))
        .args(["up", "lcroot"])
        .env("LABNET_CONFIG_DIR", &e.dir)
        .env("LABNET_RUN_DIR", e.dir.join("run"))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("needs root (CAP_NET_ADMIN)"), "{err}");
    assert!(
        !e.dir.join("run").join("lcroot.lock").exists(),
        "nothing touched"
    );
}

/// Item 10: kernel-config --merge keeps the old file as .config.old.
#[test]
fn generated_text_works_as_printed() {
    let e = Env::new("gen");
    let cfg = e.dir.join(".config");
    std::fs::write(&cfg, "CONFIG_X=y\n# CONFIG_CEPH_FS is not set\n").unwrap();
    let out = e.run(&["kernel-config", "--merge", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(e.dir.join(".config.old")).unwrap(),
        "CONFIG_X=y\n# CONFIG_CEPH_FS is not set\n"
    );
    assert!(std::fs::read_to_string(&cfg)
        .unwrap()
        .contains("CONFIG_CEPH_FS=y"));

    // kmount's dry run naming /sys/kernel/debug/dynamic_debug/control and --version:
    // mountgen/tests/kmount_e2e.rs.
}

/// Item 9: duplicate reservations are refused when the config is loaded, naming both
/// entries; one inside the dynamic pool is warned about.
#[test]
fn duplicate_reservations_are_refused() {
    let e = Env::new("res");
    let r = |mac: &str, ip: &str, h: &str| {
        format!("[[dhcp.reservations]]\nmac = \"{mac}\"\nip = \"{ip}\"\nhostname = \"{h}\"\n")
    };
    for (extra, field, says) in [
        (
            r("52:54:00:00:00:02", "10.79.0.10", "b"),
            "dhcp.reservations[1].ip",
            "10.79.0.10 is also reserved by dhcp.reservations[0]",
        ),
        (
            r("52:54:00:00:00:01", "10.79.0.11", "b"),
            "dhcp.reservations[1].mac",
            "52:54:00:00:00:01 is also the MAC of dhcp.reservations[0]",
        ),
        (
            r("52:54:00:00:00:02", "10.79.0.11", "A"),
            "dhcp.reservations[1].hostname",
            "\"A\" is also the hostname of dhcp.reservations[0]",
        ),
    ] {
        e.lab(
            "lcdup",
            &(r("52:54:00:00:00:01", "10.79.0.10", "a") + &extra),
        );
        let out = e.run(&["leases", "lcdup"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("lcdup.toml: {field}: {says}")),
            "{err}"
        );
    }
    e.lab("lcdup", &r("52:54:00:00:00:01", "10.79.0.120", "a"));
    let out = e.run(&["leases", "lcdup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning:")
            && stderr(&out)
                .contains("10.79.0.120 is inside the dynamic pool 10.79.0.100-10.79.0.150"),
        "{}",
        stderr(&out)
    );
}

/// `labnet peer list` of a lab that is not up: the configured peers, "not up", no counters;
/// `--json` the same rows. (The live columns: tests/tests/peers.rs.)
#[test]
fn peer_list_of_a_lab_that_is_not_up() {
    let e = Env::new("peers");
    e.lab(
        "lpl",
        "[peering]\nlisten_port = 51820\n\
         [[peers]]\nname = \"labb\"\npublic_key = \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb=\"\n\
         endpoint = \"10.99.0.2:51820\"\nsubnet = \"192.168.1.0/24\"\n\
         [[peers]]\nname = \"labc\"\npublic_key = \"ccccccccccccccccccccccccccccccccccccccccccc=\"\n\
         subnet = \"10.1.0.0/16\"\nzone = \"ceph.example\"\n",
    );
    let table = e.run(&["peer", "list", "--lab", "lpl"]);
    assert!(table.status.success(), "{}", stderr(&table));
    let json = e.run(&["peer", "list", "--lab", "lpl", "--json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    testkit::golden!(
        "peer-list-not-up.txt",
        &format!("{}# --json\n{}", stdout(&table), stdout(&json))
    );
}

/// `labnet leases` reads a lease log written before the record moved into the model crate
/// (model/tests/data/leases-v1.log), lists its leases, and names each damaged line it
/// skipped on stderr (a torn last line is an append in progress: not reported).
#[test]
fn leases_name_the_damaged_lines_they_skip() {
    let e = Env::new("leases");
    e.lab("lcdmg", "");
    let state = e.dir.join("state").join("lcdmg");
    std::fs::create_dir_all(&state).unwrap();
    let v1 = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../model/tests/data/leases-v1.log"
    );
    std::fs::copy(v1, state.join("leases.log")).unwrap();
    let out = e.run(&["leases", "lcdmg", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let got: Vec<(&str, &str)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["ip"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("192.168.0.100", "active"),
            ("192.168.0.101", "released"),
            ("192.168.0.102", "declined"),
            ("192.168.0.103", "expired")
        ]
    );
    let err = stderr(&out);
    let log = state.join("leases.log");
    let warnings: Vec<&str> = err.lines().collect();
    assert_eq!(warnings.len(), 2, "{err}");
    assert!(
        warnings[0].starts_with(&format!("warning: {} line 8: checksum ", log.display())),
        "{err}"
    );
    assert!(
        warnings[1].starts_with(&format!(
            "warning: {} line 9: not a lease record: missing field",
            log.display()
        )),
        "{err}"
    );
}
