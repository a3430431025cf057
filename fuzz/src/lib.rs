//! Fuzz targets: one function per parser of input that comes from outside labnet. Each takes
//! arbitrary bytes, must never panic (nor hang, nor grow without bound), and checks what the
//! parser promises about its output.
//!
//! - [`TARGETS`] names them; `corpus/NAME/` holds each one's committed seed corpus, and the
//!   inputs that once crashed it (kept so they stay fixed).
//! - `cargo test -p labnet-fuzz` replays every corpus file through its target (plain build).
//! - `libfuzzer/` is the libFuzzer driver (one binary, target chosen by `LABNET_FUZZ_TARGET`),
//!   built with stable rustc coverage flags; `tests/libfuzzer.rs` builds it and runs every
//!   target for a bounded time (`LABNET_FUZZ_SECS`, default 12) — CI's fuzzing step.
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub mod dns;

/// A fuzz target: arbitrary bytes in, a panic for a finding.
pub type Target = fn(&[u8]);

/// Every target: its name (the corpus directory) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("dhcp", dhcp),
    ("dns_query", dns::query),
    ("dns_upstream", dns::upstream),
    ("monmap", monmap),
    ("keyring", keyring),
    ("lab_toml", lab_toml),
    ("invitation", invitation),
    ("wg_quick", wg_quick),
    ("kernel", kernel),
    ("lease_log", lease_log),
];

/// The function of target `name`.
/// Where targets that need a file (a wg-quick conf, the DNS hosts file) keep it: one
/// directory per process, removed by [`remove_scratch_dir`] once the inputs are replayed.
pub fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("labnet-fuzz-{}", std::process::id()))
}

/// Removes [`scratch_dir`] (call it when no target runs any more).
pub fn remove_scratch_dir() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}

pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Datagrams in one input are separated by this (a sequence of packets drives the DHCP
/// engine through its states).
pub const PACKET_SEPARATOR: &[u8] = b"\n--LF--\n";

fn split_packets(data: &[u8]) -> Vec<&[u8]> {
    let mut out = vec![];
    let mut rest = data;
    while let Some(i) = rest
        .windows(PACKET_SEPARATOR.len())
        .position(|w| w == PACKET_SEPARATOR)
    {
        out.push(&rest[..i]);
        rest = &rest[i + PACKET_SEPARATOR.len()..];
    }
    out.push(rest);
    out
}

fn dhcp_config() -> dhcpd::ServerConfig {
    let server = Ipv4Addr::new(10, 9, 0, 1);
    dhcpd::ServerConfig {
        interface: "br0".into(),
        server_ip: server,
        prefix: 24,
        range_start: Ipv4Addr::new(10, 9, 0, 100),
        range_end: Ipv4Addr::new(10, 9, 0, 103),
        lease_secs: 60,
        routers: vec![server],
        dns_servers: vec![server],
        domain: Some("lab".into()),
        mtu: Some(1500),
        reservations: vec![dhcpd::Reservation {
            mac: [0x52, 0x54, 0, 0, 0, 0x99],
            ip: Some(Ipv4Addr::new(10, 9, 0, 50)),
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

/// DHCP datagrams from lab clients, one after another (a second apart), into the engine.
/// Every reply is a BOOTREPLY of at least 300 bytes that decodes; what the engine holds stays
/// within the pool and the reservation.
pub fn dhcp(data: &[u8]) {
    use dhcproto::{Decodable, Decoder};
    let mut core = dhcpd::core::Core::new(dhcp_config(), []);
    let mut now = 1_700_000_000;
    for p in split_packets(data) {
        // Twice: the second sees the state the first left (offers, leases, flood counter).
        for _ in 0..2 {
            let Ok(o) = core.handle(p, now) else { continue };
            if let Some(r) = o.reply {
                assert!(r.bytes.len() >= 300, "reply of {} bytes", r.bytes.len());
                let m = dhcproto::v4::Message::decode(&mut Decoder::new(&r.bytes))
                    .expect("our reply decodes");
                assert_eq!(m.opcode(), dhcproto::v4::Opcode::BootReply);
            }
        }
        now += 1;
        core.tick(now);
        let h = core.held();
        assert!(
            h.leases <= 5 && h.keys <= h.leases && h.offers <= 5,
            "{h:?}"
        );
    }
    let _ = core.hosts_text(now);
}

/// Text any mountgen input comes as: lossy UTF-8 (the CLI reads files as UTF-8 and says so
/// when they are not; lossy keeps the fuzzer's bytes meaningful).
fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// `ceph mon dump` (JSON, text), `quorum_status`, ceph.conf, mon_host and `fs ls` as kmount
/// and `labnet mount` read them, and the mount plans built from a map that parsed.
pub fn monmap(data: &[u8]) {
    use mountgen::monmap;
    let s = text(data);
    let _ = monmap::parse_json(&s, "fuzz");
    let _ = monmap::parse_text(&s, "fuzz");
    let _ = monmap::parse_conf(&s, "fuzz");
    let _ = monmap::parse_mon_host(&s, "fuzz");
    let _ = monmap::check_fs_exists(&s, "a", "fuzz");
    let _ = monmap::check_fsid(&s);
    let _ = mountgen::addr::parse_addr_or_vec(&s);
    let _ = mountgen::addr::split_mon_host(&s);
    let Ok(map) = monmap::parse(&s, "fuzz") else {
        return;
    };
    assert!(
        !map.mons.is_empty(),
        "a map without monitors parsed: {map:?}"
    );
    let _ = map.minimal_conf(
        map.fsid
            .as_deref()
            .unwrap_or("00000000-0000-0000-0000-000000000000"),
    );
    for syntax in [mountgen::Syntax::New, mountgen::Syntax::Old] {
        for quorum_only in [false, true] {
            let mut req = mountgen::MountRequest::new("fs", Some("a"), syntax);
            req.quorum_only = quorum_only;
            if let Ok(plan) = mountgen::plan::build(&map, &req) {
                let _ = mountgen::render::mount_command(&plan, "/mnt", false);
                let _ = mountgen::render::fstab_line(&plan, "/mnt", false);
                let _ = mountgen::render::systemd_unit(&plan, "/mnt", false);
                let _ = mountgen::render::to_json(&plan, "/mnt", false);
            }
        }
    }
}

/// Keyrings (`ceph auth get`), bare keys, base64: a decoded key encodes back to itself.
pub fn keyring(data: &[u8]) {
    use mountgen::secret;
    let s = text(data);
    let _ = secret::keyring_entities(&s);
    let _ = secret::keyring_secret(&s, "client.fs", "fuzz");
    let _ = secret::secret_from_text(&s, "client.fs", "fuzz");
    if let Ok(k) = mountgen::Secret::from_base64(&s) {
        assert_eq!(
            secret::base64_decode(k.base64()).ok().as_deref(),
            Some(k.raw())
        );
    }
    if let Ok(raw) = secret::base64_decode(&s) {
        assert_eq!(
            secret::base64_decode(&secret::base64_encode(&raw)).ok(),
            Some(raw)
        );
    }
}

/// Whether `v` (a lab TOML document) is safe to hand to the parser here: no `conf` (it would
/// read the file it names) and no `endpoint` that is not an IP:PORT literal (the parser
/// resolves a host name with getaddrinfo, and a fuzzer must never send a name lookup to the
/// machine's resolver). Keys are compared as the toml crate reads them (escapes undone).
fn lab_toml_is_offline(v: &toml::Value) -> bool {
    match v {
        toml::Value::Table(t) => t.iter().all(|(k, v)| match k.as_str() {
            "conf" => false,
            "endpoint" => v
                .as_str()
                .is_none_or(|e| e.parse::<std::net::SocketAddr>().is_ok()),
            _ => lab_toml_is_offline(v),
        }),
        toml::Value::Array(a) => a.iter().all(lab_toml_is_offline),
        _ => true,
    }
}

/// A lab's TOML as `labnet up --config FILE` reads it (documents that would read a file or
/// resolve a name are skipped, see [`lab_toml_is_offline`]).
pub fn lab_toml(data: &[u8]) {
    let s = text(data);
    match toml::from_str::<toml::Value>(&s) {
        Ok(v) if lab_toml_is_offline(&v) => {}
        // Not TOML: the parser stops at the syntax error, before any field is read.
        Err(_) => {}
        Ok(_) => return,
    }
    if let Ok(lab) = netns::config::parse(&s, "fuzz.toml", None) {
        let _ = lab.effective_upstreams();
    }
    let _ = netns::config::parse(&s, "fuzz.toml", Some("fz"));
}

/// A peer invitation as `labnet peer add FILE` reads it (documents with a host-name endpoint
/// are skipped, as for [`lab_toml`]). A valid one round-trips through the file it writes,
/// and adding it to a lab's config either succeeds with a config that parses or names why.
pub fn invitation(data: &[u8]) {
    use model::invitation::{add_peer, remove_peer, Invitation};
    let s = text(data);
    match toml::from_str::<toml::Value>(&s) {
        Ok(v) if lab_toml_is_offline(&v) => {}
        Err(_) => {}
        Ok(_) => return,
    }
    let Ok(inv) = Invitation::parse(&s, "fuzz.invite") else {
        return;
    };
    let again = Invitation::parse(&inv.to_toml(), "again.invite")
        .unwrap_or_else(|e| panic!("an invitation's own file does not parse: {e}"));
    assert_eq!(again, inv, "the invitation changed in its round trip");
    const LAB: &str = "name = \"fz\"\n[bridge]\naddress = \"172.31.250.1/24\"\n";
    if let Ok((text, _)) = add_peer(LAB, "fz.toml", "fz", &inv) {
        let lab = netns::config::parse(&text, "fz.toml", Some("fz"))
            .unwrap_or_else(|e| panic!("add_peer returned a config that does not parse: {e}"));
        assert!(lab.peers.iter().any(|p| p.name == inv.name));
        let back = remove_peer(&text, "fz.toml", "fz", &inv.name)
            .unwrap_or_else(|e| panic!("removing the peer just added failed: {e}"));
        assert!(back.is_some(), "the peer just added is not there to remove");
    }
}

/// Whether a wg-quick conf has no `Endpoint` other than an IP:PORT literal (lines read as
/// the lab config reads them: `#` comments, `KEY = VALUE`, keys without regard to case).
fn wg_quick_is_offline(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.split('#').next().unwrap_or("").trim();
        match line.split_once('=') {
            Some((k, v)) if k.trim().eq_ignore_ascii_case("endpoint") => {
                v.trim().parse::<std::net::SocketAddr>().is_ok()
            }
            _ => true,
        }
    })
}

/// A wg-quick `.conf` named by `uplink.conf`, filling the peer fields of a lab (confs with a
/// host-name Endpoint are skipped: resolving it would query the machine's resolver).
pub fn wg_quick(data: &[u8]) {
    use std::sync::OnceLock;
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    let conf = text(data);
    // The conf is read as UTF-8; lossy text stands in for what the reader would reject.
    if !wg_quick_is_offline(&conf) || std::str::from_utf8(data).is_err() {
        return;
    }
    let path = FILE.get_or_init(|| {
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("wg.conf")
    });
    std::fs::write(path, data).expect("write the conf");
    let toml = format!(
        "name = \"fz\"\n[uplink]\nkind = \"wireguard\"\naddress = \"192.168.20.1/24\"\n\
         private_key_file = \"/nonexistent/fz.key\"\nconf = \"{}\"\n",
        path.display()
    );
    if let Ok(lab) = netns::config::parse(&toml, "fuzz.toml", None) {
        let _ = lab.effective_upstreams();
    }
}

/// A kernel image given to `labnet vm`: bzImage header and payload, the ELF PVH note, and the
/// ELF program headers of files added to the initramfs.
pub fn kernel(data: &[u8]) {
    if let Some((payload, _)) = vm::kernel::bzimage_payload(data) {
        assert!(payload.len() <= data.len());
    }
    let _ = vm::kernel::has_pvh_note(data);
    let _ = vm::initramfs::elf_is_dynamic(data);
}

/// A lab's lease log as `labnet leases` and a starting dhcpd read it (a damaged disk can
/// hold anything): skipped lines are named in order and lie inside the data, and every
/// record read writes back as a line that reads as the same record.
pub fn lease_log(data: &[u8]) {
    use model::lease;
    let Ok(p) = lease::parse_log(data) else {
        return;
    };
    let len = lease::data_len(data);
    let mut last_line = 1;
    for b in &p.bad {
        assert!(b.line > last_line, "line numbers increase: {b:?}");
        assert!(
            b.start < b.end && b.end <= len,
            "{b:?} inside the data ({len})"
        );
        last_line = b.line;
    }
    for r in &p.records {
        let line = lease::encode_record(r);
        let again = lease::parse_record(line.trim_end_matches('\n').as_bytes())
            .unwrap_or_else(|e| panic!("{line:?} does not read back: {e}"));
        assert_eq!(&again, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_that_would_resolve_or_read_are_not_parsed() {
        let ok = |s: &str| lab_toml_is_offline(&toml::from_str(s).unwrap());
        assert!(ok("[uplink]\nendpoint = \"127.0.0.1:51820\"\n"));
        assert!(ok("[uplink]\nendpoint = \"[::1]:51820\"\n"));
        assert!(!ok("[uplink]\nendpoint = \"bounce.example.com:51820\"\n"));
        // An escaped key is still the key `endpoint`.
        assert!(!ok("[uplink]\n\"end\\u0070oint\" = \"h:1\"\n"));
        assert!(!ok("[uplink]\nconf = \"/etc/wireguard/wg0.conf\"\n"));
        assert!(wg_quick_is_offline(
            "[Peer]\nEndpoint = 127.0.0.1:51820 # x\n"
        ));
        assert!(!wg_quick_is_offline("[Peer]\n ENDPOINT=host.test:51820\n"));
    }
}
