//! Labs of two hosts joined over WireGuard (issue 20), against real peers: two "hosts" (two
//! namespaces joined by a veth underlay, each running labnet with its own state dirs),
//! wireguard-go on both ends (this machine has no WireGuard module), DHCP clients (busybox
//! udhcpc) in both labs, and on host A a WireGuard uplink to a bounce box for the default
//! route.
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use labnet_tests::twohosts::{Client, TwoHosts};
use labnet_tests::*;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn ns_out(ns: &str, cmd: &str) -> String {
    sh(&format!("ip netns exec {ns} {cmd}"))
}

/// The lease table as (ip, mac) pairs, sorted.
fn leases(h: &twohosts::Host) -> Vec<(String, String)> {
    let v = json(&h.must(&["leases", "--json"]));
    let mut out: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ip"].as_str().unwrap_or_default().to_string(),
                l["mac"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
#[ignore = "needs root (network namespaces, wireguard-go)"]
fn two_hosts_labs_joined_over_wireguard() {
    require_root();
    let mut c = Cleanup::default();
    // Lab A's WireGuard uplink: a bounce box whose underlay is then moved onto host A.
    let bdir = temp_dir(&mut c, "lp-bounce");
    let bid = unique("lpx");
    let bx = bounce(&mut c, &bdir, &bid, 62);
    let uplink = format!(
        "\n[uplink]\nkind = \"wireguard\"\ninterface = \"{bid}wa\"\naddress = \"192.168.20.1/24\"\n\
         private_key_file = \"{}\"\npeer_public_key = \"{}\"\nendpoint = \"{}\"\n",
        bx.lab_key.display(),
        bx.bounce_pub,
        bx.endpoint
    );
    let th = TwoHosts::new(&mut c, "lp", 61, &uplink);
    let (a, b) = (&th.a, &th.b);
    let bounce_ip = bx.endpoint.split(':').next().unwrap().to_string();
    let (pre, last) = bounce_ip.rsplit_once('.').unwrap();
    let under = format!("{pre}.{}", last.parse::<u8>().unwrap() - 1);
    sh(&format!(
        "ip link set {bid}u0 netns {ha} && ip -n {ha} addr add {under}/30 dev {bid}u0 && ip -n {ha} link set {bid}u0 up",
        ha = a.ns
    ));

    th.up(&mut c);
    let a1 = Client::new(&mut c, a, "c1");
    let a1_ip = a1.ip().unwrap();
    let before = leases(a);
    assert!(before.iter().any(|(ip, _)| *ip == a1_ip), "{before:?}");
    // status's check of the plan step that started dhcpd names its pid.
    let dhcpd_pid = |h: &twohosts::Host| {
        json(&h.must(&["status", "--json"]))["plan"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["step"] == "start dhcpd")
            .map(|c| c["detail"].as_str().unwrap_or_default().to_string())
    };
    let dhcpd_before = dhcpd_pid(a);
    assert!(
        dhcpd_before
            .as_deref()
            .is_some_and(|d| d.contains("running (pid ")),
        "{dhcpd_before:?}"
    );

    // Invitations both ways; each `peer add` is applied to the running lab.
    th.join();
    let b1 = Client::new(&mut c, b, "c1");
    let b1_ip = b1.ip().unwrap();

    // A's lease survived the live `peer add`: same lease table, same dhcpd, no deconfig.
    assert_eq!(leases(a), before);
    assert_eq!(dhcpd_pid(a), dhcpd_before);
    assert!(!a1.events().contains("deconfig\n") || a1.events().matches("bound").count() == 1);
    assert_eq!(a1.ip().as_deref(), Some(a1_ip.as_str()));

    // Cryptokey routing: each peer's AllowedIPs is the other lab's subnet, routed over the
    // peering link inside the lab.
    let show = ns_out(&a.lab, &format!("wg show {} allowed-ips", a.peering));
    assert!(show.contains("192.168.11.0/24"), "{show}");
    let routes = ns_out(&a.lab, "ip -4 route show");
    assert!(
        routes.contains(&format!("192.168.11.0/24 dev {}", a.peering)),
        "{routes}"
    );
    // The WireGuard uplink still carries lab A's default route.
    assert!(
        routes.contains(&format!("default via 192.168.20.2 dev {bid}wa")),
        "{routes}"
    );

    // Clients of both labs reach each other, both ways.
    assert!(
        a1.pings(&b1_ip),
        "lab A client cannot ping lab B client {b1_ip}"
    );
    assert!(
        b1.pings(&a1_ip),
        "lab B client cannot ping lab A client {a1_ip}"
    );
    // ... and the lab hosts' own addresses (the DNS servers' bridge addresses).
    assert!(a1.pings(&b.bridge_ip()));

    // TCP from A's client to a server in B's client: it sees A's real address (no NAT).
    let listener = in_netns(&b1.ns, || {
        std::net::TcpListener::bind("0.0.0.0:7070").unwrap()
    });
    let target = format!("{b1_ip}:7070");
    let sender = std::thread::spawn({
        let ns = a1.ns.clone();
        move || {
            in_netns(&ns, move || {
                let mut s = std::net::TcpStream::connect_timeout(
                    &target.parse().unwrap(),
                    Duration::from_secs(10),
                )
                .unwrap();
                s.write_all(&vec![b'x'; 200_000]).unwrap();
            })
        }
    });
    let (mut conn, from) = listener.accept().unwrap();
    let mut got = vec![];
    conn.read_to_end(&mut got).unwrap();
    sender.join().unwrap();
    assert_eq!(from.ip().to_string(), a1_ip, "the server in B saw {from}");
    assert_eq!(got.len(), 200_000);

    // One name space: each lab's dns forwards the other's zone over the tunnel, so a client
    // of A resolves B's client by name (and back), through its own lab's dns.
    // Each lab's own dns first (it takes up the lease from dhcpd's hosts file), so the other
    // lab's cache never holds an early NXDOMAIN.
    for (from, dns, name, want) in [
        (&b1, b.bridge_ip(), format!("c1.{}.lab", b.lab), &b1_ip),
        (&a1, a.bridge_ip(), format!("c1.{}.lab", a.lab), &a1_ip),
        (&a1, a.bridge_ip(), format!("c1.{}.lab", b.lab), &b1_ip),
        (&b1, b.bridge_ip(), format!("c1.{}.lab", a.lab), &a1_ip),
    ] {
        // The lease's name reaches the other lab's dns through its hosts file: poll.
        let answer = || {
            let out = from.exec(&["busybox", "nslookup", &name, &dns]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let found = |out: &str| {
            out.lines()
                .any(|l| l.contains("Address") && l.trim_end().ends_with(want.as_str()))
        };
        let mut last = String::new();
        for _ in 0..50 {
            last = answer();
            if found(&last) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(found(&last), "{name} via {dns}: {last}");
    }

    // doctor: the tunnel to B (handshake, route, no overlap) and MTU/MSS clamp are fine.
    let doc = a.labnet(&["doctor"]);
    let words = String::from_utf8_lossy(&doc.stdout).into_owned();
    assert!(
        words.contains(&format!("[ ok ] peer {}:", b.lab)) && words.contains("[ ok ] peering mtu"),
        "{}",
        text(&doc)
    );

    // A route of another link into B's subnet: doctor names the overlap (exit 3).
    sh(&format!(
        "ip -n {} route add 192.168.11.128/25 dev {}",
        a.lab, a.bridge
    ));
    let doc = a.labnet(&["doctor"]);
    let words = String::from_utf8_lossy(&doc.stdout).into_owned();
    assert_eq!(doc.status.code(), Some(3), "{}", text(&doc));
    assert!(
        words.contains(&format!(
            "[FAIL] peer {}: overlapping subnet: route(s) 192.168.11.128/25",
            b.lab
        )),
        "{words}"
    );
    sh(&format!(
        "ip -n {} route del 192.168.11.128/25 dev {}",
        a.lab, a.bridge
    ));

    // The default route still works out through the uplink, masqueraded there only.
    assert!(
        a1.pings("192.168.20.2"),
        "lab A client cannot reach the bounce box"
    );
    let probe = ns_out(&bx.ns, "nft list table ip probe");
    let masq = probe
        .lines()
        .find(|l| l.contains("ip saddr 192.168.20.1 "))
        .unwrap_or_default();
    assert!(
        !masq.contains("packets 0 "),
        "no masqueraded echo at the bounce box: {probe}"
    );

    // peer list: handshake, bytes, endpoint.
    let list = json(&a.must(&["peer", "list", "--json"]));
    let row = &list[0];
    assert_eq!(row["name"], b.lab.as_str(), "{list}");
    assert_eq!(
        row["endpoint"],
        format!("{}:51820", b.ip).as_str(),
        "{list}"
    );
    assert!(row["latest_handshake_secs_ago"].is_u64(), "{list}");
    // A sent the 200 kB above, and got the replies.
    assert!(row["tx_bytes"].as_u64().unwrap() > 200_000, "{list}");
    assert!(row["rx_bytes"].as_u64().unwrap() > 0, "{list}");
    let table = a.must(&["peer", "list"]);
    assert!(
        table.contains(&b.lab) && table.contains(" s ago"),
        "{table}"
    );

    // status covers the peers (exit 0: as configured).
    let st = a.labnet(&["status"]);
    assert!(st.status.success(), "{}", text(&st));
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(st.contains(&format!("peer {}", b.lab)), "{st}");

    // `peer add` again: nothing changes.
    let cfg = std::fs::read_to_string(&a.cfg).unwrap();
    let inv = b.dir.join(format!("{}.invite", b.lab));
    let again = a.must(&["peer", "add", inv.to_str().unwrap()]);
    assert!(again.contains("already in"), "{again}");
    assert_eq!(std::fs::read_to_string(&a.cfg).unwrap(), cfg);
    assert_eq!(ns_out(&a.lab, "ip -4 route show"), routes);

    // `peer remove`: the route and the device's peer go; the other lab is unreachable.
    a.must(&["peer", "remove", &b.lab]);
    let routes = ns_out(&a.lab, "ip -4 route show");
    assert!(!routes.contains("192.168.11.0/24"), "{routes}");
    let show = ns_out(&a.lab, &format!("wg show {} peers", a.peering));
    assert!(show.trim().is_empty(), "{show}");
    assert!(!a1
        .exec(&["ping", "-c", "1", "-W", "1", &b1_ip])
        .status
        .success());
    // ... and added back, live again.
    a.must(&["peer", "add", inv.to_str().unwrap()]);
    assert!(a1.pings(&b1_ip));

    // Drift: the peering link set down and its route deleted; `up` puts both back.
    sh(&format!(
        "ip -n {lab} link set {p} down; ip -n {lab} route del 192.168.11.0/24 dev {p} || true",
        lab = a.lab,
        p = a.peering
    ));
    assert!(
        !a.labnet(&["status"]).status.success(),
        "status missed the drift"
    );
    let up = a.must(&["up"]);
    for what in [
        format!("{} was down: set up", a.peering),
        format!("route 192.168.11.0/24 dev {} was missing: added", a.peering),
    ] {
        assert!(up.contains(&what), "`up` does not say {what:?}:\n{up}");
    }
    assert!(a1.pings(&b1_ip), "not repaired by up");
    // Repaired: status is clean and a second `up` (every peer, route and zone as configured)
    // has nothing left to do.
    let st = a.labnet(&["status"]);
    assert!(st.status.success(), "{}", text(&st));
    let again = a.must(&["up"]);
    assert!(again.contains("nothing changed"), "{again}");

    // `down` of A leaves B as it was; `down` of both leaves nothing.
    a.must(&["down"]);
    let st = b.labnet(&["status"]);
    assert!(st.status.success(), "lab B after A's down: {}", text(&st));
    assert_eq!(b1.ip().as_deref(), Some(b1_ip.as_str()));
    b.must(&["down"]);
    let left = netns_list();
    for lab in [&a.lab, &b.lab] {
        assert!(!left.contains(lab), "{lab} left: {left:?}");
    }
    for iface in [&a.peering, &b.peering, &format!("{bid}wa")] {
        assert!(
            pids_with_arg("wireguard-go", iface).is_empty(),
            "wireguard-go {iface} left"
        );
        let sock = format!("/var/run/wireguard/{iface}.sock");
        assert!(!std::path::Path::new(&sock).exists(), "{sock} left");
    }
    for h in [a, b] {
        let links = must(Command::new("ip").args(["-n", &h.ns, "-o", "link", "show"]));
        assert!(!links.contains(&h.peering), "{links}");
    }
}
