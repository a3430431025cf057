//! `labnet mount --format fstab|unit` prints what mount(8) can use as printed: the real
//! mount.ceph (ceph-common) parses the options, reads the key file itself and gets as far
//! as the kernel (this host has no ceph file system, so that is where it stops). It runs in
//! a network namespace of its own (`unshare -n`): nothing leaves the machine.
use labnet_tests::*;
use std::process::Command;

const KEY: &str = "AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==";

/// (source, options) of the fstab line.
fn fstab_fields(line: &str) -> (String, String) {
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(f.len(), 6, "{line}");
    assert_eq!(f[2], "ceph", "{line}");
    (f[0].to_string(), f[3].to_string())
}

/// mount.ceph SOURCE DIR -v -n -o OPTIONS, as mount(8) runs it for an fstab line.
fn mount_ceph(source: &str, dir: &str, opts: &str) -> String {
    let out = run(Command::new("unshare")
        .args(["-n", "mount.ceph", source, dir, "-v", "-n", "-o", opts])
        // mount.ceph's config lookups: no ceph.conf here, and none from the environment.
        .env_remove("CEPH_ARGS")
        .env_remove("CEPH_CONF"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
#[ignore = "needs root (unshare -n for mount.ceph)"]
fn fstab_and_unit_work_as_printed() {
    require_root();
    let mut c = Cleanup::default();
    let dir = temp_dir(&mut c, "mount");
    let key = dir.join("lcfs.key");
    std::fs::write(&key, format!("{KEY}\n")).unwrap();
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mnt = mnt.display().to_string();
    let key_s = key.display().to_string();
    let base = [
        "mount",
        "--mon-host",
        "127.0.0.1:6789",
        "--name",
        "lcfs",
        "--syntax",
        "old",
        "--secret-file",
        &key_s,
    ];

    let out = labnet(&[&base[..], &["--format", "fstab", &mnt]].concat(), &[]);
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !line.contains("secret="),
        "no inline (or redacted) secret: {line}"
    );
    assert!(line.contains(&format!("secretfile={key_s}")), "{line}");
    let (source, opts) = fstab_fields(&line);
    let said = mount_ceph(&source, &mnt, &opts);
    // mount.ceph read the key file (it goes to the kernel keyring, not the options) and
    // handed the rest to the kernel.
    let to_kernel = said
        .lines()
        .find(|l| l.contains("will pass to kernel"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(!to_kernel.contains("secret"), "{said}");
    assert!(!said.contains("unable to read secretfile"), "{said}");
    // The same with a key file that is not there: mount.ceph says so (the check is real).
    let broken = opts.replace(&key_s, "/nonexistent/lcfs.key");
    assert!(mount_ceph(&source, &mnt, &broken).contains("unable to read secretfile"));

    // The .mount unit's What=/Options= are the same, usable, pair.
    let out = labnet(&[&base[..], &["--format", "unit", &mnt]].concat(), &[]);
    let unit = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {unit}"))
            .to_string()
    };
    assert_eq!(field("What="), source);
    let unit_opts = field("Options=");
    assert!(unit_opts.contains(&format!("secretfile={key_s}")), "{unit}");
    assert!(mount_ceph(&source, &mnt, &unit_opts).contains("will pass to kernel"));

    // A keyring: name= only (mount.ceph looks the key up by name), and where to put it.
    let kr = dir.join("lcfs.keyring");
    std::fs::write(&kr, format!("[client.lcfs]\n\tkey = {KEY}\n")).unwrap();
    let kr_s = kr.display().to_string();
    let out = labnet(
        &[
            "mount",
            "--mon-host",
            "127.0.0.1:6789",
            "--name",
            "lcfs",
            "--syntax",
            "old",
            "--keyring",
            &kr_s,
            "--format",
            "fstab",
            &mnt,
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(!line.contains("secret"), "{line}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/etc/ceph/ceph.client.lcfs.keyring"),
        "{}",
        text(&out)
    );
    // A secret only on stdin cannot be referenced by a file: refused, saying what to give.
    let out = run(Command::new(labnet_bin())
        .args([
            "mount",
            "--mon-host",
            "127.0.0.1:6789",
            "--name",
            "lcfs",
            "--syntax",
            "old",
        ])
        .args(["--secret-stdin", "--format", "fstab", &mnt])
        .stdin(std::fs::File::open(&key).unwrap()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--secret-file FILE"),
        "{}",
        text(&out)
    );
}
