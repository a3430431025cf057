//! Option 26's default: the MTU dhcpd reads from its interface with SIOCGIFMTU.
use std::process::Command;

/// Runs `f` on a thread of its own in a fresh network namespace (only `lo`, down, MTU 65536).
fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

#[test]
fn unknown_interface_has_no_mtu() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(dhcpd::server::interface_mtu(&sock, "lrnosuchif0"), None);
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn mtu_of_the_interface_and_none_when_it_does_not_fit() {
    testkit::require_root();
    let (lo_default, lo_set, long_name) = in_fresh_netns(|| {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        let before = dhcpd::server::interface_mtu(&sock, "lo");
        // `ip` forked from this thread runs in its namespace.
        let st = Command::new("ip")
            .args(["link", "set", "lo", "mtu", "1400"])
            .status()
            .unwrap();
        assert!(st.success(), "ip link set lo mtu 1400: {st}");
        let after = dhcpd::server::interface_mtu(&sock, "lo");
        // A name longer than IFNAMSIZ-1 is cut, not overflowed: "lo" plus 20 bytes is no link.
        let long = dhcpd::server::interface_mtu(&sock, &format!("lo{}", "x".repeat(20)));
        (before, after, long)
    });
    // lo's 65536 does not fit option 26's u16: no option rather than a wrong one.
    assert_eq!(lo_default, None);
    assert_eq!(lo_set, Some(1400));
    assert_eq!(long_name, None);
}
