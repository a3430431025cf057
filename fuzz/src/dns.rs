//! DNS both ways, through the real server: `labnet dns`'s serving loop (one UDP thread, the
//! local zone with a few hosts, the relay and its cache) runs in this process on loopback,
//! with this harness as its only upstream.
//!
//! - [`query`]: the input is a client's datagram; whatever the server sends back must be a
//!   response with the query's ID.
//! - [`upstream`]: a well-formed client query for a forwarded name; the input becomes the
//!   upstream's answer (raw, or behind the question the relay actually sent); the client must
//!   get a well-formed response to its question, within its size limit.
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hickory_server::proto::op::Message;

/// The relay's deadline: an upstream answer it rejects costs this much.
const RELAY_TIMEOUT: Duration = Duration::from_millis(40);

struct Harness {
    server: SocketAddr,
    client: UdpSocket,
    upstream: UdpSocket,
    next_id: u16,
}

fn harness() -> &'static Mutex<Harness> {
    static H: OnceLock<Mutex<Harness>> = OnceLock::new();
    H.get_or_init(|| {
        let upstream = UdpSocket::bind("127.0.0.1:0").expect("upstream socket");
        let dir = crate::scratch_dir();
        std::fs::create_dir_all(&dir).expect("temp dir");
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, "10.9.0.100 vm1\n10.9.0.101 box-two\n").expect("hosts file");
        // One serving thread: one socket, one address. Set before any thread reads it.
        std::env::set_var("LABNET_DNS_THREADS", "1");
        let cfg = dns::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            zone: "lab".into(),
            zone_aliases: vec![],
            ptr_zone: None,
            bridge: "10.9.0.1".parse().unwrap(),
            prefix: 24,
            upstreams: vec![upstream.local_addr().unwrap()],
            cache_size: 64,
            timeout: RELAY_TIMEOUT,
            hosts_file: hosts,
            forwards: vec![],
        };
        let bound = dns::server::bind(&cfg).expect("bind on loopback");
        let server = bound.local_addr().expect("bound address");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("dns-server".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let r = rt.block_on(dns::server::serve(
                    cfg,
                    bound,
                    move || {
                        let _ = ready_tx.send(());
                    },
                    std::future::pending(),
                ));
                panic!("dns server stopped: {r:?}");
            })
            .expect("server thread");
        ready_rx.recv().expect("server ready");
        let client = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        client.set_nonblocking(true).expect("non-blocking");
        upstream.set_nonblocking(true).expect("non-blocking");
        Mutex::new(Harness {
            server,
            client,
            upstream,
            next_id: 1,
        })
    })
}

/// The next datagram waiting on `sock` (non-blocking), if any.
fn try_recv(sock: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 65535];
    let (n, from) = sock.recv_from(&mut buf).ok()?;
    buf.truncate(n);
    Some((buf, from))
}

/// Waits until one of `socks` is readable or `timeout` passes; which ones are.
fn wait_readable<const N: usize>(socks: [&UdpSocket; N], timeout: Duration) -> [bool; N] {
    use std::os::fd::AsRawFd;
    let mut fds = socks.map(|s| libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    });
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `fds` is a valid array of N pollfd for the duration of the call.
    let _ = unsafe { libc::poll(fds.as_mut_ptr(), N as libc::nfds_t, ms) };
    fds.map(|f| f.revents & libc::POLLIN != 0)
}

/// A query for `name` (dotted, no trailing dot), with an OPT record of `edns` bytes if given.
fn build_query(id: u16, name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, edns.is_some() as u8]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    if let Some(size) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    q
}

impl Harness {
    fn id(&mut self) -> u16 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// Answers whatever the relay asked meanwhile (NXDOMAIN, echoing the question), so no
    /// query of an earlier input waits into this one.
    fn answer_pending(&self) {
        while let Some((mut q, from)) = try_recv(&self.upstream) {
            if q.len() >= 12 {
                q[2] |= 0x80;
                q[3] = (q[3] & 0xf0) | 3;
                let _ = self.upstream.send_to(&q, from);
            }
        }
    }

    /// Sends a local-zone query with a fresh ID and reads until its answer, checking every
    /// other datagram that arrives meanwhile (answers to the fuzzed query) with `check`.
    fn sync(&mut self, avoid_id: Option<&[u8]>, mut check: impl FnMut(&[u8])) {
        let mut id = self.id();
        if avoid_id == Some(&id.to_be_bytes()[..]) {
            id = self.id();
        }
        let q = build_query(id, "vm1.lab", 1, None);
        self.client.send_to(&q, self.server).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.answer_pending();
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the server stopped answering");
            wait_readable([&self.client, &self.upstream], left);
            let Some((r, _)) = try_recv(&self.client) else {
                continue;
            };
            // Its ID and its question: a late answer to an earlier fuzzed query may carry
            // the same ID (IDs wrap), and is checked like any other answer instead.
            if r.len() >= q.len() && r[..2] == id.to_be_bytes() && r[12..q.len()] == q[12..] {
                let m = Message::from_vec(&r).expect("the sync answer decodes");
                assert_eq!(m.answers.len(), 1, "vm1.lab lost: {m:?}");
                return;
            }
            check(&r);
        }
    }
}

/// Every datagram the server sends is a response (QR set) of at least a header.
fn check_response(r: &[u8]) {
    assert!(r.len() >= 12, "a {}-byte answer", r.len());
    assert!(r[2] & 0x80 != 0, "an answer without QR: {r:02x?}");
}

/// A client's datagram, as it comes; also the hosts file text dhcpd writes from client-given
/// names.
pub fn query(data: &[u8]) {
    let (entries, _) = dns::hosts::parse(&String::from_utf8_lossy(data), "lab");
    for e in entries {
        assert!(!e.name.is_empty());
    }
    let mut h = harness().lock().unwrap_or_else(|e| e.into_inner());
    if data.len() >= 2 {
        h.client.send_to(data, h.server).unwrap();
    }
    h.sync(data.get(..2), check_response);
}

/// Names the upstream target asks for (forwarded: not under `lab.` or the reverse zone).
const NAMES: &[&str] = &[
    "example.org",
    "a.example.net",
    "x.y.z.test",
    "big.example.com",
];

/// The upstream's answer to a forwarded query. Input: byte 0 picks the name and whether the
/// answer is raw; byte 1 the query type; byte 2 EDNS (none, 512, 1232, 4096); the rest is the
/// answer — raw (only the ID made the relay's), or header flags and counts (4 + 6 bytes)
/// then the relay's own question, then the rest.
pub fn upstream(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let (sel, qtype, edns_sel, body) = (data[0], data[1], data[2], &data[3..]);
    let name = NAMES[(sel & 3) as usize];
    let raw = sel & 0x80 != 0;
    let qtype = [1u16, 28, 16, 15, 6, 12, 33, 255][(qtype & 7) as usize];
    let edns = [None, Some(512), Some(1232), Some(4096)][(edns_sel & 3) as usize];
    let limit = edns.unwrap_or(512) as usize;

    let mut h = harness().lock().unwrap_or_else(|e| e.into_inner());
    h.answer_pending();
    let id = h.id();
    let q = build_query(id, name, qtype, edns);
    h.client.send_to(&q, h.server).unwrap();
    // The relay's query (none when the cache answers).
    let [_, asked] = wait_readable([&h.client, &h.upstream], Duration::from_millis(500));
    if let Some((rq, from)) = asked.then(|| try_recv(&h.upstream)).flatten() {
        let mut a = Vec::with_capacity(rq.len() + body.len());
        a.extend_from_slice(&rq[..2.min(rq.len())]);
        if raw {
            a.extend_from_slice(body.get(2..).unwrap_or(&[]));
        } else {
            let qend = question_end(&rq).unwrap_or(rq.len());
            let fixed = body.get(..10).unwrap_or(body);
            a.extend_from_slice(fixed);
            a.resize(12, 0);
            a[2] |= 0x80;
            a[4..6].copy_from_slice(&[0, 1]);
            a.extend_from_slice(&rq[12.min(qend)..qend]);
            a.extend_from_slice(body.get(10..).unwrap_or(&[]));
        }
        let _ = h.upstream.send_to(&a, from);
    }
    // The client's answer: a response to its question, within its limit.
    let deadline = Instant::now() + RELAY_TIMEOUT + Duration::from_secs(2);
    let answer = loop {
        h.answer_pending();
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no answer to the client's query");
        wait_readable([&h.client, &h.upstream], left);
        let Some((r, _)) = try_recv(&h.client) else {
            continue;
        };
        if r.len() >= 2 && r[..2] == id.to_be_bytes() {
            break r;
        }
    };
    check_response(&answer);
    assert!(
        answer.len() <= limit,
        "a {}-byte answer to a client whose limit is {limit}",
        answer.len()
    );
    let m = Message::from_vec(&answer).unwrap_or_else(|e| {
        panic!("the client got an answer that does not decode ({e}): {answer:02x?}")
    });
    assert_eq!(m.queries.len(), 1, "{m:?}");
    assert!(
        m.queries[0]
            .name()
            .to_ascii()
            .eq_ignore_ascii_case(&format!("{name}.")),
        "answer for another question: {m:?}"
    );
}

/// End of the single question of a query we built.
fn question_end(q: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = *q.get(i)? as usize;
        if len == 0 {
            break;
        }
        i += 1 + len;
    }
    Some(i + 5).filter(|&e| e <= q.len())
}
