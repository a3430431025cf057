//! CephFS across hosts (issue 20), under TCG: the test Ceph cluster
//! (tests/fixtures/ceph-cluster.sh) runs on a host `cephhost` in lab B (a DHCP client of lab
//! B, so its name is in lab B's zone), a guest in lab A on the other simulated host mounts it
//! with kmount by name — the mon dump and keyring fetched from `cephhost.LABB.lab`, resolved
//! by lab A's dns forwarding lab B's zone over the peering tunnel — and writes a file that
//! `rados` in lab B reads back from the data pool.
use labnet_tests::ceph::Cluster;
use labnet_tests::twohosts::{Client, TwoHosts};
use labnet_tests::*;
use std::process::Command;

#[test]
#[ignore = "needs root (namespaces, wireguard-go, Ceph daemons, QEMU)"]
fn guest_in_lab_a_mounts_cephfs_of_lab_b_by_name() {
    require_root();
    let kernel = source_kernel().bzimage.display().to_string();
    let kmount = static_kmount();
    let mut c = Cleanup::default();
    let th = TwoHosts::new(&mut c, "lp", 63, "");
    let (a, b) = (&th.a, &th.b);
    th.up(&mut c);
    th.join();

    // The cluster host: a DHCP client of lab B named cephhost; the cluster binds its lease.
    let host = Client::named(&mut c, b, "ch", "cephhost");
    let ip = host.ip().unwrap();
    let cluster = Cluster::up(&b.dir.join("ceph"), &host.ns, &ip, false);
    let fsid = cluster.fsid();
    cluster.serve_mount_info(&mut c, &b.dir.join("www"), &ip, &b.dir.join("httpd.log"));
    // Lab A resolves the cluster host through lab B's zone before the guest boots.
    let name = format!("cephhost.{}.lab", b.lab);
    wait_for(
        "the cluster host's name in lab A",
        std::time::Duration::from_secs(20),
        || {
            let o =
                run(Command::new("ip").args(["netns", "exec", &a.lab, "getent", "hosts", &name]));
            String::from_utf8_lossy(&o.stdout).starts_with(&format!("{ip} "))
        },
    );

    let guest = format!(
        "set -e\n\
         wget -qO /tmp/fs.keyring http://{name}:8080/fs.keyring\n\
         kmount --mon-dump-cmd 'wget -qO- http://{name}:8080/mon_dump.json' --cmd-timeout 20 \
           --keyring /tmp/fs.keyring --name fs --fs a --mountpoint /mnt\n\
         grep ' /mnt ceph ' /proc/mounts\n\
         head -c 300000 /dev/zero | tr '\\0' x > /mnt/big\n\
         echo 'hello from lab A' > /mnt/f\n\
         echo \"INODE $(stat -c %i /mnt/f)\"\n\
         umount /mnt\n\
         echo UNMOUNTED\n"
    );
    let out = run(Command::new("timeout")
        .args(["-k", "5", "150", "nsenter"])
        .arg(format!("--net=/run/netns/{}", a.ns))
        .arg(labnet_bin())
        .args(["vm", "run", "--lab", &a.lab, "--name", "guesta"])
        .args(["--kernel", &kernel])
        .arg("--add")
        .arg(format!("{}:/bin/kmount", kmount.display()))
        .args(["--", "sh", "-c", &guest])
        .envs(a.env.iter().cloned()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "guest: {}", text(&out));
    // Mounted with the cluster's fsid, the mon in lab B at its lease.
    let mline = stdout
        .lines()
        .find(|l| l.contains(" /mnt ceph "))
        .unwrap_or_else(|| panic!("no ceph mount: {stdout}"));
    assert!(
        mline.starts_with(&format!("fs@{fsid}.a=/ /mnt ceph ")) && mline.contains(&ip),
        "{mline}"
    );
    assert!(stdout.trim_end().ends_with("UNMOUNTED"), "{stdout}");

    // Lab B's side reads what the guest in lab A wrote.
    let ino: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("INODE "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    let data = cluster.must(
        "rados",
        &[
            "-p",
            "cephfs.a.data",
            "get",
            &format!("{ino:x}.00000000"),
            "-",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&data), "hello from lab A\n");
    drop(cluster);
}
