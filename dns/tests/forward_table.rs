//! The forward table the daemon states at start, for peers of each kind of subnet: a /24, a
//! /23 (two /24 reverse zones), a /29 (one entry per address), and a peer zone under the
//! lab's own.
use std::net::SocketAddr;

#[test]
fn forward_table_golden() {
    let dns = |s: &str| s.parse::<SocketAddr>().unwrap();
    let mut f = vec![];
    for (peer, zone, server, subnet, prefix) in [
        ("labb", "labb.lab", "10.20.1.1:53", "10.20.1.0", 24),
        ("build", "build.example", "172.16.2.1:53", "172.16.2.0", 23),
        ("tiny", "tiny.lab", "192.168.7.201:53", "192.168.7.200", 29),
    ] {
        f.extend(
            dns::forward::peer_forwards(peer, zone, dns(server), subnet.parse().unwrap(), prefix)
                .unwrap(),
        );
    }
    testkit::golden!("forward-table.txt", &dns::forward::table(&f));
}
