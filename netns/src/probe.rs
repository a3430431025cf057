//! The probes `doctor` sends from inside a lab: a DNS query (hickory-proto builds and reads
//! it) and a DHCP DISCOVER from a throwaway client on the lab bridge (dhcproto).
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::nl::{self, with_netlink};
use crate::nsfs::in_netns;
use crate::Error;

/// What a DNS server said to one query.
#[derive(Debug, Clone, PartialEq)]
pub enum DnsReply {
    /// No reply in time (or an unreadable one).
    Silent,
    Answered {
        code: ResponseCode,
        answers: usize,
        authoritative: bool,
    },
}

/// Sends `name`/`rtype` to `server` from inside lab `ns` and waits up to 1 s.
pub fn dns_query(
    ns: &str,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<DnsReply, Error> {
    dns_query_from(ns, None, server, name, rtype)
}

/// [`dns_query`] from address `source` (None: the kernel picks), e.g. the bridge's, the one
/// address a peer lab's WireGuard accepts from this lab. Only a reply from `server` with the
/// query's ID and question counts.
pub fn dns_query_from(
    ns: &str,
    source: Option<Ipv4Addr>,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<DnsReply, Error> {
    let name = Name::from_ascii(name).map_err(|e| Error::Probe {
        what: format!("DNS name {name}"),
        detail: e.to_string(),
    })?;
    let id = (std::process::id() & 0xffff) as u16 ^ 0x4c4e;
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.queries.push(Query::query(name, rtype));
    let queries = q.queries.clone();
    let bytes = q.to_vec().map_err(|e| Error::Probe {
        what: "encoding a DNS query".into(),
        detail: e.to_string(),
    })?;
    in_netns(Some(ns), move || {
        let bind = SocketAddr::from((source.unwrap_or(Ipv4Addr::UNSPECIFIED), 0));
        let s = UdpSocket::bind(bind).map_err(|e| Error::io("udp socket", e))?;
        if s.send_to(&bytes, server).is_err() {
            return Ok(DnsReply::Silent);
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(DnsReply::Silent);
            }
            s.set_read_timeout(Some(left)).ok();
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                return Ok(DnsReply::Silent);
            };
            let Ok(m) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if from == server && m.metadata.id == id && m.queries == queries {
                return Ok(DnsReply::Answered {
                    code: m.metadata.response_code,
                    answers: m.answers.len(),
                    authoritative: m.metadata.authoritative,
                });
            }
        }
    })
}

/// Removes the probe's veth pair (inside the lab) however the probe ends.
struct ProbeLink {
    ns: String,
    name: String,
}

impl Drop for ProbeLink {
    fn drop(&mut self) {
        let n = self.name.clone();
        let _ = with_netlink(Some(&self.ns), move |h| async move {
            nl::del_link(&h, &n).await
        });
    }
}

/// A DISCOVER from a throwaway client (a namespace of its own, plugged into the lab bridge by
/// a veth pair) to whoever serves DHCP on `bridge`; the address offered, if one came within
/// 2 s. The offer is only held for the server's offer time; no lease is taken. The client's
/// namespace lives only as long as its thread, and takes the veth pair with it.
pub fn dhcp_discover(ns: &str, bridge: &str) -> Result<Option<Ipv4Addr>, Error> {
    use dhcproto::v4::{DhcpOption, Flags, Message as Dhcp, MessageType as Kind, Opcode};
    use dhcproto::{Encodable, Encoder};
    use std::os::fd::AsRawFd;

    let tag = std::process::id() % 100_000;
    let (port, client) = (format!("ldp{tag}"), format!("ldc{tag}"));
    let (p, cl, br) = (port.clone(), client.clone(), bridge.to_string());
    with_netlink(Some(ns), move |h| async move {
        nl::add_veth(&h, &p, &cl).await?;
        nl::set_controller(&h, &p, &br).await?;
        nl::set_up(&h, &p).await
    })?;
    let _guard = ProbeLink {
        ns: ns.to_string(),
        name: port.clone(),
    };
    // A locally administered MAC of the probe's own.
    let mac = [
        0x02,
        0x6c,
        0x64,
        (tag >> 16) as u8,
        (tag >> 8) as u8,
        tag as u8,
    ];
    let xid = 0x6c64_0000 | (tag & 0xffff);
    let mut m = Dhcp::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    m.set_opcode(Opcode::BootRequest);
    m.set_flags(Flags::default().set_broadcast());
    m.opts_mut().insert(DhcpOption::MessageType(Kind::Discover));
    let mut bytes = vec![];
    m.encode(&mut Encoder::new(&mut bytes))
        .map_err(|e| Error::Probe {
            what: "encoding a DHCP DISCOVER".into(),
            detail: e.to_string(),
        })?;

    let (ns_tx, ns_rx) = std::sync::mpsc::channel::<Result<std::fs::File, Error>>();
    let (moved_tx, moved_rx) = std::sync::mpsc::channel::<bool>();
    let cl = client.clone();
    let worker = std::thread::spawn(move || -> Result<Option<Ipv4Addr>, Error> {
        // A namespace with no address at all: the DISCOVER leaves from 0.0.0.0, as a real
        // client's does (from the lab's own namespace it would carry the bridge's address).
        let made = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| Error::sys("unshare a namespace for the DHCP probe", e))
            .and_then(|()| {
                std::fs::File::open("/proc/thread-self/ns/net")
                    .map_err(|e| Error::io("/proc/thread-self/ns/net", e))
            });
        let failed = made.is_err();
        let _ = ns_tx.send(made);
        if failed || !moved_rx.recv().unwrap_or(false) {
            return Ok(None);
        }
        let c = cl.clone();
        nl::netlink_here(move |h| async move { nl::set_up(&h, &c).await })?;
        discover_from(&cl, &bytes, xid, &mac)
    });
    let moved = match ns_rx.recv() {
        Ok(Ok(file)) => {
            let cl = client.clone();
            with_netlink(Some(ns), move |h| async move {
                nl::move_to_netns(&h, &cl, file.as_raw_fd()).await
            })
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Probe {
            what: "the DHCP probe".into(),
            detail: "its thread ended early".into(),
        }),
    };
    let _ = moved_tx.send(moved.is_ok());
    let offer = worker.join().map_err(|_| Error::WorkerPanicked {
        what: "the DHCP probe thread".into(),
    })?;
    moved?;
    offer
}

/// Broadcasts `discover` from `iface` (resending every 500 ms while the new bridge port
/// settles) and returns the yiaddr of the first OFFER for `xid` and `mac`, within 2 s.
fn discover_from(
    iface: &str,
    discover: &[u8],
    xid: u32,
    mac: &[u8; 6],
) -> Result<Option<Ipv4Addr>, Error> {
    use dhcproto::v4::{Message as Dhcp, MessageType as Kind};
    use dhcproto::{Decodable, Decoder};
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| Error::io("udp socket", e))?;
    s.set_broadcast(true)
        .map_err(|e| Error::io("SO_BROADCAST", e))?;
    s.bind_device(Some(iface.as_bytes()))
        .map_err(|e| Error::io(format!("SO_BINDTODEVICE {iface}"), e))?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
        .map_err(|e| Error::io("bind udp :68", e))?;
    let s: UdpSocket = s.into();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut next_send = Instant::now();
    let mut buf = [0u8; 1500];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        if now >= next_send {
            let _ = s.send_to(discover, (Ipv4Addr::BROADCAST, 67));
            next_send = now + Duration::from_millis(500);
        }
        s.set_read_timeout(Some(
            next_send
                .min(deadline)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .ok();
        let Ok(n) = s.recv(&mut buf) else {
            continue;
        };
        let Ok(reply) = Dhcp::decode(&mut Decoder::new(&buf[..n])) else {
            continue;
        };
        if reply.xid() == xid
            && reply.opts().msg_type() == Some(Kind::Offer)
            && reply.chaddr().get(..6) == Some(&mac[..])
        {
            return Ok(Some(reply.yiaddr()));
        }
    }
}
