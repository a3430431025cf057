//! A lab client cannot flood the daemons' logs (issue 17, item 1): queries with an
//! unimplemented opcode to `labnet dns` and DISCOVERs into an exhausted pool to `labnet
//! dhcpd`, from a client namespace on the bridge of a lab that `labnet up` built; each log
//! keeps a few lines of the kind and a "suppressed N similar" summary, and stays small.
use labnet_tests::*;
use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A DNS query header + question for `vm1.lab` with `opcode`.
fn query_with_opcode(id: u16, opcode: u8) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[opcode << 3 | 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x03vm1\x03lab\x00\x00\x01\x00\x01");
    q
}

/// A DHCPDISCOVER from `mac` (BOOTREQUEST, magic cookie, option 53 = 1).
fn discover(mac: [u8; 6], xid: u32) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = 1; // BOOTREQUEST
    p[1] = 1; // ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag
    p[28..34].copy_from_slice(&mac);
    p[236..240].copy_from_slice(&[99, 130, 83, 99]);
    p.extend_from_slice(&[53, 1, 1, 255]);
    p
}

fn lines_with(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn a_client_flood_leaves_small_logs_with_summaries() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("ls");
    let lab = id.clone();
    let root = temp_dir(&mut c, "logflood");
    let env = labnet_env(&root);
    let cfg = root.join("lab.toml");
    // A one-address pool: every DISCOVER after the first finds no free address.
    std::fs::write(
        &cfg,
        format!(
            "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"10.80.0.1/24\"\n\
             [dhcp]\nrange_start = \"10.80.0.100\"\nrange_end = \"10.80.0.100\"\n[dns]\nzone = \"lab\"\n"
        ),
    )
    .unwrap();
    let cfgs = cfg.display().to_string();
    c.labnet(&["down", &lab], &env);
    let up = labnet(&["up", &lab, "--config", &cfgs], &env);
    assert!(up.status.success(), "{}", text(&up));

    let cl = format!("{id}cl");
    c.netns(&cl);
    sh(&format!(
        "ip netns add {cl} && ip -n {cl} link set lo up && \
         ip link add {id}c0 netns {cl} type veth peer name {id}cb netns {lab} && \
         ip -n {lab} link set {id}cb master {id}br up && \
         ip -n {cl} addr add 10.80.0.50/24 dev {id}c0 && ip -n {cl} link set {id}c0 up && \
         ip -n {cl} route add default dev {id}c0"
    ));

    // Flood for 3 s from the client: DNS status (opcode 2) queries, DISCOVERs from fresh MACs.
    let sent = in_netns(&cl, || {
        let dns = UdpSocket::bind("10.80.0.50:0").unwrap();
        let dhcp = UdpSocket::bind("0.0.0.0:68").unwrap();
        dhcp.set_broadcast(true).unwrap();
        dns.set_nonblocking(true).unwrap();
        dhcp.set_nonblocking(true).unwrap();
        let (mut n_dns, mut n_dhcp) = (0u32, 0u32);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            for _ in 0..50 {
                if dns
                    .send_to(&query_with_opcode(n_dns as u16, 2), "10.80.0.1:53")
                    .is_ok()
                {
                    n_dns += 1;
                }
            }
            let mac = [
                0x52,
                0x54,
                0x01,
                (n_dhcp >> 16) as u8,
                (n_dhcp >> 8) as u8,
                n_dhcp as u8,
            ];
            if dhcp
                .send_to(&discover(mac, n_dhcp), "255.255.255.255:67")
                .is_ok()
            {
                n_dhcp += 1;
            }
            // Drain answers so the client's queue never limits the flood.
            let mut buf = [0u8; 1500];
            while dns.recv_from(&mut buf).is_ok() {}
            while dhcp.recv_from(&mut buf).is_ok() {}
            std::thread::sleep(Duration::from_micros(200));
        }
        (n_dns, n_dhcp)
    });
    assert!(sent.0 > 2000 && sent.1 > 500, "flood too small: {sent:?}");

    let run = root.join("run").join(&lab);
    let (dns_log, dhcp_log) = (run.join("dns.log"), run.join("dhcpd.log"));
    eprintln!(
        "sent {sent:?}; right after the flood: dns.log {} bytes, dhcpd.log {} bytes",
        read(&dns_log).len(),
        read(&dhcp_log).len()
    );
    // The summaries come once the rate limit's window has ended.
    wait_for(
        "the suppressed-lines summaries",
        Duration::from_secs(30),
        || read(&dns_log).contains("similar") && read(&dhcp_log).contains("similar"),
    );
    let (dns, dhcp) = (read(&dns_log), read(&dhcp_log));
    let opcode_lines = lines_with(&dns, "unimplemented op_code");
    assert!(
        (1..=20).contains(&opcode_lines),
        "{opcode_lines} unimplemented-opcode lines for {} queries:\n{}",
        sent.0,
        &dns[..dns.len().min(2000)]
    );
    let summary = dns
        .lines()
        .find(|l| l.contains("suppressed") && l.contains("similar"))
        .unwrap_or_default();
    let n: u64 = summary
        .split("suppressed ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(n > 1000, "summary {summary:?} for {} queries", sent.0);
    let pool_lines = lines_with(&dhcp, "no free address");
    assert!(
        (1..=20).contains(&pool_lines),
        "{pool_lines} no-free-address lines for {} DISCOVERs:\n{}",
        sent.1,
        &dhcp[..dhcp.len().min(2000)]
    );
    for (log, text) in [(&dns_log, &dns), (&dhcp_log, &dhcp)] {
        assert!(
            text.len() < 16 * 1024,
            "{} is {} bytes after the flood",
            log.display(),
            text.len()
        );
    }
    // The daemons still answer.
    let o = run_in(
        &cl,
        &["dig", "@10.80.0.1", "+time=2", "+tries=1", "vm1.lab"],
    );
    assert!(o.contains("status: NXDOMAIN"), "{o}");

    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
}

fn run_in(ns: &str, argv: &[&str]) -> String {
    let o = run(Command::new("ip").args(["netns", "exec", ns]).args(argv));
    text(&o)
}
