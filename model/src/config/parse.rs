//! The two passes over a lab's TOML: serde reads the raw text into `Raw*` (unknown fields
//! are errors), then `RawLab::validate` checks every value and names the file and the
//! dotted field of the first bad one.
use super::endpoint::resolve_endpoint;
use super::*;

// ---------- raw (as written) ----------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLab {
    pub(super) name: Option<String>,
    pub(super) bridge: Option<RawBridge>,
    pub(super) uplink: Option<RawUplink>,
    pub(super) dhcp: Option<RawDhcp>,
    pub(super) dns: Option<RawDns>,
    pub(super) peering: Option<RawPeering>,
    pub(super) peers: Option<Vec<RawPeer>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeering {
    pub(super) interface: Option<String>,
    pub(super) listen_port: Option<u16>,
    pub(super) private_key_file: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) mtu: Option<u16>,
    pub(super) backend: Option<String>,
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
pub(super) struct RawBridge {
    pub(super) name: Option<String>,
    pub(super) address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUplink {
    pub(super) kind: Option<String>,
    // wireguard
    pub(super) interface: Option<String>,
    pub(super) address: Option<String>,
    pub(super) private_key_file: Option<String>,
    pub(super) peer_public_key: Option<String>,
    pub(super) endpoint: Option<String>,
    pub(super) allowed_ips: Option<Vec<String>>,
    pub(super) persistent_keepalive: Option<u16>,
    pub(super) listen_port: Option<u16>,
    pub(super) gateway: Option<String>,
    pub(super) conf: Option<String>,
    pub(super) backend: Option<String>,
    // host
    pub(super) host_interface: Option<String>,
    pub(super) lab_interface: Option<String>,
    pub(super) host_address: Option<String>,
    pub(super) lab_address: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDhcp {
    pub(super) range_start: Option<String>,
    pub(super) range_end: Option<String>,
    pub(super) lease_secs: Option<u32>,
    pub(super) reservations: Option<Vec<RawReservation>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReservation {
    pub(super) mac: String,
    pub(super) ip: Option<String>,
    pub(super) hostname: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub(super) zone: Option<String>,
    pub(super) upstreams: Option<Vec<String>>,
    pub(super) cache_size: Option<usize>,
    pub(super) timeout_ms: Option<u64>,
}

// ---------- validated ----------
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

pub(super) fn valid_zone(zone: &str) -> bool {
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
pub(super) fn check_peer_against_lab(
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

pub(super) fn validate_peering(
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

pub(super) fn parse_backend(v: &V, field: &str, s: Option<&str>) -> Result<WgBackend, ConfigError> {
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

pub(super) fn validate_uplink(
    v: &V,
    u: RawUplink,
    lab: &str,
    bridge: &Bridge,
) -> Result<Uplink, ConfigError> {
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

pub(super) fn truncate(s: &str, n: usize) -> &str {
    &s[..s.len().min(n)]
}

/// A TOML error as `line L, column C: MESSAGE` and, under it, the line with a caret under
/// the bad part (like the toml crate's own message), key-shaped tokens of that line
/// redacted: it may hold a key pasted where it does not belong (`private_key = "…"`).
pub(super) fn syntax_message(e: &toml::de::Error, text: &str) -> String {
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
pub(super) fn redact_keys(text: &str) -> String {
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
