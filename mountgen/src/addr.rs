//! Ceph monitor addresses as they appear in `mon dump` (JSON and text) and in `mon_host`.
//!
//! Ceph writes an "entity address" as `[TYPE:]IP[:PORT][/NONCE]` where TYPE is `v1` (legacy
//! msgr1), `v2` (msgr2) or `any`, IPv6 addresses are bracketed, and an address vector is
//! `[v2:…,v1:…]`. Untyped addresses follow the monitor's own rule (MonMap's "ambiguous
//! address" handling): port 6789 means v1, port 3300 means v2, no port means both, and any
//! other port means v1.
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The msgr2 default port (IANA).
pub const PORT_V2: u16 = 3300;
/// The legacy msgr1 default port.
pub const PORT_V1: u16 = 6789;

/// Messenger protocol of a monitor address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrType {
    /// msgr1, "legacy"; the only kind kernels before 5.11 speak.
    V1,
    /// msgr2; the kernel needs an `ms_mode` other than `legacy` to use it.
    V2,
}

impl AddrType {
    pub fn as_str(self) -> &'static str {
        match self {
            AddrType::V1 => "v1",
            AddrType::V2 => "v2",
        }
    }
}

/// One monitor address with a known protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MonAddr {
    pub kind: AddrType,
    pub addr: SocketAddr,
}

impl MonAddr {
    pub fn new(kind: AddrType, ip: IpAddr, port: u16) -> Self {
        MonAddr {
            kind,
            addr: SocketAddr::new(ip, port),
        }
    }
    /// Ceph's typed form with nonce, as in `generate-minimal-conf`: `v2:1.2.3.4:3300/0`.
    pub fn ceph_typed(&self) -> String {
        format!("{}:{}/0", self.kind.as_str(), self.addr)
    }
}

/// `1.2.3.4:3300` or `[::1]:3300`: the form the kernel's `mon_addr=` and old-syntax source take.
impl fmt::Display for MonAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

/// Address type tag as written by Ceph, before the ambiguous-port rule is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeTag {
    V1,
    V2,
    Any,
}

impl TypeTag {
    /// `v1`, `v2`, `any` (also the long names `legacy` and `msgr2`).
    pub fn parse(s: &str) -> Option<TypeTag> {
        match s {
            "v1" | "legacy" => Some(TypeTag::V1),
            "v2" | "msgr2" => Some(TypeTag::V2),
            "any" => Some(TypeTag::Any),
            _ => None,
        }
    }
}

/// Turns a (possibly untyped) address into concrete typed addresses.
pub fn resolve(tag: TypeTag, ip: IpAddr, port: Option<u16>) -> Vec<MonAddr> {
    let port = port.filter(|p| *p != 0);
    match (tag, port) {
        (TypeTag::V1, p) => vec![MonAddr::new(AddrType::V1, ip, p.unwrap_or(PORT_V1))],
        (TypeTag::V2, p) => vec![MonAddr::new(AddrType::V2, ip, p.unwrap_or(PORT_V2))],
        (TypeTag::Any, None) => vec![
            MonAddr::new(AddrType::V2, ip, PORT_V2),
            MonAddr::new(AddrType::V1, ip, PORT_V1),
        ],
        (TypeTag::Any, Some(PORT_V2)) => vec![MonAddr::new(AddrType::V2, ip, PORT_V2)],
        (TypeTag::Any, Some(p)) => vec![MonAddr::new(AddrType::V1, ip, p)],
    }
}

/// What is wrong with a monitor address (each names the text it was found in).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("empty address")]
    Empty,
    #[error("unknown address type {tag:?} in {addr:?} (expected v1, v2 or any)")]
    UnknownType { tag: String, addr: String },
    #[error("unclosed '[' in {0:?}")]
    Unclosed(String),
    #[error("unbalanced ']' in {0:?}")]
    Unbalanced(String),
    #[error("bad IPv6 address in {0:?}")]
    BadIpv6(String),
    #[error("unexpected {after:?} after IPv6 address in {addr:?}")]
    AfterIpv6 { after: String, addr: String },
    #[error("bad port {port:?} in {addr:?}")]
    BadPort { port: String, addr: String },
    #[error("{host:?} in {addr:?} is not an IP address (host names are not resolved)")]
    NotAnIp { host: String, addr: String },
    #[error("empty address vector {0:?}")]
    EmptyVector(String),
}

/// Parses one entity address `[TYPE:]IP[:PORT][/NONCE]`. Returns the tag (`Any` when no
/// type is written), the IP and the port if one is written.
pub fn parse_entity_addr(s: &str) -> Result<(TypeTag, IpAddr, Option<u16>), AddrError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(AddrError::Empty);
    }
    // Type prefix: letters then ':' before any digit/bracket.
    let (tag, rest) = match s.find(':') {
        Some(i)
            if s[..i]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && s[..i].chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            let t = &s[..i];
            // A bare IPv6 like "fe80::1" starts with hex letters: only treat as a tag if it
            // is not itself the start of an IPv6 address.
            if s.parse::<Ipv6Addr>().is_ok() || strip_nonce(s).parse::<Ipv6Addr>().is_ok() {
                (TypeTag::Any, s)
            } else {
                match TypeTag::parse(t) {
                    Some(tag) => (tag, &s[i + 1..]),
                    None => {
                        return Err(AddrError::UnknownType {
                            tag: t.into(),
                            addr: s.into(),
                        })
                    }
                }
            }
        }
        _ => (TypeTag::Any, s),
    };
    let rest = strip_nonce(rest);
    let (ip, port) = if let Some(inner) = rest.strip_prefix('[') {
        let end = inner
            .find(']')
            .ok_or_else(|| AddrError::Unclosed(s.into()))?;
        let ip: Ipv6Addr = inner[..end]
            .parse()
            .map_err(|_| AddrError::BadIpv6(s.into()))?;
        let after = &inner[end + 1..];
        let port = match after {
            "" => None,
            p => Some(parse_port(
                p.strip_prefix(':').ok_or_else(|| AddrError::AfterIpv6 {
                    after: p.into(),
                    addr: s.into(),
                })?,
                s,
            )?),
        };
        (IpAddr::V6(ip), port)
    } else if let Ok(ip6) = rest.parse::<Ipv6Addr>() {
        (IpAddr::V6(ip6), None)
    } else {
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(parse_port(p, s)?)),
            None => (rest, None),
        };
        let ip = host
            .parse::<std::net::Ipv4Addr>()
            .map_err(|_| AddrError::NotAnIp {
                host: host.into(),
                addr: s.into(),
            })?;
        (IpAddr::V4(ip), port)
    };
    Ok((tag, ip, port))
}

fn strip_nonce(s: &str) -> &str {
    // The nonce follows the last '/', which never occurs inside an IP.
    match s.rfind('/') {
        Some(i) => &s[..i],
        None => s,
    }
}

fn parse_port(p: &str, whole: &str) -> Result<u16, AddrError> {
    p.parse::<u16>().map_err(|_| AddrError::BadPort {
        port: p.into(),
        addr: whole.into(),
    })
}

/// Parses one address or one address vector (`[v2:…,v1:…]`) into typed addresses.
pub fn parse_addr_or_vec(s: &str) -> Result<Vec<MonAddr>, AddrError> {
    let s = s.trim();
    if let Some(inner) = vec_inner(s) {
        let mut out = Vec::new();
        for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (tag, ip, port) = parse_entity_addr(part)?;
            out.extend(resolve(tag, ip, port));
        }
        if out.is_empty() {
            return Err(AddrError::EmptyVector(s.into()));
        }
        Ok(out)
    } else {
        let (tag, ip, port) = parse_entity_addr(s)?;
        Ok(resolve(tag, ip, port))
    }
}

/// If `s` is an address vector `[…]` (as opposed to a bracketed IPv6 address), its inside.
fn vec_inner(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let head = inner.trim_start();
    let looks_typed = head.is_empty()
        || head
            .split_once(':')
            .is_some_and(|(t, _)| TypeTag::parse(t).is_some())
        || head.starts_with('[');
    // "[::1]" alone is an IPv6 address, not a vector.
    if looks_typed && inner.parse::<Ipv6Addr>().is_err() {
        Some(inner)
    } else {
        None
    }
}

/// Splits a `mon_host` value into entries: separators are ',', ';' and whitespace outside
/// brackets (ceph.conf files in the wild use all of them).
pub fn split_mon_host(value: &str) -> Result<Vec<&str>, AddrError> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (i, c) in value.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| AddrError::Unbalanced(value.into()))?
            }
            ',' | ';' | ' ' | '\t' if depth == 0 => {
                if i > start {
                    out.push(&value[start..i]);
                }
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(AddrError::Unclosed(value.into()));
    }
    if start < value.len() {
        out.push(&value[start..]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Vec<String> {
        parse_addr_or_vec(s)
            .unwrap()
            .iter()
            .map(|a| format!("{}:{}", a.kind.as_str(), a))
            .collect()
    }

    #[test]
    fn typed_and_untyped() {
        assert_eq!(one("v2:127.0.0.1:3300/0"), ["v2:127.0.0.1:3300"]);
        assert_eq!(one("127.0.0.1:6789/0"), ["v1:127.0.0.1:6789"]);
        assert_eq!(one("127.0.0.1:3300"), ["v2:127.0.0.1:3300"]);
        assert_eq!(one("127.0.0.1:40763/0"), ["v1:127.0.0.1:40763"]);
        assert_eq!(one("10.0.0.1"), ["v2:10.0.0.1:3300", "v1:10.0.0.1:6789"]);
        assert_eq!(one("v1:10.0.0.1"), ["v1:10.0.0.1:6789"]);
        assert_eq!(
            one("[v2:127.0.0.1:3300/0,v1:127.0.0.1:6789/0]"),
            ["v2:127.0.0.1:3300", "v1:127.0.0.1:6789"]
        );
    }

    #[test]
    fn ipv6() {
        assert_eq!(one("[::1]:6789/0"), ["v1:[::1]:6789"]);
        assert_eq!(one("[::1]"), ["v2:[::1]:3300", "v1:[::1]:6789"]);
        assert_eq!(one("fe80::1"), ["v2:[fe80::1]:3300", "v1:[fe80::1]:6789"]);
        assert_eq!(
            one("[v2:[fd00::1]:3300/0,v1:[fd00::1]:6789/0]"),
            ["v2:[fd00::1]:3300", "v1:[fd00::1]:6789"]
        );
        assert_eq!(one("v2:[2001:db8::5]:3300"), ["v2:[2001:db8::5]:3300"]);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = parse_addr_or_vec("v3:1.2.3.4:3300").unwrap_err();
        assert!(e.to_string().contains("unknown address type \"v3\""), "{e}");
        assert_eq!(
            parse_addr_or_vec("mon1.example.com:6789").unwrap_err(),
            AddrError::NotAnIp {
                host: "mon1.example.com".into(),
                addr: "mon1.example.com:6789".into()
            }
        );
        assert_eq!(
            parse_addr_or_vec("1.2.3.4:99999").unwrap_err(),
            AddrError::BadPort {
                port: "99999".into(),
                addr: "1.2.3.4:99999".into()
            }
        );
        assert!(parse_addr_or_vec("[").is_err());
        assert_eq!(parse_addr_or_vec("").unwrap_err(), AddrError::Empty);
    }

    #[test]
    fn split_host_lists() {
        assert_eq!(
            split_mon_host("[v2:a,v1:b],[v2:c,v1:d] [v2:e]; f").unwrap(),
            ["[v2:a,v1:b]", "[v2:c,v1:d]", "[v2:e]", "f"]
        );
        assert_eq!(
            split_mon_host("[v2:a").unwrap_err(),
            AddrError::Unclosed("[v2:a".into())
        );
        assert_eq!(
            split_mon_host("a]").unwrap_err(),
            AddrError::Unbalanced("a]".into())
        );
    }
}
