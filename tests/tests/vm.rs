//! `labnet vm` end to end, as root, under TCG: a lab from `labnet up`, the source-built guest
//! kernel (linux-source-6.1 + labnet's fragment, everything built in, booted through PVH) with
//! the generated initramfs, labnet's dhcpd, and the tap's lifecycle. One test keeps the
//! Debian 6.1 distro kernel with its modules (`--modules`).
use labnet_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const KVER: &str = "6.1.0-56-amd64";

/// The source-built kernel's bzImage (vmlinux and config beside it), built on first use.
fn source_bzimage() -> String {
    source_kernel().bzimage.display().to_string()
}

/// The Debian distro kernel and its modules dir.
fn kernel() -> (String, String) {
    let root = Path::new("/var/cache/labnet-kernel");
    let k = root.join("boot").join(format!("vmlinuz-{KVER}"));
    let m = root.join("lib/modules").join(KVER);
    assert!(
        k.exists() && m.join("modules.dep").exists(),
        "guest kernel not unpacked (.ci/install-deps.sh)"
    );
    (k.display().to_string(), m.display().to_string())
}

struct Lab {
    id: String,
    env: Vec<(String, String)>,
    root: PathBuf,
}

/// A lab of its own (unique name and bridge, temp LABNET_* dirs), downed on drop.
fn lab(c: &mut Cleanup, tag: &str, daemons: bool) -> Lab {
    lab_named(c, "vm", tag, daemons)
}

/// [`lab`] with its name starting with `prefix`.
fn lab_named(c: &mut Cleanup, prefix: &str, tag: &str, daemons: bool) -> Lab {
    let id = unique(prefix);
    let root = temp_dir(c, tag);
    let env = labnet_env(&root);
    let cfg = root.join("lab.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{id}\"\n[bridge]\nname = \"{id}br\"\naddress = \"10.78.0.1/24\"\n\
             [dhcp]\nrange_start = \"10.78.0.100\"\nrange_end = \"10.78.0.150\"\n"
        ),
    )
    .unwrap();
    c.labnet(&["down", &id], &env);
    // Runs before the down above (LIFO): a daemonized VM would outlive its lab otherwise.
    for vm in ["a", "b", "c"] {
        c.labnet(&["vm", "stop", vm, "--lab", &id, "--timeout", "2"], &env);
    }
    let mut args = vec!["up", &id, "--config"];
    let cfgs = cfg.display().to_string();
    args.push(&cfgs);
    if !daemons {
        args.push("--no-daemons");
    }
    let up = labnet(&args, &env);
    assert!(up.status.success(), "{}", text(&up));
    Lab { id, env, root }
}

fn taps(lab: &str) -> Vec<String> {
    sh(&format!("ip -n {lab} -o link show"))
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .filter(|n| n.starts_with("tap-"))
        .collect()
}

/// The acceptance path: `vm run` returns the guest command's output and exit status, the
/// guest's lease (from labnet's dhcpd) carries the VM name, and no tap survives the VM.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn vm_run_microvm_gets_lease_and_exit_status() {
    require_root();
    let mut c = Cleanup::default();
    let l = lab(&mut c, "vmrun", true);
    let (k, m) = kernel();
    let name = format!("g{}", &l.id[2..]);
    let out = run(Command::new("timeout")
        .args([
            "120",
            labnet_bin().to_str().unwrap(),
            "vm",
            "run",
            "--lab",
            &l.id,
            "--name",
            &name,
        ])
        .args([
            "--kernel",
            &k,
            "--modules",
            &m,
            "--machine",
            "microvm",
            "--",
        ])
        .args(["sh", "-c", "echo hi; exit 3"])
        .envs(l.env.iter().cloned()));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "{}",
        text(&out)
    );

    // The lease, with the VM's name as hostname and its stable MAC.
    let cfg = l.root.join("lab.toml").display().to_string();
    let leases = labnet(&["leases", &l.id, "--config", &cfg, "--json"], &l.env);
    assert!(leases.status.success(), "{}", text(&leases));
    let v: serde_json::Value = serde_json::from_slice(&leases.stdout).unwrap();
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            l.root
                .join("run")
                .join(&l.id)
                .join("vms")
                .join(&name)
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mac = st["mac"].as_str().unwrap();
    let found = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["hostname"].as_str() == Some(&name))
        .unwrap_or_else(|| panic!("no lease for {name}: {v}"));
    assert_eq!(found["mac"].as_str(), Some(mac), "{v}");
    assert_eq!(found["vm"].as_str(), Some(name.as_str()), "{v}");
    assert_eq!(found["state"].as_str(), Some("active"), "{v}");
    assert!(found["ip"].as_str().unwrap().starts_with("10.78.0."), "{v}");
    // The reservation the VM registered for dhcpd.
    let res = l
        .root
        .join("run")
        .join(&l.id)
        .join("reservations")
        .join(format!("{name}.json"));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&res).unwrap()).unwrap();
    assert_eq!(r["mac"].as_str(), Some(mac));

    assert!(taps(&l.id).is_empty(), "tap left behind: {:?}", taps(&l.id));
    assert_eq!(st["status"], "stopped");
    let down = labnet(&["down", &l.id], &l.env);
    assert!(down.status.success(), "{}", text(&down));
}

/// Bad input fails early and names the problem; a started VM has its tap on the bridge; a
/// VM that dies (SIGKILL) and a VM that is stopped leave no tap; a name runs only once.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn vm_start_stop_lifecycle_and_errors() {
    require_root();
    let mut c = Cleanup::default();
    let l = lab(&mut c, "vmlife", true);
    let (_, m) = kernel();
    let k = source_bzimage();
    let vm = |args: &[&str]| {
        let mut a = vec!["vm"];
        a.extend_from_slice(args);
        labnet(&a, &l.env)
    };
    let fails = |args: &[&str], needle: &str| {
        let o = vm(args);
        assert!(!o.status.success(), "{args:?} succeeded: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
    };
    fails(
        &["start", "--lab", &l.id, "--kernel", "/nonexistent/bzImage"],
        "--kernel /nonexistent/bzImage",
    );
    fails(
        &["start", "--lab", "nolab-vmx", "--kernel", &k],
        "lab \"nolab-vmx\" is not up",
    );
    fails(
        &[
            "start",
            "--lab",
            &l.id,
            "--kernel",
            &k,
            "--qemu",
            "/nonexistent/qemu",
        ],
        "/nonexistent/qemu",
    );
    fails(
        &[
            "start", "--lab", &l.id, "--kernel", &k, "--name", "Bad_Name",
        ],
        "--name:",
    );
    fails(
        &[
            "run",
            "--lab",
            &l.id,
            "--kernel",
            &k,
            "--modules",
            "/nonexistent",
            "--",
            "true",
        ],
        "--modules /nonexistent",
    );
    fails(
        &[
            "run",
            "--lab",
            &l.id,
            "--kernel",
            &k,
            "--modules",
            &m,
            "--module",
            "nosuchmod",
            "--",
            "true",
        ],
        "\"nosuchmod\"",
    );

    let start = |name: &str| {
        let o = vm(&[
            "start",
            "--lab",
            &l.id,
            "--name",
            name,
            "--kernel",
            &k,
            "--daemonize",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        o
    };
    // 1. A VM that dies: its supervisor removes the tap.
    start("a");
    assert_eq!(taps(&l.id), ["tap-a"]);
    let master = sh(&format!("ip -n {} -o link show tap-a", l.id));
    assert!(
        master.contains(&format!("master {}br", l.id)) && master.contains("UP"),
        "{master}"
    );
    fails(
        &[
            "start",
            "--lab",
            &l.id,
            "--name",
            "a",
            "--kernel",
            &k,
            "--daemonize",
        ],
        "already running",
    );
    let list = vm(&["list", "--lab", &l.id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["name"], "a", "{v}");
    assert_eq!(v[0]["state"], "running", "{v}");
    assert_eq!(v[0]["tap"], "tap-a", "{v}");
    let pid = v[0]["pid"].as_u64().unwrap() as i32;
    signal(pid, libc::SIGKILL);
    wait_for(
        "the tap of a killed VM to go",
        Duration::from_secs(10),
        || taps(&l.id).is_empty(),
    );
    wait_for(
        "vm list to show it stopped",
        Duration::from_secs(10),
        || {
            let v: serde_json::Value =
                serde_json::from_slice(&vm(&["list", "--lab", &l.id, "--json"]).stdout).unwrap();
            v[0]["state"] == "stopped"
        },
    );

    // SIGTERM to a foreground `vm run`: it stops QEMU, removes the tap, and fails.
    let mut fg = Command::new(labnet_bin())
        .args(["vm", "run", "--lab", &l.id, "--name", "c", "--kernel", &k])
        .args(["--", "sleep", "1000"])
        .envs(l.env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.pid(fg.id());
    wait_for("tap-c", Duration::from_secs(30), || {
        taps(&l.id).contains(&"tap-c".to_string())
    });
    let qemu_pid = {
        let st = l.root.join("run").join(&l.id).join("vms/c/state.json");
        wait_for("qemu of c", Duration::from_secs(30), || {
            std::fs::read(&st)
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .is_some_and(|v| v["qemu_pid"].is_u64())
        });
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&st).unwrap()).unwrap();
        v["qemu_pid"].as_u64().unwrap() as i32
    };
    signal(fg.id() as i32, libc::SIGTERM);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = fg.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "vm run ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !status.success(),
        "vm run killed by SIGTERM reported success"
    );
    assert!(
        taps(&l.id).is_empty(),
        "tap left after SIGTERM: {:?}",
        taps(&l.id)
    );
    assert!(
        !signal(qemu_pid, 0),
        "qemu {qemu_pid} still runs after its supervisor got SIGTERM"
    );

    // 2. A booted VM with a 9p share, a multipath disk and an added file: it gets a lease
    //    from labnet's dhcpd (`vm ip`, `vm list`), its console works, `vm stop` ends it and
    //    the tap goes.
    let share = l.root.join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("f"), "from-the-host\n").unwrap();
    let mp = l.root.join("mp.raw");
    std::fs::write(&mp, vec![0u8; 1 << 20]).unwrap();
    let marker = l.root.join("marker");
    std::fs::write(&marker, "added-file\n").unwrap();
    let o = vm(&[
        "start",
        "--lab",
        &l.id,
        "--name",
        "b",
        "--kernel",
        &k,
        "--daemonize",
        "--share",
        &format!("{}:hs", share.display()),
        "--multipath",
        &mp.display().to_string(),
        "--add",
        &format!("{}:/etc/marker", marker.display()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(taps(&l.id), ["tap-b"]);
    let ip = vm(&["ip", "b", "--lab", &l.id, "--wait", "90"]);
    assert!(ip.status.success(), "{}", text(&ip));
    let ip = String::from_utf8_lossy(&ip.stdout).trim().to_string();
    assert!(ip.starts_with("10.78.0."), "{ip}");
    let v: serde_json::Value =
        serde_json::from_slice(&vm(&["list", "--lab", &l.id, "--json"]).stdout).unwrap();
    let b = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "b")
        .unwrap();
    assert_eq!(b["ip"].as_str(), Some(ip.as_str()), "{v}");
    // The console: a command typed into the guest's shell, then Ctrl-] to detach.
    let mut con = Command::new(labnet_bin())
        .args(["vm", "console", "b", "--lab", &l.id])
        .envs(l.env.iter().cloned())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.pid(con.id());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let reader = {
        use std::io::Read;
        let mut stdout = con.stdout.take().unwrap();
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    {
        use std::io::Write;
        let mut stdin = con.stdin.take().unwrap();
        // The lab DNS learns the name from dhcpd's hosts file a moment after the lease: retry.
        stdin
            .write_all(
                b"\ncat /mnt/hs/f /etc/marker; cat /sys/block/sda/device/wwid /sys/block/sdb/device/wwid; \
                  i=0; until nslookup -type=a b.lab >/tmp/ns 2>&1 || [ $i -ge 20 ]; do i=$((i+1)); sleep 0.5; done; cat /tmp/ns; \
                  grep -w ceph /proc/filesystems; echo CONSOLE-$((40+2))\n",
            )
            .unwrap();
        wait_for(
            "the console command's output",
            Duration::from_secs(60),
            || String::from_utf8_lossy(&seen.lock().unwrap()).contains("CONSOLE-42"),
        );
        stdin.write_all(&[0x1d]).unwrap();
    }
    let status = con.wait().unwrap();
    reader.join().unwrap();
    assert!(status.success(), "vm console: {status}");
    let out_bytes = seen.lock().unwrap().clone();
    let text_out = String::from_utf8_lossy(&out_bytes).replace('\r', "");
    assert!(text_out.contains("CONSOLE-42"), "console: {text_out}");
    assert!(text_out.contains("from-the-host"), "9p share: {text_out}");
    assert!(text_out.contains("added-file"), "--add: {text_out}");
    // The lab's DNS knows the VM by the name it sent with its DHCP request.
    assert!(
        text_out
            .lines()
            .any(|l| l.starts_with("Address") && l.trim_end().ends_with(&ip)),
        "b.lab does not resolve to {ip} in the guest: {text_out}"
    );
    // ceph is built into the source kernel: no module to load.
    assert!(
        text_out
            .lines()
            .any(|l| l.starts_with("nodev") && l.trim_end().ends_with("ceph")),
        "ceph not in /proc/filesystems: {text_out}"
    );
    let wwids: Vec<&str> = text_out.lines().filter(|l| l.starts_with("naa.")).collect();
    assert_eq!(wwids.len(), 2, "two paths with a wwid: {text_out}");
    assert_eq!(wwids[0], wwids[1], "same wwid on both paths: {text_out}");
    let o = vm(&["stop", "b", "--lab", &l.id, "--timeout", "10"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        taps(&l.id).is_empty(),
        "tap left after stop: {:?}",
        taps(&l.id)
    );
    fails(&["stop", "b", "--lab", &l.id], "not running");
    fails(&["stop", "nosuch", "--lab", &l.id], "no VM \"nosuch\"");
    // The supervisor (its argv names the lab) has exited.
    wait_for("the supervisor to exit", Duration::from_secs(5), || {
        pids_with_arg("labnet", &l.id).into_iter().all(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            !cmd.split(|c| *c == 0).any(|a| a == b"start")
        })
    });
    // 3. `labnet down` under a running VM: the supervisor notices and ends the VM.
    start("a");
    let v: serde_json::Value =
        serde_json::from_slice(&vm(&["list", "--lab", &l.id, "--json"]).stdout).unwrap();
    let a = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "a")
        .unwrap();
    let qemu = a["pid"].as_u64().unwrap() as i32;
    let down = labnet(&["down", &l.id], &l.env);
    assert!(down.status.success(), "{}", text(&down));
    wait_for(
        "the VM to end after labnet down",
        Duration::from_secs(40),
        || !signal(qemu, 0),
    );
}

/// `vm start --daemonize` ends with the status the same `vm start` ends with in the
/// foreground: QEMU that cannot start (64 PiB of guest memory) is 126 both ways, a bad
/// argument only the supervisor finds (a --module the kernel lacks) 2 both ways, the
/// detached supervisor's own status passed through; nothing is left running.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn vm_start_daemonize_ends_like_the_foreground() {
    require_root();
    let mut c = Cleanup::default();
    let l = lab_named(&mut c, "lx", "lxdaemon", false);
    for vm in ["lxfg", "lxbg"] {
        c.labnet(
            &["vm", "stop", vm, "--lab", &l.id, "--timeout", "2"],
            &l.env,
        );
    }
    let (k, _) = kernel();
    let start = |name: &str, more: &[&str]| {
        run(Command::new("timeout")
            .arg("120")
            .arg(labnet_bin())
            .args([
                "vm", "start", "--lab", &l.id, "--name", name, "--kernel", &k,
            ])
            .args(["--serial", "file"])
            .args(more)
            .envs(l.env.iter().cloned()))
    };
    // The modules are resolved while the initramfs is built, by the supervisor.
    let fg = start("lxfg", &["--module", "lxnosuchmod"]);
    let fg_err = String::from_utf8_lossy(&fg.stderr).into_owned();
    assert_eq!(fg.status.code(), Some(2), "{}", text(&fg));
    assert!(fg_err.contains("\"lxnosuchmod\""), "{fg_err}");
    let bg = start("lxbg", &["--module", "lxnosuchmod", "--daemonize"]);
    let bg_err = String::from_utf8_lossy(&bg.stderr).into_owned();
    assert_eq!(bg.status.code(), Some(2), "{}", text(&bg));
    assert!(
        bg_err.contains("the supervisor of VM \"lxbg\" exited")
            && bg_err.contains("\"lxnosuchmod\""),
        "{bg_err}"
    );

    let fg = start("lxfg", &["--mem", "64P"]);
    let fg_err = String::from_utf8_lossy(&fg.stderr).into_owned();
    assert_eq!(fg.status.code(), Some(126), "{}", text(&fg));
    assert!(
        fg_err.contains("QEMU did not start") && fg_err.contains("guest memory"),
        "{fg_err}"
    );
    let bg = start("lxbg", &["--mem", "64P", "--daemonize"]);
    let bg_err = String::from_utf8_lossy(&bg.stderr).into_owned();
    assert_eq!(bg.status.code(), fg.status.code(), "{}", text(&bg));
    assert!(
        bg_err.contains("the supervisor of VM \"lxbg\" exited")
            && bg_err.contains("QEMU did not start")
            && bg_err.contains("guest memory"),
        "{bg_err}"
    );
    assert!(taps(&l.id).is_empty(), "tap left behind");
    let list = labnet(&["vm", "list", "--lab", &l.id, "--json"], &l.env);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|vm| vm["state"] == "stopped"),
        "{v}"
    );
}

/// `vm run` of the source-built kernel with no --modules: ceph is built in (the command's
/// status 7 comes back), the boot went through PVH (the line labnet prints says so), and
/// --timings reports the boot's milestones.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn source_kernel_runs_through_pvh_without_modules() {
    require_root();
    let mut c = Cleanup::default();
    let l = lab(&mut c, "vmpvh", true);
    let k = source_bzimage();
    let out = run(Command::new("timeout")
        .args([
            "120",
            labnet_bin().to_str().unwrap(),
            "vm",
            "run",
            "--lab",
            &l.id,
        ])
        .args(["--kernel", &k, "--timings", "--"])
        .args(["sh", "-c", "grep -qw ceph /proc/filesystems; exit 7"])
        .envs(l.env.iter().cloned()));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    let vmlinux = source_kernel().vmlinux.display().to_string();
    assert!(
        err.contains(&format!("booting {vmlinux} through PVH")),
        "no PVH boot line: {}",
        text(&out)
    );
    let timings = err
        .lines()
        .find(|l| l.contains(": timings: "))
        .unwrap_or_else(|| panic!("no timings line: {err}"));
    for m in [
        "qemu start",
        "kernel start",
        "/init",
        "link up",
        "lease",
        "command start",
        "command end",
    ] {
        assert!(timings.contains(&format!("{m} ")), "{m} missing: {timings}");
    }
    assert!(taps(&l.id).is_empty(), "tap left behind");
    // The same kernel with the guest's ceph missing would give 1: the grep is real.
    let out = run(Command::new("timeout")
        .args([
            "120",
            labnet_bin().to_str().unwrap(),
            "vm",
            "run",
            "--lab",
            &l.id,
        ])
        .args(["--kernel", &k, "--"])
        .args(["sh", "-c", "grep -qw nosuchfs /proc/filesystems; exit $?"])
        .envs(l.env.iter().cloned()));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    // Off a terminal and without --timings, a PVH boot says nothing on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("through PVH"),
        "PVH line off a terminal: {err}"
    );
}

/// `--no-pvh` boots the bzImage itself (ACPI on, devices found by the kernel) and says so.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn source_kernel_no_pvh_boots_the_bzimage() {
    require_root();
    let mut c = Cleanup::default();
    let l = lab(&mut c, "vmbz", true);
    let k = source_bzimage();
    let out = run(Command::new("timeout")
        .args(["150", labnet_bin().to_str().unwrap(), "vm", "run", "--lab", &l.id])
        .args(["--kernel", &k, "--no-pvh", "--"])
        .args(["sh", "-c", "grep -qw ceph /proc/filesystems && ip -4 addr show eth0 | grep -q 'inet 10.78.0.'; exit $((7 + $?))"])
        .envs(l.env.iter().cloned()));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("booting the bzImage {k} (--no-pvh)")),
        "{}",
        text(&out)
    );
}
