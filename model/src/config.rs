//! Lab configuration: one TOML file per lab (`/etc/labnet/LAB.toml`), with an embedded default.
//!
//! Parsing happens in two passes: serde reads the raw text (unknown fields are errors), then
//! [`RawLab::validate`] checks every value and turns it into typed fields. Every error names the
//! file and the dotted field and says what was expected, so nothing touches the system until
//! the whole file is known to be good.
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

mod wg_quick;
pub use crate::wg_key::{read_private_key, KeyError};

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

// ---------- raw (as written) ----------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    name: Option<String>,
    bridge: Option<RawBridge>,
    uplink: Option<RawUplink>,
    dhcp: Option<RawDhcp>,
    dns: Option<RawDns>,
    peering: Option<RawPeering>,
    peers: Option<Vec<RawPeer>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeering {
    interface: Option<String>,
    listen_port: Option<u16>,
    private_key_file: Option<String>,
    endpoint: Option<String>,
    mtu: Option<u16>,
    backend: Option<String>,
}

/// One `[[peers]]` entry as written; also the body of an invitation file
/// ([`crate::invitation::Invitation`]), so both are validated by [`validate_peer`].
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPeer {
    pub(crate) name: Option<String>,
    pub(crate) public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) endpoint: Option<String>,
    pub(crate) subnet: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) zone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) persistent_keepalive: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    name: Option<String>,
    address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    kind: Option<String>,
    // wireguard
    interface: Option<String>,
    address: Option<String>,
    private_key_file: Option<String>,
    peer_public_key: Option<String>,
    endpoint: Option<String>,
    allowed_ips: Option<Vec<String>>,
    persistent_keepalive: Option<u16>,
    listen_port: Option<u16>,
    gateway: Option<String>,
    conf: Option<String>,
    backend: Option<String>,
    // host
    host_interface: Option<String>,
    lab_interface: Option<String>,
    host_address: Option<String>,
    lab_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDhcp {
    range_start: Option<String>,
    range_end: Option<String>,
    lease_secs: Option<u32>,
    reservations: Option<Vec<RawReservation>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReservation {
    mac: String,
    ip: Option<String>,
    hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    zone: Option<String>,
    upstreams: Option<Vec<String>>,
    cache_size: Option<usize>,
    timeout_ms: Option<u64>,
}

// ---------- validated ----------

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

/// Where lab configs live: `LABNET_CONFIG_DIR`, else [`CONFIG_DIR`].
pub fn config_dir() -> PathBuf {
    std::env::var_os("LABNET_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CONFIG_DIR))
}

impl Lab {
    /// The embedded default lab.
    pub fn embedded_default() -> Lab {
        parse(DEFAULT_LAB_TOML, "<embedded default>", None).expect("embedded default lab is valid")
    }

    /// Loads a lab: `--config FILE` if given, else `/etc/labnet/LAB.toml`, else (for the
    /// default lab name or no name) the embedded default.
    pub fn load(lab: Option<&str>, config: Option<&Path>) -> Result<Lab, ConfigError> {
        let dir = config_dir();
        if let Some(path) = config {
            return load_file(path, lab);
        }
        let default = Lab::embedded_default();
        let name = lab.unwrap_or(&default.name);
        let path = dir.join(format!("{name}.toml"));
        if path.exists() {
            return load_file(&path, Some(name));
        }
        // A lab brought up with `--config FILE`: later commands find that file through the
        // lab's state record, so `labnet leases LAB` works without repeating --config.
        if let Some(source) = running_lab_source(name) {
            return load_file(&source, Some(name));
        }
        if name == default.name {
            return Ok(default);
        }
        Err(ConfigError::NoSuchLab {
            lab: name.to_string(),
            path: path.display().to_string(),
            default: default.name,
        })
    }

    /// Checks that need the file system (key file present, not group/other readable).
    pub fn check_files(&self) -> Result<(), ConfigError> {
        // The peering key is made by labnet when missing; one that exists must be private.
        if let Some(p) = &self.peering {
            if let Ok(meta) = std::fs::metadata(&p.private_key_file) {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(ConfigError::Field {
                        file: self.source.clone(),
                        field: "peering.private_key_file".into(),
                        message: format!(
                            "{} is readable by group or others (mode {:o}); run chmod 600 on it",
                            p.private_key_file.display(),
                            meta.permissions().mode() & 0o777
                        ),
                    });
                }
            }
        }
        if let Uplink::Wireguard(wg) = &self.uplink {
            let f = &wg.private_key_file;
            let field = "uplink.private_key_file".to_string();
            let meta = std::fs::metadata(f).map_err(|e| ConfigError::Field {
                file: self.source.clone(),
                field: field.clone(),
                message: if is_base64_key(&f.display().to_string()) {
                    // The key itself where its file's path belongs: not echoed.
                    format!(
                        "{e}; the value looks like a key, not a path (name the file holding it)"
                    )
                } else {
                    format!("cannot read {}: {e}", f.display())
                },
            })?;
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(ConfigError::Field {
                    file: self.source.clone(),
                    field,
                    message: format!(
                        "{} is readable by group or others (mode {:o}); run chmod 600 on it",
                        f.display(),
                        meta.permissions().mode() & 0o777
                    ),
                });
            }
            read_private_key(f).map_err(|e| ConfigError::Field {
                file: self.source.clone(),
                field: "uplink.private_key_file".into(),
                message: e.to_string(),
            })?;
        }
        Ok(())
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

/// The config file a running lab was built from, per /run/labnet/LAB.json.
fn running_lab_source(lab: &str) -> Option<PathBuf> {
    let state = crate::state::LabState::load(lab).ok()??;
    let source = PathBuf::from(state.config?.source);
    source.is_file().then_some(source)
}

fn load_file(path: &Path, lab: Option<&str>) -> Result<Lab, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let mut parsed = parse(&text, &file, lab)?;
    // Absolute, so the lab's state record leads later commands back to this file.
    if let Ok(abs) = std::fs::canonicalize(path) {
        parsed.source = abs.display().to_string();
    }
    Ok(parsed)
}

/// A TOML error as `line L, column C: MESSAGE` and, under it, the line with a caret under
/// the bad part (like the toml crate's own message), key-shaped tokens of that line
/// redacted: it may hold a key pasted where it does not belong (`private_key = "…"`).
fn syntax_message(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim_end().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let before = &text[..start];
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            let col = before.len() - line_start + 1;
            let src = text[line_start..].lines().next().unwrap_or("");
            let width = span
                .end
                .saturating_sub(span.start)
                .clamp(1, src.len().saturating_sub(col - 1).max(1));
            let num = line.to_string();
            let pad = " ".repeat(num.len());
            format!(
                "line {line}, column {col}: {}\n{pad} |\n{num} | {}\n{pad} | {}{}",
                redact_keys(&message),
                redact_keys(src),
                " ".repeat(src[..(col - 1).min(src.len())].chars().count()),
                "^".repeat(width)
            )
        }
        None => redact_keys(&message),
    }
}

/// `text` with every key-shaped token (38 or more base64 characters ending in `=` padding:
/// WireGuard and cephx keys) replaced by `<redacted>`; serde quotes a bad value in its message.
fn redact_keys(text: &str) -> String {
    let b = text.as_bytes();
    let is_b64 = |c: u8| c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
    let (mut out, mut i) = (String::with_capacity(text.len()), 0);
    while i < b.len() {
        let start = i;
        while i < b.len() && is_b64(b[i]) {
            i += 1;
        }
        let run = i - start;
        let mut end = i;
        while end < b.len() && b[end] == b'=' && end - i < 2 {
            end += 1;
        }
        if run >= 38 && end > i {
            out.push_str("<redacted>");
            i = end;
        } else {
            out.push_str(&text[start..i]);
            if let Some(ch) = text[i..].chars().next() {
                out.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    out
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
}

/// Parses and validates a lab's TOML. `lab` (from the command line) overrides a missing name.
pub fn parse(text: &str, file: &str, lab: Option<&str>) -> Result<Lab, ConfigError> {
    let raw: RawLab = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_string(),
        message: syntax_message(&e, text),
    })?;
    raw.validate(file, lab)
}

pub(crate) struct V<'a> {
    pub(crate) file: &'a str,
}

impl V<'_> {
    pub(crate) fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Field {
            file: self.file.to_string(),
            field: field.to_string(),
            message: message.into(),
        }
    }
    fn cidr(
        &self,
        field: &str,
        v: Option<&String>,
        default: Option<&str>,
    ) -> Result<Ipv4Cidr, ConfigError> {
        let s = match (v, default) {
            (Some(s), _) => s.as_str(),
            (None, Some(d)) => d,
            (None, None) => {
                return Err(self.err(
                    field,
                    "missing; expected an IPv4 address with prefix, like 192.168.20.1/24",
                ))
            }
        };
        let c = Ipv4Cidr::parse(s).ok_or_else(|| {
            self.err(
                field,
                format!("expected an IPv4 address with prefix, like 192.168.0.1/24, got {s:?}"),
            )
        })?;
        if c.prefix == 0 || c.prefix > 30 {
            return Err(self.err(
                field,
                format!(
                    "prefix /{} leaves no room for hosts; expected /1 to /30",
                    c.prefix
                ),
            ));
        }
        Ok(c)
    }
    fn ip(&self, field: &str, s: &str) -> Result<Ipv4Addr, ConfigError> {
        s.trim().parse().map_err(|_| {
            self.err(
                field,
                format!("expected an IPv4 address like 192.168.0.100, got {s:?}"),
            )
        })
    }
    fn ifname(&self, field: &str, s: &str) -> Result<String, ConfigError> {
        if !valid_ifname(s) {
            return Err(self.err(
                field,
                format!(
                    "{s:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or spaces)"
                ),
            ));
        }
        Ok(s.to_string())
    }
}

impl RawLab {
    fn validate(self, file: &str, lab: Option<&str>) -> Result<Lab, ConfigError> {
        let v = V { file };
        let name = match (self.name, lab) {
            (Some(n), Some(l)) if n != l => {
                return Err(v.err(
                    "name",
                    format!("the file names lab {n:?} but lab {l:?} was asked for"),
                ))
            }
            (Some(n), _) => n,
            (None, Some(l)) => l.to_string(),
            (None, None) => {
                return Err(v.err(
                    "name",
                    "missing; expected the lab (namespace) name, like \"sepian\"",
                ))
            }
        };
        if !valid_lab_name(&name) {
            return Err(v.err(
                "name",
                format!(
                    "{name:?} is not a valid lab name (letters, digits, '-' and '_', at most 32)"
                ),
            ));
        }

        let rb = self.bridge.unwrap_or(RawBridge {
            name: None,
            address: None,
        });
        let bridge = Bridge {
            name: v.ifname("bridge.name", rb.name.as_deref().unwrap_or("br0"))?,
            address: v.cidr(
                "bridge.address",
                rb.address.as_ref(),
                Some("192.168.0.1/24"),
            )?,
        };

        let uplink = match self.uplink {
            None => Uplink::None,
            Some(u) => validate_uplink(&v, u, &name, &bridge)?,
        };

        let rd = self.dhcp.unwrap_or(RawDhcp {
            range_start: None,
            range_end: None,
            lease_secs: None,
            reservations: None,
        });
        let net = bridge.address;
        let default_start = Ipv4Addr::from(u32::from(net.network()) + 100.min(!net.mask() - 1));
        let range_start = match &rd.range_start {
            Some(s) => v.ip("dhcp.range_start", s)?,
            None => default_start,
        };
        let range_end = match &rd.range_end {
            Some(s) => v.ip("dhcp.range_end", s)?,
            None => {
                Ipv4Addr::from((u32::from(range_start) + 99).min(u32::from(net.broadcast()) - 1))
            }
        };
        for (field, ip) in [
            ("dhcp.range_start", range_start),
            ("dhcp.range_end", range_end),
        ] {
            if !net.contains(ip) || ip == net.network() || ip == net.broadcast() {
                return Err(v.err(
                    field,
                    format!(
                        "{ip} is not a host address in the bridge subnet {}/{}",
                        net.network(),
                        net.prefix
                    ),
                ));
            }
        }
        if u32::from(range_end) < u32::from(range_start) {
            return Err(v.err(
                "dhcp.range_end",
                format!("{range_end} is below dhcp.range_start {range_start}"),
            ));
        }
        if (u32::from(range_start)..=u32::from(range_end)).contains(&u32::from(net.addr)) {
            return Err(v.err(
                "dhcp.range_start",
                format!(
                    "the range {range_start}-{range_end} contains the bridge address {}",
                    net.addr
                ),
            ));
        }
        let lease_secs = rd.lease_secs.unwrap_or(43200);
        if lease_secs < 60 {
            return Err(v.err(
                "dhcp.lease_secs",
                format!("{lease_secs} is too short; expected at least 60 seconds"),
            ));
        }
        let mut reservations = Vec::new();
        for (i, r) in rd.reservations.unwrap_or_default().into_iter().enumerate() {
            let f = |k: &str| format!("dhcp.reservations[{i}].{k}");
            let mac = parse_mac(&r.mac).ok_or_else(|| {
                v.err(
                    &f("mac"),
                    format!("expected a MAC like 52:54:00:12:34:56, got {:?}", r.mac),
                )
            })?;
            let ip = match &r.ip {
                Some(s) => {
                    let ip = v.ip(&f("ip"), s)?;
                    if !net.contains(ip) || ip == net.addr {
                        return Err(v.err(
                            &f("ip"),
                            format!("{ip} is not a free host address in the bridge subnet"),
                        ));
                    }
                    Some(ip)
                }
                None => None,
            };
            // Two entries for one MAC, address or name: dhcpd could honour only one of them.
            let fmt_mac = |m: &[u8; 6]| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            };
            for (j, o) in reservations.iter().enumerate() {
                let o: &Reservation = o;
                let other = format!("dhcp.reservations[{j}]");
                if o.mac == mac {
                    return Err(v.err(
                        &f("mac"),
                        format!("{} is also the MAC of {other}", fmt_mac(&mac)),
                    ));
                }
                if ip.is_some() && o.ip == ip {
                    return Err(v.err(
                        &f("ip"),
                        format!(
                            "{} is also reserved by {other} (mac {})",
                            ip.map(|i| i.to_string()).unwrap_or_default(),
                            fmt_mac(&o.mac)
                        ),
                    ));
                }
                if let (Some(h), Some(oh)) = (&r.hostname, &o.hostname) {
                    if h.eq_ignore_ascii_case(oh) {
                        return Err(v.err(
                            &f("hostname"),
                            format!(
                                "{h:?} is also the hostname of {other} (mac {})",
                                fmt_mac(&o.mac)
                            ),
                        ));
                    }
                }
            }
            reservations.push(Reservation {
                mac,
                ip,
                hostname: r.hostname,
            });
        }

        let rdns = self.dns.unwrap_or(RawDns {
            zone: None,
            upstreams: None,
            cache_size: None,
            timeout_ms: None,
        });
        let zone = rdns
            .zone
            .unwrap_or_else(|| "lab".into())
            .trim_end_matches('.')
            .to_string();
        if !valid_zone(&zone) {
            return Err(v.err(
                "dns.zone",
                format!("{zone:?} is not a DNS name like \"lab\""),
            ));
        }
        let mut upstreams = Vec::new();
        for (i, u) in rdns.upstreams.unwrap_or_default().iter().enumerate() {
            let sa = u
                .parse::<SocketAddr>()
                .or_else(|_| {
                    u.parse::<std::net::IpAddr>()
                        .map(|ip| SocketAddr::new(ip, 53))
                })
                .map_err(|_| {
                    v.err(
                        &format!("dns.upstreams[{i}]"),
                        format!("expected an IP address or IP:PORT, got {u:?}"),
                    )
                })?;
            upstreams.push(sa);
        }
        let dns = Dns {
            zone,
            upstreams,
            cache_size: rdns.cache_size.unwrap_or(1024),
            timeout_ms: rdns.timeout_ms.unwrap_or(1500),
        };
        let mut peers: Vec<Peer> = Vec::new();
        for (i, rp) in self.peers.unwrap_or_default().iter().enumerate() {
            let f = format!("peers[{i}]");
            let p = validate_peer(&v, &f, rp)?;
            check_peer_against_lab(&v, &f, &p, &name, &bridge, &uplink, &dns.zone)?;
            for (j, o) in peers.iter().enumerate() {
                let other = format!("peers[{j}]");
                if o.name == p.name {
                    return Err(v.err(
                        &format!("{f}.name"),
                        format!("{:?} is also the name of {other}", p.name),
                    ));
                }
                if o.public_key == p.public_key {
                    return Err(v.err(
                        &format!("{f}.public_key"),
                        format!("is also the public key of {other} (lab {:?})", o.name),
                    ));
                }
                if overlaps(&o.subnet, &p.subnet) {
                    return Err(v.err(
                        &format!("{f}.subnet"),
                        format!(
                            "{} of lab {:?} overlaps {} of lab {:?} ({other}.subnet); lab subnets must be disjoint",
                            p.subnet, p.name, o.subnet, o.name
                        ),
                    ));
                }
                if o.zone == p.zone {
                    return Err(v.err(
                        &format!("{f}.zone"),
                        format!(
                            "{:?} is also the zone of {other} (lab {:?})",
                            p.zone, o.name
                        ),
                    ));
                }
            }
            peers.push(p);
        }
        let peering = match (self.peering, peers.is_empty()) {
            (None, true) => None,
            (rp, _) => Some(validate_peering(
                &v,
                rp.unwrap_or_default(),
                &name,
                &bridge,
                &uplink,
            )?),
        };
        Ok(Lab {
            name,
            source: file.to_string(),
            bridge,
            uplink,
            dhcp: Dhcp {
                range_start,
                range_end,
                lease_secs,
                reservations,
            },
            dns,
            peering,
            peers,
        })
    }
}

fn valid_zone(zone: &str) -> bool {
    !zone.is_empty()
        && zone.split('.').all(|l| {
            !l.is_empty()
                && l.len() < 64
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// One peer's own fields (a `[[peers]]` entry or an invitation); `f` is its field prefix.
pub(crate) fn validate_peer(v: &V, f: &str, r: &RawPeer) -> Result<Peer, ConfigError> {
    let field = |k: &str| format!("{f}.{k}");
    let name = r.name.clone().ok_or_else(|| {
        v.err(
            &field("name"),
            "missing; expected the other lab's name, like \"labb\"",
        )
    })?;
    if !valid_lab_name(&name) {
        return Err(v.err(
            &field("name"),
            format!("{name:?} is not a valid lab name (letters, digits, '-' and '_', at most 32)"),
        ));
    }
    let public_key = r.public_key.as_deref().map(str::trim).ok_or_else(|| {
        v.err(
            &field("public_key"),
            "missing; expected the peer lab's public key (44 base64 characters; `labnet peer invite` on its host writes it)",
        )
    })?;
    if !is_base64_key(public_key) {
        return Err(v.err(
            &field("public_key"),
            "expected a WireGuard public key: 44 base64 characters ending in '='",
        ));
    }
    let endpoint = match &r.endpoint {
        None => None,
        Some(e) => Some(resolve_endpoint(
            v,
            &field("endpoint"),
            "the peer lab's host",
            e,
        )?),
    };
    let subnet = v.cidr(&field("subnet"), r.subnet.as_ref(), None)?;
    let subnet = Ipv4Cidr {
        addr: subnet.network(),
        prefix: subnet.prefix,
    };
    let zone = r
        .zone
        .clone()
        .unwrap_or_else(|| format!("{name}.lab"))
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if !valid_zone(&zone) {
        return Err(v.err(
            &field("zone"),
            format!("{zone:?} is not a DNS name like \"{name}.lab\""),
        ));
    }
    let dns = match &r.dns {
        Some(s) => v.ip(&field("dns"), s)?,
        None => Ipv4Addr::from(u32::from(subnet.addr) + 1),
    };
    if !subnet.contains(dns) || dns == subnet.network() || dns == subnet.broadcast() {
        return Err(v.err(
            &field("dns"),
            format!("{dns} is not a host address in the peer's subnet {subnet}"),
        ));
    }
    Ok(Peer {
        name,
        public_key: public_key.to_string(),
        endpoint,
        subnet,
        zone,
        dns,
        persistent_keepalive: Some(r.persistent_keepalive.unwrap_or(25)).filter(|k| *k > 0),
    })
}

/// A peer against this lab: not itself, a subnet disjoint from this lab's addresses, another zone.
fn check_peer_against_lab(
    v: &V,
    f: &str,
    p: &Peer,
    lab: &str,
    bridge: &Bridge,
    uplink: &Uplink,
    zone: &str,
) -> Result<(), ConfigError> {
    if p.name == lab {
        return Err(v.err(
            &format!("{f}.name"),
            format!(
                "{:?} is this lab's own name; a peer is another host's lab",
                p.name
            ),
        ));
    }
    let own = Ipv4Cidr {
        addr: bridge.address.network(),
        prefix: bridge.address.prefix,
    };
    let mut mine = vec![("bridge subnet", "bridge.address", own)];
    match uplink {
        Uplink::Wireguard(w) => mine.push(("uplink subnet", "uplink.address", w.address)),
        Uplink::Host(h) => mine.push(("uplink subnet", "uplink.lab_address", h.lab_address)),
        Uplink::None => {}
    }
    for (what, field, c) in mine {
        if overlaps(&p.subnet, &c) {
            return Err(v.err(
                &format!("{f}.subnet"),
                format!(
                    "{} of lab {:?} overlaps the {what} {}/{} of this lab {lab:?} ({field}); lab subnets must be disjoint",
                    p.subnet, p.name, c.network(), c.prefix
                ),
            ));
        }
    }
    if p.zone == zone {
        return Err(v.err(
            &format!("{f}.zone"),
            format!("{:?} is this lab's own zone (dns.zone)", p.zone),
        ));
    }
    Ok(())
}

fn validate_peering(
    v: &V,
    r: RawPeering,
    lab: &str,
    bridge: &Bridge,
    uplink: &Uplink,
) -> Result<Peering, ConfigError> {
    let interface = v.ifname(
        "peering.interface",
        r.interface
            .as_deref()
            .unwrap_or(&format!("wgp-{}", truncate(lab, 11))),
    )?;
    let uplink_if = match uplink {
        Uplink::Wireguard(w) => Some(w.interface.as_str()),
        Uplink::Host(h) => Some(h.lab_interface.as_str()),
        Uplink::None => None,
    };
    if interface == bridge.name || Some(interface.as_str()) == uplink_if {
        return Err(v.err(
            "peering.interface",
            format!("{interface:?} is already the bridge's or the uplink's name"),
        ));
    }
    if let (Uplink::Wireguard(w), Some(p)) = (uplink, r.listen_port) {
        if w.listen_port == Some(p) {
            return Err(v.err(
                "peering.listen_port",
                format!("{p} is also uplink.listen_port; the two links need their own ports"),
            ));
        }
    }
    if r.listen_port == Some(0) {
        return Err(v.err(
            "peering.listen_port",
            "0 is no port; leave it out for a random one",
        ));
    }
    if let Some(e) = &r.endpoint {
        let ok = e
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(v.err(
                "peering.endpoint",
                format!("expected HOST:PORT where peers reach this lab, got {e:?}"),
            ));
        }
    }
    let mtu = r.mtu.unwrap_or(1420);
    if !(576..=9000).contains(&mtu) {
        return Err(v.err(
            "peering.mtu",
            format!("{mtu} is out of range; expected 576 to 9000 (default 1420)"),
        ));
    }
    Ok(Peering {
        interface,
        listen_port: r.listen_port,
        private_key_file: r
            .private_key_file
            .map(PathBuf::from)
            .unwrap_or_else(|| crate::paths::state_dir(lab).join("peering.key")),
        endpoint: r.endpoint,
        mtu,
        backend: parse_backend(v, "peering.backend", r.backend.as_deref())?,
    })
}

fn parse_backend(v: &V, field: &str, s: Option<&str>) -> Result<WgBackend, ConfigError> {
    match s.unwrap_or("auto") {
        "auto" => Ok(WgBackend::Auto),
        "kernel" => Ok(WgBackend::Kernel),
        "userspace" => Ok(WgBackend::Userspace),
        other => Err(v.err(
            field,
            format!("expected \"auto\", \"kernel\" or \"userspace\", got {other:?}"),
        )),
    }
}

/// `HOST:PORT` (or `[V6]:PORT`) of the bounce box, an IPv4 address preferred. A name that
/// does not resolve says so, naming the host, rather than blaming the syntax.
fn resolve_endpoint(v: &V, field: &str, what: &str, e: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |m: String| v.err(field, m);
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Ok(sa);
    }
    let (host, port) = e
        .rsplit_once(':')
        .filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        .ok_or_else(|| bad(format!("expected HOST:PORT of {what}, got {e:?}")))?;
    let addrs: Vec<SocketAddr> = e
        .to_socket_addrs()
        .map_err(|err| bad(format!("cannot resolve {host}: {err}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad(format!("cannot resolve {host}: no address (port {port})")))
}

fn validate_uplink(v: &V, u: RawUplink, lab: &str, bridge: &Bridge) -> Result<Uplink, ConfigError> {
    let kind = u.kind.clone().unwrap_or_else(|| "none".into());
    match kind.as_str() {
        "none" => Ok(Uplink::None),
        "host" => {
            let host_address = v.cidr(
                "uplink.host_address",
                u.host_address.as_ref(),
                Some("10.253.0.1/30"),
            )?;
            let lab_address = v.cidr(
                "uplink.lab_address",
                u.lab_address.as_ref(),
                Some("10.253.0.2/30"),
            )?;
            if !host_address.contains(lab_address.addr) || host_address.addr == lab_address.addr {
                return Err(v.err("uplink.lab_address", format!("{lab_address} must be another address in the subnet of uplink.host_address {host_address}")));
            }
            let default_host = format!("lnh-{}", truncate(lab, 11));
            Ok(Uplink::Host(HostUplink {
                host_interface: v.ifname(
                    "uplink.host_interface",
                    u.host_interface.as_deref().unwrap_or(&default_host),
                )?,
                lab_interface: v.ifname(
                    "uplink.lab_interface",
                    u.lab_interface.as_deref().unwrap_or("uplink0"),
                )?,
                host_address,
                lab_address,
            }))
        }
        "wireguard" => {
            let mut u = u;
            if let Some(conf) = u.conf.clone() {
                wg_quick::merge(v, &conf, &mut u)?;
            }
            let interface = v.ifname(
                "uplink.interface",
                u.interface
                    .as_deref()
                    .unwrap_or(&format!("wg-{}", truncate(lab, 12))),
            )?;
            if interface == bridge.name {
                return Err(v.err("uplink.interface", "must differ from bridge.name"));
            }
            let address = v.cidr("uplink.address", u.address.as_ref(), None)?;
            let private_key_file = PathBuf::from(u.private_key_file.ok_or_else(|| {
                v.err(
                    "uplink.private_key_file",
                    "missing; expected the path of a file holding the private key (chmod 600)",
                )
            })?);
            let peer_public_key = u.peer_public_key.ok_or_else(|| {
                v.err(
                    "uplink.peer_public_key",
                    "missing; expected the bounce box's public key (44 base64 characters)",
                )
            })?;
            if !is_base64_key(peer_public_key.trim()) {
                return Err(v.err(
                    "uplink.peer_public_key",
                    "expected a WireGuard public key: 44 base64 characters ending in '='",
                ));
            }
            let endpoint = match &u.endpoint {
                None => None,
                Some(e) => Some(resolve_endpoint(v, "uplink.endpoint", "the bounce box", e)?),
            };
            let mut allowed_ips = Vec::new();
            for (i, a) in u
                .allowed_ips
                .clone()
                .unwrap_or_else(|| vec!["0.0.0.0/0".into()])
                .iter()
                .enumerate()
            {
                let c = Ipv4Cidr::parse(a).ok_or_else(|| {
                    v.err(
                        &format!("uplink.allowed_ips[{i}]"),
                        format!("expected an IPv4 CIDR like 0.0.0.0/0, got {a:?}"),
                    )
                })?;
                allowed_ips.push(c);
            }
            let gateway = match &u.gateway {
                Some(g) => v.ip("uplink.gateway", g)?,
                // The seed's layout: .1 is us, the bounce box is the other host of a /24 … take .2 (or .1 if we are not .1).
                None => {
                    let base = u32::from(address.network());
                    let guess = if u32::from(address.addr) == base + 2 {
                        base + 1
                    } else {
                        base + 2
                    };
                    Ipv4Addr::from(guess)
                }
            };
            if !address.contains(gateway) || gateway == address.addr {
                return Err(v.err(
                    "uplink.gateway",
                    format!("{gateway} must be the peer's address inside {address}"),
                ));
            }
            let backend = parse_backend(v, "uplink.backend", u.backend.as_deref())?;
            Ok(Uplink::Wireguard(Wireguard {
                interface,
                address,
                private_key_file,
                peer_public_key: peer_public_key.trim().to_string(),
                endpoint,
                allowed_ips,
                persistent_keepalive: u.persistent_keepalive,
                listen_port: u.listen_port,
                gateway,
                backend,
            }))
        }
        other => Err(v.err(
            "uplink.kind",
            format!("expected \"none\", \"wireguard\" or \"host\", got {other:?}"),
        )),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    &s[..s.len().min(n)]
}

#[cfg(test)]
mod tests {
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
