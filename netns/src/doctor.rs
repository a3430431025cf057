//! `labnet doctor`: the ways a lab fails, checked from inside the lab, and said in words:
//! (1) no route, handshake or session with the bounce box, (2) the lab's DHCP server dead or
//! not answering on the bridge, (3) DNS: labnet's own server (a `lab.` name) apart from the
//! upstream path, so a dead upstream is not blamed on labnet, (4) a firewall on the path
//! (traffic leaves but nothing is forwarded back).
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde::Serialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::{Lab, Uplink};
use crate::lab_daemons::daemon_is_ours;
use crate::nsfs::{in_netns, netns_exists};
use crate::probe::{dhcp_discover, dns_query, dns_query_from, DnsReply};
use crate::state::{LabState, Resource};
use crate::{nft, wg, Error};

#[derive(Debug, Serialize)]
pub struct Finding {
    pub check: String,
    pub ok: bool,
    pub words: String,
}

#[derive(Debug, Serialize)]
pub struct DoctorReport {
    pub lab: String,
    pub ok: bool,
    pub findings: Vec<Finding>,
}

impl DoctorReport {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            s += &format!(
                "[{}] {}: {}\n",
                if f.ok { " ok " } else { "FAIL" },
                f.check,
                f.words
            );
        }
        s += if self.ok {
            "verdict: the lab looks healthy\n"
        } else {
            "verdict: see the FAIL lines above\n"
        };
        s
    }
}

fn finding(check: &str, ok: bool, words: impl Into<String>) -> Finding {
    Finding {
        check: check.into(),
        ok,
        words: words.into(),
    }
}

pub fn doctor(lab: &Lab) -> Result<DoctorReport, Error> {
    let mut f = vec![];
    let ns = lab.name.clone();
    if !netns_exists(&ns) {
        f.push(finding(
            "lab",
            false,
            format!("lab {ns} is not up: run `labnet up {ns}`"),
        ));
        return Ok(report(lab, f));
    }
    let st = LabState::load(&ns)?;
    let userspace = st.as_ref().and_then(|s| s.wg_backend.clone()).as_deref() == Some("userspace");

    // 1. Route and handshake to the bounce box.
    let mut path_ok = true;
    match &lab.uplink {
        Uplink::None => f.push(finding(
            "bounce box",
            true,
            "isolated lab (uplink none): nothing to reach",
        )),
        Uplink::Host(h) => {
            let ok = ping(&ns, h.host_address.addr, None)?;
            path_ok = ok;
            f.push(finding("host uplink", ok, if ok { format!("{} answers ping", h.host_address.addr) } else { format!("no route to the host end {}: the veth pair is down or missing; run `labnet status {ns}`", h.host_address.addr) }));
        }
        Uplink::Wireguard(w) => {
            let peers = wg::peers(&w.interface, userspace, &ns).unwrap_or_default();
            let peer = peers.iter().find(|p| p.public_key == w.peer_public_key);
            let reply = ping(&ns, w.gateway, None)?;
            let hs = peer.and_then(|p| p.last_handshake_secs_ago);
            let (ok, words) = match (peer, hs, reply) {
                (None, _, _) => (false, format!("no route to the bounce box: {} has no peer {}; run `labnet up {ns}` again", w.interface, &w.peer_public_key[..8])),
                (_, _, true) => (true, format!("bounce box {} answers through {} (handshake {})", w.gateway, w.interface, hs.map(|s| format!("{s} s ago")).unwrap_or("pending".into()))),
                (Some(p), None, false) if p.tx_bytes > 0 => (false, format!(
                    "no handshake with the bounce box: {} bytes sent to {} but nothing came back. Either a firewall on the path drops UDP to the endpoint, the bounce box is down, or its peer entry does not have our public key",
                    p.tx_bytes, p.endpoint.clone().unwrap_or("(no endpoint)".into())
                )),
                (_, None, false) => (false, format!("no handshake with the bounce box: set uplink.endpoint (now {:?}) and check the bounce box is up", w.endpoint)),
                (_, Some(s), false) if s > session_timeout() => (false, format!(
                    "WireGuard session with the bounce box lost: the last handshake with peer {} ({}) was {s} s ago, past the {} s a session lives without one, and {} does not answer; the bounce box is down, or unreachable at its endpoint",
                    &w.peer_public_key[..8],
                    peer.and_then(|p| p.endpoint.clone()).unwrap_or("no endpoint".into()),
                    session_timeout(),
                    w.gateway
                )),
                (_, Some(s), false) => (false, format!("handshake {s} s ago, but {} does not answer ping: the bounce box drops ICMP or does not own {}", w.gateway, w.gateway)),
            };
            path_ok = ok;
            f.push(finding("bounce box", ok, words));
        }
    }

    // 2. The lab's DHCP server: running, and answering a DISCOVER on the bridge.
    let daemons: Vec<(String, Option<u32>, bool)> = st
        .iter()
        .flat_map(|s| s.resources.iter())
        .filter_map(|r| match r {
            Resource::Daemon { name, pid, exe } => Some((
                name.clone(),
                *pid,
                pid.is_some_and(|p| daemon_is_ours(p, exe)),
            )),
            _ => None,
        })
        .collect();
    let daemon = |name: &str| daemons.iter().find(|d| d.0 == name).cloned();
    let br = &lab.bridge.name;
    let offer = dhcp_discover(&ns, br)?;
    let (ok, words) = match (daemon("dhcpd"), offer) {
        (Some((_, pid, false)), _) => (false, format!(
            "labnet dhcpd is not running (pid {} is gone): VMs get no address; `labnet up {ns}` restarts it",
            pid.map(|p| p.to_string()).unwrap_or("-".into())
        )),
        (_, Some(a)) => (true, format!("a DHCP server on {br} offered {a} to a throwaway client")),
        (Some((_, pid, true)), None) => (false, format!(
            "labnet dhcpd runs (pid {}) but did not answer a DISCOVER on {br} within 2 s: it is not bound to the bridge, or stopped",
            pid.map(|p| p.to_string()).unwrap_or("-".into())
        )),
        (None, None) => (false, format!(
            "nothing answered a DISCOVER on {br} within 2 s (labnet up did not start dhcpd: is labnet-dhcpd@{ns}.service running?)"
        )),
    };
    f.push(finding("dhcp", ok, words));

    // 3. DNS: labnet's own server with a name of the lab zone, then each upstream directly,
    // then forwarding through labnet's server only when an upstream answers.
    let lab_dns = SocketAddr::from((lab.bridge.address.addr, 53));
    let zone = format!("{}.", lab.dns.zone.trim_end_matches('.'));
    let local = dns_query(&ns, lab_dns, &zone, RecordType::SOA)?;
    let local_ok = matches!(local, DnsReply::Answered { code: ResponseCode::NoError, answers, authoritative: true } if answers > 0);
    f.push(finding("lab dns", local_ok, match (&local, daemon("dns")) {
        (_, Some((_, pid, false))) => format!(
            "labnet dns is not running (pid {} is gone): nothing answers on {lab_dns}; `labnet up {ns}` restarts it",
            pid.map(|p| p.to_string()).unwrap_or("-".into())
        ),
        _ if local_ok => format!("labnet dns answers for {zone} on {lab_dns}"),
        (DnsReply::Silent, _) => format!("labnet dns does not answer on {lab_dns} (no reply to {zone} SOA within 1 s)"),
        (DnsReply::Answered { code, .. }, _) => format!("labnet dns on {lab_dns} answered {zone} SOA with {code}, not the lab zone"),
    }));
    let upstreams = lab.effective_upstreams();
    let mut any_dns = false;
    for u in &upstreams {
        let ok = matches!(
            dns_query(&ns, *u, ".", RecordType::NS)?,
            DnsReply::Answered { .. }
        );
        any_dns |= ok;
        f.push(finding("dns upstream", ok, if ok { format!("{u} answers queries") } else { format!("upstream DNS {u} gave no reply within 1 s{}; names outside {zone} cannot resolve (labnet dns itself {})", if path_ok { " (the path to the bounce box works, so the resolver there is down or not listening on that address)" } else { " (the path itself is down, see above)" }, if local_ok { "is fine" } else { "fails too, see above" }) }));
    }
    if any_dns && local_ok {
        let ok = matches!(
            dns_query(&ns, lab_dns, ".", RecordType::NS)?,
            DnsReply::Answered {
                code: ResponseCode::NoError,
                ..
            }
        );
        f.push(finding("dns forwarding", ok, if ok { format!("labnet dns forwards names outside {zone} to its upstreams") } else { format!("an upstream answers directly, but labnet dns on {lab_dns} does not forward to it") }));
    }

    // 3b. Each peer lab's names: its zone's SOA through labnet dns, and from its dns itself.
    f.extend(peer_dns_findings(&ns, lab, lab_dns, local_ok)?);
    // 3c. Each peer lab's tunnel: handshake, route, subnet overlap, MTU and MSS clamp.
    f.extend(peer_link_findings(&ns, lab)?);

    // 4. Forwarding and NAT for VM traffic: inside the lab, then through the bounce box.
    let fwd = in_netns(Some(&ns), || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .map_err(|e| Error::io("ip_forward", e))
    })?;
    if fwd.trim() != "1" {
        f.push(finding(
            "forwarding",
            false,
            "firewall on the path: net.ipv4.ip_forward is 0 inside the lab, VMs cannot get out",
        ));
    }
    if let Uplink::Wireguard(w) = &lab.uplink {
        if !nft::table_exists(Some(&ns), nft::LAB_TABLE)? {
            f.push(finding("nat", false, format!("firewall on the path: labnet's masquerade table is missing in the lab, VM traffic leaves {} unNATed", w.interface)));
        } else if path_ok {
            // A VM's packet: sourced from the bridge address, NATed on the way out.
            let ok = ping(&ns, w.gateway, Some(lab.bridge.address.addr))?;
            let beyond_ok = !upstreams.is_empty() && any_dns;
            f.push(finding("firewall", ok, if ok {
                format!("traffic from the bridge is forwarded and masqueraded to the bounce box{}", if beyond_ok { "; beyond it too (DNS answers)" } else { "" })
            } else {
                format!("firewall on the path: the bounce box answers its tunnel address but not traffic from the lab's bridge ({}); check masquerade/forwarding (firewalld) on the bounce box", lab.bridge.address.addr)
            }));
        }
    }
    Ok(report(lab, f))
}

/// A peer lab as the "peer dns" check sees it.
#[derive(Debug, Clone)]
pub struct PeerDns {
    pub name: String,
    /// Its zone, absolute (`labb.lab.`).
    pub zone: String,
    pub dns: SocketAddr,
}

/// The peers of `lab` whose names its dns forwards.
fn peers_of(lab: &Lab) -> Vec<PeerDns> {
    lab.peers
        .iter()
        .map(|p| PeerDns {
            name: p.name.clone(),
            zone: format!("{}.", p.zone.trim_end_matches('.')),
            dns: SocketAddr::from((p.dns, 53)),
        })
        .collect()
}

/// "peer dns" for each peer: its zone's SOA asked through labnet dns (what a VM sees), and
/// asked of the peer's dns directly, from the bridge address (what labnet dns sends), so a
/// dead peer or tunnel is told apart from this lab's dns not forwarding.
fn peer_dns_findings(
    ns: &str,
    lab: &Lab,
    lab_dns: SocketAddr,
    local_ok: bool,
) -> Result<Vec<Finding>, Error> {
    let bridge = lab.bridge.address.addr;
    let mut f = vec![];
    for p in peers_of(lab) {
        let via = dns_query(ns, lab_dns, &p.zone, RecordType::SOA)?;
        let direct = dns_query_from(ns, Some(bridge), p.dns, &p.zone, RecordType::SOA)?;
        f.push(peer_dns_finding(ns, &p, lab_dns, local_ok, &via, &direct));
    }
    Ok(f)
}

/// The words for one peer's DNS, from the two replies (pure, for the golden test).
pub fn peer_dns_finding(
    ns: &str,
    p: &PeerDns,
    lab_dns: SocketAddr,
    local_ok: bool,
    via: &DnsReply,
    direct: &DnsReply,
) -> Finding {
    let soa = |r: &DnsReply| matches!(r, DnsReply::Answered { code: ResponseCode::NoError, answers, .. } if *answers > 0);
    let (name, zone, dns) = (&p.name, p.zone.trim_end_matches('.'), p.dns);
    let here = match via {
        DnsReply::Silent => "no reply within 1 s".to_string(),
        DnsReply::Answered { code, .. } => format!("{code}"),
    };
    // The peer's own answer decides first: labnet dns may answer from its cache (for the
    // SOA's TTL) after the peer went away.
    let (ok, words) = match direct {
        DnsReply::Silent if soa(via) => (false, format!(
            "peer {name}: its dns {dns} does not answer ({zone} SOA asked from {}; labnet dns still answers from its cache, not for long): the tunnel to {name} is down (`labnet peer list` shows the handshake) or labnet dns is not running in lab {name}",
            lab_dns.ip()
        )),
        DnsReply::Silent => (false, format!(
            "peer {name}: names in {zone} do not resolve here (labnet dns: {here}) and its dns {dns} does not answer either ({zone} SOA asked from {}): the tunnel to {name} is down (`labnet peer list` shows the handshake) or labnet dns is not running in lab {name}",
            lab_dns.ip()
        )),
        DnsReply::Answered { code, .. } if !soa(direct) => (false, format!(
            "peer {name}: its dns {dns} answered {zone} SOA with {code} and no SOA: it does not serve {zone}; the zone in [[peers]] must be the one lab {name}'s invitation names"
        )),
        _ if soa(via) => (true, format!(
            "peer {name}: {zone} answers through labnet dns on {lab_dns} (forwarded to {dns})"
        )),
        _ if local_ok => (false, format!(
            "peer {name}: its dns {dns} answers for {zone}, but labnet dns on {lab_dns} does not forward {zone} to it ({here}); restart the lab's dns (`labnet up {ns}`) so it reads the [[peers]] entry"
        )),
        _ => (false, format!(
            "peer {name}: its dns {dns} answers for {zone}, but labnet dns on {lab_dns} does not ({here}; it fails for the lab zone too, see above)"
        )),
    };
    finding("peer dns", ok, words)
}

/// How long a WireGuard session lives without a new handshake (REJECT_AFTER_TIME, 180 s);
/// `LABNET_WG_SESSION_SECS` shortens it (the tests do, to see a lost session without waiting).
fn session_timeout() -> u64 {
    std::env::var("LABNET_WG_SESSION_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180)
}

fn report(lab: &Lab, findings: Vec<Finding>) -> DoctorReport {
    DoctorReport {
        lab: lab.name.clone(),
        ok: findings.iter().all(|f| f.ok),
        findings,
    }
}

/// One ICMP echo from inside the lab (raw socket: root; new namespaces disable ping sockets).
pub fn ping(ns: &str, to: Ipv4Addr, from: Option<Ipv4Addr>) -> Result<bool, Error> {
    in_netns(Some(ns), move || {
        use socket2::{Domain, Protocol, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))
            .map_err(|e| Error::io("icmp socket", e))?;
        if let Some(src) = from {
            s.bind(&SocketAddr::from((src, 0)).into())
                .map_err(|e| Error::io("icmp bind", e))?;
        }
        let id = (std::process::id() & 0xffff) as u16;
        let mut pkt = vec![8u8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
        pkt.extend_from_slice(b"labnet doctor");
        let sum = checksum(&pkt);
        pkt[2] = (sum >> 8) as u8;
        pkt[3] = sum as u8;
        if s.send_to(&pkt, &SocketAddr::from((to, 0)).into()).is_err() {
            return Ok(false);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
        while Instant::now() < deadline {
            s.set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .ok();
            let Ok((n, addr)) = s.recv_from(&mut buf) else {
                return Ok(false);
            };
            let b: Vec<u8> = buf[..n]
                .iter()
                // SAFETY: recv_from initialised the first n bytes it reported.
                .map(|x| unsafe { x.assume_init() })
                .collect();
            let ihl = ((b.first().copied().unwrap_or(0) & 0x0f) as usize) * 4;
            let src = addr.as_socket_ipv4().map(|a| *a.ip());
            if b.len() >= ihl + 8
                && b[ihl] == 0
                && src == Some(to)
                && u16::from_be_bytes([b[ihl + 4], b[ihl + 5]]) == id
            {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The peering link and each peer: the MTU and MSS clamp (a TCP mount through two tunnels
/// stalls without them), then per peer the route over the link, routes of anything else
/// overlapping its subnet, and the handshake (with a ping of its DNS address from the
/// bridge address: the way a VM's packet goes).
fn peer_link_findings(ns: &str, lab: &Lab) -> Result<Vec<Finding>, Error> {
    let Some(p) = &lab.peering else {
        return Ok(vec![]);
    };
    let mut f = vec![];
    let iface = p.interface.clone();
    let (idx, mtu, routes) = crate::nl::with_netlink(Some(ns), move |h| async move {
        let idx = crate::nl::link_by_name(&h, &iface)
            .await?
            .map(|m| m.header.index);
        let mtu = crate::nl::mtu_of(&h, &iface).await?;
        Ok((idx, mtu, crate::nl::routes(&h).await?))
    })?;
    let Some(idx) = idx else {
        f.push(finding(
            "peering",
            false,
            format!(
                "the peering link {} is missing: `labnet up {ns}` makes it",
                p.interface
            ),
        ));
        return Ok(f);
    };
    let clamp = nft::read_table(Some(ns), nft::PEERING_TABLE)?
        .is_some_and(|t| nft::diff(&nft::peering_table(&p.interface), &t).is_empty());
    let mtu_ok = mtu == Some(u32::from(p.mtu));
    f.push(finding(
        "peering mtu",
        mtu_ok && clamp,
        match (mtu_ok, clamp) {
            (true, true) => format!(
                "{} has mtu {} and TCP MSS is clamped to it (nft table ip {})",
                p.interface, p.mtu, nft::PEERING_TABLE
            ),
            (false, _) => format!(
                "{} has mtu {} but peering.mtu is {}: full-size packets may not pass the tunnel",
                p.interface,
                mtu.map(|m| m.to_string()).unwrap_or("-".into()),
                p.mtu
            ),
            (true, false) => format!(
                "no MSS clamp into {} (nft table ip {} missing): TCP through two tunnels (a CephFS mount) can stall on full-size segments; `labnet up {ns}` restores it",
                p.interface,
                nft::PEERING_TABLE
            ),
        },
    ));
    let userspace = wg::is_userspace(&p.interface);
    let device = wg::peers(&p.interface, userspace, ns).unwrap_or_default();
    for peer in &lab.peers {
        let check = format!("peer {}", peer.name);
        let route = routes.iter().any(|r| {
            r.dest == peer.subnet.addr && r.prefix == peer.subnet.prefix && r.oif == Some(idx)
        });
        // Another link's route into the peer's subnet (a VPN, a stray address) steals its traffic.
        let others: Vec<String> = routes
            .iter()
            .filter(|r| r.oif != Some(idx) && r.prefix > 0)
            .filter(|r| {
                crate::config::overlaps(
                    &crate::Ipv4Cidr {
                        addr: r.dest,
                        prefix: r.prefix,
                    },
                    &peer.subnet,
                )
            })
            .map(|r| format!("{}/{}", r.dest, r.prefix))
            .collect();
        if !route || !others.is_empty() {
            f.push(finding(
                &check,
                false,
                if !route {
                    format!("no route to {} over {}: `labnet up {ns}` adds it", peer.subnet, p.interface)
                } else {
                    format!(
                        "overlapping subnet: route(s) {} in the lab overlap {}'s subnet {}; its traffic may not go through the tunnel",
                        others.join(", "),
                        peer.name,
                        peer.subnet
                    )
                },
            ));
            continue;
        }
        let d = device.iter().find(|d| d.public_key == peer.public_key);
        let answers = ping(ns, peer.dns, Some(lab.bridge.address.addr))?;
        let hs = d.and_then(|d| d.last_handshake_secs_ago);
        let (ok, words) = match (d, hs, answers) {
            (None, _, _) => (false, format!("{} has no peer {} ({}): `labnet up {ns}` configures it", p.interface, &peer.public_key[..8], peer.name)),
            (_, _, true) => (true, format!(
                "{} ({}) answers through {} (handshake {})",
                peer.name,
                peer.dns,
                p.interface,
                hs.map(|s| format!("{s} s ago")).unwrap_or("pending".into())
            )),
            (Some(d), None, false) => (false, format!(
                "no handshake with {}: {} bytes sent to {} and nothing came back; the other host's lab is down, a firewall drops UDP to its endpoint, or it has not added this lab's invitation (`labnet peer add`)",
                peer.name,
                d.tx_bytes,
                d.endpoint.clone().or(peer.endpoint.map(|e| e.to_string())).unwrap_or("(no endpoint)".into())
            )),
            (_, Some(s), false) => (false, format!(
                "{} does not answer through the tunnel; the last handshake was {s} s ago{}",
                peer.name,
                if s > session_timeout() { ", so the session is lost: the other host or its lab is down" } else { "; its lab host drops ICMP from this lab" }
            )),
        };
        f.push(finding(&check, ok, words));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every "peer dns" verdict, by what the two probes got.
    #[test]
    fn peer_dns_words_golden() {
        let p = PeerDns {
            name: "labb".into(),
            zone: "labb.lab.".into(),
            dns: "10.20.1.1:53".parse().unwrap(),
        };
        let lab_dns: SocketAddr = "192.168.0.1:53".parse().unwrap();
        let soa = DnsReply::Answered {
            code: ResponseCode::NoError,
            answers: 1,
            authoritative: false,
        };
        let servfail = DnsReply::Answered {
            code: ResponseCode::ServFail,
            answers: 0,
            authoritative: false,
        };
        let refused = DnsReply::Answered {
            code: ResponseCode::Refused,
            answers: 0,
            authoritative: false,
        };
        let silent = DnsReply::Silent;
        let mut text = String::new();
        for (case, local_ok, via, direct) in [
            ("forwarded", true, &soa, &soa),
            ("peer silent", true, &silent, &silent),
            ("peer silent, answer cached", true, &soa, &silent),
            ("peer silent, relay SERVFAIL", true, &servfail, &silent),
            ("not forwarded", true, &refused, &soa),
            ("lab dns down", false, &silent, &soa),
            ("peer serves another zone", true, &refused, &refused),
        ] {
            let f = peer_dns_finding("laba", &p, lab_dns, local_ok, via, direct);
            text += &format!("{case}: [{}] {}: {}\n", f.ok, f.check, f.words);
        }
        testkit::golden!("doctor-peer-dns.txt", &text);
    }
}
