//! Lab configuration: one TOML file per lab (`/etc/labnet/LAB.toml`), with an embedded default.
//!
//! This file holds the validated types (what the rest of labnet reads); `parse` reads and
//! checks the text in two passes (serde into raw types, unknown fields are errors, then
//! validation into these types), `load` finds the file, `endpoint` resolves a WireGuard
//! endpoint, `wg_quick` reads a wg-quick `.conf`. Every error names the file and the dotted
//! field and says what was expected, so nothing touches the system until the whole file is
//! known to be good.
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The embedded default lab (isolated, `sepian`, br0 192.168.0.1/24).
pub const DEFAULT_LAB_TOML: &str = include_str!("default-lab.toml");
/// Where `labnet up LAB` looks for `LAB.toml` unless `--config` is given.
pub const CONFIG_DIR: &str = "/etc/labnet";

pub use crate::cidr::{overlaps, Ipv4Cidr};
use crate::wg_key::is_base64_key;

mod endpoint;
mod load;
mod parse;
mod wg_quick;

pub use crate::wg_key::{read_private_key, KeyError};
pub use load::config_dir;
pub use parse::parse;
pub(crate) use parse::{validate_peer, RawPeer, V};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: {field}: {message}")]
    Field {
        file: String,
        field: String,
        message: String,
    },
    #[error("no config for lab {lab:?}: {path} does not exist (the embedded default lab is {default:?}; pass --config FILE)")]
    NoSuchLab {
        lab: String,
        path: String,
        default: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lab {
    /// Lab name = network namespace name (/run/netns/NAME).
    pub name: String,
    /// Where the config came from ("<embedded default>" or a path).
    pub source: String,
    pub bridge: Bridge,
    pub uplink: Uplink,
    pub dhcp: Dhcp,
    pub dns: Dns,
    /// This lab's end of the lab-to-lab tunnels: present with `[peering]` or any `[[peers]]`.
    #[serde(default)]
    pub peering: Option<Peering>,
    /// Other hosts' labs, joined over the peering link (cryptokey routing: each peer's
    /// AllowedIPs is its lab subnet). Subnets are disjoint, from each other and this lab's.
    #[serde(default)]
    pub peers: Vec<Peer>,
}

/// `[peering]`: the WireGuard link (`interface`, its own, not the uplink's) other labs'
/// peers reach this lab on. Created in labnet's namespace (its UDP socket stays on the
/// host's network), moved into the lab, routes to each peer subnet over it; never NAT'ed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peering {
    /// Default `wgp-LAB` (LAB cut to 11 bytes).
    pub interface: String,
    /// UDP port this lab listens on (None: a random one; peers then cannot reach us first).
    pub listen_port: Option<u16>,
    /// Default `STATE_DIR/LAB/peering.key`; made (0600) when missing, never leaves the host.
    pub private_key_file: PathBuf,
    /// HOST:PORT that `labnet peer invite` writes into invitations (`--endpoint` overrides).
    pub endpoint: Option<String>,
    /// The link's MTU (default 1420: 1500 less WireGuard's 80 bytes); TCP MSS is clamped to it.
    pub mtu: u16,
    pub backend: WgBackend,
}

/// One `[[peers]]` entry: another host's lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    /// The other lab's name (unique among peers, not this lab's).
    pub name: String,
    /// Its peering link's public key (44 base64 characters).
    pub public_key: String,
    /// Where its peering link listens (None: it connects to us; WireGuard learns the address).
    pub endpoint: Option<SocketAddr>,
    /// Its bridge subnet, as a network (`192.168.1.0/24`): the peer's AllowedIPs and the route.
    pub subnet: Ipv4Cidr,
    /// Its DNS zone (default `NAME.lab`), forwarded to `dns`.
    pub zone: String,
    /// Its lab DNS server (default: the subnet's first host, where labnet puts the bridge).
    pub dns: Ipv4Addr,
    /// Default 25 s: keeps NAT and conntrack state on the path alive.
    pub persistent_keepalive: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bridge {
    pub name: String,
    pub address: Ipv4Cidr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Uplink {
    /// Isolated lab: no route out.
    None,
    /// WireGuard tunnel to a bounce box; default route via `gateway`.
    Wireguard(Wireguard),
    /// A veth pair to the root namespace, NAT'ed there (like libvirt's default network).
    Host(HostUplink),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WgBackend {
    /// Kernel module when it exists, else userspace.
    Auto,
    Kernel,
    Userspace,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wireguard {
    pub interface: String,
    pub address: Ipv4Cidr,
    pub private_key_file: PathBuf,
    pub peer_public_key: String,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<Ipv4Cidr>,
    pub persistent_keepalive: Option<u16>,
    pub listen_port: Option<u16>,
    /// The peer's tunnel address: the lab's default route points here.
    pub gateway: Ipv4Addr,
    pub backend: WgBackend,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostUplink {
    pub host_interface: String,
    pub lab_interface: String,
    pub host_address: Ipv4Cidr,
    pub lab_address: Ipv4Cidr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dhcp {
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_secs: u32,
    pub reservations: Vec<Reservation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    pub mac: [u8; 6],
    pub ip: Option<Ipv4Addr>,
    pub hostname: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    pub zone: String,
    pub upstreams: Vec<SocketAddr>,
    pub cache_size: usize,
    pub timeout_ms: u64,
}

/// Parses a MAC address written as six hex pairs separated by `:` or `-`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, p) in parts.iter().enumerate() {
        if p.len() != 2 {
            return None;
        }
        mac[i] = u8::from_str_radix(p, 16).ok()?;
    }
    Some(mac)
}

/// Linux interface names: 1..=15 bytes, no '/', whitespace or ':'.
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

/// Lab names become netns names, file names and unit instance names.
pub fn valid_lab_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !s.starts_with('-')
}

impl Lab {
    /// Things in the config that work but are probably not meant: a reservation inside the
    /// dynamic pool (dhcpd then keeps that address out of the pool for everyone else).
    pub fn warnings(&self) -> Vec<String> {
        let pool = u32::from(self.dhcp.range_start)..=u32::from(self.dhcp.range_end);
        self.dhcp
            .reservations
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let ip = r.ip?;
                pool.contains(&u32::from(ip)).then(|| {
                    format!(
                        "{}: dhcp.reservations[{i}].ip: {ip} is inside the dynamic pool {}-{}; \
                         better pick an address outside it",
                        self.source, self.dhcp.range_start, self.dhcp.range_end
                    )
                })
            })
            .collect()
    }

    /// DNS upstreams to use: the configured ones, else the WireGuard peer (seed 000's
    /// systemd-resolved on the bounce box).
    pub fn effective_upstreams(&self) -> Vec<SocketAddr> {
        if !self.dns.upstreams.is_empty() {
            return self.dns.upstreams.clone();
        }
        match &self.uplink {
            Uplink::Wireguard(wg) => vec![SocketAddr::from((wg.gateway, 53))],
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::redact_keys;
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "lab.toml", None).unwrap_err().to_string()
    }

    #[test]
    fn duplicate_reservations_name_both_entries() {
        let lab = |res: &str| format!("name = \"x\"\n{res}");
        let r = |mac: &str, ip: &str, h: &str| {
            format!("[[dhcp.reservations]]\nmac = \"{mac}\"\nip = \"{ip}\"\nhostname = \"{h}\"\n")
        };
        let a = r("52:54:00:00:00:01", "192.168.0.10", "vm1");
        assert_eq!(
            err(&lab(&(a.clone() + &r("52:54:00:00:00:01", "192.168.0.11", "vm2")))),
            "lab.toml: dhcp.reservations[1].mac: 52:54:00:00:00:01 is also the MAC of dhcp.reservations[0]"
        );
        assert_eq!(
            err(&lab(&(a.clone() + &r("52:54:00:00:00:02", "192.168.0.10", "vm2")))),
            "lab.toml: dhcp.reservations[1].ip: 192.168.0.10 is also reserved by dhcp.reservations[0] (mac 52:54:00:00:00:01)"
        );
        assert_eq!(
            err(&lab(&(a.clone() + &r("52:54:00:00:00:02", "192.168.0.11", "VM1")))),
            "lab.toml: dhcp.reservations[1].hostname: \"VM1\" is also the hostname of dhcp.reservations[0] (mac 52:54:00:00:00:01)"
        );
        let ok = parse(
            &lab(&(a + &r("52:54:00:00:00:02", "192.168.0.150", "vm2"))),
            "lab.toml",
            None,
        )
        .unwrap();
        // .150 is inside the default pool (.100-.199): warned, not refused.
        assert_eq!(
            ok.warnings(),
            ["lab.toml: dhcp.reservations[1].ip: 192.168.0.150 is inside the dynamic pool 192.168.0.100-192.168.0.199; better pick an address outside it"]
        );
    }

    #[test]
    fn endpoint_errors_say_what_is_wrong() {
        let wg = |ep: &str| {
            format!("name = \"x\"\n[uplink]\nkind = \"wireguard\"\naddress = \"192.168.20.1/24\"\nprivate_key_file = \"/k\"\npeer_public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nendpoint = \"{ep}\"\n")
        };
        assert_eq!(
            err(&wg("bounce")),
            "lab.toml: uplink.endpoint: expected HOST:PORT of the bounce box, got \"bounce\""
        );
        // `localhost` resolves from /etc/hosts, without any DNS traffic.
        let lab = parse(&wg("localhost:51820"), "lab.toml", None).unwrap();
        let Uplink::Wireguard(w) = lab.uplink else {
            panic!()
        };
        assert_eq!(w.endpoint, Some("127.0.0.1:51820".parse().unwrap()));
    }

    #[test]
    fn embedded_default_is_seed_layout() {
        let lab = Lab::embedded_default();
        assert_eq!(lab.name, "sepian");
        assert_eq!(lab.bridge.name, "br0");
        assert_eq!(lab.bridge.address.to_string(), "192.168.0.1/24");
        assert_eq!(lab.uplink, Uplink::None);
        assert_eq!(lab.dhcp.range_start, Ipv4Addr::new(192, 168, 0, 100));
        assert_eq!(lab.dhcp.range_end, Ipv4Addr::new(192, 168, 0, 199));
    }

    #[test]
    fn unknown_field_names_file_and_field() {
        let e = err("name = \"x\"\n[bridge]\nadress = \"1.2.3.4/24\"\n");
        assert!(e.starts_with("lab.toml: "), "{e}");
        assert!(e.contains("adress"), "{e}");
    }

    #[test]
    fn bad_bridge_address() {
        assert_eq!(
            err("name = \"x\"\n[bridge]\naddress = \"192.168.0.1\"\n"),
            "lab.toml: bridge.address: expected an IPv4 address with prefix, like 192.168.0.1/24, got \"192.168.0.1\""
        );
    }

    #[test]
    fn long_interface_name() {
        assert_eq!(
            err("name = \"x\"\n[bridge]\nname = \"averyveryverylongbridge\"\n"),
            "lab.toml: bridge.name: \"averyveryverylongbridge\" is not a valid interface name (1 to 15 bytes, no '/', ':' or spaces)"
        );
    }

    #[test]
    fn dhcp_range_outside_subnet() {
        assert_eq!(
            err("name = \"x\"\n[dhcp]\nrange_start = \"10.0.0.5\"\n"),
            "lab.toml: dhcp.range_start: 10.0.0.5 is not a host address in the bridge subnet 192.168.0.0/24"
        );
    }

    #[test]
    fn dhcp_range_reversed() {
        assert_eq!(
            err("name = \"x\"\n[dhcp]\nrange_start = \"192.168.0.150\"\nrange_end = \"192.168.0.120\"\n"),
            "lab.toml: dhcp.range_end: 192.168.0.120 is below dhcp.range_start 192.168.0.150"
        );
    }

    #[test]
    fn bad_reservation_mac() {
        assert_eq!(
            err("name = \"x\"\n[[dhcp.reservations]]\nmac = \"52:54:00\"\n"),
            "lab.toml: dhcp.reservations[0].mac: expected a MAC like 52:54:00:12:34:56, got \"52:54:00\""
        );
    }

    #[test]
    fn unknown_uplink_kind() {
        assert_eq!(
            err("name = \"x\"\n[uplink]\nkind = \"vpn\"\n"),
            "lab.toml: uplink.kind: expected \"none\", \"wireguard\" or \"host\", got \"vpn\""
        );
    }

    #[test]
    fn wireguard_needs_key_file_and_valid_peer_key() {
        assert_eq!(
            err("name = \"x\"\n[uplink]\nkind = \"wireguard\"\naddress = \"192.168.20.1/24\"\n"),
            "lab.toml: uplink.private_key_file: missing; expected the path of a file holding the private key (chmod 600)"
        );
        assert_eq!(
            err("name = \"x\"\n[uplink]\nkind = \"wireguard\"\naddress = \"192.168.20.1/24\"\nprivate_key_file = \"/k\"\npeer_public_key = \"abc\"\n"),
            "lab.toml: uplink.peer_public_key: expected a WireGuard public key: 44 base64 characters ending in '='"
        );
    }

    #[test]
    fn wireguard_gateway_defaults_to_peer_of_seed() {
        let lab = parse(
            "name = \"x\"\n[uplink]\nkind = \"wireguard\"\naddress = \"192.168.20.1/24\"\nprivate_key_file = \"/k\"\npeer_public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\nendpoint = \"127.0.0.1:51820\"\n",
            "f", None,
        )
        .unwrap();
        let Uplink::Wireguard(wg) = &lab.uplink else {
            panic!()
        };
        assert_eq!(wg.gateway, Ipv4Addr::new(192, 168, 20, 2));
        assert_eq!(wg.interface, "wg-x");
        assert_eq!(
            lab.effective_upstreams(),
            vec!["192.168.20.2:53".parse().unwrap()]
        );
    }

    #[test]
    fn lab_name_mismatch() {
        assert_eq!(
            parse("name = \"a\"\n", "f.toml", Some("b"))
                .unwrap_err()
                .to_string(),
            "f.toml: name: the file names lab \"a\" but lab \"b\" was asked for"
        );
    }

    #[test]
    fn bad_upstream() {
        assert_eq!(
            err("name = \"x\"\n[dns]\nupstreams = [\"resolver\"]\n"),
            "lab.toml: dns.upstreams[0]: expected an IP address or IP:PORT, got \"resolver\""
        );
    }

    #[test]
    fn no_error_echoes_a_key() {
        const KEY: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
        let base = "name = \"x\"\n[uplink]\nkind = \"wireguard\"\naddress = \"192.168.20.1/24\"\n";
        let peer = "peer_public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n";
        for text in [
            format!("{base}{peer}private_key = \"{KEY}\"\n"),
            format!("{base}{peer}private_key_file = {KEY}\n"),
            format!("{base}{peer}private_key_file = \"/k\"\npersistent_keepalive = \"{KEY}\"\n"),
            format!("{base}{peer}private_key_file = \"/k\"\npreshared_key = \"{KEY}\"\n"),
            format!("{base}{peer}private_key_file = \"/k\"\n{KEY}\n"),
        ] {
            let e = err(&text);
            assert!(!e.contains(&KEY[..20]), "{e}");
            assert!(e.starts_with("lab.toml: line "), "{e}");
        }
        // The key pasted as the key file's path.
        let lab = parse(
            &format!("{base}{peer}private_key_file = \"{KEY}\"\nendpoint = \"127.0.0.1:51820\"\n"),
            "lab.toml",
            None,
        )
        .unwrap();
        let e = lab.check_files().unwrap_err().to_string();
        assert!(
            !e.contains(&KEY[..20]) && e.contains("looks like a key"),
            "{e}"
        );
        // Long paths are not keys.
        assert_eq!(
            redact_keys("/a/very/long/path/that/goes/on/and/on/and/on"),
            "/a/very/long/path/that/goes/on/and/on/and/on"
        );
        assert_eq!(
            redact_keys(&format!("string \"{KEY}\", expected")),
            "string \"<redacted>\", expected"
        );
    }

    #[test]
    fn key_file_permissions_checked() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("wg.key");
        std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!("name = \"x\"\n[uplink]\nkind = \"wireguard\"\naddress = \"192.168.20.1/24\"\nprivate_key_file = \"{}\"\npeer_public_key = \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"\n", key.display());
        let lab = parse(&text, "f.toml", None).unwrap();
        let e = lab.check_files().unwrap_err().to_string();
        assert!(e.starts_with("f.toml: uplink.private_key_file: "), "{e}");
        assert!(e.contains("readable by group or others (mode 644)"), "{e}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        lab.check_files().unwrap();
        std::fs::write(&key, "nonsense\n").unwrap();
        let e = lab.check_files().unwrap_err().to_string();
        assert!(e.contains("does not hold a WireGuard key"), "{e}");
    }

    #[test]
    fn wg_quick_conf_fills_fields_and_refuses_inline_key() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("wg.conf");
        std::fs::write(&conf, "[Interface]\nAddress = 192.168.20.1/24\n\n[Peer]\nPublicKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nEndpoint = 127.0.0.1:51820\nAllowedIPs = 0.0.0.0/0\nPersistentKeepalive = 25\n").unwrap();
        let text = format!("name = \"x\"\n[uplink]\nkind = \"wireguard\"\nconf = \"{}\"\nprivate_key_file = \"/k\"\n", conf.display());
        let lab = parse(&text, "f.toml", None).unwrap();
        let Uplink::Wireguard(wg) = &lab.uplink else {
            panic!()
        };
        assert_eq!(wg.address.to_string(), "192.168.20.1/24");
        assert_eq!(wg.persistent_keepalive, Some(25));
        assert_eq!(wg.endpoint, Some("127.0.0.1:51820".parse().unwrap()));
        std::fs::write(
            &conf,
            "[Interface]\nPrivateKey = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        )
        .unwrap();
        let e = parse(&text, "f.toml", None).unwrap_err().to_string();
        assert!(
            e.contains("uplink.conf") && e.contains("PrivateKey inline is refused"),
            "{e}"
        );
    }
    const KB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb=";
    const KC: &str = "ccccccccccccccccccccccccccccccccccccccccccc=";

    fn peer(name: &str, key: &str, subnet: &str) -> String {
        format!("[[peers]]\nname = \"{name}\"\npublic_key = \"{key}\"\nendpoint = \"10.99.0.2:51821\"\nsubnet = \"{subnet}\"\n")
    }

    #[test]
    fn peers_parse_with_defaults_golden() {
        let text = format!(
            "name = \"laba\"\n[peering]\nlisten_port = 51820\nendpoint = \"10.99.0.1:51820\"\n{}{}zone = \"ceph.example\"\ndns = \"10.1.0.53\"\npersistent_keepalive = 0\n",
            peer("labb", KB, "192.168.1.1/24"),
            peer("labc", KC, "10.1.0.0/16"),
        );
        let lab = parse(&text, "laba.toml", None).unwrap();
        let p = lab.peering.as_ref().unwrap();
        assert_eq!(p.interface, "wgp-laba");
        assert_eq!(p.mtu, 1420);
        assert!(p.private_key_file.ends_with("laba/peering.key"));
        // The subnet is kept as its network; zone and dns default from name and subnet.
        assert_eq!(lab.peers[0].subnet.to_string(), "192.168.1.0/24");
        assert_eq!(lab.peers[0].zone, "labb.lab");
        assert_eq!(lab.peers[0].dns, Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(lab.peers[0].persistent_keepalive, Some(25));
        assert_eq!(lab.peers[1].persistent_keepalive, None);
        let shown = serde_json::json!({"peering": {"interface": p.interface, "listen_port": p.listen_port, "endpoint": p.endpoint, "mtu": p.mtu, "backend": p.backend}, "peers": lab.peers});
        testkit::golden!(
            "peers-laba.json",
            &(serde_json::to_string_pretty(&shown).unwrap() + "\n")
        );
        // No [peering] and no peers: no peering link.
        assert_eq!(parse("name = \"x\"\n", "f", None).unwrap().peering, None);
        // Peers without [peering]: the link with defaults (a random port).
        let lab = parse(
            &format!("name = \"x\"\n{}", peer("labb", KB, "192.168.1.0/24")),
            "f",
            None,
        )
        .unwrap();
        assert_eq!(lab.peering.unwrap().listen_port, None);
    }

    #[test]
    fn peering_key_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("peering.key");
        let text = format!(
            "name = \"x\"\n[peering]\nprivate_key_file = \"{}\"\n",
            key.display()
        );
        let lab = parse(&text, "f.toml", None).unwrap();
        // Missing: fine, labnet makes it.
        lab.check_files().unwrap();
        std::fs::write(&key, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = lab.check_files().unwrap_err().to_string();
        assert!(
            e.starts_with("f.toml: peering.private_key_file: ") && e.contains("(mode 640)"),
            "{e}"
        );
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        lab.check_files().unwrap();
    }

    #[test]
    fn overlapping_peer_subnets_name_both_labs() {
        let two = |a: &str, b: &str| {
            err(&format!(
                "name = \"laba\"\n{}{}",
                peer("labb", KB, a),
                peer("labc", KC, b)
            ))
        };
        assert_eq!(
            two("10.1.1.0/24", "10.1.0.0/16"),
            "lab.toml: peers[1].subnet: 10.1.0.0/16 of lab \"labc\" overlaps 10.1.1.0/24 of lab \"labb\" (peers[0].subnet); lab subnets must be disjoint"
        );
        assert_eq!(
            err(&format!("name = \"laba\"\n{}", peer("labb", KB, "192.168.0.128/25"))),
            "lab.toml: peers[0].subnet: 192.168.0.128/25 of lab \"labb\" overlaps the bridge subnet 192.168.0.0/24 of this lab \"laba\" (bridge.address); lab subnets must be disjoint"
        );
        assert_eq!(
            err(&format!("name = \"laba\"\n[uplink]\nkind = \"host\"\n{}", peer("labb", KB, "10.253.0.0/24"))),
            "lab.toml: peers[0].subnet: 10.253.0.0/24 of lab \"labb\" overlaps the uplink subnet 10.253.0.0/30 of this lab \"laba\" (uplink.lab_address); lab subnets must be disjoint"
        );
        // Disjoint neighbours are fine.
        let ok = format!(
            "name = \"laba\"\n{}{}",
            peer("labb", KB, "192.168.1.0/24"),
            peer("labc", KC, "192.168.2.0/24")
        );
        assert_eq!(parse(&ok, "f", None).unwrap().peers.len(), 2);
    }

    #[test]
    fn bad_peer_fields_are_named() {
        let lab = |p: &str| err(&format!("name = \"laba\"\n{p}"));
        assert_eq!(
            lab(&(peer("labb", KB, "192.168.1.0/24") + &peer("labb", KC, "192.168.2.0/24"))),
            "lab.toml: peers[1].name: \"labb\" is also the name of peers[0]"
        );
        assert_eq!(
            lab(&(peer("labb", KB, "192.168.1.0/24") + &peer("labc", KB, "192.168.2.0/24"))),
            "lab.toml: peers[1].public_key: is also the public key of peers[0] (lab \"labb\")"
        );
        assert_eq!(
            lab(&peer("laba", KB, "192.168.1.0/24")),
            "lab.toml: peers[0].name: \"laba\" is this lab's own name; a peer is another host's lab"
        );
        assert_eq!(
            lab(&peer("labb", "xyz", "192.168.1.0/24")),
            "lab.toml: peers[0].public_key: expected a WireGuard public key: 44 base64 characters ending in '='"
        );
        assert_eq!(
            lab(&peer("labb", KB, "192.168.1.0")),
            "lab.toml: peers[0].subnet: expected an IPv4 address with prefix, like 192.168.0.1/24, got \"192.168.1.0\""
        );
        assert_eq!(
            lab(&(peer("labb", KB, "192.168.1.0/24") + "dns = \"192.168.2.1\"\n")),
            "lab.toml: peers[0].dns: 192.168.2.1 is not a host address in the peer's subnet 192.168.1.0/24"
        );
        assert_eq!(
            lab(&(peer("labb", KB, "192.168.1.0/24") + "zone = \"lab\"\n")),
            "lab.toml: peers[0].zone: \"lab\" is this lab's own zone (dns.zone)"
        );
        assert_eq!(
            lab(&peer("labb", KB, "192.168.1.0/24").replace("10.99.0.2:51821", "host")),
            "lab.toml: peers[0].endpoint: expected HOST:PORT of the peer lab's host, got \"host\""
        );
        assert_eq!(
            lab("[peering]\nmtu = 100\n"),
            "lab.toml: peering.mtu: 100 is out of range; expected 576 to 9000 (default 1420)"
        );
        assert_eq!(
            lab("[peering]\ninterface = \"br0\"\n"),
            "lab.toml: peering.interface: \"br0\" is already the bridge's or the uplink's name"
        );
        assert_eq!(
            lab("[peering]\nendpoint = \"10.0.0.1\"\n"),
            "lab.toml: peering.endpoint: expected HOST:PORT where peers reach this lab, got \"10.0.0.1\""
        );
        assert!(lab("[peering]\nport = 1\n").contains("unknown field `port`"));
    }
}
