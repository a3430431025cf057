//! Where a lab's servers answer (issue 17, item 4): its DNS (and everything else on the lab
//! host, and its VMs) answers the lab's bridge, never the other side of the uplink — not the
//! WireGuard bounce box, not the host behind a host uplink — nor a link that is neither;
//! the lab's clients still resolve, and still reach out through the uplink. As root.
use labnet_tests::*;
use std::process::Command;

/// `dig @server name` inside `ns`: its status line, or "NO ANSWER".
fn dig_status(ns: &str, server: &str, name: &str) -> String {
    let o = run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "dig",
        &format!("@{server}"),
        "+time=1",
        "+tries=1",
        "+nocookie",
        name,
    ]));
    let out = String::from_utf8_lossy(&o.stdout);
    out.lines()
        .find_map(|l| l.split("status: ").nth(1))
        .map(|s| s.split(',').next().unwrap_or_default().to_string())
        .unwrap_or_else(|| "NO ANSWER".into())
}

fn pings(ns: &str, addr: &str) -> bool {
    run(Command::new("ip").args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", addr]))
        .status
        .success()
}

/// A client namespace `{id}cl` on the lab's bridge at 192.168.0.50.
fn client(c: &mut Cleanup, lab: &str, id: &str) -> String {
    let ns = format!("{id}cl");
    c.netns(&ns);
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link set lo up && \
         ip link add {id}c0 netns {ns} type veth peer name {id}cb netns {lab} && \
         ip -n {lab} link set {id}cb master {id}br up && ip -n {ns} addr add 192.168.0.50/24 dev {id}c0 && \
         ip -n {ns} link set {id}c0 up && ip -n {ns} route add default via 192.168.0.1"
    ));
    ns
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn wireguard_lab_answers_its_bridge_only() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("ls");
    let lab = id.clone();
    let root = temp_dir(&mut c, "exposure-wg");
    let env = labnet_env(&root);
    let b = bounce(&mut c, &root, &id, 234);
    let cfg = root.join("lab.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"192.168.0.1/24\"\n\
             [uplink]\nkind = \"wireguard\"\ninterface = \"{id}wl\"\naddress = \"192.168.20.1/24\"\n\
             private_key_file = \"{}\"\npeer_public_key = \"{}\"\nendpoint = \"{}\"\nallowed_ips = [\"0.0.0.0/0\"]\n\
             [dns]\nzone = \"lab\"\n",
            b.lab_key.display(),
            b.bounce_pub,
            b.endpoint
        ),
    )
    .unwrap();
    let cfgs = cfg.display().to_string();
    c.path(format!("/etc/netns/{lab}"));
    c.labnet(&["down", &lab], &env);
    let up = labnet(&["up", &lab, "--config", &cfgs], &env);
    assert!(up.status.success(), "{}", text(&up));
    let cl = client(&mut c, &lab, &id);

    // The lab's own client: DNS answers (the lab zone), the bounce box is reachable.
    assert_eq!(dig_status(&cl, "192.168.0.1", "nobody.lab"), "NXDOMAIN");
    assert!(
        pings(&cl, "192.168.20.2"),
        "the lab's client cannot reach out"
    );
    // Inside the lab itself (loopback), too.
    assert_eq!(dig_status(&lab, "192.168.0.1", "nobody.lab"), "NXDOMAIN");

    // The bounce box routes the lab's subnet into the tunnel, as a hostile peer would.
    let lab_pub = std::fs::read_to_string(root.join("lab.pub")).unwrap();
    sh(&format!(
        "ip netns exec {bx} wg set {wg} peer {} allowed-ips 192.168.20.1/32,192.168.0.0/24 && \
         ip -n {bx} route add 192.168.0.0/24 dev {wg}",
        lab_pub.trim(),
        bx = b.ns,
        wg = b.wg
    ));
    for server in ["192.168.0.1", "192.168.20.1"] {
        assert_eq!(
            dig_status(&b.ns, server, "nobody.lab"),
            "NO ANSWER",
            "the lab's DNS answers the bounce box on {server}"
        );
    }
    assert!(
        !pings(&b.ns, "192.168.0.50"),
        "the bounce box reaches a lab client"
    );
    assert!(
        !pings(&b.ns, "192.168.0.1"),
        "the bounce box reaches the lab host"
    );

    // A link into the lab that is neither bridge nor uplink.
    let fx = format!("{id}fx");
    c.netns(&fx);
    sh(&format!(
        "ip netns add {fx} && ip link add {id}f0 netns {fx} type veth peer name {id}f1 netns {lab} && \
         ip -n {lab} addr add 10.82.0.1/24 dev {id}f1 && ip -n {lab} link set {id}f1 up && \
         ip -n {fx} addr add 10.82.0.2/24 dev {id}f0 && ip -n {fx} link set {id}f0 up && \
         ip -n {fx} route add 192.168.0.0/24 via 10.82.0.1"
    ));
    for server in ["192.168.0.1", "10.82.0.1"] {
        assert_eq!(
            dig_status(&fx, server, "nobody.lab"),
            "NO ANSWER",
            "the lab's DNS answers a link off the bridge on {server}"
        );
    }
    assert!(
        !pings(&fx, "192.168.0.50"),
        "a link off the bridge reaches a lab client"
    );
    // The lab's client still resolves after all that.
    assert_eq!(dig_status(&cl, "192.168.0.1", "nobody.lab"), "NXDOMAIN");

    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn host_uplink_lab_answers_its_bridge_only() {
    require_root();
    let mut c = Cleanup::default();
    let h = HostUplinkLab::up(&mut c, "ls", "exposure-host", "[dns]\nzone = \"lab\"\n");
    let (id, host, lab) = (h.id.clone(), h.host.clone(), h.lab.clone());
    let in_host = |args: &[&str]| h.labnet(args);
    let cl = client(&mut c, &lab, &id);
    assert_eq!(dig_status(&cl, "192.168.0.1", "nobody.lab"), "NXDOMAIN");
    assert!(
        pings(&cl, "10.253.0.1"),
        "the lab's client cannot reach the host"
    );

    // The host, routing the lab's subnet to the lab's end of the veth.
    sh(&format!(
        "ip -n {host} route add 192.168.0.0/24 via 10.253.0.2"
    ));
    for server in ["192.168.0.1", "10.253.0.2"] {
        assert_eq!(
            dig_status(&host, server, "nobody.lab"),
            "NO ANSWER",
            "the lab's DNS answers the host on {server}"
        );
    }
    assert!(
        !pings(&host, "192.168.0.50"),
        "the host reaches a lab client"
    );

    let down = in_host(&["down", &lab]);
    assert!(down.status.success(), "{}", text(&down));
}
