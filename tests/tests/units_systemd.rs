//! labnet's generated units under a real systemd, boot to shutdown: a VM of the tests' Debian
//! image (systemd as PID 1, TCG) gets this build's `labnet` (over a 9p share), and inside the
//! guest `labnet units install` + `systemctl enable --now labnet@sepian.service` run the
//! embedded default lab. Checked inside the guest: the lab and both daemons active, a client
//! namespace on the guest's br0 leasing with busybox udhcpc and resolving its name through
//! the lab's dns, the lease in the dhcpd's journal, readiness (a restarted dns answers as
//! soon as `systemctl restart` returns), a reboot bringing it all back with the lease kept,
//! `kill -9` of the dhcpd restarted by systemd, and `systemctl stop` leaving nothing.
use labnet_tests::*;
use std::time::{Duration, Instant};

/// How often the guest is polled (each poll is an ssh round trip).
const HALF_S: Duration = Duration::from_millis(500);

/// The client's udhcpc script: prints what it got, configures nothing it does not need.
const UDHCPC_SCRIPT: &str = "#!/bin/sh\n\
case \"$1\" in bound|renew) echo \"LEASE ip=$ip dns=$dns hostname=$hostname\"; \
ip addr add \"$ip/${mask:-24}\" dev \"$interface\" ;; esac\nexit 0\n";

/// Makes a client namespace `cl` in the guest, a veth on the lab's br0, and leases with
/// udhcpc sending hostname `cl1`; prints the LEASE line.
const CLIENT: &str = "set -e\n\
ip netns add cl\n\
ip link add cl0 netns cl type veth peer name clbr netns sepian\n\
ip -n sepian link set clbr master br0 up\n\
ip -n cl link set lo up; ip -n cl link set cl0 up\n\
ip netns exec cl busybox udhcpc -i cl0 -n -q -t 10 -T 2 -x hostname:cl1 -s /root/udhcpc.sh\n";

#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn units_run_the_lab_under_systemd_in_a_guest() {
    require_root();
    let mut c = Cleanup::default();
    let l = ImageLab::up(&mut c, "us", 85, None);
    // This build's labnet, offered to the guest on a 9p share (a hard link: no 180 MB copy).
    let share = l.root.join("bin");
    std::fs::create_dir_all(&share).unwrap();
    if std::fs::hard_link(labnet_bin(), share.join("labnet")).is_err() {
        std::fs::copy(labnet_bin(), share.join("labnet")).unwrap();
    }
    let share_arg = format!("{}:labnetbin", share.display());
    let t0 = Instant::now();
    l.boot_with("s1", 1500, &["--share", &share_arg, "--mem", "1536M"]);
    eprintln!(
        "units_systemd: guest up after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let ssh = |script: &str| l.ssh("s1", script);

    assert_eq!(
        ssh("readlink /proc/1/exe").trim(),
        "/usr/lib/systemd/systemd"
    );
    ssh("install -m 755 /mnt/labnetbin/labnet /usr/local/bin/labnet");
    ssh(&format!(
        "cat > /root/udhcpc.sh <<'EOF'\n{UDHCPC_SCRIPT}EOF\nchmod +x /root/udhcpc.sh"
    ));
    let t = Instant::now();
    ssh("labnet units install && systemctl enable --now labnet@sepian.service");
    eprintln!(
        "units_systemd: enable --now took {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let active = |units: &str| -> String {
        let o = l.vm(&["ssh", "s1", "--", &format!("systemctl is-active {units}")]);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let all = "labnet@sepian labnet-dhcpd@sepian labnet-dns@sepian";
    // The daemons were pulled in by the lab unit's Wants=; they may still be starting.
    wait_until(
        "the lab's units active",
        Duration::from_secs(120),
        HALF_S,
        || {
            let now = active(all);
            (now == "active\nactive\nactive\n").then_some(()).ok_or_else(|| {
            format!(
                "{now}\n{}",
                ssh("systemctl status --no-pager -l 'labnet*' || true; journalctl --no-pager -n 50 -u 'labnet*' || true")
            )
        })
        },
    );
    // Readiness: a restarted dns is active only once it answers, so a query right after
    // `systemctl restart` returns gets an answer.
    let q = ssh(
        "systemctl restart labnet-dns@sepian && ip netns exec sepian busybox nslookup -type=soa lab 192.168.0.1 >/dev/null && echo answered",
    );
    assert_eq!(q.trim(), "answered");

    // A client on the guest's lab bridge leases from the dhcpd under systemd and resolves
    // its own name through the lab's dns.
    let lease = ssh(CLIENT);
    let line = lease
        .lines()
        .find(|x| x.starts_with("LEASE "))
        .unwrap_or_else(|| panic!("no lease: {lease}"));
    let ip = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ip="))
        .unwrap()
        .to_string();
    assert!(ip.starts_with("192.168.0."), "{line}");
    assert!(line.contains("dns=192.168.0.1"), "{line}");
    let wait_name = |what: &str| {
        let what = format!("{what}: cl1.lab to resolve to {ip}");
        wait_until(&what, Duration::from_secs(30), HALF_S, || {
            let o = l.vm(&[
                "ssh",
                "s1",
                "--",
                "ip netns exec cl busybox nslookup cl1.lab 192.168.0.1",
            ]);
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            out.contains(&ip).then_some(()).ok_or_else(|| text(&o))
        })
    };
    wait_name("first lease");
    let journal = ssh("journalctl --no-pager -u labnet-dhcpd@sepian");
    assert!(
        journal.contains(&ip),
        "the lease is not in the dhcpd's journal:\n{journal}"
    );
    // A service of the user's own, put into the lab with `units print --for-service`: it
    // resolves a .lab name through the lab's dns (the drop-in binds the lab's resolv.conf).
    ssh("printf '[Service]\\nType=oneshot\\nExecStart=/bin/sh -c \"getent hosts cl1.lab > /run/probe.out\"\\n' > /etc/systemd/system/probe.service");
    ssh("mkdir -p /etc/systemd/system/probe.service.d && labnet units print --for-service probe.service sepian > /etc/systemd/system/probe.service.d/labnet-sepian.conf && systemctl daemon-reload && systemctl start probe.service");
    let probe =
        ssh("cat /run/probe.out; systemctl show -p NetworkNamespacePath --value probe.service");
    assert!(
        probe.starts_with(&format!("{ip} ")) && probe.contains("cl1.lab"),
        "{probe}"
    );
    assert!(probe.contains("/run/netns/sepian"), "{probe}");
    let leases_before = ssh("labnet leases sepian --json");
    assert!(leases_before.contains(&ip), "{leases_before}");

    // Reboot: the lab comes back by itself (WantedBy=multi-user.target), and the lease
    // survives in the StateDirectory.
    let _ = l.vm(&["ssh", "s1", "--", "systemctl reboot"]);
    // The old ssh connection and lease linger a moment; wait for the reboot to show.
    wait_until(
        "the guest to reboot",
        Duration::from_secs(60),
        HALF_S,
        || {
            let o = l.vm(&["ssh", "s1", "--", "cat /proc/uptime"]);
            let up: f64 = String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|u| u.parse().ok())
                .unwrap_or(0.0);
            (!o.status.success() || up < 60.0)
                .then_some(())
                .ok_or_else(|| format!("up {up} s"))
        },
    );
    let w = l.vm(&["ssh", "s1", "--wait", "600"]);
    assert!(w.status.success(), "after reboot: {}", text(&w));
    wait_until(
        "the lab's units active after the reboot",
        Duration::from_secs(180),
        HALF_S,
        || {
            let now = active(all);
            (now == "active\nactive\nactive\n").then_some(()).ok_or(now)
        },
    );
    let leases_after = ssh("labnet leases sepian --json");
    assert!(
        leases_after.contains(&ip),
        "lease lost over the reboot: {leases_after}"
    );

    // kill -9 of the dhcpd: systemd restarts it (Restart=on-failure), no lease lost.
    let pid = ssh("systemctl show -p MainPID --value labnet-dhcpd@sepian");
    let pid = pid.trim().to_string();
    assert_ne!(pid, "0");
    ssh(&format!("kill -9 {pid}"));
    wait_until(
        "systemd to restart the dhcpd",
        Duration::from_secs(60),
        HALF_S,
        || {
            let now = ssh("systemctl show -p MainPID --value labnet-dhcpd@sepian; systemctl is-active labnet-dhcpd@sepian || true");
            let mut it = now.lines();
            let (p, st) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            (p != pid && p != "0" && st == "active")
                .then_some(())
                .ok_or(now)
        },
    );
    let leases_killed = ssh("labnet leases sepian --json");
    assert!(
        leases_killed.contains(&ip),
        "lease lost with the kill: {leases_killed}"
    );

    // Stop: the daemons stop with the lab, and the namespace, its links and nft table and
    // the lab's runtime files are gone.
    ssh("systemctl stop labnet@sepian.service");
    let after = l.vm(&["ssh", "s1", "--", &format!("systemctl is-active {all}")]);
    assert_eq!(
        String::from_utf8_lossy(&after.stdout),
        "inactive\ninactive\ninactive\n",
        "{}",
        text(&after)
    );
    let left = ssh("ip netns list | cut -d' ' -f1; ip -o link show | grep -c br0 || true; ls -A /run/labnet 2>/dev/null | grep sepian || true; nft list tables 2>/dev/null | grep labnet || true");
    // No namespace at all (the client's `cl` went with the reboot), no br0, nothing of the
    // lab in /run/labnet, no labnet nft table.
    assert_eq!(left.trim(), "0", "left after stop:\n{left}");
    l.stop_and_check_clean("s1");
}
