//! Seed 000 end to end, under TCG: a guest in a labnet lab mounts a real CephFS with kmount.
//!
//! Layout (the seed's main one): a "bounce box" namespace holds the other end of the lab's
//! WireGuard uplink at 192.168.20.2, and on that address a single-host Ceph 16 cluster
//! (tests/fixtures/ceph-cluster.sh), a DNS server that knows `cephhost.test` (dnsmasq), and an
//! HTTP server (busybox httpd) with the cluster's `ceph mon dump` and client.fs keyring. The
//! guest gets its lease from labnet dhcpd, resolves `cephhost.test` through labnet dns (which
//! forwards to the WireGuard peer), fetches the keyring and the mon dump over HTTP and mounts
//! CephFS with kmount (new device syntax, key in the kernel keyring). The host side then
//! reads the written file back from the data pool with `rados`.
use labnet_tests::ceph::{fixture, Cluster};
use labnet_tests::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOUNCE_IP: &str = "192.168.20.2";

fn alive(pid: u32) -> bool {
    // A zombie (our own exited child not yet reaped) counts as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
#[ignore = "needs root (namespaces, WireGuard, Ceph daemons, QEMU)"]
fn guest_mounts_cephfs_through_the_lab() {
    require_root();
    let t_test = Instant::now();
    // The source-built kernel: ceph, virtio and PVH built in, no modules.
    let kernel = source_kernel().bzimage.display().to_string();
    let kmount = static_kmount();
    eprintln!(
        "cephfs: static kmount ready after {:.1} s",
        t_test.elapsed().as_secs_f64()
    );

    let mut c = Cleanup::default();
    let id = unique("cf");
    let lab = id.clone();
    let root = temp_dir(&mut c, "cephfs");
    let env = labnet_env(&root);
    // The bounce box (shared fixture in tests/src/lib.rs), underlay 10.232.x.y/30.
    let Bounce {
        ns: bns,
        endpoint,
        bounce_pub,
        ..
    } = bounce(&mut c, &root, &id, 232);

    // The cluster at 192.168.20.2 inside the bounce box. Declared after `c`: dropped (down)
    // before the namespaces go.
    let cluster = Cluster::up(&root.join("ceph"), &bns, BOUNCE_IP, true);
    let fsid = cluster.fsid();

    // What the guest fetches "from the cluster host": the mon dump and the client's keyring,
    // as `ceph` writes them, served over HTTP; and a DNS server that knows the host's name.
    let www = root.join("www");
    let httpd = cluster.serve_mount_info(&mut c, &www, BOUNCE_IP, &root.join("httpd.log"));
    let dnsmasq = spawn_in(
        &mut c,
        &bns,
        &root.join("dnsmasq.log"),
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            &format!("--listen-address={BOUNCE_IP}"),
            &format!("--address=/cephhost.test/{BOUNCE_IP}"),
            "--pid-file=",
            "--user=root",
        ],
    );

    // The lab, WireGuard uplink to the bounce box; its dns forwards to the peer (:53).
    let cfg = root.join("lab.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"192.168.0.1/24\"\n[dns]\nzone = \"lab\"\n\
             [uplink]\nkind = \"wireguard\"\ninterface = \"{id}wl\"\naddress = \"192.168.20.1/24\"\n\
             private_key_file = \"{}\"\npeer_public_key = \"{bounce_pub}\"\nendpoint = \"{endpoint}\"\nallowed_ips = [\"0.0.0.0/0\"]\n",
            root.join("lab.key").display()
        ),
    )
    .unwrap();
    let cfgs = cfg.display().to_string();
    c.labnet(&["down", &lab], &env);
    let up = labnet(&["up", &lab, "--config", &cfgs], &env);
    assert!(up.status.success(), "labnet up: {}", text(&up));
    // From the lab itself the name resolves through labnet dns → the WireGuard peer.
    wait_for(
        "cephhost.test to resolve in the lab",
        Duration::from_secs(15),
        || {
            let o = run(Command::new("ip").args([
                "netns",
                "exec",
                &lab,
                "getent",
                "hosts",
                "cephhost.test",
            ]));
            String::from_utf8_lossy(&o.stdout).starts_with(&format!("{BOUNCE_IP} "))
        },
    );

    eprintln!(
        "cephfs: lab up, name resolves, after {:.1} s",
        t_test.elapsed().as_secs_f64()
    );
    // The guest: lease, DNS, fetch, mount, write, read, unmount.
    let vm = format!("c{}", &id[2..]);
    let guest = format!(
        "set -e\n\
         echo \"START uptime=$(cut -d' ' -f1 /proc/uptime)\"\n\
         wget -qO /tmp/fs.keyring http://cephhost.test:8080/fs.keyring\n\
         kmount --mon-dump-cmd 'wget -qO- http://cephhost.test:8080/mon_dump.json' --cmd-timeout 20 \
           --keyring /tmp/fs.keyring --name fs --fs a --mountpoint /mnt\n\
         echo \"MOUNTED uptime=$(cut -d' ' -f1 /proc/uptime)\"\n\
         grep ' /mnt ceph ' /proc/mounts\n\
         echo 'hello from {vm}' > /mnt/f\n\
         cat /mnt/f\n\
         echo \"INODE $(stat -c %i /mnt/f)\"\n\
         umount /mnt\n\
         echo UNMOUNTED\n"
    );
    let t_run = Instant::now();
    let mut child = Command::new("timeout")
        .args([
            "-k",
            "5",
            "90",
            labnet_bin().to_str().unwrap(),
            "vm",
            "run",
            "--lab",
            &lab,
            "--name",
            &vm,
        ])
        .args(["--kernel", &kernel, "-v"])
        .arg("--add")
        .arg(format!("{}:/bin/kmount", kmount.display()))
        // For bench/RESULTS.md: the bzImage boot instead of the default PVH one.
        .args(std::env::var_os("LABNET_TEST_NO_PVH").map(|_| "--no-pvh"))
        .args(["--", "sh", "-c", &guest])
        .envs(env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    // With -v the guest's console comes on stderr: its first line dates the kernel's start.
    let err_thread = std::thread::spawn(move || {
        let (mut s, mut first, mut lease) = (String::new(), None, None);
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            first.get_or_insert_with(|| t_run.elapsed());
            if l.contains("labnet-init: lease") {
                lease.get_or_insert_with(|| t_run.elapsed());
            }
            if std::env::var_os("CEPHFS_TIMELINE").is_some() {
                eprintln!("[{:6.2}] {l}", t_run.elapsed().as_secs_f64());
            }
            s.push_str(&l);
            s.push('\n');
        }
        (s, first, lease)
    });
    let mut lines = vec![];
    let mut mounted_after = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("MOUNTED") && mounted_after.is_none() {
            mounted_after = Some(t_run.elapsed());
        }
        lines.push(line);
    }
    let status = child.wait().unwrap();
    let total = t_run.elapsed();
    let out = lines.join("\n");
    let (err, first_console, lease_seen) = err_thread.join().unwrap();
    let ctx = format!("status {status}\nstdout:\n{out}\nstderr:\n{err}");
    assert_eq!(status.code(), Some(0), "guest run failed: {ctx}");
    if std::env::var_os("LABNET_TEST_NO_PVH").is_none() {
        assert!(err.contains(" through PVH ("), "not a PVH boot: {ctx}");
    }

    let mounted_after = mounted_after.unwrap_or_else(|| panic!("no MOUNTED line: {ctx}"));
    let up_at = |p: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(p)?.trim().parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (start, mounted) = (up_at("START uptime="), up_at("MOUNTED uptime="));
    // Host-side times from spawning `vm run`; guest uptimes from the guest's own clock (it
    // starts once the kernel runs: before that QEMU loads it and a bzImage unpacks itself).
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    eprintln!(
        "cephfs: vm run → CephFS mounted: {:.2} s; whole vm run {:.2} s (TCG). Breakdown (host): QEMU running {:.2} s, \
         guest kernel clock starts ~{:.2} s, lease on the console {:.2} s; (guest uptime) command starts {start:.2} s, \
         mounted {mounted:.2} s: kmount incl. 2 HTTP fetches over DNS + WireGuard {:.2} s",
        mounted_after.as_secs_f64(),
        total.as_secs_f64(),
        secs(first_console),
        mounted_after.as_secs_f64() - mounted,
        secs(lease_seen),
        mounted - start
    );
    // New device syntax with the cluster's fsid, the key from the kernel keyring.
    let mline = lines
        .iter()
        .find(|l| l.contains(" /mnt ceph "))
        .unwrap_or_else(|| panic!("no ceph mount: {ctx}"));
    assert!(
        mline.starts_with(&format!("fs@{fsid}.a=/ /mnt ceph ")),
        "{mline}"
    );
    assert!(
        mline.contains("name=fs") && mline.contains(&format!("mon_addr={BOUNCE_IP}:3300")),
        "{mline}"
    );
    // kmount put the key into the guest's kernel keyring and passed key=client.fs.
    assert!(out.contains(&format!("mount(\"fs@{fsid}.a=/\", \"/mnt\", \"ceph\", 0, \"mon_addr={BOUNCE_IP}:3300,ms_mode=prefer-crc,name=fs,key=client.fs\")")), "{ctx}");
    assert!(
        lines.iter().any(|l| l == &format!("hello from {vm}")),
        "{ctx}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("UNMOUNTED"), "{ctx}");
    let key = std::fs::read_to_string(www.join("fs.keyring")).unwrap();
    let secret = key
        .lines()
        .find_map(|l| l.trim().strip_prefix("key = "))
        .unwrap();
    assert!(
        !out.contains(secret) && !err.contains(secret),
        "the secret leaked into the output"
    );

    // The lease, with the VM's name.
    let leases = labnet(&["leases", &lab, "--config", &cfgs, "--json"], &env);
    assert!(leases.status.success(), "{}", text(&leases));
    let v: serde_json::Value = serde_json::from_slice(&leases.stdout).unwrap();
    let lease = v
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["hostname"].as_str() == Some(&vm));
    let lease = lease.unwrap_or_else(|| panic!("no lease for {vm}: {v}"));
    assert!(
        lease["ip"].as_str().unwrap().starts_with("192.168.0."),
        "{lease}"
    );

    // The host side: the file's first object in the data pool holds what the guest wrote.
    let ino: u64 = lines
        .iter()
        .find_map(|l| l.strip_prefix("INODE "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{ctx}"));
    let obj = format!("{ino:x}.00000000");
    let data = cluster.must("rados", &["-p", "cephfs.a.data", "get", &obj, "-"]);
    assert_eq!(
        String::from_utf8_lossy(&data),
        format!("hello from {vm}\n"),
        "object {obj}"
    );
    // And the name: once the MDS journal is flushed, the root dirfrag has the dentry "f".
    cluster.must("ceph", &["tell", "mds.a", "flush", "journal"]);
    let keys = String::from_utf8_lossy(&cluster.must(
        "rados",
        &["-p", "cephfs.a.meta", "listomapkeys", "1.00000000"],
    ))
    .into_owned();
    assert!(
        keys.lines().any(|k| k == "f_head"),
        "root dir entries: {keys}"
    );

    eprintln!(
        "cephfs: host-side checks done after {:.1} s",
        t_test.elapsed().as_secs_f64()
    );
    readme_matrix_example_passes(&lab, &env, &root, &kmount, &www);
    // Teardown in order, then nothing of ours is left.
    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
    assert!(!netns_list().contains(&lab), "lab namespace left behind");
    let daemons = cluster.pids();
    assert_eq!(
        daemons.len(),
        4,
        "ceph pid files (mon, mgr, osd, mds): {daemons:?}"
    );
    let cd = cluster.down();
    assert!(cd.status.success(), "cluster down: {}", text(&cd));
    for p in daemons {
        assert!(!alive(p), "ceph daemon {p} still running after down");
    }
    assert!(!cluster.dir.exists(), "cluster dir left behind");
    drop(cluster);
    drop(c);
    for p in [httpd, dnsmasq] {
        assert!(!alive(p), "helper {p} still running");
    }
    for n in [&lab, &bns] {
        assert!(!netns_list().contains(n), "netns {n} left behind");
    }
    assert!(
        root_links().iter().all(|l| !l.starts_with(&id)),
        "links left behind"
    );
    eprintln!("cephfs: guest output:\n{out}");
    eprintln!("cephfs: whole test {:.1} s", t_test.elapsed().as_secs_f64());
}

/// The README's `labnet test` example, `matrix/examples/cephfs.toml`, verbatim against this
/// cluster: its files beside it (kmount, the keyring and mon dump the guest above fetched),
/// its `~/linux` a tree with the source-built kernel (HOME points there). Both targets pass.
fn readme_matrix_example_passes(
    lab: &str,
    env: &[(String, String)],
    root: &Path,
    kmount: &Path,
    www: &Path,
) {
    let dir = root.join("matrix");
    let tree = dir.join("home/linux");
    std::fs::create_dir_all(tree.join("arch/x86/boot")).unwrap();
    let k = source_kernel();
    std::os::unix::fs::symlink(&k.bzimage, tree.join("arch/x86/boot/bzImage")).unwrap();
    std::os::unix::fs::symlink(&k.vmlinux, tree.join("vmlinux")).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../matrix/examples/cephfs.toml");
    std::fs::copy(example, dir.join("cephfs.toml")).unwrap();
    std::fs::copy(kmount, dir.join("kmount")).unwrap();
    for f in ["fs.keyring", "mon_dump.json"] {
        std::fs::copy(www.join(f), dir.join(f)).unwrap();
    }
    let t0 = Instant::now();
    let out = run(Command::new("timeout")
        .arg("600")
        .arg(labnet_bin())
        .args(["test", "cephfs.toml", "--lab", lab, "--jobs", "2"])
        .args(["--junit", "cephfs.xml"])
        .current_dir(&dir)
        .envs(env.iter().cloned())
        .env("HOME", dir.join("home")));
    assert_eq!(
        out.status.code(),
        Some(0),
        "labnet test cephfs.toml: {}",
        text(&out)
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    for name in ["cephfs-write-read", "cephfs-debug"] {
        assert!(
            summary
                .lines()
                .any(|l| l.starts_with("PASS ") && l.split_whitespace().nth(1) == Some(name)),
            "{name}: {summary}"
        );
    }
    assert!(summary.contains("2 targets: 2 passed in "), "{summary}");
    assert!(dir.join("cephfs.xml").is_file());
    eprintln!(
        "cephfs: the README's labnet test example passed in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The fixture's `down` after an `up` killed half-way (the mon already daemonized): it stops
/// that mon, leaves alone a process whose pid sits in a pid file but is no ceph daemon, and
/// removes the state dir.
#[test]
#[ignore = "needs root (namespace, Ceph daemons)"]
fn fixture_down_after_interrupted_up_stops_only_its_daemons() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("cf");
    let ns = format!("{id}fx");
    c.netns(&ns);
    sh(&format!("ip netns add {ns} && ip -n {ns} link set lo up"));
    let root = temp_dir(&mut c, "cephfx");
    let dir = root.join("ceph");
    let mut up = {
        use std::os::unix::process::CommandExt;
        Command::new(fixture())
            .arg("up")
            .env("CEPH_DIR", &dir)
            .env("CEPH_NETNS", &ns)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let pgid = up.id() as i32;
    let pidfile = dir.join("run/mon.a.pid");
    let t = Instant::now();
    let mon: u32 = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            if comm(p) == "ceph-mon" {
                break p;
            }
        }
        if t.elapsed() > Duration::from_secs(30) {
            signal(-pgid, libc::SIGKILL);
            let _ = up.wait();
            panic!("mon.a never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Kill the script and whatever it runs right now (its own process group); the mon has
    // left that group (daemonized), as after a crash or Ctrl-C.
    signal(-pgid, libc::SIGKILL);
    let _ = up.wait();
    let cluster = Cluster {
        dir: dir.clone(),
        ns: ns.clone(),
    };
    assert!(alive(mon), "the mon should have outlived the script");

    // A stale pid file pointing at an unrelated process.
    let mut decoy = Command::new("sleep").arg("60").spawn().unwrap();
    c.pid(decoy.id());
    std::fs::write(dir.join("run/osd.7.pid"), format!("{}\n", decoy.id())).unwrap();

    let out = cluster.down();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!alive(mon), "down left mon.a (pid {mon}) running");
    assert!(
        decoy.try_wait().unwrap().is_none(),
        "down killed a process that is not its ceph daemon"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    drop(cluster);
}
