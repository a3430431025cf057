//! Forwarding: the client's query goes to an upstream as it came (only the ID is replaced),
//! the upstream's answer comes back with its records, flags and TTLs, like dnsmasq does it.
//!
//! Why not hickory's `ForwardZoneHandler`: it resolves every name again through
//! hickory-resolver (a fresh socket per query, its own lookup logic, answers only), which
//! measured at half of dnsmasq's rate on the bench (`bench/RESULTS.md`). This relay keeps a
//! few long-lived upstream sockets, matches answers by ID, and caches whole answers.
//!
//! - conditional forwarding: a name under a forwarded zone (a peer lab's, see [`crate::forward`])
//!   goes to that zone's servers instead, with everything below applying the same; those
//!   queries leave from the lab's own address (the bridge's), the one address a peer's
//!   WireGuard accepts from this lab (its AllowedIPs are the lab subnet) and its firewall
//!   lets in like any lab client; a server of a forwarded zone that stops answering is logged
//!   once when it goes silent and once when it answers again, never per query;
//! - failover: upstreams are tried in turn (the last one that answered first), each try gets
//!   its share of the deadline; SERVFAIL/REFUSED from one upstream means "ask the next";
//! - deadline: `timeout` bounds the whole query; past it the client gets SERVFAIL;
//! - at most [`MAX_IN_FLIGHT`] queries wait on upstreams, the rest get SERVFAIL at once;
//! - cache: keyed by (name, type, class); positive answers live for their smallest TTL,
//!   negative ones for the SOA's negative TTL; TTLs count down in served answers; TTL 0 and
//!   truncated answers are not cached; `cache_size` 0 = no cache;
//! - only a well-formed answer (it decodes whole) to the question asked is used: one with
//!   the right ID but another question is dropped and the query keeps waiting; a malformed
//!   one counts as no answer (SERVFAIL unless another upstream answers);
//! - a UDP client never gets more than its limit (EDNS size, else 512): a bigger upstream
//!   answer is re-encoded, cut to fit, with TC set.
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Edns, Message, Metadata, ResponseCode};
use hickory_server::proto::rr::{DNSClass, LowerName, RData, Record, RecordType};
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{oneshot, Semaphore};

use crate::forward::Forward;
use crate::udp::UdpReply;
use crate::Error;

/// Most queries waiting on upstreams at once; beyond that new ones get SERVFAIL at once.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Upstream UDP sockets (each on its own random port).
const SOCKETS: usize = 4;
/// Cached answers never live longer than this, whatever the upstream says.
const MAX_CACHE_TTL: u32 = 86400;
/// Each try at one upstream gets at least this long (unless the deadline is nearer).
const MIN_TRY: Duration = Duration::from_millis(250);

type Key = (LowerName, RecordType, DNSClass);
type Waiters = Mutex<HashMap<u16, Waiter>>;

/// A query waiting on one upstream's answer.
struct Waiter {
    upstream: SocketAddr,
    /// The query as sent: an answer must repeat its question to be handed over.
    query: Vec<u8>,
    key: Key,
    tx: oneshot::Sender<Vec<u8>>,
}

/// Where one kind of forwarded name goes: the default upstreams, or one forwarded zone's
/// servers; each remembers which server answered last (and which went silent).
pub struct Target {
    servers: Vec<SocketAddr>,
    preferred: AtomicUsize,
    /// The forwarded zone and whom it is for; None for the default upstreams.
    forward: Option<(String, String)>,
    /// Per server: it gave no usable answer to the last query sent to it (logged on change).
    silent: Vec<AtomicBool>,
}

impl Target {
    /// The target of forward `f` (its servers; its zone and peer for the logs).
    pub fn of(f: &Forward) -> Arc<Target> {
        Arc::new(Target::new(
            f.servers.clone(),
            Some((f.zone.to_string(), f.via.clone())),
        ))
    }

    fn new(servers: Vec<SocketAddr>, forward: Option<(String, String)>) -> Target {
        Target {
            silent: servers.iter().map(|_| AtomicBool::new(false)).collect(),
            servers,
            preferred: AtomicUsize::new(0),
            forward,
        }
    }

    /// Logs a forwarded zone's server going silent or answering again (only the change).
    fn answered(&self, idx: usize, ok: bool) {
        let Some((zone, via)) = &self.forward else {
            return;
        };
        // Read first: the usual case (no change) writes nothing shared.
        let silent = &self.silent[idx];
        if silent.load(Ordering::Relaxed) != ok || silent.swap(!ok, Ordering::Relaxed) != ok {
            return;
        }
        let server = self.servers[idx];
        if ok {
            tracing::warn!("forward {zone} ({via}): {server} answers again");
        } else {
            tracing::warn!("forward {zone} ({via}): {server} gave no usable answer in time; queries for {zone} get SERVFAIL until it answers");
        }
    }
}

/// What the relays of all serving threads share: the upstreams, the address queries to
/// forwarded zones leave from, the answer cache, and the bound on queries in flight. (The
/// forwarded zones' targets come with each query: the server swaps them on reload.)
struct Shared {
    upstreams: Target,
    /// The address queries to forwarded zones leave from (None: the kernel picks).
    source: Option<IpAddr>,
    /// The family of the forward sockets (the listen address's).
    forward_v6: bool,
    timeout: Duration,
    cache: Option<Mutex<Cache>>,
    slots: Semaphore,
}

/// One serving thread's relay: its own upstream sockets and waiters, so an upstream's answer
/// wakes the query on the thread that asked (no cross-thread wakeup on the hot path).
pub struct Relay {
    shared: Arc<Shared>,
    /// Sockets to the default upstreams, by family (0: IPv4, 1: IPv6).
    socks: [Vec<Arc<UdpSocket>>; 2],
    /// Sockets to forwarded zones' servers (bound to `source` where the family matches).
    forward_socks: [Vec<Arc<UdpSocket>>; 2],
    waiting: Arc<Waiters>,
    next_sock: AtomicUsize,
    ids: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl Relay {
    /// Opens the upstream sockets (needs a tokio runtime) and starts their receive tasks:
    /// for the `upstreams` (maybe none) and, in `listen`'s family, for forwarded zones
    /// (bound to `listen` unless it is loopback or a wildcard, see the module doc).
    pub fn new(
        upstreams: &[SocketAddr],
        listen: IpAddr,
        timeout: Duration,
        cache_size: usize,
    ) -> Result<Arc<Self>, Error> {
        let source = (!listen.is_loopback() && !listen.is_unspecified()).then_some(listen);
        Self::with_shared(Arc::new(Shared {
            upstreams: Target::new(upstreams.to_vec(), None),
            source,
            forward_v6: listen.is_ipv6(),
            timeout,
            cache: (cache_size > 0).then(|| Mutex::new(Cache::new(cache_size))),
            slots: Semaphore::new(MAX_IN_FLIGHT),
        }))
    }

    /// Drops every cached answer (the forward table changed).
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.shared.cache {
            let mut c = locked(cache);
            c.map.clear();
            c.order.clear();
        }
    }

    /// A relay for another thread's runtime (call it there): its own upstream sockets, the
    /// same upstreams, cache and in-flight bound as `self`.
    pub fn sibling(&self) -> Result<Arc<Self>, Error> {
        Self::with_shared(self.shared.clone())
    }

    fn with_shared(shared: Arc<Shared>) -> Result<Arc<Self>, Error> {
        let waiting: Arc<Waiters> = Arc::default();
        // SOCKETS sockets per address family in use, for the upstreams and (apart, bound to
        // the source address) for the forwarded zones; one receive task each.
        let open = |families: [bool; 2],
                    source: Option<IpAddr>|
         -> Result<[Vec<Arc<UdpSocket>>; 2], Error> {
            let mut socks: [Vec<Arc<UdpSocket>>; 2] = Default::default();
            for v6 in [false, true] {
                if !families[v6 as usize] {
                    continue;
                }
                let ip = match source {
                    Some(ip) if ip.is_ipv6() == v6 => ip,
                    _ if v6 => IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
                    _ => IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED),
                };
                let bind = SocketAddr::new(ip, 0);
                for _ in 0..SOCKETS {
                    let s = std::net::UdpSocket::bind(bind)
                        .and_then(|s| s.set_nonblocking(true).map(|_| s))
                        .and_then(UdpSocket::from_std)
                        .map_err(|e| Error::Bind {
                            addr: format!("udp {bind} (upstream socket)"),
                            source: e,
                        })?;
                    let s = Arc::new(s);
                    tokio::spawn(receive(s.clone(), waiting.clone()));
                    socks[v6 as usize].push(s);
                }
            }
            Ok(socks)
        };
        let ups = &shared.upstreams.servers;
        let socks = open(
            [
                ups.iter().any(|u| u.is_ipv4()),
                ups.iter().any(|u| u.is_ipv6()),
            ],
            None,
        )?;
        let forward_socks = open([!shared.forward_v6, shared.forward_v6], shared.source)?;
        Ok(Arc::new(Relay {
            shared,
            socks,
            forward_socks,
            waiting,
            next_sock: AtomicUsize::new(0),
            ids: AtomicU64::new(0),
            hasher: Default::default(),
        }))
    }

    /// Answers `request` (exactly one query, not in a local zone) from the cache or upstream:
    /// `forward` None for the default upstreams, else that forwarded zone's servers.
    pub async fn handle<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut rh: R,
        forward: Option<Arc<Target>>,
    ) -> ResponseInfo {
        let q = &request.queries.queries()[0];
        let key: Key = (q.name().clone(), q.query_type(), q.query_class());
        let edns = response_edns(request);

        let udp = (&rh as &dyn std::any::Any)
            .downcast_ref::<UdpReply>()
            .cloned();
        if let Some(cache) = &self.shared.cache {
            let hit = locked(cache).get(&key);
            if let Some((msg, wire, age)) = hit {
                // The stored datagram, patched, when it fits this client as it is.
                let raw = match (&udp, &wire) {
                    (Some(u), Some(w)) => w.serve(request, age).map(|b| (u, b)),
                    _ => None,
                };
                if let Some((u, bytes)) = raw {
                    return u.send_raw(bytes).await.unwrap_or_else(|_| failed(request));
                }
                return respond(request, &msg, age, edns.as_ref(), &mut rh).await;
            }
        }
        let Ok(_slot) = self.shared.slots.try_acquire() else {
            return servfail(request, edns.as_ref(), &mut rh).await;
        };
        let tcp = request.protocol() == Protocol::Tcp;
        // Only a well-formed answer to this question comes back (anything else counts as no
        // answer: SERVFAIL once no upstream gives a usable one).
        let (target, forwarded) = match &forward {
            Some(t) => (&**t, true),
            None => (&self.shared.upstreams, false),
        };
        let Some((answer, msg)) = self
            .forward(request.as_slice(), &key, tcp, target, forwarded)
            .await
        else {
            return servfail(request, edns.as_ref(), &mut rh).await;
        };
        let msg = Arc::new(msg);
        if let Some(cache) = &self.shared.cache {
            if let Some(ttl) = cache_ttl(&msg) {
                let wire = Wire::parse(&answer).map(Arc::new);
                locked(cache).insert(key, msg.clone(), wire, ttl);
            }
        }
        // A UDP client gets the upstream's datagram as it came (its ID back, RA set, AA
        // cleared) when it fits the client's limit (its EDNS size, else 512 bytes): no
        // re-encode on the way. A bigger one (an upstream that ignored the limit) is
        // re-encoded, which cuts it to the limit and sets TC.
        match &udp {
            Some(u) if answer.len() <= udp_limit(request) => {
                let mut bytes = answer;
                as_forwarder_answer(&mut bytes, &request.as_slice()[..3]);
                u.send_raw(bytes).await.unwrap_or_else(|_| failed(request))
            }
            _ => respond(request, &msg, 0, edns.as_ref(), &mut rh).await,
        }
    }

    /// Tries the target's servers in turn until one gives a usable answer (well-formed, to
    /// this question) or the deadline passes; the answer as received (its ID is the one this
    /// relay sent) and decoded.
    async fn forward(
        &self,
        query: &[u8],
        key: &Key,
        tcp: bool,
        t: &Target,
        forwarded: bool,
    ) -> Option<(Vec<u8>, Message)> {
        let sh = &*self.shared;
        let deadline = Instant::now() + sh.timeout;
        let n = t.servers.len();
        if n == 0 {
            return None;
        }
        let first = t.preferred.load(Ordering::Relaxed) % n;
        let share = (sh.timeout / n as u32).max(MIN_TRY);
        let mut last = None;
        for i in 0..n {
            let idx = (first + i) % n;
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let budget = share.min(deadline - now);
            let upstream = t.servers[idx];
            let source = if forwarded { sh.source } else { None };
            let got = if tcp {
                tokio::time::timeout(budget, ask_tcp(upstream, query, source))
                    .await
                    .ok()
                    .flatten()
            } else {
                self.ask_udp(upstream, query, key, budget, forwarded).await
            };
            // A malformed answer (it must decode whole) is no answer: never relayed.
            let usable = got.and_then(|b| {
                answers(&b, query, key)?;
                let m = Message::from_vec(&b).ok()?;
                Some((b, m))
            });
            t.answered(idx, usable.is_some());
            let Some((answer, msg)) = usable else {
                // No (usable) answer: prefer the next upstream from now on.
                let _ = t.preferred.compare_exchange(
                    idx,
                    (idx + 1) % n,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                continue;
            };
            if matches!(
                msg.metadata.response_code,
                ResponseCode::ServFail | ResponseCode::Refused
            ) {
                last = Some((answer, msg));
                continue;
            }
            t.preferred.store(idx, Ordering::Relaxed);
            return Some((answer, msg));
        }
        last
    }

    async fn ask_udp(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        key: &Key,
        budget: Duration,
        forwarded: bool,
    ) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        // A random ID that no other waiting query has.
        let (id, out) = {
            let mut w = locked(&self.waiting);
            let mut id;
            loop {
                id = self
                    .hasher
                    .hash_one(self.ids.fetch_add(1, Ordering::Relaxed)) as u16;
                if !w.contains_key(&id) {
                    break;
                }
            }
            let mut out = query.to_vec();
            out[..2].copy_from_slice(&id.to_be_bytes());
            w.insert(
                id,
                Waiter {
                    upstream,
                    query: out.clone(),
                    key: key.clone(),
                    tx,
                },
            );
            (id, out)
        };
        let socks = if forwarded {
            &self.forward_socks
        } else {
            &self.socks
        };
        let socks = &socks[upstream.is_ipv6() as usize];
        if socks.is_empty() {
            // A forwarded server of the other family than the listen address: no socket.
            locked(&self.waiting).remove(&id);
            return None;
        }
        let sock = &socks[self.next_sock.fetch_add(1, Ordering::Relaxed) % socks.len()];
        let answer = match sock.send_to(&out, upstream).await {
            Ok(_) => tokio::time::timeout(budget, rx)
                .await
                .ok()
                .and_then(|r| r.ok()),
            Err(_) => None,
        };
        if answer.is_none() {
            locked(&self.waiting).remove(&id);
        }
        answer
    }
}

/// Hands upstream answers to the query waiting for their ID, only if they come from the
/// upstream that query was sent to and answer its question. Anything else (a spoof, a stray
/// answer to an earlier query that reused the ID) is dropped and the query keeps waiting.
async fn receive(sock: Arc<UdpSocket>, waiting: Arc<Waiters>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok((n, src)) = sock.recv_from(&mut buf).await else {
            // Nothing to hand over; the waiter times out and fails over. Do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if n < 12 {
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let mut w = locked(&waiting);
        let ours = w
            .get(&id)
            .is_some_and(|q| q.upstream == src && answers(&buf[..n], &q.query, &q.key).is_some());
        if ours {
            if let Some(q) = w.remove(&id) {
                drop(w);
                let _ = q.tx.send(buf[..n].to_vec());
            }
        }
    }
}

/// The relay's shared maps stay usable after a panic elsewhere: a query's state is a whole
/// insert or remove, never half-written, so a poisoned lock still holds consistent data.
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn ask_tcp(upstream: SocketAddr, query: &[u8], source: Option<IpAddr>) -> Option<Vec<u8>> {
    let mut s = match source {
        Some(ip) if ip.is_ipv6() == upstream.is_ipv6() && !ip.is_unspecified() => {
            let sock = if ip.is_ipv6() {
                tokio::net::TcpSocket::new_v6()
            } else {
                tokio::net::TcpSocket::new_v4()
            }
            .ok()?;
            sock.bind(SocketAddr::new(ip, 0)).ok()?;
            sock.connect(upstream).await.ok()?
        }
        _ => TcpStream::connect(upstream).await.ok()?,
    };
    let mut frame = Vec::with_capacity(query.len() + 2);
    frame.extend_from_slice(&(query.len() as u16).to_be_bytes());
    frame.extend_from_slice(query);
    s.write_all(&frame).await.ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.ok()?;
    // The ID was the client's; matching is by question (TCP to one upstream, one query).
    Some(buf)
}

/// The response code of `answer` if it is a response to `query`'s question; None for
/// anything else (garbage, a different question). The usual answer repeats the question bytes
/// as sent (compared without regard to case); anything else is decoded and compared.
fn answers(answer: &[u8], query: &[u8], key: &Key) -> Option<ResponseCode> {
    if answer.len() < 12 || answer[2] & 0x80 == 0 {
        return None;
    }
    if let Some(end) = question_end(query) {
        if answer[4..6] == [0, 1]
            && answer.len() >= end
            && answer[12..end].eq_ignore_ascii_case(&query[12..end])
        {
            return Some(ResponseCode::from(0, answer[3] & 0x0f));
        }
    }
    let m = Message::from_vec(answer).ok()?;
    same_question(&m, key).then_some(m.metadata.response_code)
}

/// End of the (single, uncompressed) question section of a query.
fn question_end(query: &[u8]) -> Option<usize> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    let mut i = 12;
    loop {
        let len = *query.get(i)? as usize;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // a compression pointer (or junk): let the decoder judge
        }
        i += 1 + len;
    }
    let end = i + 1 + 4;
    (end <= query.len()).then_some(end)
}

fn same_question(m: &Message, key: &Key) -> bool {
    m.metadata.message_type == hickory_server::proto::op::MessageType::Response
        && m.queries.len() == 1
        && LowerName::new(m.queries[0].name()) == key.0
        && m.queries[0].query_type() == key.1
        && m.queries[0].query_class() == key.2
}

/// How long an answer may be cached: None = not at all.
fn cache_ttl(m: &Message) -> Option<u32> {
    if m.metadata.truncation {
        return None;
    }
    let ttl = match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => m.answers.iter().map(|r| r.ttl).min()?,
        ResponseCode::NoError | ResponseCode::NXDomain => {
            m.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })?
        }
        _ => return None,
    };
    (ttl > 0).then_some(ttl.min(MAX_CACHE_TTL))
}

/// The largest UDP answer `request`'s client takes: its EDNS size, else 512 (RFC 1035 4.2.1).
fn udp_limit(request: &Request) -> usize {
    request
        .edns
        .as_ref()
        .map(|e| e.max_payload().max(512) as usize)
        .unwrap_or(512)
}

fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().max(512));
        e.set_version(0);
        e
    })
}

async fn respond<R: ResponseHandler>(
    request: &Request,
    msg: &Message,
    age: u32,
    edns: Option<&Edns>,
    rh: &mut R,
) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.recursion_available = true;
    meta.response_code = msg.metadata.response_code;
    meta.truncation = msg.metadata.truncation;
    let aged = |rs: &[Record]| -> Vec<Record> {
        rs.iter()
            .map(|r| {
                let mut r = r.clone();
                r.ttl = r.ttl.saturating_sub(age);
                r
            })
            .collect()
    };
    let (answers, authorities, additionals);
    let (a, n, d) = if age == 0 {
        (&msg.answers[..], &msg.authorities[..], &msg.additionals[..])
    } else {
        answers = aged(&msg.answers);
        authorities = aged(&msg.authorities);
        additionals = aged(&msg.additionals);
        (&answers[..], &authorities[..], &additionals[..])
    };
    let mut b = MessageResponseBuilder::new(&request.queries, None);
    if let Some(e) = edns {
        b.edns(e);
    }
    let resp = b.build(meta, a.iter(), n.iter(), std::iter::empty(), d.iter());
    match rh.send_response(resp).await {
        Ok(info) => info,
        Err(_) => failed(request),
    }
}

async fn servfail<R: ResponseHandler>(
    request: &Request,
    edns: Option<&Edns>,
    rh: &mut R,
) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.recursion_available = true;
    meta.response_code = ResponseCode::ServFail;
    let mut b = MessageResponseBuilder::new(&request.queries, None);
    if let Some(e) = edns {
        b.edns(e);
    }
    match rh.send_response(b.build_no_records(meta)).await {
        Ok(info) => info,
        Err(_) => failed(request),
    }
}

fn failed(request: &Request) -> ResponseInfo {
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.response_code = ResponseCode::ServFail;
    hickory_server::proto::op::Header {
        metadata: meta,
        counts: Default::default(),
    }
    .into()
}

/// A bounded answer cache; when full, the oldest entry goes first.
struct Cache {
    map: HashMap<Key, Entry>,
    order: VecDeque<Key>,
    cap: usize,
}

struct Entry {
    msg: Arc<Message>,
    wire: Option<Arc<Wire>>,
    stored: Instant,
    ttl: u32,
}

/// A cached answer as the upstream sent it, to serve UDP clients without re-encoding.
struct Wire {
    bytes: Vec<u8>,
    /// Where the TTL of each record (except OPT) is.
    ttls: Vec<usize>,
    has_opt: bool,
}

impl Wire {
    /// Indexes a well-formed, single-question answer; None for anything else (those are
    /// served re-encoded).
    fn parse(b: &[u8]) -> Option<Wire> {
        if b.len() < 12 {
            return None;
        }
        let count = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]) as usize;
        if count(4) != 1 {
            return None;
        }
        let records = count(6) + count(8) + count(10);
        let mut i = skip_name(b, 12)? + 4;
        let (mut ttls, mut has_opt) = (Vec::with_capacity(records), false);
        for _ in 0..records {
            i = skip_name(b, i)?;
            let fixed = b.get(i..i + 10)?;
            if u16::from_be_bytes([fixed[0], fixed[1]]) == u16::from(RecordType::OPT) {
                has_opt = true;
            } else {
                ttls.push(i + 4);
            }
            i += 10 + u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        }
        (i == b.len()).then(|| Wire {
            bytes: b.to_vec(),
            ttls,
            has_opt,
        })
    }

    /// This answer for `request` (its ID, question bytes and RD; RA set, AA cleared; TTLs
    /// less `age`), if it fits as it is: EDNS on both or neither, and within the client's
    /// size. None: serve it re-encoded (which truncates or drops the OPT as needed).
    fn serve(&self, request: &Request, age: u32) -> Option<Vec<u8>> {
        let limit = udp_limit(request);
        if request.edns.is_some() != self.has_opt || self.bytes.len() > limit {
            return None;
        }
        let query = request.as_slice();
        let end = question_end(query)?;
        if self.bytes.len() < end || !self.bytes[12..end].eq_ignore_ascii_case(&query[12..end]) {
            return None;
        }
        let mut b = self.bytes.clone();
        b[12..end].copy_from_slice(&query[12..end]);
        as_forwarder_answer(&mut b, query);
        for &o in &self.ttls {
            let ttl = u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
            b[o..o + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        Some(b)
    }
}

/// Makes an upstream's answer (header at least 12 bytes) ours for the client whose query
/// starts with `query`: its ID and RD, RA set (we recurse for it), AA cleared (we are not
/// the authority for it).
fn as_forwarder_answer(b: &mut [u8], query: &[u8]) {
    b[..2].copy_from_slice(&query[..2]);
    b[2] = (b[2] & !0x05) | (query[2] & 0x01);
    b[3] |= 0x80;
}

/// Offset just past the (possibly compressed) name at `i`.
fn skip_name(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let len = *b.get(i)?;
        match len & 0xc0 {
            0 if len == 0 => return Some(i + 1),
            0 => i += 1 + len as usize,
            0xc0 => return b.get(i + 1).map(|_| i + 2),
            _ => return None,
        }
    }
}

impl Cache {
    fn new(cap: usize) -> Self {
        Cache {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// The answer and its age in whole seconds, if still fresh.
    #[allow(clippy::type_complexity)]
    fn get(&mut self, key: &Key) -> Option<(Arc<Message>, Option<Arc<Wire>>, u32)> {
        let e = self.map.get(key)?;
        let age = e.stored.elapsed().as_secs();
        if age >= e.ttl as u64 {
            self.map.remove(key);
            return None;
        }
        Some((e.msg.clone(), e.wire.clone(), age as u32))
    }

    fn insert(&mut self, key: Key, msg: Arc<Message>, wire: Option<Arc<Wire>>, ttl: u32) {
        let entry = Entry {
            msg,
            wire,
            stored: Instant::now(),
            ttl,
        };
        if self.map.insert(key.clone(), entry).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.map.len() > self.cap {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
        // Keys of entries that expired and were removed by get() linger in `order`; trim.
        if self.order.len() > 2 * self.cap + 16 {
            let map = &self.map;
            self.order.retain(|k| map.contains_key(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query task that panicked while holding the waiters' lock does not take the relay
    /// down with it: the next query still gets the (consistent) table.
    #[test]
    fn a_poisoned_lock_is_still_used() {
        let m: Mutex<HashMap<u16, u32>> = Mutex::new(HashMap::from([(1, 10)]));
        let r = std::panic::catch_unwind(|| {
            let _held = m.lock().unwrap();
            panic!("a query task fails");
        });
        assert!(r.is_err() && m.is_poisoned());
        locked(&m).insert(2, 20);
        assert_eq!(locked(&m).get(&2), Some(&20));
        assert_eq!(locked(&m).len(), 2);
    }
    use hickory_server::proto::op::{MessageType, OpCode, Query};
    use hickory_server::proto::rr::rdata::{A, SOA};
    use hickory_server::proto::rr::Name;

    fn msg(rcode: ResponseCode, answers: Vec<Record>, authorities: Vec<Record>) -> Message {
        let mut m = Message::new(1, MessageType::Response, OpCode::Query);
        m.metadata.response_code = rcode;
        m.queries.push(Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        ));
        m.answers = answers;
        m.authorities = authorities;
        m
    }

    fn a(ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii("www.example.test.").unwrap(),
            ttl,
            RData::A(A::new(10, 9, 9, 9)),
        )
    }

    fn soa(ttl: u32, minimum: u32) -> Record {
        let n = Name::from_ascii("example.test.").unwrap();
        Record::from_rdata(
            n.clone(),
            ttl,
            RData::SOA(SOA::new(n.clone(), n, 1, 1, 1, 1, minimum)),
        )
    }

    #[test]
    fn cache_ttl_follows_the_answer() {
        assert_eq!(
            cache_ttl(&msg(ResponseCode::NoError, vec![a(300), a(60)], vec![])),
            Some(60)
        );
        assert_eq!(
            cache_ttl(&msg(ResponseCode::NoError, vec![a(0)], vec![])),
            None
        );
        assert_eq!(
            cache_ttl(&msg(ResponseCode::NoError, vec![a(999_999)], vec![])),
            Some(MAX_CACHE_TTL)
        );
        // negative: min(SOA TTL, SOA minimum); without SOA not cached
        assert_eq!(
            cache_ttl(&msg(ResponseCode::NXDomain, vec![], vec![soa(300, 30)])),
            Some(30)
        );
        assert_eq!(
            cache_ttl(&msg(ResponseCode::NoError, vec![], vec![soa(20, 30)])),
            Some(20)
        );
        assert_eq!(
            cache_ttl(&msg(ResponseCode::NXDomain, vec![], vec![])),
            None
        );
        assert_eq!(
            cache_ttl(&msg(ResponseCode::ServFail, vec![], vec![])),
            None
        );
        let mut tc = msg(ResponseCode::NoError, vec![a(300)], vec![]);
        tc.metadata.truncation = true;
        assert_eq!(cache_ttl(&tc), None);
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let mut c = Cache::new(2);
        let key = |n: &str| {
            (
                LowerName::from(Name::from_ascii(n).unwrap()),
                RecordType::A,
                DNSClass::IN,
            )
        };
        let m = Arc::new(msg(ResponseCode::NoError, vec![a(60)], vec![]));
        c.insert(key("a."), m.clone(), None, 60);
        c.insert(key("b."), m.clone(), None, 60);
        c.insert(key("c."), m.clone(), None, 60);
        assert!(c.get(&key("a.")).is_none(), "oldest entry evicted");
        assert!(c.get(&key("b.")).is_some() && c.get(&key("c.")).is_some());
        c.map.get_mut(&key("b.")).unwrap().stored -= Duration::from_secs(61);
        assert!(c.get(&key("b.")).is_none(), "expired entry served");
        let (_, _, age) = {
            c.map.get_mut(&key("c.")).unwrap().stored -= Duration::from_secs(5);
            c.get(&key("c.")).unwrap()
        };
        assert_eq!(age, 5);
    }

    /// A query for `name` A IN as a client sends it (ID 0x1234, RD).
    fn query_bytes(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.trim_end_matches('.').split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[test]
    fn upstream_answers_are_matched_to_the_question() {
        let key = (
            LowerName::from(Name::from_ascii("www.example.test.").unwrap()),
            RecordType::A,
            DNSClass::IN,
        );
        let q = query_bytes("www.example.test");
        assert_eq!(question_end(&q), Some(q.len()));
        // The upstream's answer to exactly this query (other case, as 0x20 does): its rcode.
        let mut m = msg(ResponseCode::NXDomain, vec![], vec![]);
        m.queries[0] = Query::query(
            Name::from_ascii("WWW.Example.test.").unwrap(),
            RecordType::A,
        );
        let a = m.to_vec().unwrap();
        assert_eq!(answers(&a, &q, &key), Some(ResponseCode::NXDomain));
        // Another question, a query (QR clear), garbage: not an answer.
        let other = msg(ResponseCode::NoError, vec![], vec![]).to_vec().unwrap();
        let q2 = query_bytes("mail.example.test");
        let key2 = (
            LowerName::from(Name::from_ascii("mail.example.test.").unwrap()),
            RecordType::A,
            DNSClass::IN,
        );
        assert_eq!(answers(&other, &q2, &key2), None);
        assert_eq!(answers(&q, &q, &key), None);
        assert_eq!(answers(&[0xff; 11], &q, &key), None);
        // A compressed or cut question in the query: decided by the full decoder.
        assert_eq!(question_end(&q[..q.len() - 2]), None);
        let mut ptr = q.clone();
        ptr[12] = 0xc0;
        assert_eq!(question_end(&ptr), None);
    }

    #[test]
    fn cached_datagram_is_patched_for_each_client() {
        // The upstream's answer: AA set, one A record (TTL 300), EDNS.
        let mut up = msg(ResponseCode::NoError, vec![a(300)], vec![]);
        up.metadata.authoritative = true;
        up.edns = Some(Edns::new());
        let wire = Wire::parse(&up.to_vec().unwrap()).unwrap();
        assert!(wire.has_opt);
        assert_eq!(wire.ttls.len(), 1, "the OPT's TTL field is not a TTL");

        // A later client: other ID, other case, RD clear, with EDNS.
        let mut q = Message::new(0x4242, MessageType::Query, OpCode::Query);
        q.queries.push(Query::query(
            Name::from_ascii("WwW.example.TEST.").unwrap(),
            RecordType::A,
        ));
        q.edns = Some(Edns::new());
        let req = Request::from_bytes(
            q.to_vec().unwrap(),
            "10.0.0.9:5353".parse().unwrap(),
            Protocol::Udp,
        )
        .unwrap();
        let out = Message::from_vec(&wire.serve(&req, 7).unwrap()).unwrap();
        assert_eq!(out.metadata.id, 0x4242);
        assert_eq!(out.queries[0].name().to_ascii(), "WwW.example.TEST.");
        assert!(out.metadata.recursion_available && !out.metadata.authoritative);
        assert!(!out.metadata.recursion_desired);
        assert_eq!(out.answers[0].ttl, 293, "aged by 7 s");
        assert!(out.edns.is_some());

        // Without EDNS the stored OPT must not go out: served re-encoded instead.
        q.edns = None;
        let req = Request::from_bytes(
            q.to_vec().unwrap(),
            "10.0.0.9:5353".parse().unwrap(),
            Protocol::Udp,
        )
        .unwrap();
        assert!(wire.serve(&req, 0).is_none());
        // Junk is not indexed.
        assert!(Wire::parse(&[0u8; 11]).is_none());
        let mut cut = up.to_vec().unwrap();
        cut.pop();
        assert!(Wire::parse(&cut).is_none());
    }

    #[test]
    fn question_must_match() {
        let m = msg(ResponseCode::NoError, vec![], vec![]);
        let k = |n: &str, t| {
            (
                LowerName::from(Name::from_ascii(n).unwrap()),
                t,
                DNSClass::IN,
            )
        };
        assert!(same_question(&m, &k("WWW.example.test.", RecordType::A)));
        assert!(!same_question(
            &m,
            &k("www.example.test.", RecordType::AAAA)
        ));
        assert!(!same_question(&m, &k("other.example.test.", RecordType::A)));
    }
}
