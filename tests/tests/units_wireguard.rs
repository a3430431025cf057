//! A WireGuard lab under a real systemd in a guest whose Debian kernel has the module: the
//! kernel backend's first real test, and wireguard-go's life in the lab unit's cgroup.
use labnet_tests::*;

/// Sets up, inside the guest, a bounce box (namespace `bx` behind a veth underlay, kernel
/// WireGuard at 192.168.20.2 whose peer is the lab's key) and writes the lab config
/// /etc/labnet/LAB.toml with `backend = BACKEND`.
fn wg_lab_script(lab: &str, backend: &str) -> String {
    format!(
        "set -e\n\
         if ! ip netns list | grep -q '^bx'; then\n\
           modprobe wireguard\n\
           ip netns add bx; ip link add u0 type veth peer name u1 netns bx\n\
           ip addr add 10.99.0.1/30 dev u0; ip link set u0 up\n\
           ip -n bx addr add 10.99.0.2/30 dev u1; ip -n bx link set u1 up; ip -n bx link set lo up\n\
           (umask 077; wg genkey > /root/lab.key; wg genkey > /root/bx.key)\n\
           wg pubkey < /root/lab.key > /root/lab.pub; wg pubkey < /root/bx.key > /root/bx.pub\n\
           ip -n bx link add wgb type wireguard\n\
           ip netns exec bx wg set wgb listen-port 51820 private-key /root/bx.key peer $(cat /root/lab.pub) allowed-ips 192.168.20.1/32\n\
           ip -n bx addr add 192.168.20.2/24 dev wgb; ip -n bx link set wgb up\n\
         fi\n\
         mkdir -p /etc/labnet\n\
         cat > /etc/labnet/{lab}.toml <<EOF\n\
         name = \"{lab}\"\n[bridge]\nname = \"br-{lab}\"\naddress = \"192.168.30.1/24\"\n\
         [dhcp]\nrange_start = \"192.168.30.100\"\nrange_end = \"192.168.30.150\"\n\
         [uplink]\nkind = \"wireguard\"\ninterface = \"wg-{lab}\"\naddress = \"192.168.20.1/24\"\n\
         private_key_file = \"/root/lab.key\"\npeer_public_key = \"$(cat /root/bx.pub)\"\n\
         endpoint = \"10.99.0.2:51820\"\nallowed_ips = [\"0.0.0.0/0\"]\nbackend = \"{backend}\"\n\
         EOF\n\
         labnet units install {lab} >/dev/null\n"
    )
}

/// A WireGuard lab under systemd with both backends, in a guest whose Debian kernel has the
/// module: `kernel` (the link made, configured over netlink, moved into the lab; handshake,
/// default route through the tunnel), `auto` choosing the kernel, and `userspace` (wireguard-go in the lab unit's cgroup;
/// stopping the unit leaves no process and no UAPI socket).
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn units_wireguard_lab_both_backends_under_systemd() {
    require_root();
    let mut c = Cleanup::default();
    let l = ImageLab::up(&mut c, "uw", 86, None);
    let share = l.root.join("bin");
    std::fs::create_dir_all(&share).unwrap();
    if std::fs::hard_link(labnet_bin(), share.join("labnet")).is_err() {
        std::fs::copy(labnet_bin(), share.join("labnet")).unwrap();
    }
    let share_arg = format!("{}:labnetbin", share.display());
    l.boot_with("w1", 1500, &["--share", &share_arg]);
    let ssh = |script: &str| l.ssh("w1", script);
    ssh("install -m 755 /mnt/labnetbin/labnet /usr/local/bin/labnet");

    // Kernel backend.
    ssh(&wg_lab_script("wgk", "kernel"));
    ssh("systemctl start labnet@wgk.service");
    let k = ssh(
        "ip netns exec wgk busybox ping -c1 -W5 192.168.20.2 >/dev/null && echo ping-ok; \
         ip netns exec wgk wg show wg-wgk latest-handshakes | awk '{print ($2 > 0) ? \"handshake\" : \"none\"}'; \
         ip -n wgk route show default; ip -n wgk -d link show wg-wgk | grep -o wireguard | head -1; \
         pgrep -x wireguard-go || echo no-wireguard-go; \
         ip netns exec wgk nft list table ip labnet | grep -c masquerade",
    );
    if !k.contains("ping-ok\nhandshake\n") {
        let diag = l.vm(&[
            "ssh",
            "w1",
            "--",
            "ip netns exec wgk wg show; ip netns exec bx wg show; ip -n wgk addr; ip addr show u0; ip -n bx addr; journalctl --no-pager -u labnet@wgk | tail -30; ip netns exec bx busybox ping -c1 -W2 10.99.0.1",
        ]);
        panic!("kernel backend: {k}\n{}", text(&diag));
    }
    assert!(k.contains("default via 192.168.20.2 dev wg-wgk"), "{k}");
    assert!(k.contains("wireguard\nno-wireguard-go\n"), "{k}");
    ssh("systemctl stop labnet@wgk.service");
    let gone =
        ssh("ip netns list | grep -c '^wgk' || true; ip -o link show | grep -c wg-wgk || true");
    assert_eq!(gone, "0\n0\n", "{gone}");

    // `auto` picks the kernel module when the kernel has it: a wireguard link, no wireguard-go.
    ssh(&wg_lab_script("wga", "auto"));
    ssh("systemctl start labnet@wga.service");
    let a = ssh(
        "ip netns exec wga busybox ping -c1 -W5 192.168.20.2 >/dev/null && echo ping-ok; \
         ip -n wga -d link show wg-wga | grep -o wireguard | head -1; \
         pgrep -x wireguard-go || echo no-wireguard-go; ls /var/run/wireguard/ 2>/dev/null | grep -c wg-wga || true",
    );
    assert_eq!(
        a, "ping-ok\nwireguard\nno-wireguard-go\n0\n",
        "auto backend: {a}"
    );
    ssh("systemctl stop labnet@wga.service");

    // Userspace backend: wireguard-go lives in the lab unit's cgroup.
    ssh(&wg_lab_script("wgu", "userspace"));
    ssh("systemctl start labnet@wgu.service");
    let u = ssh(
        "ip netns exec wgu busybox ping -c1 -W5 192.168.20.2 >/dev/null && echo ping-ok; \
         cg=$(systemctl show -p ControlGroup --value labnet@wgu.service); \
         for p in $(cat /sys/fs/cgroup$cg/cgroup.procs); do cat /proc/$p/comm; done; \
         ls /var/run/wireguard/",
    );
    assert!(u.contains("ping-ok\n"), "{u}");
    assert!(
        u.lines().any(|x| x == "wireguard-go"),
        "wireguard-go not in the unit's cgroup: {u}"
    );
    assert!(u.contains("wg-wgu.sock"), "{u}");
    ssh("systemctl stop labnet@wgu.service");
    let left = ssh("pgrep -x wireguard-go || echo none; ls /var/run/wireguard/ 2>/dev/null | grep -c wg-wgu || true; ip netns list | grep -c '^wgu' || true");
    assert_eq!(left, "none\n0\n0\n", "after stop: {left}");
    l.stop_and_check_clean("w1");
}
