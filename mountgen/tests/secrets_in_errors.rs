//! No kmount error message echoes a secret (issue 17, item 7): every input that can hold one —
//! `-o` options, the key file, the keyring, stdin, and a keyring handed to the wrong option —
//! given wrong, and stdout + stderr searched for the key and for any long piece of it.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const KEY: &str = "AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==";

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ceph-samples")
}

const CASE: &str = "3mon-v2v1-127.0.0.1-vstartports";

fn dump() -> String {
    samples()
        .join(format!("{CASE}.mon_dump.json-pretty"))
        .display()
        .to_string()
}

/// kmount ARGS (a dry run unless it fails first), `stdin` fed in; (success, stdout+stderr).
fn kmount(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmount"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // kmount may fail (and close stdin) before it reads it.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let o = child.wait_with_output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Neither `secret` nor any 12-character piece of it is in `out`.
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

fn tmp_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn option_errors_never_quote_the_option() {
    let d = dump();
    let dir = testkit::temp_dir("kmount-secrets");
    let keyring = tmp_file(&dir, "ok.keyring", &format!("[client.fs]\n\tkey = {KEY}\n"));
    let kr = keyring.display().to_string();
    for opt in [
        format!("secret= {KEY}"),
        format!("secret={KEY}"),
        format!("Secret={KEY}"),
        format!(" secret={KEY}"),
        format!("key={KEY}"),
        format!("secretfile={KEY}"),
        KEY.to_string(),
        format!("{KEY} "),
        format!("noshare,{KEY}"),
        format!("mykey={KEY} x"),
        format!("mykey=\t{KEY}"),
    ] {
        let (ok, out) = kmount(
            &[
                "--dry-run",
                "--mon-dump",
                &d,
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
        assert!(!ok, "-o {opt:?} was accepted:\n{out}");
        assert!(out.contains("option"), "-o {opt:?}: {out}");
        assert_not_echoed(KEY, &out, &format!("-o {opt:?}"));
    }
}

#[test]
fn key_input_errors_never_quote_the_key() {
    let d = dump();
    // A key one character off (no longer valid base64 / no longer a ceph key).
    let broken = KEY.replacen('+', "*", 1);
    let short = &KEY[..30];
    let dir = testkit::temp_dir("kmount-secrets");
    let bad_keyring = tmp_file(
        &dir,
        "bad.keyring",
        &format!("[client.fs]\n\tkey = {broken}\n"),
    );
    let other_entity = tmp_file(
        &dir,
        "other.keyring",
        &format!("[client.admin]\n\tkey = {KEY}\n"),
    );
    let bad_file = tmp_file(&dir, "bad.key", &format!("{short}\n"));
    let good_keyring = tmp_file(
        &dir,
        "good.keyring",
        &format!("[client.fs]\n\tkey = {KEY}\n"),
    );
    let base = ["--dry-run", "--name", "fs", "--fs", "a"];
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec![
                "--mon-dump".into(),
                d.clone(),
                "--keyring".into(),
                bad_keyring.display().to_string(),
            ],
            "",
            &broken,
        ),
        (
            vec![
                "--mon-dump".into(),
                d.clone(),
                "--keyring".into(),
                other_entity.display().to_string(),
            ],
            "",
            KEY,
        ),
        (
            vec![
                "--mon-dump".into(),
                d.clone(),
                "--secret-file".into(),
                bad_file.display().to_string(),
            ],
            "",
            short,
        ),
        (
            vec!["--mon-dump".into(), d.clone(), "--secret-stdin".into()],
            &broken,
            &broken,
        ),
        // The keyring handed to the options that read a mon dump or an fs list.
        (
            vec![
                "--mon-dump".into(),
                good_keyring.display().to_string(),
                "--secret-stdin".into(),
            ],
            KEY,
            KEY,
        ),
        (
            vec![
                "--mon-dump".into(),
                d.clone(),
                "--fs-ls".into(),
                good_keyring.display().to_string(),
                "--secret-stdin".into(),
            ],
            KEY,
            KEY,
        ),
    ];
    for (extra, stdin, secret) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend(extra.iter().map(String::as_str));
        args.push("/mnt");
        let (ok, out) = kmount(&args, stdin);
        assert!(!ok, "{args:?} succeeded:\n{out}");
        assert_not_echoed(secret, &out, &format!("{args:?}"));
    }
}
