//! End-to-end tests of the `kmount` binary: --dry-run output, secret handling, errors, and
//! (as root) the real add_key(2)/mount(2) calls observed with strace.
mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Output, Stdio};

const C3: &str = "3mon-v2v1-127.0.0.1-vstartports";
const KEY3: &str = "AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==";
const FSID3: &str = "0d11e97a-bb59-47ec-9a31-a3ee664e88ef";

fn kmount(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kmount"));
    c.args(args).stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("run kmount");
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn f(name: &str) -> String {
    fixture(name).to_str().unwrap().to_string()
}

/// Pieces of the key long enough to identify it, so partial leaks are caught too.
fn leaks(hay: &str, key: &str) -> bool {
    key.as_bytes()
        .windows(12)
        .any(|w| hay.contains(std::str::from_utf8(w).unwrap()))
}

#[test]
fn dry_run_with_keyring_prints_the_mount_without_the_secret() {
    let dump = f(&format!("{C3}.mon_dump.json"));
    let keyring = f(&format!("{C3}.auth_get_client.fs.keyring"));
    let args = [
        "--dry-run",
        "--mon-dump",
        &dump,
        "--keyring",
        &keyring,
        "--name",
        "fs",
        "--fs",
        "a",
        "--syntax",
        "new",
        "--ms-mode",
        "crc",
        "--preset",
        "testing",
        "--conf-out",
        "/etc/ceph/ceph.conf",
        "--debug",
        "/mnt",
    ];
    let o = kmount(&args, None);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let want_mount = format!(
        "mount(\"fs@{FSID3}.a=/\", \"/mnt\", \"ceph\", 0, \"mon_addr=127.0.0.1:40762/127.0.0.1:40764/127.0.0.1:40766,\
         ms_mode=crc,name=fs,key=client.fs,norequire_active_mds,noshare\")"
    );
    assert!(
        out.lines().any(|l| l == want_mount),
        "no `{want_mount}` in:\n{out}"
    );
    assert!(out.contains(&format!("add_key(\"ceph\", \"client.fs\", <28-byte key from {keyring}>, KEY_SPEC_PROCESS_KEYRING)")), "{out}");
    assert!(
        out.contains(&read_fixture(&format!("{C3}.generate-minimal-conf.txt"))),
        "conf not printed:\n{out}"
    );
    assert!(
        out.contains("echo 'module ceph +p' > /sys/kernel/debug/dynamic_debug/control"),
        "{out}"
    );
    // Nothing of the secret anywhere: not in what we ran it with, not in what it printed.
    assert!(!args.iter().any(|a| leaks(a, KEY3)));
    assert!(
        !leaks(&out, KEY3) && !leaks(&err, KEY3),
        "secret leaked:\n{out}\n{err}"
    );
}

#[test]
fn show_secret_prints_it_and_the_fallback_command() {
    let dump = f(&format!("{C3}.mon_dump.json"));
    let keyring = f(&format!("{C3}.auth_get_client.fs.keyring"));
    let o = kmount(
        &[
            "-n",
            "--mon-dump",
            &dump,
            "--keyring",
            &keyring,
            "--fs",
            "a",
            "--syntax",
            "new",
            "--show-secret",
            "/mnt",
        ],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains(&format!("base64 {KEY3}")), "{out}");
    assert!(out.contains(&format!(",name=fs,secret={KEY3}")), "{out}");
}

#[test]
fn dump_from_command_secret_from_stdin_old_syntax() {
    let dump = f(&format!("{C3}.mon_dump.txt"));
    let key = read_fixture(&format!("{C3}.auth_get-key_client.fs.txt"));
    let cmd = format!("echo 'dumped monmap epoch 1' >&2; cat '{dump}'");
    let o = kmount(
        &[
            "--dry-run",
            "--mon-dump-cmd",
            &cmd,
            "--secret-stdin",
            "--name",
            "client.fs",
            "--fs",
            "a",
            "--syntax",
            "old",
            "--mountpoint",
            "/mnt/x",
        ],
        Some(&key),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let want = format!(
        "mount(\"127.0.0.1:40763,127.0.0.1:40765,127.0.0.1:40767:/\", \"/mnt/x\", \"ceph\", 0, \
         \"name=fs,key=client.fs,mds_namespace=a,fsid={FSID3}\")"
    );
    assert!(out.lines().any(|l| l == want), "no `{want}` in:\n{out}");
    assert!(out.contains("(text): 3 mon(s)"), "{out}");
    assert!(!leaks(&out, KEY3) && !leaks(&err, KEY3));
}

#[test]
fn name_defaults_to_the_only_client_in_the_keyring_and_dump_from_stdin() {
    let dump = read_fixture("1mon-v2v1-127.0.0.1.mon_dump.json-pretty");
    let sf = f("1mon-v2v1-127.0.0.1.auth_get_client.fs.keyring");
    let o = kmount(
        &[
            "--dry-run",
            "--mon-dump",
            "-",
            "--secret-file",
            &sf,
            "--fs",
            "a",
            "--syntax",
            "new",
            "/mnt",
        ],
        Some(&dump),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("\"mon_addr=127.0.0.1:3300,ms_mode=prefer-crc,name=fs,key=client.fs\""),
        "{out}"
    );
}

#[test]
fn secrets_on_the_command_line_are_refused() {
    let dump = f(&format!("{C3}.mon_dump.json"));
    let o = kmount(
        &[
            "--dry-run",
            "--mon-dump",
            &dump,
            "--name",
            "fs",
            "--fs",
            "a",
            "--secret",
            KEY3,
            "/mnt",
        ],
        None,
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        err.contains("--secret: secrets are not taken from the command line"),
        "{err}"
    );
    let opt = format!("secret={KEY3}");
    let o = kmount(
        &[
            "--dry-run",
            "--mon-dump",
            &dump,
            "--name",
            "fs",
            "--fs",
            "a",
            "-o",
            &opt,
            "/mnt",
        ],
        None,
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains(
            "option secret=: pass the secret with --keyring, --secret-file or --secret-stdin"
        ),
        "{err}"
    );
    assert!(!err.contains(KEY3), "error echoes the secret: {err}");
}

#[test]
fn errors_name_what_is_missing() {
    let v1 = f("1mon-v1only-msgr2false-127.0.0.1.mon_dump.json");
    let kr = f("1mon-v1only-msgr2false-127.0.0.1.auth_get_client.fs.keyring");
    let nofs = f("1mon-v2only-msgr1false-127.0.0.1-nofs.mon_dump.json");
    let nofs_ls = f("1mon-v2only-msgr1false-127.0.0.1-nofs.fs_ls.json");
    let empty_kr = f("1mon-v2only-msgr1false-127.0.0.1-nofs.auth_get_client.fs.keyring");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["--mon-dump", &v1, "--keyring", &kr, "--fs", "a", "--ms-mode", "crc", "--syntax", "new", "/mnt"],
         "no v2 mon address: ms_mode=crc needs one".into()),
        (vec!["--mon-dump", &v1, "--keyring", &kr, "--fs", "a", "--fsid", FSID3, "--syntax", "new", "/mnt"],
         format!("fsid mismatch: --fsid is {FSID3} but the mon dump says edd7ef36-a0d9-459a-b51a-ef5217e7ef1b")),
        (vec!["--mon-dump", &nofs, "--name", "fs", "--keyring", &empty_kr, "--fs", "a", "--syntax", "new", "/mnt"],
         format!("unreadable key in {empty_kr}: no [client.fs] section (sections: none)")),
        (vec!["--mon-dump", &nofs, "--name", "fs", "--fs", "a", "--fs-ls", &nofs_ls, "--syntax", "new", "/mnt"],
         "no such fs \"a\": the cluster has no file systems".into()),
        (vec!["--mon-dump", "/nonexistent/dump.json", "--name", "fs", "/mnt"],
         "--mon-dump: cannot read /nonexistent/dump.json".into()),
        (vec!["--mon-dump-cmd", "echo nope >&2; exit 3", "--name", "fs", "/mnt"],
         "--mon-dump-cmd: `echo nope >&2; exit 3` failed (exit status: 3)".into()),
        (vec!["--mon-dump-cmd", "exec sleep 30", "--cmd-timeout", "1", "--name", "fs", "/mnt"],
         "--mon-dump-cmd: `exec sleep 30` still running after 1s; killed (--cmd-timeout)".into()),
        (vec!["--mon-dump-cmd", "echo '{}'", "--name", "fs", "/mnt"],
         "`echo '{}'`: mons: missing".into()),
        (vec!["--mon-dump", &v1, "--name", "fs", "--syntax", "new", "/mnt"],
         "fs: the new syntax (NAME@FSID.FS=/PATH) needs a file system name".into()),
        (vec!["--mon-dump", &v1, "--keyring", "/nonexistent/k", "--fs", "a", "/mnt"],
         "--keyring: cannot read /nonexistent/k".into()),
        (vec!["--mon-dump", &v1, "--name", "fs", "--fs", "a"], "no mount point given".into()),
        (vec!["--mon-dump", "-", "--secret-stdin", "--name", "fs", "/mnt"], "only one input can come from stdin".into()),
        (vec!["--mon-dump", &v1, "--name", "fs", "--ms-mode", "fast", "/mnt"],
         "--ms-mode: ms_mode: \"fast\" is not one of legacy, crc, secure, prefer-crc, prefer-secure".into()),
    ];
    for (mut args, want) in cases {
        args.insert(0, "--dry-run");
        let o = kmount(&args, None);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded:\n{out}");
        assert!(
            err.contains(&want),
            "{args:?}\n  want: {want}\n  stderr: {err}"
        );
    }
}

#[test]
fn mon_host_instead_of_a_dump() {
    let o = kmount(
        &[
            "--dry-run",
            "--mon-host",
            "[v2:[fd00::1]:3300/0,v1:[fd00::1]:6789/0] 10.0.0.2",
            "--fsid",
            FSID3,
            "--name",
            "fs",
            "--fs",
            "a",
            "--syntax",
            "new",
            "/mnt",
        ],
        None,
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("\"mon_addr=[fd00::1]:3300/10.0.0.2:3300,ms_mode=prefer-crc,name=fs\""),
        "{out}"
    );
    let o = kmount(
        &[
            "--dry-run",
            "--mon-host",
            "10.0.0.2",
            "--name",
            "fs",
            "--fs",
            "a",
            "--syntax",
            "new",
            "/mnt",
        ],
        None,
    );
    let (_, err) = text(&o);
    assert!(
        err.contains("no fsid: the input has none and no --fsid was given"),
        "{err}"
    );
}

#[test]
fn help_lists_the_interface() {
    let o = kmount(&["--help"], None);
    let (out, _) = text(&o);
    assert!(o.status.success());
    for opt in [
        "--mon-dump FILE|-",
        "--mon-dump-cmd CMD",
        "--keyring FILE",
        "--secret-stdin",
        "--dry-run",
        "--preset testing",
        "--syntax auto|new|old",
    ] {
        assert!(out.contains(opt), "help lacks {opt}");
    }
}

#[test]
fn version() {
    let o = kmount(&["--version"], None);
    assert!(o.status.success());
    assert_eq!(
        text(&o).0,
        format!("kmount {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// Parses strace's `-xx` output of a string argument ("\x41\x51…") into bytes.
fn unhex(s: &str) -> Vec<u8> {
    s.split("\\x")
        .filter(|p| !p.is_empty())
        .map(|h| u8::from_str_radix(&h[..2], 16).unwrap())
        .collect()
}

/// The first `"…"` argument strings of a strace line, decoded.
fn strace_strings(line: &str) -> Vec<Vec<u8>> {
    line.split('"').skip(1).step_by(2).map(unhex).collect()
}

/// As root, kmount really calls add_key(2) and mount(2); strace shows the arguments. On a
/// kernel without the "ceph" key type (this host kind) it falls back to secret= with a warning;
/// with it, the data says key=client.fs. Either way the payload is the decoded key.
#[test]
#[ignore = "needs root (mount(2), add_key(2))"]
fn real_run_traced_as_root() {
    testkit::require_root();
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let mnt = dir.path().join("mnt");
    let conf = dir.path().join("etc/ceph/ceph.conf");
    let dump = f(&format!("{C3}.mon_dump.json"));
    let kr = f(&format!("{C3}.auth_get_client.fs.keyring"));
    // mount_timeout bounds the attempt should a ceph module be present (nothing listens there).
    let o = Command::new("strace")
        .args(["-f", "-xx", "-s", "4096", "-e", "trace=add_key,mount", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_kmount"))
        .args([
            "--mon-dump",
            &dump,
            "--keyring",
            &kr,
            "--fs",
            "a",
            "--syntax",
            "new",
            "--ms-mode",
            "crc",
            "--no-modprobe",
            "-o",
            "mount_timeout=2",
        ])
        .arg("--conf-out")
        .arg(&conf)
        .arg(&mnt)
        .output()
        .expect("strace (apt-get install strace; .ci/install-deps.sh installs it)");
    let err = String::from_utf8_lossy(&o.stderr);
    let tr = std::fs::read_to_string(&trace).unwrap();
    let add = tr
        .lines()
        .find(|l| l.contains("add_key("))
        .unwrap_or_else(|| panic!("no add_key in trace:\n{tr}"));
    let mount = tr
        .lines()
        .find(|l| l.contains("mount("))
        .unwrap_or_else(|| panic!("no mount in trace:\n{tr}\n{err}"));
    let a = strace_strings(add);
    assert_eq!(a[0], b"ceph");
    assert_eq!(a[1], b"client.fs");
    assert_eq!(
        a[2],
        mountgen::secret::base64_decode(KEY3).unwrap(),
        "add_key payload is the decoded key"
    );
    assert!(add.contains("28, KEY_SPEC_PROCESS_KEYRING"), "{add}");
    let m = strace_strings(mount);
    assert_eq!(m[0], format!("fs@{FSID3}.a=/").as_bytes());
    assert_eq!(m[1], mnt.to_str().unwrap().as_bytes());
    assert_eq!(m[2], b"ceph");
    let data = String::from_utf8(m[3].clone()).unwrap();
    let base = "mon_addr=127.0.0.1:40762/127.0.0.1:40764/127.0.0.1:40766,ms_mode=crc,name=fs,";
    if add.contains("ENODEV") {
        assert_eq!(data, format!("{base}secret={KEY3},mount_timeout=2"));
        assert!(
            err.contains("the kernel has no \"ceph\" key type"),
            "no fallback warning: {err}"
        );
        assert!(!leaks(&err, KEY3), "secret in messages: {err}");
    } else {
        assert_eq!(data, format!("{base}key=client.fs,mount_timeout=2"));
    }
    // Nothing listens on those ports, so the mount fails, with an explanation.
    assert!(!o.status.success());
    assert!(err.contains("kmount: error: mount(\"fs@"), "{err}");
    assert!(mnt.is_dir(), "mount point was not created");
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        read_fixture(&format!("{C3}.generate-minimal-conf.txt"))
    );
}
