//! Seed 000's long-lived VM, end to end as root under TCG: a Debian image from `labnet image
//! build` (cached in /var/cache/labnet/images, see labnet_tests::test_image) booted with
//! `vm start --image` in a lab of its own; the guest leases from labnet's dhcpd with its
//! name, resolves the lab zone and an upstream name through labnet's dns (upstream: a
//! dnsmasq in a namespace of the test's), and is reached with `vm ssh`/`vm cp` using the lab's
//! key and the image's pinned host key; then kmount over ssh against a real Ceph cluster,
//! from two VMs of the same image.
// Children are registered by pid with Cleanup, which kills and reaps them.
#![allow(clippy::zombie_processes)]
use labnet_tests::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

/// A dnsmasq "upstream" in a namespace of the test's, wired to the lab by a veth
/// (10.OCTET.9.1 in the lab ↔ 10.OCTET.9.2 upstream); it knows `upstream.example.test`.
fn upstream(c: &mut Cleanup, lab: &ImageLab, octet: u8) -> String {
    let ns = format!("{}u", lab.id);
    let (a, b) = (format!("{}v0", lab.id), format!("{}v1", lab.id));
    c.netns(&ns);
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link set lo up && \
         ip -n {lab} link add {a} type veth peer name {b} netns {ns} && \
         ip -n {lab} addr add 10.{octet}.9.1/30 dev {a} && ip -n {lab} link set {a} up && \
         ip -n {ns} addr add 10.{octet}.9.2/30 dev {b} && ip -n {ns} link set {b} up",
        lab = lab.id
    ));
    let log = std::fs::File::create(lab.root.join("upstream.log")).unwrap();
    let child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
        ])
        .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
        .arg(format!("--listen-address=10.{octet}.9.2"))
        .args([
            "--local=/example.test/",
            "--host-record=upstream.example.test,10.9.9.9",
            "--user=root",
            "--group=root",
            "--pid-file=",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    c.pid(child.id());
    format!("10.{octet}.9.2")
}

fn sha256(p: &Path) -> String {
    must(Command::new("sha256sum").arg(p))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The image's build errors name the problem: no mmdebstrap, a suite that does not exist,
/// not enough space; and build → list --json → rm of a second image (from the cached root
/// tarball) works.
#[test]
#[ignore = "needs root (mmdebstrap unshare, tmpfs)"]
fn image_build_errors_list_and_rm() {
    require_root();
    let (store, name) = test_image();
    let mut c = Cleanup::default();
    let dir = temp_dir(&mut c, "imgerr");
    let build = |env: &[(&str, String)], args: &[&str]| {
        let mut a = vec!["image", "build"];
        a.extend_from_slice(args);
        // An absolute timeout(1): one case runs with a PATH of its own.
        run(Command::new("/usr/bin/timeout")
            .arg("300")
            .arg(labnet_bin())
            .args(&a)
            .envs(env.iter().map(|(k, v)| (k.to_string(), v.clone()))))
    };
    let fails = |o: Output, needle: &str| {
        assert!(!o.status.success(), "succeeded: {}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(needle), "expected {needle:?} in: {e}");
    };
    let empty_cache = dir.join("cache");
    let imgs = dir.join("images");
    // No mmdebstrap in PATH (and nothing cached): said before anything is made.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for t in ["tar", "ssh-keygen", "qemu-img"] {
        let p = String::from_utf8(
            must(Command::new("sh").args(["-c", &format!("command -v {t}")])).into(),
        )
        .unwrap();
        std::os::unix::fs::symlink(p.trim(), bin.join(t)).unwrap();
    }
    fails(
        build(
            &[
                ("PATH", bin.display().to_string()),
                ("LABNET_CACHE_DIR", empty_cache.display().to_string()),
                ("LABNET_IMAGE_DIR", imgs.display().to_string()),
            ],
            &["x", "--no-kmount"],
        ),
        "mmdebstrap not found in PATH (apt-get install mmdebstrap)",
    );
    // A suite the mirror does not have (mmdebstrap asks the mirror: a package registry).
    fails(
        build(
            &[
                ("LABNET_CACHE_DIR", empty_cache.display().to_string()),
                ("LABNET_IMAGE_DIR", imgs.display().to_string()),
            ],
            &["x", "--no-kmount", "--suite", "nosuchsuite"],
        ),
        "suite \"nosuchsuite\" does not exist on",
    );
    assert!(!imgs.join("x").exists());
    // A file system too small for the build: refused up front.
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    must(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&small),
    );
    let umount = UmountOnDrop(small.clone());
    fails(
        build(
            &[("LABNET_IMAGE_DIR", small.display().to_string())],
            &["x", "--no-kmount"],
        ),
        &format!("not enough space in {}", small.display()),
    );
    drop(umount);

    // list --json shows the test image with its recorded host key and kernel.
    let o = run(Command::new(labnet_bin())
        .args(["image", "list", "--json"])
        .env("LABNET_IMAGE_DIR", &store));
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &v[0];
    assert_eq!(m["name"].as_str(), Some(name.as_str()), "{v}");
    assert_eq!(m["suite"], "bookworm");
    assert!(
        m["host_key"]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 AAAA"),
        "{v}"
    );
    let pubkey =
        std::fs::read_to_string(store.join(&name).join("ssh_host_ed25519_key.pub")).unwrap();
    assert!(
        pubkey.starts_with(m["host_key"].as_str().unwrap()),
        "{pubkey}"
    );
    for p in ["nftables", "openssh-server", "linux-image-amd64"] {
        assert!(
            m["packages"].as_array().unwrap().iter().any(|x| x == p),
            "{p}: {v}"
        );
    }

    // A second image from the cached root tarball (raw this time), listed, then removed.
    let mut args = vec!["img2", "--no-kmount", "--format", "raw", "--size", "2G"];
    for p in TEST_IMAGE_PACKAGES {
        args.extend(["--package", p]);
    }
    let o = build(&[("LABNET_IMAGE_DIR", imgs.display().to_string())], &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("root tarball cached"),
        "{}",
        text(&o)
    );
    let raw = imgs.join("img2/disk.raw");
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), 2 << 30);
    let fsck = run(Command::new("e2fsck").args(["-fn"]).arg(&raw));
    assert!(fsck.status.success(), "e2fsck: {}", text(&fsck));
    let ls = run(Command::new(labnet_bin())
        .args(["image", "list"])
        .env("LABNET_IMAGE_DIR", &imgs));
    assert!(
        String::from_utf8_lossy(&ls.stdout).contains("img2"),
        "{}",
        text(&ls)
    );
    let o = build(&[("LABNET_IMAGE_DIR", imgs.display().to_string())], &args);
    fails(o, "image \"img2\" already exists");
    let rm = run(Command::new(labnet_bin())
        .args(["image", "rm", "img2"])
        .env("LABNET_IMAGE_DIR", &imgs));
    assert!(rm.status.success(), "{}", text(&rm));
    assert!(!imgs.join("img2").exists());
    let rm = run(Command::new(labnet_bin())
        .args(["image", "rm", "img2"])
        .env("LABNET_IMAGE_DIR", &imgs));
    assert!(!rm.status.success());
    assert!(
        String::from_utf8_lossy(&rm.stderr).contains("no image \"img2\""),
        "{}",
        text(&rm)
    );
}

struct UmountOnDrop(PathBuf);
impl Drop for UmountOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

/// The long-lived VM: lease with its name, lab and upstream names resolved through labnet's
/// dns, `vm ssh` runs commands with their exit status, `vm cp` keeps the bytes both ways,
/// `vm ssh-config` gives plain ssh, a changed host key is refused, and `vm stop` leaves
/// nothing behind with the base image unchanged.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn image_vm_lease_dns_ssh_cp_and_host_key() {
    require_root();
    let (store, image) = test_image();
    let disk = store.join(&image).join("disk.qcow2");
    let before = sha256(&disk);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join(&image).join("manifest.json")).unwrap())
            .unwrap();
    let mut c = Cleanup::default();
    // The upstream needs the lab's namespace; the lab's config names the upstream address
    // up front (it is only asked at query time).
    let l = ImageLab::up(&mut c, "iv", 82, Some("10.82.9.2"));
    upstream(&mut c, &l, 82);
    let took = l.boot("k1", 600);
    eprintln!(
        "image: vm start --image → ssh answering in {:.1} s",
        took.as_secs_f64()
    );

    // The lease from labnet's dhcpd carries the VM's name (sent by networkd).
    let lease = l.lease_of("k1");
    let ip = lease["ip"].as_str().unwrap().to_string();
    assert!(ip.starts_with("10.82.0."), "{lease}");
    assert_eq!(lease["state"], "active", "{lease}");
    // The booted kernel is the image's own.
    assert_eq!(
        l.ssh("k1", "uname -r").trim(),
        manifest["kernel_release"].as_str().unwrap()
    );
    assert_eq!(l.ssh("k1", "hostname").trim(), "k1");
    // `vm console` has a login prompt: the serial getty came up, however slow the boot was
    // (systemd's device wait for ttyS0 is not the 90 s default that a loaded TCG host missed).
    let getty = l.ssh(
        "k1",
        "for i in $(seq 120); do systemctl is-active -q serial-getty@ttyS0 && break; sleep 1; done; \
         systemctl is-active serial-getty@ttyS0; grep -o 'systemd.default_device_timeout_sec=[0-9]*' /proc/cmdline",
    );
    assert_eq!(
        getty.split_whitespace().collect::<Vec<_>>(),
        ["active", "systemd.default_device_timeout_sec=600"],
        "{getty}"
    );
    // Names through labnet's dns (systemd-resolved got it from DHCP): the lab zone and an
    // upstream name the lab's dns forwards to the test's dnsmasq.
    let hosts = l.ssh(
        "k1",
        "getent hosts k1.lab; getent hosts upstream.example.test",
    );
    assert!(
        hosts.contains(&format!("{ip} ")) && hosts.contains("k1.lab"),
        "{hosts}"
    );
    assert!(
        hosts.contains("10.9.9.9 ") && hosts.contains("upstream.example.test"),
        "{hosts}"
    );
    let dns = l.ssh("k1", "resolvectl dns");
    assert!(dns.contains(&l.gw), "{dns}");
    // The exit status is the remote command's.
    let o = l.vm(&["ssh", "k1", "--", "echo out; exit 7"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    // kmount is in the image.
    assert!(l.ssh("k1", "kmount --help").contains("--mon-dump"));

    // vm cp both ways keeps the bytes.
    let blob = l.root.join("blob");
    let bytes: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&blob, &bytes).unwrap();
    let o = l.vm(&["cp", blob.to_str().unwrap(), "k1:/root/blob"]);
    assert!(o.status.success(), "vm cp to: {}", text(&o));
    let sum = l.ssh("k1", "sha256sum /root/blob");
    assert_eq!(sum.split_whitespace().next().unwrap(), sha256(&blob));
    l.ssh(
        "k1",
        "cp /root/blob /root/blob2 && echo tail >> /root/blob2",
    );
    let back = l.root.join("back");
    let o = l.vm(&["cp", "k1:/root/blob2", back.to_str().unwrap()]);
    assert!(o.status.success(), "vm cp from: {}", text(&o));
    let mut want = bytes.clone();
    want.extend_from_slice(b"tail\n");
    assert!(
        std::fs::read(&back).unwrap() == want,
        "vm cp from k1 changed the bytes"
    );

    // vm ssh-config: plain ssh through labnet's ProxyCommand, strict host key checking.
    let o = l.vm(&["ssh-config", "k1"]);
    assert!(o.status.success(), "{}", text(&o));
    let cfg = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        cfg.contains("Host k1.lab k1\n") && cfg.contains("StrictHostKeyChecking yes"),
        "{cfg}"
    );
    assert!(!cfg.contains("StrictHostKeyChecking no"), "{cfg}");
    let cfgf = l.root.join("ssh_config");
    std::fs::write(&cfgf, &cfg).unwrap();
    let o = run(Command::new("timeout")
        .args([SSH_TIMEOUT, "ssh", "-F"])
        .arg(&cfgf)
        .args([
            "-o",
            "BatchMode=yes",
            "k1.lab",
            "cat",
            "/proc/sys/kernel/hostname",
        ])
        .envs(l.env.iter().cloned())
        .stdin(Stdio::null()));
    assert!(o.status.success(), "ssh -F: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "k1");
    // The lab's key: 0600, under the lab's state dir.
    let key = l.root.join("state").join(&l.id).join("ssh/id_ed25519");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A changed host key: the guest gets a new one; once the multiplexed connection is gone,
    // labnet refuses to connect and says why.
    l.ssh(
        "k1",
        "rm -f /etc/ssh/ssh_host_ed25519_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key && systemctl restart ssh",
    );
    let ctl = l.vm_dir("k1").join("ssh.ctl");
    run(Command::new("ip")
        .args(["netns", "exec", &l.id, "ssh", "-o"])
        .arg(format!("ControlPath={}", ctl.display()))
        .args(["-O", "exit", "k1"]));
    let o = l.vm(&["ssh", "k1", "--", "echo should-not-run"]);
    assert_eq!(o.status.code(), Some(255), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("should-not-run"));
    assert!(
        err.contains("labnet: k1 (")
            && err.contains("presents host key")
            && err.contains(&format!("but image {image} recorded")),
        "{err}"
    );
    let o = l.vm(&["cp", blob.to_str().unwrap(), "k1:/root/blob3"]);
    assert!(
        !o.status.success(),
        "vm cp with a changed host key: {}",
        text(&o)
    );

    l.stop_and_check_clean("k1");
    assert_eq!(sha256(&disk), before, "the base image was written");
}

/// Seed 000's mount over ssh: kmount in the VM against a real Ceph cluster (inside the lab,
/// on the bridge address: the seed's third layout), `df -h /mnt` shows the new device
/// syntax, a file written over ssh is read back on the host with `rados`, and a second VM
/// of the same image mounts the same file system and sees it.
#[test]
#[ignore = "needs root (netns, Ceph daemons, qemu in the lab)"]
fn image_vms_mount_cephfs_over_ssh() {
    require_root();
    let mut c = Cleanup::default();
    let l = ImageLab::up(&mut c, "ic", 83, None);
    let ceph = l.root.join("ceph");
    let cluster = Cluster::up(&ceph, &l.id, &l.gw);
    let fsid = {
        let v: serde_json::Value =
            serde_json::from_slice(&cluster.must("ceph", &["mon", "dump", "--format=json"]))
                .unwrap();
        v["fsid"].as_str().unwrap().to_string()
    };
    // What the guest fetches from the "cluster host": the mon dump, over HTTP.
    let www = l.root.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(
        www.join("mon_dump.json"),
        cluster.must("ceph", &["mon", "dump", "--format=json"]),
    )
    .unwrap();
    let httpd = Command::new("ip")
        .args(["netns", "exec", &l.id, "busybox", "httpd", "-f", "-p"])
        .arg(format!("{}:8080", l.gw))
        .arg("-h")
        .arg(&www)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    c.pid(httpd.id());
    let keyring = ceph.join("keyring.client.fs");

    // Both VMs boot at once (same image, separate overlays).
    let t0 = Instant::now();
    let k2 = {
        let l2 = ImageLab {
            id: l.id.clone(),
            env: l.env.clone(),
            root: l.root.clone(),
            cfg: l.cfg.clone(),
            gw: l.gw.clone(),
        };
        std::thread::spawn(move || l2.boot("k2", 900))
    };
    l.boot("k1", 900);
    k2.join().unwrap();
    eprintln!(
        "image: two VMs answering ssh after {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let mount = format!(
        "kmount --mon-dump-cmd 'busybox wget -qO- http://{}:8080/mon_dump.json' --cmd-timeout 20 \
         --keyring /etc/ceph/fs.keyring --name fs --fs a --mountpoint /mnt",
        l.gw
    );
    for vm in ["k1", "k2"] {
        l.ssh(vm, "mkdir -p /etc/ceph");
        let o = l.vm(&[
            "cp",
            keyring.to_str().unwrap(),
            &format!("{vm}:/etc/ceph/fs.keyring"),
        ]);
        assert!(o.status.success(), "vm cp keyring: {}", text(&o));
        l.ssh(vm, &mount);
    }
    // df shows the new device syntax with the cluster's fsid.
    let df = l.ssh("k1", "df -h /mnt");
    assert!(df.contains(&format!("fs@{fsid}.a=/")), "{df}");
    l.ssh("k1", "echo 'hello from k1' > /mnt/seed000 && sync");
    let ino: u64 = l
        .ssh("k1", "stat -c %i /mnt/seed000")
        .trim()
        .parse()
        .unwrap();
    // The host reads the file's object back with rados.
    let obj = format!("{ino:x}.00000000");
    let data = cluster.must("rados", &["-p", "cephfs.a.data", "get", &obj, "-"]);
    assert_eq!(String::from_utf8_lossy(&data), "hello from k1\n");
    // The second client sees the first one's file (and the other way round).
    assert_eq!(l.ssh("k2", "cat /mnt/seed000"), "hello from k1\n");
    l.ssh("k2", "echo 'hello from k2' > /mnt/seed000-k2 && sync");
    assert_eq!(l.ssh("k1", "cat /mnt/seed000-k2"), "hello from k2\n");
    for vm in ["k1", "k2"] {
        l.ssh(vm, "umount /mnt");
        l.stop_and_check_clean(vm);
    }
}

/// The test Ceph cluster (tests/fixtures/ceph-cluster.sh) in namespace `ns` at `addr`,
/// stopped (by the pid files it wrote) when dropped.
struct Cluster {
    dir: PathBuf,
    ns: String,
}

impl Cluster {
    fn up(dir: &Path, ns: &str, addr: &str) -> Cluster {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ceph-cluster.sh");
        let c = Cluster {
            dir: dir.to_path_buf(),
            ns: ns.to_string(),
        };
        let out = run(Command::new("timeout")
            .arg("120")
            .arg(&fixture)
            .arg("up")
            .env("CEPH_DIR", dir)
            .env("CEPH_NETNS", ns)
            .env("CEPH_ADDR", addr));
        assert!(out.status.success(), "ceph cluster: {}", text(&out));
        c
    }

    fn must(&self, prog: &str, args: &[&str]) -> Vec<u8> {
        let o = run(Command::new("timeout")
            .args(["30", "ip", "netns", "exec", &self.ns, prog])
            .args(args)
            .env("CEPH_CONF", self.dir.join("ceph.conf")));
        assert!(o.status.success(), "{prog} {args:?}: {}", text(&o));
        o.stdout
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ceph-cluster.sh");
        let _ = Command::new("timeout")
            .arg("60")
            .arg(fixture)
            .arg("down")
            .env("CEPH_DIR", &self.dir)
            .output();
    }
}
