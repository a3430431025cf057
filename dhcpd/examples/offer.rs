//! dhcpd's engine without a socket: a DISCOVER from one MAC gets an OFFER from the embedded
//! default lab's pool, as `labnet dhcpd` would send it on the bridge.
//! `cargo run -p dhcpd --example offer`
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::Ipv4Addr;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = dhcpd::ServerConfig::from_lab(&model::Lab::embedded_default());
    cfg.reservations_dir = None;
    let mut core = dhcpd::core::Core::new(cfg, []);
    let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    let u = Ipv4Addr::UNSPECIFIED;
    let mut discover = Message::new_with_id(0x1234_5678, u, u, u, u, &mac);
    discover.set_opcode(Opcode::BootRequest);
    discover
        .opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    let mut wire = vec![];
    discover.encode(&mut Encoder::new(&mut wire))?;
    let outcome = core
        .handle(&wire, 1_700_000_000)
        .map_err(|e| format!("{e:?}"))?;
    let reply = outcome.reply.ok_or("no reply")?;
    let offer = Message::decode(&mut Decoder::new(&reply.bytes))?;
    println!(
        "{:?} {} for 52:54:00:12:34:56 (server {:?})",
        offer.opts().msg_type(),
        offer.yiaddr(),
        offer.opts().get(dhcproto::v4::OptionCode::ServerIdentifier)
    );
    Ok(())
}
