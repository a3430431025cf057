//! What the `labnet dns` tests share: the daemon (or dhcpd) started in its lab's namespace and
//! waited for (READY=1), `dig` from a namespace and what it said, a fake DNS server the test
//! controls, and the few DNS wire bytes the fake servers and raw-socket tests build.
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{labnet_bin, notify_socket, run, signal, wait_ready, Cleanup};

/// The lab's hosts file (what dhcpd writes, dns serves) under a test's [`crate::labnet_env`]
/// root, replaced atomically like dhcpd does it.
pub fn write_hosts(root: &Path, lab: &str, text: &str) {
    let p = hosts_file(root, lab);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
}

pub fn hosts_file(root: &Path, lab: &str) -> PathBuf {
    root.join("state").join(lab).join("hosts")
}

/// A `labnet WHAT LAB --enter-netns` (dns, dhcpd) of the test's, its output in `log`.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts it with `env` (notify socket and `WHAT-LAB.log` in `dir`) and waits for its
    /// READY=1; the Cleanup kills it.
    pub fn start(
        c: &mut Cleanup,
        dir: &Path,
        env: &[(String, String)],
        what: &str,
        lab: &str,
    ) -> Daemon {
        let sock_path = dir.join(format!("notify-{what}-{lab}.sock"));
        let sock = notify_socket(&sock_path);
        let log = dir.join(format!("{what}-{lab}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(labnet_bin())
            .args([what, lab, "--enter-netns"])
            .envs(env.iter().cloned())
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("labnet");
        c.pid(child.id());
        if let Err(st) = wait_ready(&mut child, &sock, Duration::from_secs(15), &log) {
            panic!(
                "labnet {what} {lab} exited ({st}) before READY=1:\n{}",
                read(&log)
            );
        }
        Daemon { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    pub fn assert_alive(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("labnet daemon died ({st}):\n{}", self.log_text());
        }
    }

    pub fn kill(&mut self) {
        signal(self.child.id() as i32, libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM must end it with status 0, promptly (3 s).
    pub fn terminate(self) {
        self.terminate_within(Duration::from_secs(3));
    }

    /// SIGTERM must end it with status 0 within `limit`.
    pub fn terminate_within(mut self, limit: Duration) {
        signal(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(
                    st.success(),
                    "exit after SIGTERM: {st}\n{}",
                    self.log_text()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still running {limit:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// What `dig` said: the status, the header flags, the answer and authority records as dig
/// prints them (with the TTL) and how long it took.
#[derive(Debug)]
pub struct Dig {
    pub status: String,
    pub flags: String,
    pub answer: Vec<String>,
    pub authority: Vec<String>,
    pub elapsed: Duration,
    pub raw: String,
}

impl Dig {
    /// Answer records as "NAME TYPE DATA" (TTL left out), for exact comparisons.
    pub fn answers(&self) -> Vec<String> {
        self.answer.iter().map(|l| strip_ttl(l)).collect()
    }

    /// Authority records as "NAME TYPE DATA".
    pub fn authorities(&self) -> Vec<String> {
        self.authority.iter().map(|l| strip_ttl(l)).collect()
    }

    /// The first answer's TTL.
    pub fn ttl(&self) -> u32 {
        self.answer[0]
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn strip_ttl(l: &str) -> String {
    let w: Vec<&str> = l.split_whitespace().collect();
    // NAME TTL CLASS TYPE DATA...
    format!("{} {} {}", w[0], w[3], w[4..].join(" "))
}

/// `dig @server ARGS` run inside netns `ns`: one try, at most `secs` (a hang shows as status
/// NO ANSWER).
pub fn dig_in(ns: &str, server: &str, secs: u32, args: &[&str]) -> Dig {
    let t = Instant::now();
    let out = run(Command::new("ip")
        .args(["netns", "exec", ns, "dig", &format!("@{server}")])
        .arg(format!("+time={secs}"))
        .args(["+tries=1", "+nocookie"])
        .args(args));
    let elapsed = t.elapsed();
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut d = Dig {
        status: "NO ANSWER".into(),
        flags: String::new(),
        answer: vec![],
        authority: vec![],
        elapsed,
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
        } else if line.starts_with(";;") || line.trim().is_empty() {
            section = "";
        } else if !line.starts_with(';') {
            match section {
                "answer" => d.answer.push(line.to_string()),
                "authority" => d.authority.push(line.to_string()),
                _ => {}
            }
        }
    }
    d
}

/// One datagram a [`FakeDns`] sends back to a query.
pub enum Reply {
    /// From the address that was asked.
    Real(Vec<u8>),
    /// From its spoofer address (not the server the relay asked).
    Spoof(Vec<u8>),
}

/// A fake DNS server in a test's namespace on ADDR:53, run on a thread until
/// [`FakeDns::stop`]: for each query, `reply(query)` gives the datagrams to send back, in
/// turn, 100 ms apart (a decoy first, then the real answer). It records where the queries
/// came from.
pub struct FakeDns {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    sources: Arc<Mutex<Vec<String>>>,
}

impl FakeDns {
    /// Serves on `addr`:53 in netns `ns` (and sends [`Reply::Spoof`] from `spoofer`:53, an
    /// address it has too); returns once both sockets are bound.
    pub fn start(
        ns: &str,
        addr: &str,
        spoofer: Option<&str>,
        reply: impl Fn(&[u8]) -> Vec<Reply> + Send + 'static,
    ) -> FakeDns {
        let stop = Arc::new(AtomicBool::new(false));
        let sources = Arc::new(Mutex::new(vec![]));
        let ns = ns.to_string();
        let (addr, spoofer) = (addr.to_string(), spoofer.map(str::to_string));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (flag, seen) = (stop.clone(), sources.clone());
        let thread = std::thread::spawn(move || {
            testkit::enter_netns(&ns);
            let real = UdpSocket::bind(format!("{addr}:53")).unwrap();
            let spoof = spoofer.map(|s| UdpSocket::bind(format!("{s}:53")).unwrap());
            real.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::SeqCst) {
                let Ok((n, from)) = real.recv_from(&mut buf) else {
                    continue;
                };
                seen.lock().unwrap().push(from.ip().to_string());
                for (i, r) in reply(&buf[..n]).into_iter().enumerate() {
                    if i > 0 {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    let (s, d) = match r {
                        Reply::Real(d) => (&real, d),
                        Reply::Spoof(d) => (spoof.as_ref().expect("a spoofer address"), d),
                    };
                    s.send_to(&d, from).unwrap();
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        FakeDns {
            stop,
            thread,
            sources,
        }
    }

    /// The source addresses of the queries it got so far.
    pub fn sources(&self) -> Vec<String> {
        self.sources.lock().unwrap().clone()
    }

    /// Stops the thread (a panic in it fails the test here).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
    }
}

/// A minimal A query for `name` with id `id` (RD set), for raw sockets and fake servers.
pub fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.trim_end_matches('.').split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The question section of a one-question query (bytes 12.. up to and with QTYPE/QCLASS).
pub fn question_of(q: &[u8]) -> &[u8] {
    let mut i = 12;
    while q[i] != 0 {
        i += 1 + q[i] as usize;
    }
    &q[12..i + 5]
}

/// The qname of a query, dotted, lower case.
pub fn qname_of(q: &[u8]) -> String {
    let (mut i, mut labels) = (12, vec![]);
    while q[i] != 0 {
        let l = q[i] as usize;
        labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + l]).to_lowercase());
        i += 1 + l;
    }
    labels.join(".")
}

/// An answer to `q` (its ID) for `question`, authoritative (AA) or a recursive server's
/// (RD RA), with `ancount` claimed and `records` appended.
pub fn answer_to(
    q: &[u8],
    question: &[u8],
    authoritative: bool,
    ancount: u16,
    records: &[u8],
) -> Vec<u8> {
    let mut a = q[..2].to_vec();
    a.extend_from_slice(if authoritative {
        &[0x85, 0x00]
    } else {
        &[0x81, 0x80]
    });
    a.extend_from_slice(&[0, 1]);
    a.extend_from_slice(&ancount.to_be_bytes());
    a.extend_from_slice(&[0, 0, 0, 0]);
    a.extend_from_slice(question);
    a.extend_from_slice(records);
    a
}

/// An A record for the question's name (compression pointer to offset 12), TTL 60.
pub fn a_record(ip: [u8; 4]) -> Vec<u8> {
    let mut r = vec![0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4];
    r.extend_from_slice(&ip);
    r
}
