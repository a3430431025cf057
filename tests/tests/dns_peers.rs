//! Names across labs (issue 20 item 3), as root: two labs' `labnet dns`, each in a namespace
//! of its own serving its zone from its hosts file, each configured with the other as a peer
//! (`[[peers]]`), joined by a veth pair that stands in for the WireGuard tunnel (the dns
//! side does not care what carries the packets; the tunnel has its own tests). A third peer
//! is a fake dns the test controls, to send spoofed and mismatched answers.
//!
//! ```text
//!  netns A (lab A)                                    netns B (lab B)
//!  bridge 10.81.1.1/24, dns lab      ── veth ──────── bridge 10.81.2.1/24, dns labb.lab
//!                     10.81.0.1/30     (the "tunnel")  10.81.0.2/30
//!          └── veth 10.81.0.5/30 ── netns C: fake dns 10.81.3.1 (peer labc, zone labc.lab)
//! ```
use std::path::PathBuf;
use std::time::Duration;

use labnet_tests::dnstest::{self, *};
use labnet_tests::*;

const A_DNS: &str = "10.81.1.1";
const B_DNS: &str = "10.81.2.1";
const C_DNS: &str = "10.81.3.1";
/// In C too, a second address: answers from it are spoofs (not the server A asked).
const C_SPOOF: &str = "10.81.3.2";
/// Well-formed public keys (one per peer: the config refuses a key twice); the dns never
/// uses them.
const KEYS: [&str; 2] = [
    "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=",
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=",
];

struct Labs {
    c: Cleanup,
    dir: PathBuf,
    env: Vec<(String, String)>,
    a: String,
    b: String,
    fake: String,
    base: String,
}

fn peer(name: &str, key: &str, subnet: &str, zone: &str, dns: &str) -> String {
    format!(
        "[[peers]]\nname = {name:?}\npublic_key = \"{key}\"\nsubnet = \"{subnet}\"\nzone = \"{zone}\"\ndns = \"{dns}\"\n"
    )
}

impl Labs {
    fn new() -> Labs {
        let base = unique("ld");
        let (a, b, fake) = (format!("{base}a"), format!("{base}b"), format!("{base}c"));
        let mut c = Cleanup::default();
        for ns in [&a, &b, &fake] {
            add_netns(&mut c, ns);
        }
        sh(&format!(
            "set -e
            ip -n {a} link add {base}ab type veth peer name {base}ba netns {b}
            ip -n {a} addr add 10.81.0.1/30 dev {base}ab; ip -n {a} link set {base}ab up
            ip -n {b} addr add 10.81.0.2/30 dev {base}ba; ip -n {b} link set {base}ba up
            ip -n {a} link add {base}ac type veth peer name {base}ca netns {fake}
            ip -n {a} addr add 10.81.0.5/30 dev {base}ac; ip -n {a} link set {base}ac up
            ip -n {fake} addr add 10.81.0.6/30 dev {base}ca; ip -n {fake} link set {base}ca up
            ip -n {a} link add {base}abr type bridge
            ip -n {a} addr add {A_DNS}/24 dev {base}abr; ip -n {a} link set {base}abr up
            ip -n {b} link add {base}bbr type bridge
            ip -n {b} addr add {B_DNS}/24 dev {base}bbr; ip -n {b} link set {base}bbr up
            ip -n {fake} addr add {C_DNS}/24 dev {base}ca; ip -n {fake} addr add {C_SPOOF}/24 dev {base}ca
            ip -n {a} route add 10.81.2.0/24 via 10.81.0.2
            ip -n {b} route add 10.81.1.0/24 via 10.81.0.1
            ip -n {a} route add 10.81.3.0/24 via 10.81.0.6
            ip -n {fake} route add 10.81.1.0/24 via 10.81.0.5"
        ));
        let dir = temp_dir(&mut c, &base);
        let env = labnet_env(&dir);
        let labs = Labs {
            c,
            dir,
            env,
            a,
            b,
            fake,
            base: base.clone(),
        };
        labs.write_config(
            &labs.a,
            &format!("{base}abr"),
            A_DNS,
            // The default zone: peers know lab A as `A.lab` (its peer zone), and lab B's zone
            // `labb.lab` lies under A's own `lab` (the longer zone wins: forwarded).
            "lab",
            &format!(
                "{}{}",
                peer(&labs.b, KEYS[0], "10.81.2.0/24", "labb.lab", B_DNS),
                peer("labc", KEYS[1], "10.81.3.0/24", "labc.lab", C_DNS)
            ),
        );
        // Lab B starts without peers (and without upstreams); A is added while it runs.
        labs.write_config(&labs.b, &format!("{base}bbr"), B_DNS, "labb.lab", "");
        labs.write_hosts(&labs.a, "10.81.1.10 vm1\n");
        labs.write_hosts(&labs.b, "10.81.2.20 ceph1\n10.81.2.21 mds1\n");
        labs
    }

    fn write_config(&self, lab: &str, bridge: &str, addr: &str, zone: &str, peers: &str) {
        let etc = self.dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join(format!("{lab}.toml")),
            format!(
                "name = {lab:?}\n[bridge]\nname = {bridge:?}\naddress = \"{addr}/24\"\n[dns]\nzone = {zone:?}\nupstreams = []\ntimeout_ms = 1000\n{peers}"
            ),
        )
        .unwrap();
    }

    /// Lab B's config with lab A as its peer, as `labnet peer add` leaves it.
    fn add_a_to_b(&self) {
        let a_zone = format!("{}.lab", self.a);
        self.write_config(
            &self.b,
            &format!("{}bbr", self.base),
            B_DNS,
            "labb.lab",
            &peer(&self.a, KEYS[0], "10.81.1.0/24", &a_zone, A_DNS),
        );
    }

    fn write_hosts(&self, lab: &str, text: &str) {
        dnstest::write_hosts(&self.dir, lab, text);
    }

    /// `labnet dns LAB --enter-netns`, once it said READY=1.
    fn start_dns(&mut self, lab: &str) -> Daemon {
        Daemon::start(&mut self.c, &self.dir, &self.env, "dns", lab)
    }
}

/// An authoritative answer to `q` (its ID) for `question` with one A record `ip`.
fn answer(q: &[u8], question: &[u8], ip: [u8; 4]) -> Vec<u8> {
    answer_to(q, question, true, 1, &a_record(ip))
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn dns_forwards_peer_zones_both_ways() {
    require_root();
    let mut labs = Labs::new();
    let fake = FakeDns::start(&labs.fake.clone(), C_DNS, Some(C_SPOOF), |q| {
        let question = question_of(q).to_vec();
        match qname_of(q).as_str() {
            // A spoof (right ID and question, from an address A did not ask) first, then
            // the server's own answer.
            "spoof.labc.lab" => vec![
                Reply::Spoof(answer(q, &question, [6, 6, 6, 6])),
                Reply::Real(answer(q, &question, [10, 81, 3, 7])),
            ],
            // The right ID for another question first, then the answer to this one.
            "wrongq.labc.lab" => vec![
                Reply::Real(answer(
                    q,
                    question_of(&query_bytes(0, "other.labc.lab")),
                    [6, 6, 6, 6],
                )),
                Reply::Real(answer(q, &question, [10, 81, 3, 8])),
            ],
            // Only the spoofer answers.
            "onlyspoof.labc.lab" => vec![Reply::Spoof(answer(q, &question, [6, 6, 6, 6]))],
            _ => vec![],
        }
    });
    let (a, b) = (labs.a.clone(), labs.b.clone());
    let mut da = labs.start_dns(&a);
    let mut db = labs.start_dns(&b);

    // The forward table, as the daemon states it at start.
    let log = da.log_text();
    for line in [
        format!("forward labb.lab. -> {B_DNS}:53 ({b})"),
        format!("forward 2.81.10.in-addr.arpa. -> {B_DNS}:53 ({b})"),
        format!("forward labc.lab. -> {C_DNS}:53 (labc)"),
    ] {
        assert!(log.contains(&line), "{line:?} not in A's log:\n{log}");
    }

    // Each lab resolves the other's names, forward and reverse, through its own dns.
    let d = dig_in(&a, A_DNS, 5, &["ceph1.labb.lab", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answers(), vec!["ceph1.labb.lab. A 10.81.2.20"]);
    let d = dig_in(&a, A_DNS, 5, &["-x", "10.81.2.21"]);
    assert_eq!(
        d.answers(),
        vec!["21.2.81.10.in-addr.arpa. PTR mds1.labb.lab."],
        "{}",
        d.raw
    );
    // Lab A joins B while B's dns runs: refused before (B has no upstreams), then after the
    // config names A and B's dns got SIGHUP, forwarded.
    let a_zone = format!("{a}.lab");
    let d = dig_in(&b, B_DNS, 5, &[&format!("vm1.{a_zone}"), "A"]);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    labs.add_a_to_b();
    signal(db.child.id() as i32, libc::SIGHUP);
    wait_for("B's dns reloaded", Duration::from_secs(10), || {
        db.log_text()
            .contains("reloaded the forward table (2 zones)")
    });
    let log = db.log_text();
    assert!(
        log.contains(&format!("forward {a_zone}. -> {A_DNS}:53 ({a})"))
            && log.contains(&format!(
                "forward 1.81.10.in-addr.arpa. -> {A_DNS}:53 ({a})"
            )),
        "{log}"
    );
    let d = dig_in(&b, B_DNS, 5, &[&format!("vm1.{a_zone}"), "A"]);
    assert_eq!(
        d.answers(),
        vec![format!("vm1.{a_zone}. A 10.81.1.10")],
        "{}",
        d.raw
    );
    // The PTR names the host in the zone peers know lab A by.
    let d = dig_in(&b, B_DNS, 5, &["-x", "10.81.1.10"]);
    assert_eq!(
        d.answers(),
        vec![format!("10.1.81.10.in-addr.arpa. PTR vm1.{a_zone}.")],
        "{}",
        d.raw
    );
    // A config that does not load is refused on SIGHUP: the forward table stays.
    let b_toml = labs.dir.join("etc").join(format!("{b}.toml"));
    let good = std::fs::read_to_string(&b_toml).unwrap();
    std::fs::write(&b_toml, format!("{good}[[peers]]\nname = \"broken\"\n")).unwrap();
    signal(db.child.id() as i32, libc::SIGHUP);
    wait_for(
        "B's dns refused the reload",
        Duration::from_secs(10),
        || {
            db.log_text()
                .contains("reload refused, the forward table is unchanged")
        },
    );
    let d = dig_in(&b, B_DNS, 5, &[&format!("nosuch.{a_zone}"), "A"]);
    assert_eq!(
        d.status, "NXDOMAIN",
        "forwarding lost on a bad reload: {}",
        d.raw
    );
    std::fs::write(&b_toml, good).unwrap();
    db.assert_alive();

    // Lab A's own names stay its own, under both names.
    for name in ["vm1.lab".to_string(), format!("vm1.{a_zone}")] {
        let d = dig_in(&a, A_DNS, 5, &[&name, "A"]);
        assert_eq!(
            d.answers(),
            vec![format!("{name}. A 10.81.1.10")],
            "{}",
            d.raw
        );
        assert!(
            d.flags.contains("aa"),
            "not answered by A itself: {}",
            d.raw
        );
    }

    // An unknown name in the peer zone: the peer's NXDOMAIN, with the peer zone's SOA.
    let d = dig_in(&a, A_DNS, 5, &["nosuch.labb.lab", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(
        d.authorities().len() == 1 && d.authorities()[0].starts_with("labb.lab. SOA ns.labb.lab."),
        "not lab B's negative answer: {}",
        d.raw
    );
    let d = dig_in(&a, A_DNS, 5, &["-x", "10.81.2.99"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);

    // Spoofed and mismatched answers are dropped; the server's own answer is relayed.
    let d = dig_in(&a, A_DNS, 5, &["spoof.labc.lab", "A"]);
    assert_eq!(
        d.answers(),
        vec!["spoof.labc.lab. A 10.81.3.7"],
        "spoof relayed: {}",
        d.raw
    );
    let d = dig_in(&a, A_DNS, 5, &["wrongq.labc.lab", "A"]);
    assert_eq!(
        d.answers(),
        vec!["wrongq.labc.lab. A 10.81.3.8"],
        "decoy relayed: {}",
        d.raw
    );
    let d = dig_in(&a, A_DNS, 5, &["onlyspoof.labc.lab", "A"]);
    assert_eq!(
        (d.status.as_str(), d.answers().len()),
        ("SERVFAIL", 0),
        "only a spoof came back: {}",
        d.raw
    );
    // Queries to a peer leave from the lab's own address (what the peer's WireGuard
    // AllowedIPs and firewall accept from this lab).
    let from = fake.sources();
    assert!(
        !from.is_empty() && from.iter().all(|s| s == A_DNS),
        "queries to the peer came from {from:?}, not {A_DNS}"
    );

    // Peer B down: SERVFAIL once the timeout (1 s) passes, not a hang (dig waits 5 s).
    db.kill();
    let d = dig_in(&a, A_DNS, 5, &["mds1.labb.lab", "A"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    let d = dig_in(&a, A_DNS, 5, &["-x", "10.81.2.30"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    // Many queries to the dead peer: its silence is logged once, not per query.
    for i in 0..5 {
        dig_in(&a, A_DNS, 5, &[&format!("n{i}.labb.lab"), "A"]);
    }
    da.assert_alive();
    let log = da.log_text();
    let silent = log
        .lines()
        .filter(|l| {
            l.contains(&format!(
                "forward labb.lab. ({b}): {B_DNS}:53 gave no usable answer"
            ))
        })
        .count();
    assert_eq!(silent, 1, "peer silence logged {silent} times:\n{log}");
    // Back up: answered again (and said so).
    let mut db = labs.start_dns(&b);
    let d = dig_in(&a, A_DNS, 5, &["mds1.labb.lab", "A"]);
    assert_eq!(
        d.answers(),
        vec!["mds1.labb.lab. A 10.81.2.21"],
        "{}",
        d.raw
    );
    assert!(
        da.log_text().contains(&format!(
            "forward labb.lab. ({b}): {B_DNS}:53 answers again"
        )),
        "{}",
        da.log_text()
    );
    db.assert_alive();

    fake.stop();
}
