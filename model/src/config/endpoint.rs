//! A WireGuard endpoint `HOST:PORT`: the one lookup the config does (a name is resolved
//! once, at load time).
use super::*;

/// `HOST:PORT` (or `[V6]:PORT`) of the bounce box, an IPv4 address preferred. A name that
/// does not resolve says so, naming the host, rather than blaming the syntax.
pub(super) fn resolve_endpoint(
    v: &V,
    field: &str,
    what: &str,
    e: &str,
) -> Result<SocketAddr, ConfigError> {
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
