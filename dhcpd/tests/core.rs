//! The protocol engine against hand-built requests: RFC 2131 states, address choice,
//! reservations, and golden encodings of replies (LABNET_BLESS=1 rewrites the goldens).
use std::net::Ipv4Addr;
use std::path::PathBuf;

use dhcpd::core::{Core, Drop, Outcome};
use dhcpd::{LeaseState, Reservation, ServerConfig};
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use proptest::prelude::*;

const NOW: u64 = 1_700_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);

fn cfg() -> ServerConfig {
    ServerConfig {
        interface: "br0".into(),
        server_ip: SERVER,
        prefix: 24,
        range_start: Ipv4Addr::new(192, 168, 0, 100),
        range_end: Ipv4Addr::new(192, 168, 0, 103),
        lease_secs: 3600,
        routers: vec![SERVER],
        dns_servers: vec![SERVER],
        domain: Some("lab".into()),
        mtu: Some(1500),
        reservations: vec![Reservation {
            mac: [0x52, 0x54, 0, 0, 0, 0x99],
            ip: Some(Ipv4Addr::new(192, 168, 0, 50)),
            hostname: Some("fixed".into()),
            vm: None,
        }],
        reservations_dir: None,
        state_dir: PathBuf::from("/nonexistent"),
        server_port: 67,
        client_port: 68,
        offer_secs: 30,
        decline_secs: 600,
        per_client_pps: 50,
    }
}

fn mac(n: u8) -> [u8; 6] {
    [0x52, 0x54, 0, 0, 0, n]
}

fn req(typ: MessageType, m: [u8; 6], xid: u32) -> Message {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &m,
    );
    msg.set_opcode(Opcode::BootRequest);
    msg.opts_mut().insert(DhcpOption::MessageType(typ));
    msg
}

fn prl(msg: &mut Message, codes: &[u8]) {
    msg.opts_mut().insert(DhcpOption::ParameterRequestList(
        codes.iter().map(|c| OptionCode::from(*c)).collect(),
    ));
}

fn enc(m: &Message) -> Vec<u8> {
    let mut v = vec![];
    m.encode(&mut Encoder::new(&mut v)).unwrap();
    v
}

fn send(core: &mut Core, m: &Message, now: u64) -> Outcome {
    core.handle(&enc(m), now).expect("handled")
}

fn reply(o: &Outcome) -> Message {
    let r = o.reply.as_ref().expect("a reply");
    assert!(r.bytes.len() >= 300, "reply is {} bytes", r.bytes.len());
    Message::decode(&mut Decoder::new(&r.bytes)).unwrap()
}

fn dora(core: &mut Core, m: [u8; 6], now: u64) -> Ipv4Addr {
    let o = send(core, &req(MessageType::Discover, m, 1), now);
    let offer = reply(&o);
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let ip = offer.yiaddr();
    let mut r = req(MessageType::Request, m, 2);
    r.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    r.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    let o = send(core, &r, now);
    let ack = reply(&o);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack), "{ack}");
    assert_eq!(ack.yiaddr(), ip);
    assert_eq!(o.records.len(), 1);
    assert_eq!(o.records[0].state, LeaseState::Active);
    ip
}

fn golden(name: &str, bytes: &[u8]) {
    testkit::golden!(format!("{name}.hex"), &testkit::hex_lines(bytes));
}

#[test]
fn golden_offer_ack_nak_inform() {
    let mut core = Core::new(cfg(), []);
    let mut d = req(MessageType::Discover, mac(1), 0x1122_3344);
    prl(&mut d, &[1, 3, 6, 15, 26, 28, 51, 58, 59]);
    d.opts_mut()
        .insert(DhcpOption::Hostname("client-one".into()));
    let o = send(&mut core, &d, NOW);
    let r = o.reply.as_ref().unwrap();
    assert_eq!(r.dest.to_string(), "255.255.255.255:68");
    golden("offer", &r.bytes);

    let mut rq = req(MessageType::Request, mac(1), 0x1122_3345);
    prl(&mut rq, &[1, 3, 6]);
    rq.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    rq.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 168, 0, 100,
        )));
    rq.opts_mut().insert(DhcpOption::ClientIdentifier(vec![
        1, 0x52, 0x54, 0, 0, 0, 1,
    ]));
    rq.set_flags(Flags::default().set_broadcast());
    let o = send(&mut core, &rq, NOW);
    golden("ack", &o.reply.as_ref().unwrap().bytes);

    let mut bad = req(MessageType::Request, mac(2), 0x5555_0001);
    bad.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 2, 3)));
    let o = send(&mut core, &bad, NOW);
    golden("nak", &o.reply.as_ref().unwrap().bytes);

    let mut inf = req(MessageType::Inform, mac(3), 0x7777_0001);
    inf.set_ciaddr(Ipv4Addr::new(192, 168, 0, 7));
    prl(&mut inf, &[6, 15]);
    let o = send(&mut core, &inf, NOW);
    assert_eq!(o.reply.as_ref().unwrap().dest.to_string(), "192.168.0.7:68");
    golden("inform", &o.reply.as_ref().unwrap().bytes);
}

#[test]
fn offer_carries_requested_options_only() {
    let mut core = Core::new(cfg(), []);
    let mut d = req(MessageType::Discover, mac(1), 9);
    prl(&mut d, &[1, 3, 26]);
    let offer = reply(&send(&mut core, &d, NOW));
    let o = offer.opts();
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![SERVER]))
    );
    assert_eq!(
        o.get(OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(1500))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(o.get(OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
    assert_eq!(
        o.get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
    assert!(
        o.get(OptionCode::DomainNameServer).is_none(),
        "DNS not requested"
    );
    assert!(o.get(OptionCode::DomainName).is_none());
    // Without a request list, everything (but MTU) is sent.
    let offer = reply(&send(
        &mut core,
        &req(MessageType::Discover, mac(2), 9),
        NOW,
    ));
    assert_eq!(
        offer.opts().get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![SERVER]))
    );
    assert_eq!(
        offer.opts().get(OptionCode::DomainName),
        Some(&DhcpOption::DomainName("lab".into()))
    );
    assert_eq!(
        offer.opts().get(OptionCode::BroadcastAddr),
        Some(&DhcpOption::BroadcastAddr(Ipv4Addr::new(192, 168, 0, 255)))
    );
}

#[test]
fn same_client_same_address_and_two_clients_differ() {
    let mut core = Core::new(cfg(), []);
    let a = dora(&mut core, mac(1), NOW);
    let b = dora(&mut core, mac(2), NOW);
    assert_ne!(a, b);
    // Rediscover (e.g. reboot without a lease file): same address back.
    assert_eq!(dora(&mut core, mac(1), NOW + 10), a);
    // Even after the lease expired, as long as nobody else took it.
    assert_eq!(dora(&mut core, mac(1), NOW + 10_000), a);
}

#[test]
fn offers_are_held_so_two_clients_never_share() {
    let mut core = Core::new(cfg(), []);
    let o1 = reply(&send(
        &mut core,
        &req(MessageType::Discover, mac(1), 1),
        NOW,
    ))
    .yiaddr();
    let o2 = reply(&send(
        &mut core,
        &req(MessageType::Discover, mac(2), 1),
        NOW,
    ))
    .yiaddr();
    assert_ne!(o1, o2);
    // Client 2 tries to take client 1's offered address: NAK.
    let mut r = req(MessageType::Request, mac(2), 2);
    r.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    r.opts_mut().insert(DhcpOption::RequestedIpAddress(o1));
    let o = send(&mut core, &r, NOW);
    assert_eq!(reply(&o).opts().msg_type(), Some(MessageType::Nak));
    assert!(o.records.is_empty());
    // After the hold time, the address is free again.
    let o = send(&mut core, &r, NOW + 31);
    assert_eq!(reply(&o).opts().msg_type(), Some(MessageType::Ack));
}

#[test]
fn pool_exhaustion_is_silent_and_release_frees() {
    let mut core = Core::new(cfg(), []);
    let ips: Vec<_> = (1..=4).map(|i| dora(&mut core, mac(i), NOW)).collect();
    let o = send(&mut core, &req(MessageType::Discover, mac(5), 1), NOW);
    assert!(o.reply.is_none());
    assert!(o.log.unwrap().contains("no free address"));
    // Client 2 releases; client 5 gets its address.
    let mut rel = req(MessageType::Release, mac(2), 3);
    rel.set_ciaddr(ips[1]);
    rel.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    let o = send(&mut core, &rel, NOW + 1);
    assert!(o.reply.is_none());
    assert_eq!(o.records[0].state, LeaseState::Released);
    assert_eq!(dora(&mut core, mac(5), NOW + 2), ips[1]);
}

#[test]
fn reservation_honoured_and_protected() {
    let mut core = Core::new(cfg(), []);
    let fixed = Ipv4Addr::new(192, 168, 0, 50);
    assert_eq!(dora(&mut core, mac(0x99), NOW), fixed);
    // Nobody else may have it.
    let mut r = req(MessageType::Request, mac(1), 2);
    r.opts_mut().insert(DhcpOption::RequestedIpAddress(fixed));
    assert_eq!(
        reply(&send(&mut core, &r, NOW)).opts().msg_type(),
        Some(MessageType::Nak)
    );
    // The reserved hostname wins over the client's.
    let mut d = req(MessageType::Discover, mac(0x99), 5);
    d.opts_mut().insert(DhcpOption::Hostname("other".into()));
    let offer = reply(&send(&mut core, &d, NOW));
    assert_eq!(
        offer.opts().get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("fixed".into()))
    );
    assert_eq!(core.hosts_text(NOW), "192.168.0.50 fixed\n");
    // A run-time reservation (labnet vm) applies without a restart.
    core.set_dynamic_reservations(vec![Reservation {
        mac: mac(7),
        ip: Some(Ipv4Addr::new(192, 168, 0, 60)),
        hostname: Some("vm7".into()),
        vm: Some("vm7".into()),
    }]);
    assert_eq!(dora(&mut core, mac(7), NOW), Ipv4Addr::new(192, 168, 0, 60));
}

#[test]
fn init_reboot_renew_rebind_and_wrong_network() {
    let mut core = Core::new(cfg(), []);
    let ip = dora(&mut core, mac(1), NOW);
    // INIT-REBOOT: no server id, ciaddr 0, requested address.
    let mut r = req(MessageType::Request, mac(1), 7);
    r.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    let o = send(&mut core, &r, NOW + 5);
    assert_eq!(reply(&o).opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(o.records[0].expires, NOW + 5 + 3600);
    // RENEWING: ciaddr set, reply unicast to it.
    let mut r = req(MessageType::Request, mac(1), 8);
    r.set_ciaddr(ip);
    let o = send(&mut core, &r, NOW + 100);
    let ack = reply(&o);
    assert_eq!(ack.ciaddr(), ip);
    assert_eq!(
        o.reply.as_ref().unwrap().dest.to_string(),
        format!("{ip}:68")
    );
    // Another client renewing someone else's address: NAK, broadcast.
    let mut r = req(MessageType::Request, mac(2), 9);
    r.set_ciaddr(ip);
    let o = send(&mut core, &r, NOW + 100);
    assert_eq!(reply(&o).opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(
        o.reply.as_ref().unwrap().dest.to_string(),
        "255.255.255.255:68"
    );
    // Moved to another network: authoritative NAK.
    let mut r = req(MessageType::Request, mac(3), 10);
    r.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 5)));
    let nak = reply(&send(&mut core, &r, NOW));
    assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    // SELECTING another server: silently drop our offer.
    let mut r = req(MessageType::Request, mac(4), 11);
    r.opts_mut()
        .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 168, 0, 2)));
    r.opts_mut()
        .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(
            192, 168, 0, 101,
        )));
    assert!(send(&mut core, &r, NOW).reply.is_none());
}

#[test]
fn client_id_is_the_key() {
    let mut core = Core::new(cfg(), []);
    let mut d = req(MessageType::Discover, mac(1), 1);
    d.opts_mut()
        .insert(DhcpOption::ClientIdentifier(b"vm-a".to_vec()));
    let a = reply(&send(&mut core, &d, NOW)).yiaddr();
    // Same MAC, other client id (e.g. a second OS on the same NIC): a different address.
    let mut d2 = req(MessageType::Discover, mac(1), 1);
    d2.opts_mut()
        .insert(DhcpOption::ClientIdentifier(b"vm-b".to_vec()));
    let b = reply(&send(&mut core, &d2, NOW)).yiaddr();
    assert_ne!(a, b);
}

#[test]
fn decline_takes_address_out_of_the_pool() {
    let mut core = Core::new(cfg(), []);
    let ip = dora(&mut core, mac(1), NOW);
    let mut d = req(MessageType::Decline, mac(1), 3);
    d.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    d.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    let o = send(&mut core, &d, NOW);
    assert_eq!(o.records[0].state, LeaseState::Declined);
    assert_ne!(dora(&mut core, mac(1), NOW + 1), ip);
}

#[test]
fn flood_from_one_mac_is_rate_limited() {
    let mut core = Core::new(cfg(), []);
    let d = enc(&req(MessageType::Discover, mac(1), 1));
    let answered = (0..1000).filter(|_| core.handle(&d, NOW).is_ok()).count();
    assert_eq!(answered, 50);
    assert_eq!(core.handle(&d, NOW).err(), Some(Drop::RateLimited));
    // Cycling client identifiers does not get around it.
    let mut other_id = req(MessageType::Discover, mac(1), 1);
    other_id
        .opts_mut()
        .insert(DhcpOption::ClientIdentifier(b"fresh".to_vec()));
    assert_eq!(
        core.handle(&enc(&other_id), NOW).err(),
        Some(Drop::RateLimited)
    );
    // Others are still served.
    assert!(core
        .handle(&enc(&req(MessageType::Discover, mac(2), 1)), NOW)
        .unwrap()
        .reply
        .is_some());
    assert!(core.handle(&d, NOW + 1).is_ok());
}

#[test]
fn malformed_packets_are_dropped() {
    let mut core = Core::new(cfg(), []);
    let good = enc(&req(MessageType::Discover, mac(1), 1));
    assert_eq!(core.handle(&good[..100], NOW).err(), Some(Drop::Short));
    let mut b = good.clone();
    b[0] = 2;
    assert_eq!(core.handle(&b, NOW).err(), Some(Drop::NotRequest));
    let mut b = good.clone();
    b[2] = 200; // absurd hlen
    assert_eq!(core.handle(&b, NOW).err(), Some(Drop::NotEthernet));
    let mut b = good.clone();
    b[236] = 0;
    assert_eq!(core.handle(&b, NOW).err(), Some(Drop::BadMagic));
    // An option claiming 255 bytes at the end of the packet.
    let mut b = good[..240].to_vec();
    b.extend_from_slice(&[53, 1, 1, 12, 255, b'x']);
    let _ = core.handle(&b, NOW);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Random bytes: never a panic; any reply is a well-formed BOOTREPLY ≥ 300 bytes.
    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut core = Core::new(cfg(), []);
        if let Ok(o) = core.handle(&buf, NOW) {
            if let Some(r) = o.reply {
                prop_assert!(r.bytes.len() >= 300);
                prop_assert!(Message::decode(&mut Decoder::new(&r.bytes)).is_ok());
            }
        }
    }

    /// Valid header, random options (absurd lengths, truncation) and random header fields.
    #[test]
    fn random_options_never_panic(
        typ in 0u8..20, ciaddr in any::<u32>(), giaddr in any::<u32>(), flags in any::<u16>(),
        opts in proptest::collection::vec(any::<u8>(), 0..400),
        m in any::<[u8; 6]>(), cut in 0usize..700,
    ) {
        let mut core = Core::new(cfg(), []);
        let mut msg = req(MessageType::Discover, m, 1);
        msg.set_ciaddr(Ipv4Addr::from(ciaddr)).set_giaddr(Ipv4Addr::from(giaddr)).set_flags(Flags::new(flags));
        let mut b = enc(&msg);
        b.truncate(240);
        b.extend_from_slice(&[53, 1, typ]);
        b.extend_from_slice(&opts);
        b.truncate(cut.max(240));
        for _ in 0..3 {
            if let Ok(o) = core.handle(&b, NOW) {
                if let Some(r) = o.reply {
                    prop_assert!(r.bytes.len() >= 300);
                    let d = Message::decode(&mut Decoder::new(&r.bytes)).unwrap();
                    prop_assert_eq!(d.opcode(), Opcode::BootReply);
                }
            }
        }
    }
}

#[test]
fn renewal_without_hostname_keeps_it() {
    let mut core = Core::new(cfg(), []);
    let mut d = req(MessageType::Discover, mac(1), 1);
    d.opts_mut()
        .insert(DhcpOption::Hostname("Web.example".into()));
    let ip = reply(&send(&mut core, &d, NOW)).yiaddr();
    let mut r = req(MessageType::Request, mac(1), 2);
    r.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    r.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    r.opts_mut()
        .insert(DhcpOption::Hostname("Web.example".into()));
    assert_eq!(
        send(&mut core, &r, NOW).records[0].hostname.as_deref(),
        Some("web")
    );
    let mut renew = req(MessageType::Request, mac(1), 3);
    renew.set_ciaddr(ip);
    assert_eq!(
        send(&mut core, &renew, NOW + 60).records[0]
            .hostname
            .as_deref(),
        Some("web")
    );
    assert_eq!(core.hosts_text(NOW + 60), format!("{ip} web\n"));
    assert_eq!(
        core.hosts_text(NOW + 60 + 3600),
        "",
        "expired leases leave the hosts file"
    );
}

/// A VM whose run-time reservation goes away (`labnet vm rm`, a throwaway run's end) is
/// gone: its active lease is released (a record to commit) and its name leaves the hosts.
#[test]
fn a_removed_vm_reservation_releases_its_lease() {
    let mut core = Core::new(cfg(), []);
    let res = |m: u8, vm: &str| Reservation {
        mac: mac(m),
        ip: None,
        hostname: Some(vm.into()),
        vm: Some(vm.into()),
    };
    assert!(core
        .replace_dynamic_reservations(vec![res(7, "vm7"), res(8, "vm8")], NOW)
        .is_empty());
    let ip7 = dora(&mut core, mac(7), NOW);
    let ip8 = dora(&mut core, mac(8), NOW);
    assert!(core.hosts_text(NOW).contains("vm7"));
    let released = core.replace_dynamic_reservations(vec![res(8, "vm8")], NOW + 10);
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].ip, ip7);
    assert_eq!(released[0].state, LeaseState::Released);
    assert_eq!(released[0].expires, NOW + 10);
    assert!(!core.hosts_text(NOW + 10).contains("vm7"));
    assert!(core.hosts_text(NOW + 10).contains(&format!("{ip8} vm8")));
}
