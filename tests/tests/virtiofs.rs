//! `--share` and `--share-ro` end to end, as root, under TCG, on the source-built kernel
//! (VIRTIO_FS and 9P built in): with the Rust virtiofsd in PATH the guest reads and writes a
//! host directory over virtiofs, sees a file the host writes while it runs, and cannot write
//! a read-only share even after remounting it rw (the host refuses); no virtiofsd is left
//! when the VM ends. With a PATH that lacks virtiofsd the same shares go over 9p.
use labnet_tests::*;
use std::process::Stdio;
use std::time::Duration;

fn source_bzimage() -> String {
    source_kernel().bzimage.display().to_string()
}

/// The guest side: mounts, read, write, wait for the host's late file, the read-only share.
const GUEST: &str = r#"grep -E ' /mnt/(rw|ro) ' /proc/mounts | cut -d' ' -f2,3
cat /mnt/rw/in
echo from-the-guest > /mnt/rw/out
i=0; until [ -e /mnt/rw/late ] || [ $i -ge 900 ]; do i=$((i+1)); sleep 0.1; done
cat /mnt/rw/late
cat /mnt/ro/ro-in
if touch /mnt/ro/nope 2>/dev/null; then echo RO-WRITABLE; else echo RO-REFUSED; fi
mount -o remount,rw /mnt/ro && echo REMOUNTED-RW
if touch /mnt/ro/nope2 2>/dev/null; then echo RO-HOST-WRITABLE; else echo RO-HOST-REFUSED; fi
"#;

fn alive(pid: u32) -> bool {
    signal(pid as i32, 0)
}

#[test]
#[ignore = "needs root (netns, tap, qemu and virtiofsd)"]
fn virtiofs_share_reads_writes_sees_host_writes_and_ro_refuses() {
    require_root();
    let daemon = which("virtiofsd").expect("virtiofsd not in PATH (.ci/install-deps.sh)");
    let mut c = Cleanup::default();
    let name = "lvfs";
    let l = VmLab::up(&mut c, "lv", &[name]);
    let k = source_bzimage();
    let rw = l.root.join("rw");
    let ro = l.root.join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(rw.join("in"), "from-the-host\n").unwrap();
    std::fs::write(ro.join("ro-in"), "read-only-data\n").unwrap();
    let rw_arg = format!("{}:rw", rw.display());
    let ro_arg = format!("{}:ro", ro.display());
    let mut cmd = l.vm_command(&[
        "run",
        "--name",
        name,
        "--kernel",
        &k,
        "--mem",
        "512M",
        "--timeout",
        "240",
        "--share",
        &rw_arg,
        "--share-ro",
        &ro_arg,
        "--",
        "sh",
        "-c",
        GUEST,
    ]);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.pid(child.id());

    // While it runs: the guest's write reaches the host; then the host writes a file the
    // guest is waiting for. One virtiofsd per share runs meanwhile.
    wait_for(
        "the guest's write in the host dir",
        Duration::from_secs(200),
        || std::fs::read_to_string(rw.join("out")).is_ok_and(|s| s == "from-the-guest\n"),
    );
    let st = l.vm_state(name);
    let pids: Vec<u32> = st["virtiofsd_pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(pids.len(), 2, "{st}");
    for p in &pids {
        assert!(alive(*p), "virtiofsd {p} not running while the VM runs");
        let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("virtiofsd"),
            "pid {p} is not a virtiofsd"
        );
    }
    std::fs::write(rw.join("late"), "written-while-running\n").unwrap();

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr.contains(&format!(
            "{name}: shares rw, ro (ro): virtiofs ({})",
            daemon.display()
        )),
        "no virtiofs line: {stderr}"
    );
    assert_eq!(
        stdout,
        "/mnt/rw virtiofs\n/mnt/ro virtiofs\nfrom-the-host\nwritten-while-running\n\
         read-only-data\nRO-REFUSED\nREMOUNTED-RW\nRO-HOST-REFUSED\n",
        "{}",
        text(&out)
    );
    assert!(!ro.join("nope").exists() && !ro.join("nope2").exists());

    // Nothing of the daemons is left: processes, sockets.
    for p in &pids {
        assert!(!alive(*p), "virtiofsd {p} left after the VM ended");
    }
    let dir = l.vm_dir(name);
    let socks: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("virtiofs") && n.ends_with(".sock"))
        .collect();
    assert!(
        socks.is_empty(),
        "sockets left in {}: {socks:?}",
        dir.display()
    );
    for i in 0..2 {
        let sock = dir.join(format!("virtiofs{i}.sock")).display().to_string();
        assert!(
            pids_with_arg("virtiofsd", &sock).is_empty(),
            "a virtiofsd on {sock} still runs"
        );
    }
}

#[test]
#[ignore = "needs root (netns, tap, qemu)"]
fn shares_fall_back_to_9p_without_virtiofsd() {
    require_root();
    let mut c = Cleanup::default();
    let name = "lv9p";
    let l = VmLab::up(&mut c, "lv", &[name]);
    let k = source_bzimage();
    let rw = l.root.join("rw");
    let ro = l.root.join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(rw.join("in"), "from-the-host\n").unwrap();
    std::fs::write(ro.join("ro-in"), "read-only-data\n").unwrap();
    // The PATH of a machine without virtiofsd (it is installed in /usr/local/bin).
    let path = "/usr/bin:/bin:/usr/sbin:/sbin";
    assert!(
        !path
            .split(':')
            .any(|d| std::path::Path::new(d).join("virtiofsd").exists()),
        "virtiofsd in {path}"
    );
    let rw_arg = format!("{}:rw", rw.display());
    let ro_arg = format!("{}:ro", ro.display());
    let out = run(l
        .vm_command(&[
            "run", "--name", name, "--kernel", &k, "--mem", "512M", "--timeout", "240",
            "--share", &rw_arg, "--share-ro", &ro_arg, "--", "sh", "-c",
            "grep -E ' /mnt/(rw|ro) ' /proc/mounts | cut -d' ' -f2,3; cat /mnt/rw/in /mnt/ro/ro-in; \
             echo from-the-guest > /mnt/rw/out; \
             if touch /mnt/ro/nope 2>/dev/null; then echo RO-WRITABLE; else echo RO-REFUSED; fi",
        ])
        .env("PATH", path));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr.contains(&format!(
            "{name}: shares rw, ro (ro): 9p (no virtiofsd in PATH"
        )),
        "no 9p line: {stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/mnt/rw 9p\n/mnt/ro 9p\nfrom-the-host\nread-only-data\nRO-REFUSED\n",
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("out")).unwrap(),
        "from-the-guest\n"
    );
    assert!(!ro.join("nope").exists());
    assert!(l.vm_state(name)["virtiofsd_pids"]
        .as_array()
        .is_some_and(|a| a.is_empty()));
}
