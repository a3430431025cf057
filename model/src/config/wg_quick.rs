//! The wg-quick `.conf` reader behind `uplink.conf`: the fields it may fill in a
//! WireGuard uplink, checked like the lab's own.
use super::parse::RawUplink;
use super::*;

/// Fills missing uplink fields from a wg-quick style `.conf` ([Interface] PrivateKey is not
/// read from there: keys stay in their own 0600 file, named by PrivateKeyFile or
/// uplink.private_key_file).
pub(super) fn merge(v: &V, path: &str, u: &mut RawUplink) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| v.err("uplink.conf", format!("cannot read {path}: {e}")))?;
    let mut section = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).to_ascii_lowercase();
            continue;
        }
        let Some((k, val)) = line.split_once('=') else {
            return Err(v.err(
                "uplink.conf",
                format!("{path}:{}: expected KEY = VALUE", n + 1),
            ));
        };
        let (k, val) = (k.trim().to_ascii_lowercase(), val.trim().to_string());
        match (section.as_str(), k.as_str()) {
            ("interface", "address") => {
                u.address
                    .get_or_insert(val.split(',').next().unwrap_or("").trim().to_string());
            }
            ("interface", "listenport") if u.listen_port.is_none() => {
                u.listen_port = Some(val.parse().map_err(|_| {
                    v.err(
                        "uplink.conf",
                        format!("{path}:{}: ListenPort {val:?} is not a port", n + 1),
                    )
                })?);
            }
            ("interface", "privatekey") => {
                return Err(v.err("uplink.conf", format!("{path}:{}: PrivateKey inline is refused; put the key in its own chmod-600 file and name it with uplink.private_key_file", n + 1)));
            }
            ("peer", "publickey") => {
                u.peer_public_key.get_or_insert(val);
            }
            ("peer", "endpoint") => {
                u.endpoint.get_or_insert(val);
            }
            ("peer", "allowedips") => {
                u.allowed_ips
                    .get_or_insert(val.split(',').map(|s| s.trim().to_string()).collect());
            }
            ("peer", "persistentkeepalive") if u.persistent_keepalive.is_none() => {
                u.persistent_keepalive = val.parse().ok();
            }
            _ => {}
        }
    }
    Ok(())
}
