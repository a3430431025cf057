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
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
            must(Command::new("ip").args(["netns", "add", ns]));
            c.netns(ns);
            must(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
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
        let p = self.dir.join("state").join(lab).join("hosts");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// `labnet dns LAB --enter-netns`, once it said READY=1.
    fn start_dns(&mut self, lab: &str) -> Daemon {
        let sock_path = self.dir.join(format!("notify-{lab}.sock"));
        let sock = notify_socket(&sock_path);
        let log = self.dir.join(format!("dns-{lab}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(labnet_bin())
            .args(["dns", lab, "--enter-netns"])
            .envs(self.env.iter().cloned())
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("labnet");
        self.c.pid(child.id());
        if let Err(st) = wait_ready(&mut child, &sock, Duration::from_secs(15), &log) {
            panic!(
                "labnet dns {lab} exited ({st}) before READY=1:\n{}",
                read(&log)
            );
        }
        Daemon { child, log }
    }
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn kill(&mut self) {
        signal(self.child.id() as i32, libc::SIGKILL);
        let _ = self.child.wait();
    }
    fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("labnet dns died ({st}):\n{}", read(&self.log));
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// What `dig` said: the status, and the answer and authority records as "NAME TYPE DATA".
#[derive(Debug)]
struct Dig {
    status: String,
    flags: String,
    answer: Vec<String>,
    authority: Vec<String>,
    raw: String,
}

/// `dig @server ARGS` inside netns `ns`: one try, at most 5 s (a hang shows as NO ANSWER).
fn dig(ns: &str, server: &str, args: &[&str]) -> Dig {
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "dig", &format!("@{server}")])
        .args(["+time=5", "+tries=1", "+nocookie", "+noall", "+comments"])
        .args(["+answer", "+authority"])
        .args(args));
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        status: "NO ANSWER".into(),
        flags: String::new(),
        answer: vec![],
        authority: vec![],
        raw: raw.clone(),
    };
    let mut section = "";
    for line in raw.lines() {
        if let Some(i) = line.find("status: ") {
            d.status = line[i + 8..].split(',').next().unwrap().to_string();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            d.flags = rest.split(';').next().unwrap().to_string();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(';') || line.trim().is_empty() {
            if line.trim().is_empty() {
                section = "";
            }
        } else {
            let w: Vec<&str> = line.split_whitespace().collect();
            let rec = format!("{} {} {}", w[0], w[3], w[4..].join(" "));
            match section {
                "answer" => d.answer.push(rec),
                "authority" => d.authority.push(rec),
                _ => {}
            }
        }
    }
    d
}

/// The fake peer dns in netns `ns` on C_DNS:53 (and a spoofer on C_SPOOF:53), until `stop`:
/// for each query, `reply(query)` gives (from the spoofer?, datagram) to send back in turn,
/// 100 ms apart. Returns the sources of the queries it got.
fn fake_peer(
    ns: &str,
    stop: Arc<AtomicBool>,
    reply: impl Fn(&[u8]) -> Vec<(bool, Vec<u8>)> + Send + 'static,
) -> (std::thread::JoinHandle<()>, Arc<Mutex<Vec<String>>>) {
    let path = format!("/run/netns/{ns}");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let seen = Arc::new(Mutex::new(vec![]));
    let sources = seen.clone();
    let t = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let real = UdpSocket::bind(format!("{C_DNS}:53")).unwrap();
        let spoofer = UdpSocket::bind(format!("{C_SPOOF}:53")).unwrap();
        real.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::SeqCst) {
            let Ok((n, from)) = real.recv_from(&mut buf) else {
                continue;
            };
            sources.lock().unwrap().push(from.ip().to_string());
            for (i, (spoof, d)) in reply(&buf[..n]).into_iter().enumerate() {
                if i > 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let s = if spoof { &spoofer } else { &real };
                s.send_to(&d, from).unwrap();
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    (t, seen)
}

/// The question section of a one-question query (bytes 12.. up to and with QTYPE/QCLASS).
fn question_of(q: &[u8]) -> &[u8] {
    let mut i = 12;
    while q[i] != 0 {
        i += 1 + q[i] as usize;
    }
    &q[12..i + 5]
}

fn qname_of(q: &[u8]) -> String {
    let (mut i, mut labels) = (12, vec![]);
    while q[i] != 0 {
        let l = q[i] as usize;
        labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_lowercase());
        i += 1 + l;
    }
    labels.join(".")
}

/// An authoritative answer to `q` (its ID) for `question` with one A record `ip`.
fn answer(q: &[u8], question: &[u8], ip: [u8; 4]) -> Vec<u8> {
    let mut a = q[..2].to_vec();
    a.extend_from_slice(&[0x85, 0x00, 0, 1, 0, 1, 0, 0, 0, 0]);
    a.extend_from_slice(question);
    a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    a.extend_from_slice(&ip);
    a
}

/// A query's question for another name (same type and class).
fn question_for(name: &str) -> Vec<u8> {
    let mut q = vec![];
    for l in name.split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn dns_forwards_peer_zones_both_ways() {
    require_root();
    let mut labs = Labs::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (fake, sources) = fake_peer(&labs.fake.clone(), stop.clone(), |q| {
        let question = question_of(q).to_vec();
        match qname_of(q).as_str() {
            // A spoof (right ID and question, from an address A did not ask) first, then
            // the server's own answer.
            "spoof.labc.lab" => vec![
                (true, answer(q, &question, [6, 6, 6, 6])),
                (false, answer(q, &question, [10, 81, 3, 7])),
            ],
            // The right ID for another question first, then the answer to this one.
            "wrongq.labc.lab" => vec![
                (
                    false,
                    answer(q, &question_for("other.labc.lab"), [6, 6, 6, 6]),
                ),
                (false, answer(q, &question, [10, 81, 3, 8])),
            ],
            // Only the spoofer answers.
            "onlyspoof.labc.lab" => vec![(true, answer(q, &question, [6, 6, 6, 6]))],
            _ => vec![],
        }
    });
    let (a, b) = (labs.a.clone(), labs.b.clone());
    let mut da = labs.start_dns(&a);
    let mut db = labs.start_dns(&b);

    // The forward table, as the daemon states it at start.
    let log = read(&da.log);
    for line in [
        format!("forward labb.lab. -> {B_DNS}:53 ({b})"),
        format!("forward 2.81.10.in-addr.arpa. -> {B_DNS}:53 ({b})"),
        format!("forward labc.lab. -> {C_DNS}:53 (labc)"),
    ] {
        assert!(log.contains(&line), "{line:?} not in A's log:\n{log}");
    }

    // Each lab resolves the other's names, forward and reverse, through its own dns.
    let d = dig(&a, A_DNS, &["ceph1.labb.lab", "A"]);
    assert_eq!(d.status, "NOERROR", "{}", d.raw);
    assert_eq!(d.answer, vec!["ceph1.labb.lab. A 10.81.2.20"]);
    let d = dig(&a, A_DNS, &["-x", "10.81.2.21"]);
    assert_eq!(
        d.answer,
        vec!["21.2.81.10.in-addr.arpa. PTR mds1.labb.lab."],
        "{}",
        d.raw
    );
    // Lab A joins B while B's dns runs: refused before (B has no upstreams), then after the
    // config names A and B's dns got SIGHUP, forwarded.
    let a_zone = format!("{a}.lab");
    let d = dig(&b, B_DNS, &[&format!("vm1.{a_zone}"), "A"]);
    assert_eq!(d.status, "REFUSED", "{}", d.raw);
    labs.add_a_to_b();
    signal(db.child.id() as i32, libc::SIGHUP);
    wait_for("B's dns reloaded", Duration::from_secs(10), || {
        read(&db.log).contains("reloaded the forward table (2 zones)")
    });
    let log = read(&db.log);
    assert!(
        log.contains(&format!("forward {a_zone}. -> {A_DNS}:53 ({a})"))
            && log.contains(&format!(
                "forward 1.81.10.in-addr.arpa. -> {A_DNS}:53 ({a})"
            )),
        "{log}"
    );
    let d = dig(&b, B_DNS, &[&format!("vm1.{a_zone}"), "A"]);
    assert_eq!(
        d.answer,
        vec![format!("vm1.{a_zone}. A 10.81.1.10")],
        "{}",
        d.raw
    );
    // The PTR names the host in the zone peers know lab A by.
    let d = dig(&b, B_DNS, &["-x", "10.81.1.10"]);
    assert_eq!(
        d.answer,
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
        || read(&db.log).contains("reload refused, the forward table is unchanged"),
    );
    let d = dig(&b, B_DNS, &[&format!("nosuch.{a_zone}"), "A"]);
    assert_eq!(
        d.status, "NXDOMAIN",
        "forwarding lost on a bad reload: {}",
        d.raw
    );
    std::fs::write(&b_toml, good).unwrap();
    db.assert_alive();

    // Lab A's own names stay its own, under both names.
    for name in ["vm1.lab".to_string(), format!("vm1.{a_zone}")] {
        let d = dig(&a, A_DNS, &[&name, "A"]);
        assert_eq!(d.answer, vec![format!("{name}. A 10.81.1.10")], "{}", d.raw);
        assert!(
            d.flags.contains("aa"),
            "not answered by A itself: {}",
            d.raw
        );
    }

    // An unknown name in the peer zone: the peer's NXDOMAIN, with the peer zone's SOA.
    let d = dig(&a, A_DNS, &["nosuch.labb.lab", "A"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);
    assert!(
        d.authority.len() == 1 && d.authority[0].starts_with("labb.lab. SOA ns.labb.lab."),
        "not lab B's negative answer: {}",
        d.raw
    );
    let d = dig(&a, A_DNS, &["-x", "10.81.2.99"]);
    assert_eq!(d.status, "NXDOMAIN", "{}", d.raw);

    // Spoofed and mismatched answers are dropped; the server's own answer is relayed.
    let d = dig(&a, A_DNS, &["spoof.labc.lab", "A"]);
    assert_eq!(
        d.answer,
        vec!["spoof.labc.lab. A 10.81.3.7"],
        "spoof relayed: {}",
        d.raw
    );
    let d = dig(&a, A_DNS, &["wrongq.labc.lab", "A"]);
    assert_eq!(
        d.answer,
        vec!["wrongq.labc.lab. A 10.81.3.8"],
        "decoy relayed: {}",
        d.raw
    );
    let d = dig(&a, A_DNS, &["onlyspoof.labc.lab", "A"]);
    assert_eq!(
        (d.status.as_str(), d.answer.len()),
        ("SERVFAIL", 0),
        "only a spoof came back: {}",
        d.raw
    );
    // Queries to a peer leave from the lab's own address (what the peer's WireGuard
    // AllowedIPs and firewall accept from this lab).
    let from = sources.lock().unwrap().clone();
    assert!(
        !from.is_empty() && from.iter().all(|s| s == A_DNS),
        "queries to the peer came from {from:?}, not {A_DNS}"
    );

    // Peer B down: SERVFAIL once the timeout (1 s) passes, not a hang (dig waits 5 s).
    db.kill();
    let d = dig(&a, A_DNS, &["mds1.labb.lab", "A"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    let d = dig(&a, A_DNS, &["-x", "10.81.2.30"]);
    assert_eq!(d.status, "SERVFAIL", "{}", d.raw);
    // Many queries to the dead peer: its silence is logged once, not per query.
    for i in 0..5 {
        dig(&a, A_DNS, &[&format!("n{i}.labb.lab"), "A"]);
    }
    da.assert_alive();
    let log = read(&da.log);
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
    let d = dig(&a, A_DNS, &["mds1.labb.lab", "A"]);
    assert_eq!(d.answer, vec!["mds1.labb.lab. A 10.81.2.21"], "{}", d.raw);
    assert!(
        read(&da.log).contains(&format!(
            "forward labb.lab. ({b}): {B_DNS}:53 answers again"
        )),
        "{}",
        read(&da.log)
    );
    db.assert_alive();

    stop.store(true, Ordering::SeqCst);
    fake.join().unwrap();
}
