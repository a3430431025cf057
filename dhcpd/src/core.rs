//! The protocol engine: one request in, at most one reply and the lease records to persist
//! out. No I/O and no clock of its own (the caller passes `now`), so it is deterministic for
//! golden tests and safe to fuzz.
//!
//! Clients are keyed by their client identifier (option 61) when they send one, else by
//! their hardware address. RFC 2131 client states are told apart as §4.3.2 says: a REQUEST
//! with a server identifier is SELECTING; without one, a zero ciaddr and a requested address
//! is INIT-REBOOT; otherwise (ciaddr set) RENEWING or REBINDING.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use crate::config::{Reservation, ServerConfig};
use model::lease::{hex_colon, Lease, LeaseState};

/// BOOTP minimum message size; some clients drop shorter replies.
pub const MIN_REPLY_LEN: usize = 300;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub dest: SocketAddrV4,
    /// What kind of message it is (for logs and tests).
    pub kind: MessageType,
}

/// What handling one request produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Lease records that must be durable before `reply` is sent.
    pub records: Vec<Lease>,
    pub reply: Option<Reply>,
    /// A line for the log, if this request is worth one.
    pub log: Option<String>,
}

/// Why a request was ignored (counted, logged at a limited rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    Short,
    NotRequest,
    NotEthernet,
    BadMagic,
    Undecodable,
    NoMessageType,
    RateLimited,
}

#[derive(Debug, Clone)]
struct Offer {
    key: String,
    expires: u64,
}

pub struct Core {
    cfg: ServerConfig,
    mtu: Option<u16>,
    /// The bindings held: active and declined leases, by address. Released and expired
    /// ones are forgotten (the lease log compacts them away likewise), so this never holds
    /// more than the pool and the reservations, however many clients come and go.
    leases: HashMap<Ipv4Addr, Lease>,
    /// Client key -> its address, for exactly the active leases in `leases`.
    by_key: HashMap<String, Ipv4Addr>,
    offers: HashMap<Ipv4Addr, Offer>,
    offer_by_key: HashMap<String, Ipv4Addr>,
    dynamic_res: Vec<Reservation>,
    res_by_mac: HashMap<[u8; 6], Reservation>,
    reserved_ips: HashMap<Ipv4Addr, [u8; 6]>,
    cursor: u32,
    rate: HashMap<[u8; 6], (u64, u32)>,
}

/// How many entries the engine's tables hold (see [`Core::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Active and declined leases.
    pub leases: usize,
    /// Client keys indexed to their address.
    pub keys: usize,
    /// Outstanding offers (by address and by client key).
    pub offers: usize,
    pub offer_keys: usize,
    /// Flood counters (one per hardware address seen in the last seconds).
    pub rate: usize,
}

/// Is `l` still a binding at `now` (an unexpired active or declined lease)?
pub fn is_held(l: &Lease, now: u64) -> bool {
    matches!(l.state, LeaseState::Active | LeaseState::Declined) && l.expires > now
}

/// The key a lease is filed under: `id:<client id>` or `hw:<mac>`.
pub fn lease_key(l: &Lease) -> String {
    match &l.client_id {
        Some(c) => format!("id:{c}"),
        None => format!("hw:{}", l.mac),
    }
}

/// The DNS label for a client's host name (see [`crate::names::label`]).
pub fn sanitize_hostname(s: &str) -> Option<String> {
    crate::names::label(s)
}

struct Req {
    msg: Message,
    mac: [u8; 6],
    key: String,
    client_id: Option<String>,
    typ: MessageType,
}

impl Core {
    pub fn new(cfg: ServerConfig, initial: impl IntoIterator<Item = Lease>) -> Core {
        let mut c = Core {
            mtu: cfg.mtu,
            cursor: u32::from(cfg.range_start),
            cfg,
            leases: HashMap::new(),
            by_key: HashMap::new(),
            offers: HashMap::new(),
            offer_by_key: HashMap::new(),
            dynamic_res: vec![],
            res_by_mac: HashMap::new(),
            reserved_ips: HashMap::new(),
            rate: HashMap::new(),
        };
        // Released (and expired, at the first tick) leases are not bindings any more.
        for l in initial {
            if matches!(l.state, LeaseState::Active | LeaseState::Declined) {
                c.file(l);
            }
        }
        c.rebuild_reservations();
        c
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    pub fn set_mtu(&mut self, mtu: Option<u16>) {
        self.mtu = mtu;
    }

    /// Replaces the run-time reservations (from the reservations dir).
    pub fn set_dynamic_reservations(&mut self, r: Vec<Reservation>) {
        self.dynamic_res = r;
        self.rebuild_reservations();
    }

    /// Replaces the run-time reservations like [`Core::set_dynamic_reservations`]; a VM
    /// whose reservation went away (`labnet vm rm`, the end of a throwaway `vm run`,
    /// `labnet leases --prune`) is gone, so its active leases are released: returned as the
    /// records to commit, and forgotten (the address is free, its name leaves the hosts file).
    pub fn replace_dynamic_reservations(&mut self, r: Vec<Reservation>, now: u64) -> Vec<Lease> {
        let kept: std::collections::HashSet<[u8; 6]> = r
            .iter()
            .chain(self.cfg.reservations.iter())
            .map(|x| x.mac)
            .collect();
        let gone: Vec<String> = self
            .dynamic_res
            .iter()
            .filter(|x| x.vm.is_some() && !kept.contains(&x.mac))
            .map(|x| hex_colon(&x.mac))
            .collect();
        self.set_dynamic_reservations(r);
        let released: Vec<Lease> = self
            .leases
            .values()
            .filter(|l| l.state == LeaseState::Active && gone.contains(&l.mac))
            .map(|l| Lease {
                state: LeaseState::Released,
                expires: now,
                ..l.clone()
            })
            .collect();
        for l in &released {
            self.forget(l.ip);
        }
        released
    }

    fn rebuild_reservations(&mut self) {
        self.res_by_mac.clear();
        self.reserved_ips.clear();
        // Config reservations win over run-time ones for the same MAC or address.
        for r in self.cfg.reservations.iter().chain(self.dynamic_res.iter()) {
            if self.res_by_mac.contains_key(&r.mac) {
                continue;
            }
            if let Some(ip) = r.ip {
                if self.reserved_ips.contains_key(&ip) || !self.cfg.is_host(ip) {
                    continue;
                }
                self.reserved_ips.insert(ip, r.mac);
            }
            self.res_by_mac.insert(r.mac, r.clone());
        }
    }

    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// `IP NAME` lines, sorted by address: one address per name, a reserved name only for
    /// its reservation's MAC, else the newest active lease that claims it
    /// ([`crate::names::hosts`]).
    pub fn hosts_text(&self, now: u64) -> String {
        let reserved: HashMap<String, String> = self
            .res_by_mac
            .values()
            .filter_map(|r| {
                Some((
                    sanitize_hostname(r.hostname.as_deref()?)?,
                    hex_colon(&r.mac),
                ))
            })
            .collect();
        let claims = self
            .leases
            .values()
            .filter(|l| l.state_at(now) == LeaseState::Active)
            .filter_map(|l| {
                Some(crate::names::Claim {
                    ip: l.ip,
                    mac: &l.mac,
                    name: l.hostname.as_deref()?,
                    start: l.start,
                })
            });
        model::hosts::format(crate::names::hosts(claims, &reserved))
    }

    /// What the engine holds; bounded by the pool and the reservations after a [`Core::tick`].
    pub fn held(&self) -> Held {
        Held {
            leases: self.leases.len(),
            keys: self.by_key.len(),
            offers: self.offers.len(),
            offer_keys: self.offer_by_key.len(),
            rate: self.rate.len(),
        }
    }

    /// Forgets expired leases, offers and flood counters.
    pub fn tick(&mut self, now: u64) {
        let gone: Vec<Ipv4Addr> = self
            .leases
            .values()
            .filter(|l| !is_held(l, now))
            .map(|l| l.ip)
            .collect();
        for ip in gone {
            self.forget(ip);
        }
        self.offers.retain(|_, o| o.expires > now);
        let offers = &self.offers;
        self.offer_by_key
            .retain(|k, ip| offers.get(ip).is_some_and(|o| o.key == *k));
        self.rate.retain(|_, (sec, _)| *sec + 2 > now);
    }

    /// Files `l` as the binding of its address; the address's previous holder, if another
    /// client, loses its index entry. Only an active lease is indexed by its key.
    fn file(&mut self, l: Lease) {
        let (ip, key, active) = (l.ip, lease_key(&l), l.state == LeaseState::Active);
        if let Some(prev) = self.leases.insert(ip, l) {
            let pk = lease_key(&prev);
            if pk != key && self.by_key.get(&pk) == Some(&ip) {
                self.by_key.remove(&pk);
            }
        }
        if active {
            self.by_key.insert(key, ip);
        }
    }

    /// Forgets the binding of `ip` (released or expired) and its key's index entry.
    fn forget(&mut self, ip: Ipv4Addr) {
        if let Some(l) = self.leases.remove(&ip) {
            let k = lease_key(&l);
            if self.by_key.get(&k) == Some(&ip) {
                self.by_key.remove(&k);
            }
        }
    }

    fn parse(&mut self, buf: &[u8], now: u64) -> Result<Req, Drop> {
        // Fixed BOOTP header (236) + magic cookie; checked by hand so a bad hlen or op never
        // reaches the decoder's assumptions.
        if buf.len() < 240 {
            return Err(Drop::Short);
        }
        if buf[0] != 1 {
            return Err(Drop::NotRequest);
        }
        if buf[1] != 1 || buf[2] != 6 {
            return Err(Drop::NotEthernet);
        }
        if buf[236..240] != MAGIC {
            return Err(Drop::BadMagic);
        }
        // Flood guard per hardware address (whatever client ids it cycles through), checked
        // before the decoding work.
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&buf[28..34]);
        let e = self.rate.entry(mac).or_insert((now, 0));
        if e.0 != now {
            *e = (now, 0);
        }
        e.1 += 1;
        if e.1 > self.cfg.per_client_pps {
            return Err(Drop::RateLimited);
        }
        let clean = sanitize(buf);
        let msg = Message::decode(&mut Decoder::new(&clean)).map_err(|_| Drop::Undecodable)?;
        let typ = msg.opts().msg_type().ok_or(Drop::NoMessageType)?;
        let client_id = match msg.opts().get(OptionCode::ClientIdentifier) {
            Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => Some(hex_colon(id)),
            _ => None,
        };
        let key = match &client_id {
            Some(c) => format!("id:{c}"),
            None => format!("hw:{}", hex_colon(&mac)),
        };
        Ok(Req {
            msg,
            mac,
            key,
            client_id,
            typ,
        })
    }

    /// Handles one datagram. Never panics on any input.
    pub fn handle(&mut self, buf: &[u8], now: u64) -> Result<Outcome, Drop> {
        let req = self.parse(buf, now)?;
        Ok(match req.typ {
            MessageType::Discover => self.on_discover(&req, now),
            MessageType::Request => self.on_request(&req, now),
            MessageType::Release => self.on_release(&req, now),
            MessageType::Decline => self.on_decline(&req, now),
            MessageType::Inform => self.on_inform(&req),
            _ => Outcome::default(),
        })
    }

    // ---------- address selection ----------

    fn pool_size(&self) -> u32 {
        u32::from(self.cfg.range_end)
            .saturating_sub(u32::from(self.cfg.range_start))
            .saturating_add(1)
    }

    /// Can `ip` go to the client `key`/`mac` now? Err says why not (NAK text).
    fn check(&self, ip: Ipv4Addr, key: &str, mac: &[u8; 6], now: u64) -> Result<(), &'static str> {
        if !self.cfg.in_subnet(ip) {
            return Err("address not on this network");
        }
        if !self.cfg.is_host(ip) {
            return Err("not a host address");
        }
        if let Some(r) = self.res_by_mac.get(mac) {
            if let Some(rip) = r.ip {
                if rip != ip {
                    return Err("this host has another reserved address");
                }
            }
        }
        match self.reserved_ips.get(&ip) {
            Some(m) if m != mac => return Err("address reserved for another host"),
            Some(_) => {}
            None if !self.cfg.in_pool(ip) => return Err("address outside the pool"),
            None => {}
        }
        if let Some(l) = self.leases.get(&ip) {
            let busy =
                matches!(l.state, LeaseState::Active | LeaseState::Declined) && l.expires > now;
            if busy && (l.state == LeaseState::Declined || lease_key(l) != key) {
                return Err("address in use");
            }
        }
        if let Some(o) = self.offers.get(&ip) {
            if o.expires > now && o.key != key {
                return Err("address offered to another client");
            }
        }
        Ok(())
    }

    /// Picks an address for a DISCOVER, in order of preference.
    fn choose(&mut self, req: &Req, now: u64) -> Option<Ipv4Addr> {
        let key = req.key.as_str();
        let ok = |s: &Self, ip: Ipv4Addr| s.check(ip, key, &req.mac, now).is_ok();
        // 1. A reserved address.
        if let Some(ip) = self.res_by_mac.get(&req.mac).and_then(|r| r.ip) {
            return ok(self, ip).then_some(ip);
        }
        // 2. What we just offered it, 3. what it had before.
        for ip in [self.offer_by_key.get(key), self.by_key.get(key)]
            .into_iter()
            .flatten()
        {
            let ip = *ip;
            let mine = self.leases.get(&ip).is_none_or(|l| lease_key(l) == key);
            if mine && ok(self, ip) {
                return Some(ip);
            }
        }
        // 4. What it asks for, if nobody else ever had it.
        if let Some(DhcpOption::RequestedIpAddress(ip)) =
            req.msg.opts().get(OptionCode::RequestedIpAddress)
        {
            let ip = *ip;
            let mine = self.leases.get(&ip).is_none_or(|l| lease_key(l) == key);
            if mine && self.cfg.in_pool(ip) && ok(self, ip) {
                return Some(ip);
            }
        }
        let size = self.pool_size();
        if size == 0 {
            return None;
        }
        let start = u32::from(self.cfg.range_start);
        // 5. A registered VM without a fixed address: a stable spot derived from its MAC, so
        //    it lands on the same address even with the lease log gone.
        if self.res_by_mac.contains_key(&req.mac) {
            let h = req.mac.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
            });
            let ip = Ipv4Addr::from(start + (h % size as u64) as u32);
            if !self.leases.contains_key(&ip) && ok(self, ip) {
                return Some(ip);
            }
        }
        // 6. An address nobody holds, scanning on from where the last scan stopped (so freed
        //    addresses are reused round-robin, the longest-free first).
        for _ in 0..size {
            let ip = Ipv4Addr::from(self.cursor);
            self.cursor = if self.cursor >= u32::from(self.cfg.range_end) {
                start
            } else {
                self.cursor + 1
            };
            if !self.leases.contains_key(&ip) && ok(self, ip) {
                return Some(ip);
            }
        }
        // 7. A lease that ran out since the last tick, the longest-expired first.
        let mut best: Option<(u64, Ipv4Addr)> = None;
        for (ip, l) in &self.leases {
            if l.state_at(now) == LeaseState::Active || !ok(self, *ip) {
                continue;
            }
            if best.is_none_or(|(e, _)| l.expires < e) {
                best = Some((l.expires, *ip));
            }
        }
        best.map(|(_, ip)| ip)
    }

    // ---------- message handlers ----------

    fn on_discover(&mut self, req: &Req, now: u64) -> Outcome {
        let Some(ip) = self.choose(req, now) else {
            return Outcome {
                log: Some(format!(
                    "DISCOVER from {}: no free address in the pool",
                    hex_colon(&req.mac)
                )),
                ..Default::default()
            };
        };
        if let Some(old) = self.offer_by_key.insert(req.key.clone(), ip) {
            if old != ip {
                self.offers.remove(&old);
            }
        }
        let offer = Offer {
            key: req.key.clone(),
            expires: now + self.cfg.offer_secs,
        };
        // An expired offer of this address to another client goes with its index entry.
        if let Some(prev) = self.offers.insert(ip, offer) {
            if prev.key != req.key && self.offer_by_key.get(&prev.key) == Some(&ip) {
                self.offer_by_key.remove(&prev.key);
            }
        }
        let hostname = self.hostname_for(req);
        let reply = self.reply(req, MessageType::Offer, ip, hostname.as_deref(), true);
        Outcome {
            reply: Some(reply),
            ..Default::default()
        }
    }

    fn on_request(&mut self, req: &Req, now: u64) -> Outcome {
        let opts = req.msg.opts();
        let requested = match opts.get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        let ciaddr = req.msg.ciaddr();
        let (ip, state) = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(sid)) if *sid != self.cfg.server_ip => {
                // SELECTING, but another server was chosen: our offer is void.
                if let Some(ip) = self.offer_by_key.remove(&req.key) {
                    self.offers.remove(&ip);
                }
                return Outcome::default();
            }
            Some(_) => match requested.or((!ciaddr.is_unspecified()).then_some(ciaddr)) {
                Some(ip) => (ip, "SELECTING"),
                None => return self.nak(req, "no requested address"),
            },
            None if !ciaddr.is_unspecified() => (ciaddr, "RENEWING"),
            None => match requested {
                Some(ip) => (ip, "INIT-REBOOT"),
                None => return Outcome::default(),
            },
        };
        if let Err(why) = self.check(ip, &req.key, &req.mac, now) {
            let mut o = self.nak(req, why);
            o.log = Some(format!(
                "NAK {ip} to {} ({state}): {why}",
                hex_colon(&req.mac)
            ));
            return o;
        }
        let hostname = self.hostname_for(req);
        let mut records = vec![];
        // Moving to another address frees the old one.
        if let Some(old) = self.by_key.get(&req.key).copied() {
            if old != ip {
                if let Some(l) = self.leases.get(&old) {
                    if l.state == LeaseState::Active && l.expires > now && lease_key(l) == req.key {
                        let mut l = l.clone();
                        l.state = LeaseState::Released;
                        l.expires = now;
                        records.push(l);
                        self.forget(old);
                    }
                }
            }
        }
        let lease = Lease {
            ip,
            mac: hex_colon(&req.mac),
            hostname: hostname.clone(),
            client_id: req.client_id.clone(),
            start: now,
            expires: now + self.cfg.lease_secs as u64,
            state: LeaseState::Active,
        };
        self.file(lease.clone());
        if let Some(oip) = self.offer_by_key.remove(&req.key) {
            self.offers.remove(&oip);
        }
        self.offers.remove(&ip);
        records.push(lease);
        Outcome {
            records,
            reply: Some(self.reply(req, MessageType::Ack, ip, hostname.as_deref(), true)),
            log: None,
        }
    }

    fn ours(&self, req: &Req) -> bool {
        match req.msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(sid)) => *sid == self.cfg.server_ip,
            _ => true,
        }
    }

    fn on_release(&mut self, req: &Req, now: u64) -> Outcome {
        let ip = req.msg.ciaddr();
        if !self.ours(req) {
            return Outcome::default();
        }
        match self.leases.get(&ip) {
            Some(l) if lease_key(l) == req.key && l.state == LeaseState::Active => {
                let mut l = l.clone();
                l.state = LeaseState::Released;
                l.expires = now;
                // On disk as released; in memory, forgotten.
                self.forget(ip);
                Outcome {
                    log: Some(format!("RELEASE {ip} from {}", l.mac)),
                    records: vec![l],
                    reply: None,
                }
            }
            _ => Outcome::default(),
        }
    }

    fn on_decline(&mut self, req: &Req, now: u64) -> Outcome {
        let ip = match req.msg.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
            _ => return Outcome::default(),
        };
        if !self.ours(req) {
            return Outcome::default();
        }
        let offered = self.offers.get(&ip).is_some_and(|o| o.key == req.key);
        let leased = self
            .leases
            .get(&ip)
            .is_some_and(|l| lease_key(l) == req.key);
        if !(offered || leased) {
            return Outcome::default();
        }
        self.offers.remove(&ip);
        self.offer_by_key.remove(&req.key);
        self.by_key.remove(&req.key);
        let l = Lease {
            ip,
            mac: hex_colon(&req.mac),
            hostname: None,
            client_id: req.client_id.clone(),
            start: now,
            expires: now + self.cfg.decline_secs,
            state: LeaseState::Declined,
        };
        self.file(l.clone());
        Outcome {
            log: Some(format!(
                "DECLINE {ip} from {}: address is in use by another host",
                l.mac
            )),
            records: vec![l],
            reply: None,
        }
    }

    fn on_inform(&mut self, req: &Req) -> Outcome {
        let hostname = self.hostname_for(req);
        Outcome {
            reply: Some(self.reply(
                req,
                MessageType::Ack,
                Ipv4Addr::UNSPECIFIED,
                hostname.as_deref(),
                false,
            )),
            ..Default::default()
        }
    }

    fn hostname_for(&self, req: &Req) -> Option<String> {
        if let Some(h) = self
            .res_by_mac
            .get(&req.mac)
            .and_then(|r| r.hostname.as_deref())
        {
            return sanitize_hostname(h);
        }
        match req.msg.opts().get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) => sanitize_hostname(h),
            // Renewals often leave the name out: keep the one the client gave before.
            _ => self
                .by_key
                .get(&req.key)
                .and_then(|ip| self.leases.get(ip))
                .filter(|l| lease_key(l) == req.key)
                .and_then(|l| l.hostname.clone()),
        }
    }

    // ---------- replies ----------

    fn base(&self, req: &Req, typ: MessageType, yiaddr: Ipv4Addr) -> Message {
        let mut m = Message::new_with_id(
            req.msg.xid(),
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            req.msg.giaddr(),
            &req.mac,
        );
        m.set_opcode(Opcode::BootReply)
            .set_htype(HType::Eth)
            .set_flags(req.msg.flags());
        // RFC 2131 table 3: ciaddr is echoed in an ACK, zero in OFFER and NAK.
        if typ == MessageType::Ack {
            m.set_ciaddr(req.msg.ciaddr());
        }
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(typ));
        o.insert(DhcpOption::ServerIdentifier(self.cfg.server_ip));
        // RFC 6842: echo the client identifier.
        if let Some(id) = req.msg.opts().get(OptionCode::ClientIdentifier) {
            o.insert(id.clone());
        }
        m
    }

    fn reply(
        &self,
        req: &Req,
        typ: MessageType,
        yiaddr: Ipv4Addr,
        hostname: Option<&str>,
        lease: bool,
    ) -> Reply {
        let mut m = self.base(req, typ, yiaddr);
        let prl: Option<Vec<OptionCode>> =
            match req.msg.opts().get(OptionCode::ParameterRequestList) {
                Some(DhcpOption::ParameterRequestList(v)) => Some(v.clone()),
                _ => None,
            };
        // Without a request list a client gets everything we have; with one, what it asks
        // for. Mask and lease times are always sent (every client needs them).
        let wants = |c: OptionCode| prl.as_ref().is_none_or(|v| v.contains(&c));
        let cfg = &self.cfg;
        let o = m.opts_mut();
        o.insert(DhcpOption::SubnetMask(cfg.netmask()));
        if lease {
            let t = cfg.lease_secs;
            o.insert(DhcpOption::AddressLeaseTime(t));
            o.insert(DhcpOption::Renewal(t / 2));
            o.insert(DhcpOption::Rebinding((t as u64 * 7 / 8) as u32));
        }
        if wants(OptionCode::Router) && !cfg.routers.is_empty() {
            o.insert(DhcpOption::Router(cfg.routers.clone()));
        }
        if wants(OptionCode::DomainNameServer) && !cfg.dns_servers.is_empty() {
            o.insert(DhcpOption::DomainNameServer(cfg.dns_servers.clone()));
        }
        if let Some(d) = cfg
            .domain
            .as_ref()
            .filter(|_| wants(OptionCode::DomainName))
        {
            o.insert(DhcpOption::DomainName(d.clone()));
        }
        if let Some(h) = hostname.filter(|_| wants(OptionCode::Hostname)) {
            o.insert(DhcpOption::Hostname(h.to_string()));
        }
        if let Some(mtu) = self.mtu.filter(|_| {
            prl.as_ref()
                .is_some_and(|v| v.contains(&OptionCode::InterfaceMtu))
        }) {
            o.insert(DhcpOption::InterfaceMtu(mtu));
        }
        if wants(OptionCode::BroadcastAddr) {
            o.insert(DhcpOption::BroadcastAddr(cfg.broadcast()));
        }
        let dest = self.dest(req, typ);
        Reply {
            bytes: encode_padded(&m),
            dest,
            kind: typ,
        }
    }

    fn nak(&self, req: &Req, why: &str) -> Outcome {
        let mut m = self.base(req, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        if !req.msg.giaddr().is_unspecified() {
            m.set_flags(Flags::default().set_broadcast());
        }
        m.opts_mut().insert(DhcpOption::Message(why.to_string()));
        Outcome {
            reply: Some(Reply {
                bytes: encode_padded(&m),
                dest: self.dest(req, MessageType::Nak),
                kind: MessageType::Nak,
            }),
            ..Default::default()
        }
    }

    /// RFC 2131 §4.1: relay first, then a configured client (ciaddr), else broadcast. We
    /// broadcast instead of unicasting to an address the client does not answer ARP for yet.
    fn dest(&self, req: &Req, typ: MessageType) -> SocketAddrV4 {
        let g = req.msg.giaddr();
        let c = req.msg.ciaddr();
        if !g.is_unspecified() {
            SocketAddrV4::new(g, self.cfg.server_port)
        } else if typ != MessageType::Nak && !c.is_unspecified() {
            SocketAddrV4::new(c, self.cfg.client_port)
        } else {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, self.cfg.client_port)
        }
    }
}

/// Copies the fixed header and only the options the server reads, each with a length its
/// decoder accepts. dhcproto asserts on some malformed option lengths (found by the
/// proptest below), so nothing else reaches it. Options stop at END or a truncated option.
pub fn sanitize(buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len().min(1500) + 1);
    out.extend_from_slice(&buf[..240.min(buf.len())]);
    let mut i = 240;
    while i < buf.len() {
        let code = buf[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = buf.get(i + 1) else { break };
        let (start, end) = (i + 2, i + 2 + len as usize);
        let Some(data) = buf.get(start..end) else {
            break;
        };
        let ok = match code {
            53 => len == 1,                                      // message type
            50 | 54 | 51 => len == 4, // requested address, server id, lease time
            57 => len == 2,           // max message size
            61 | 55 => len >= 1,      // client id, parameter request list
            12 => len >= 1 && std::str::from_utf8(data).is_ok(), // hostname
            _ => false,
        };
        if ok {
            out.extend_from_slice(&buf[i..end]);
        }
        i = end;
    }
    out.push(255);
    out
}

/// Encodes a message, padded with zeros (PAD options after END) to at least 300 bytes.
pub fn encode_padded(m: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(MIN_REPLY_LEN);
    // Encoding into a Vec cannot fail for messages we build ourselves.
    if m.encode(&mut Encoder::new(&mut out)).is_err() {
        out.clear();
    }
    if out.len() < MIN_REPLY_LEN {
        out.resize(MIN_REPLY_LEN, 0);
    }
    out
}
