//! Conditional forwarding: names at or under a configured zone go to that zone's servers
//! (a peer lab's dns, over the tunnel) instead of the lab's default upstreams.
//!
//! Which zone decides: the longest one that holds the name, among the lab's own zones and
//! the forwarded ones. So a peer zone under the lab's own (`labb.lab` while this lab serves
//! `lab`) is forwarded, and the lab's own names are never sent away; a name in no zone goes to
//! the default upstreams (or is refused when there are none).
//!
//! A peer's reverse zones, from its subnet (the same cut as the lab's own, see
//! [`zone::reverse_zones`](crate::zone::reverse_zones)):
//! - /8, /16, /24: the one zone (`c.b.a.in-addr.arpa` for a /24);
//! - between octets (/9../23): the octet zones inside it, e.g. a /23 → its two /24 zones;
//! - longer than /24 (/25../32): one entry per address (`d.c.b.a.in-addr.arpa`, at most 128),
//!   not the enclosing /24: two labs may share a /24 (a /25 each), and then each lab's own
//!   /24 reverse zone answers its half while the peer's addresses, being longer names, go to
//!   the peer.
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};

use std::sync::Arc;

use hickory_server::proto::rr::{LowerName, Name};

use crate::relay::Target;
use crate::zone::{ptr_name, reverse_zones, zone_name};
use crate::Error;

/// One conditional forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// Absolute zone name, e.g. `labb.lab.` or `2.10.in-addr.arpa.`.
    pub zone: Name,
    /// Servers asked in turn (failover as for the upstreams).
    pub servers: Vec<SocketAddr>,
    /// Whom it is for (a peer's name), for the table and the logs.
    pub via: String,
}

/// The forwards for one peer lab: its zone and its subnet's reverse zones, all to its dns.
pub fn peer_forwards(
    peer: &str,
    zone: &str,
    dns: SocketAddr,
    subnet: Ipv4Addr,
    prefix: u8,
) -> Result<Vec<Forward>, Error> {
    let zone = zone_name(zone).map_err(|_| Error::Config {
        field: format!("peers.{peer}.zone"),
        message: format!("{zone:?} is not a DNS name"),
    })?;
    let mut v = vec![Forward {
        zone,
        servers: vec![dns],
        via: peer.to_string(),
    }];
    v.extend(
        forwarded_reverse_zones(subnet, prefix)
            .into_iter()
            .map(|zone| Forward {
                zone,
                servers: vec![dns],
                via: peer.to_string(),
            }),
    );
    Ok(v)
}

/// The reverse names forwarded for a peer subnet (see the module doc).
pub fn forwarded_reverse_zones(subnet: Ipv4Addr, prefix: u8) -> Vec<Name> {
    let prefix = prefix.clamp(1, 32);
    if prefix <= 24 {
        return reverse_zones(subnet, prefix);
    }
    let size = 1u32 << (32 - prefix);
    let base = u32::from(subnet) & !(size - 1);
    (0..size)
        .map(|i| ptr_name(Ipv4Addr::from(base + i)))
        .collect()
}

/// Checks a forward list: no zone twice (two peers claiming one zone is a config mistake
/// that would otherwise send the names to whichever came first), none without servers, none
/// that is one of the lab's own zones.
pub fn check(forwards: &[Forward], local: &[Name]) -> Result<(), Error> {
    for (i, f) in forwards.iter().enumerate() {
        let bad = |message: String| Error::Config {
            field: format!("peers.{}", f.via),
            message,
        };
        if f.servers.is_empty() {
            return Err(bad(format!("no dns server to forward {} to", f.zone)));
        }
        if let Some(other) = forwards[..i].iter().find(|o| o.zone == f.zone) {
            return Err(bad(format!(
                "zone {} is forwarded to both {} and {}",
                f.zone, other.via, f.via
            )));
        }
        if local.contains(&f.zone) {
            return Err(bad(format!(
                "zone {} is this lab's own zone, it cannot be forwarded",
                f.zone
            )));
        }
    }
    Ok(())
}

/// The forward table as the daemon logs it at start: one line per zone.
pub fn table(forwards: &[Forward]) -> String {
    let mut s = String::new();
    for f in forwards {
        let servers: Vec<String> = f.servers.iter().map(|s| s.to_string()).collect();
        let _ = writeln!(
            s,
            "forward {} -> {} ({})",
            f.zone,
            servers.join(", "),
            f.via
        );
    }
    s
}

/// Where a query goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// One of the lab's own zones.
    Local,
    /// The forward at this index.
    Forward(usize),
    /// Under no zone: the default upstreams.
    Upstream,
}

/// The lab's own zones and the forwarded ones, for the longest-suffix decision.
#[derive(Debug, Clone, Default)]
pub struct ZoneTable {
    /// (zone, its label count, route); a name's route is its longest matching zone's.
    zones: Vec<(LowerName, u8, Route)>,
    forwards: bool,
}

impl ZoneTable {
    pub fn new(local: &[LowerName], forwards: &[Forward]) -> Self {
        let mut zones: Vec<(LowerName, u8, Route)> = local
            .iter()
            .map(|z| (z.clone(), z.num_labels(), Route::Local))
            .collect();
        zones.extend(forwards.iter().enumerate().map(|(i, f)| {
            let z = LowerName::from(&f.zone);
            let n = z.num_labels();
            (z, n, Route::Forward(i))
        }));
        // Longest first: the first zone that holds a name is its longest; at equal length
        // the lab's own comes first (check() refuses a forward equal to a local zone anyway).
        zones.sort_by_key(|z| std::cmp::Reverse(z.1));
        ZoneTable {
            zones,
            forwards: !forwards.is_empty(),
        }
    }

    pub fn route(&self, name: &LowerName) -> Route {
        let labels = name.num_labels();
        self.zones
            .iter()
            .filter(|z| z.1 <= labels)
            .find(|z| z.0.zone_of(name))
            .map(|z| z.2)
            .unwrap_or(Route::Upstream)
    }

    /// Whether any zone is forwarded.
    pub fn has_forwards(&self) -> bool {
        self.forwards
    }
}

/// What a running server routes by, swapped whole on reload: the zone table and the target
/// (servers, failover state) of each forward.
pub struct Forwarding {
    pub table: ZoneTable,
    pub targets: Vec<Arc<Target>>,
}

impl Forwarding {
    /// For the lab's own zones `local` and `forwards` (checked with [`check`]).
    pub fn new(local: &[Name], forwards: &[Forward]) -> Result<Forwarding, Error> {
        check(forwards, local)?;
        let local: Vec<LowerName> = local.iter().map(LowerName::from).collect();
        Ok(Forwarding {
            table: ZoneTable::new(&local, forwards),
            targets: forwards.iter().map(Target::of).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn strs(v: &[Name]) -> Vec<String> {
        v.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn peer_reverse_zones_by_prefix() {
        let z = |a: &str, p| strs(&forwarded_reverse_zones(a.parse().unwrap(), p));
        assert_eq!(z("10.1.2.1", 24), vec!["2.1.10.in-addr.arpa."]);
        assert_eq!(z("10.1.2.1", 16), vec!["1.10.in-addr.arpa."]);
        assert_eq!(
            z("10.1.3.1", 23),
            vec!["2.1.10.in-addr.arpa.", "3.1.10.in-addr.arpa."]
        );
        let v = z("10.1.2.200", 29);
        assert_eq!(v.len(), 8);
        assert_eq!(v[0], "200.2.1.10.in-addr.arpa.");
        assert_eq!(v[7], "207.2.1.10.in-addr.arpa.");
        assert_eq!(z("10.1.2.9", 32), vec!["9.2.1.10.in-addr.arpa."]);
        assert_eq!(z("10.1.2.9", 25).len(), 128);
    }

    #[test]
    fn longest_suffix_decides() {
        let local = [
            LowerName::from(n("lab.")),
            LowerName::from(n("0.168.192.in-addr.arpa.")),
        ];
        let up: SocketAddr = "10.0.0.2:53".parse().unwrap();
        let mut fwd =
            peer_forwards("labb", "labb.lab", up, "192.168.1.1".parse().unwrap(), 24).unwrap();
        fwd.extend(
            peer_forwards("labc", "labc", up, "192.168.0.200".parse().unwrap(), 30).unwrap(),
        );
        let t = ZoneTable::new(&local, &fwd);
        let r = |s: &str| t.route(&LowerName::from(n(s)));
        assert_eq!(r("vm1.lab."), Route::Local);
        assert_eq!(r("lab."), Route::Local);
        assert_eq!(
            r("VM1.LabB.lab."),
            Route::Forward(0),
            "under the lab zone, longer"
        );
        assert_eq!(r("labb.lab."), Route::Forward(0));
        assert_eq!(r("xlabb.lab."), Route::Local, "label boundaries count");
        assert_eq!(r("7.1.168.192.in-addr.arpa."), Route::Forward(1));
        assert_eq!(r("7.0.168.192.in-addr.arpa."), Route::Local);
        assert_eq!(
            r("201.0.168.192.in-addr.arpa."),
            Route::Forward(4),
            "a /30 peer in our /24"
        );
        assert_eq!(r("ceph1.labc."), Route::Forward(2));
        assert_eq!(r("www.example.org."), Route::Upstream);
        assert_eq!(r("."), Route::Upstream);
    }

    #[test]
    fn bad_forward_lists_are_named() {
        let up: SocketAddr = "10.0.0.2:53".parse().unwrap();
        let a = peer_forwards("laba", "x.lab", up, "10.1.0.1".parse().unwrap(), 24).unwrap();
        let b = peer_forwards("labb", "X.lab.", up, "10.2.0.1".parse().unwrap(), 24).unwrap();
        let both: Vec<Forward> = a.iter().chain(&b).cloned().collect();
        let e = check(&both, &[]).unwrap_err().to_string();
        assert_eq!(
            e,
            "peers.labb: zone X.lab. is forwarded to both laba and labb"
        );
        let e = check(&a, &[n("x.lab.")]).unwrap_err().to_string();
        assert_eq!(
            e,
            "peers.laba: zone x.lab. is this lab's own zone, it cannot be forwarded"
        );
        let e = peer_forwards("labz", ".", up, "10.3.0.1".parse().unwrap(), 24)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "peers.labz.zone: \".\" is not a DNS name");
        assert!(check(&a, &[n("lab.")]).is_ok());
    }
}
