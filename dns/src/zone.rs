//! The lab's local zones: the forward zone (`lab.`) with an A record per host, the same
//! names under each alias of it (the zone peer labs know this lab by, `laba.lab.` for lab
//! `laba` whose own zone is the default `lab`), and the bridge subnet's reverse zone(s) with
//! the matching PTR records (names in the PTR zone: the lab zone, or the alias when the lab
//! is joined with others, so a peer resolves the name a PTR gives it).
//!
//! Each zone is one long-lived [`InMemoryZoneHandler`] registered in the catalog; a hosts file
//! change swaps the whole record map under the handler's lock, so a lookup sees either the old
//! or the new set, never a half-built one.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use hickory_server::proto::rr::rdata::{A, PTR, SOA};
use hickory_server::proto::rr::{Name, RData, Record, RecordSet, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, ZoneType};

use crate::hosts::HostEntry;
use crate::Error;

/// TTL of local answers (and the negative TTL in the SOA): leases come and go, so keep it
/// short, like libvirt's dnsmasq does.
pub const LOCAL_TTL: u32 = 10;

/// The reverse zones that cover `addr/prefix`, at octet boundaries:
/// /24 -> one zone (`0.168.192.in-addr.arpa.`), /16 -> one, /20 -> the 16 /24 zones inside it,
/// /25../30 -> the enclosing /24 (the lab owns that /24 in practice; RFC 2317 delegation is the
/// upstream's business), /1../7 -> the /8 zones inside.
pub fn reverse_zones(addr: Ipv4Addr, prefix: u8) -> Vec<Name> {
    let prefix = prefix.clamp(1, 32) as u32;
    let zone_bits = prefix.div_ceil(8).clamp(1, 3) * 8;
    let mask = |bits: u32| {
        model::Ipv4Cidr {
            addr,
            prefix: bits as u8,
        }
        .mask()
    };
    let (base, count) = if prefix <= zone_bits {
        (u32::from(addr) & mask(prefix), 1u32 << (zone_bits - prefix))
    } else {
        (u32::from(addr) & mask(zone_bits), 1)
    };
    (0..count)
        .map(|i| {
            let net = base + (i << (32 - zone_bits));
            let o = Ipv4Addr::from(net).octets();
            let labels: Vec<String> = o[..(zone_bits / 8) as usize]
                .iter()
                .rev()
                .map(|b| b.to_string())
                .collect();
            Name::from_ascii(format!("{}.in-addr.arpa.", labels.join(".")))
                .expect("valid reverse name")
        })
        .collect()
}

/// `192.168.0.7` -> `7.0.168.192.in-addr.arpa.`
pub fn ptr_name(ip: Ipv4Addr) -> Name {
    let o = ip.octets();
    Name::from_ascii(format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]))
        .expect("valid ptr name")
}

/// The live local zones.
pub struct LocalZones {
    pub zone: Name,
    pub forward: Arc<InMemoryZoneHandler>,
    /// Other names of the forward zone, with the same hosts.
    pub aliases: Vec<(Name, Arc<InMemoryZoneHandler>)>,
    pub reverse: Vec<Arc<InMemoryZoneHandler>>,
    reverse_names: Vec<Name>,
    /// The zone PTR records name hosts in (`zone` or one of the aliases).
    ptr_zone: Name,
    serial: std::sync::atomic::AtomicU32,
}

impl LocalZones {
    /// Empty zones (only SOA) for `zone` and the reverse zones of the bridge subnet.
    pub fn new(zone: &str, bridge: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        Self::with_aliases(zone, &[], None, bridge, prefix)
    }

    /// [`new`](Self::new), and the same hosts under each of `aliases`; PTR records name hosts
    /// in `ptr_zone` (None: `zone`; else `zone` or one of the aliases).
    pub fn with_aliases(
        zone: &str,
        aliases: &[String],
        ptr_zone: Option<&str>,
        bridge: Ipv4Addr,
        prefix: u8,
    ) -> Result<Self, Error> {
        let own = zone_name(zone)?;
        let reverse_names = reverse_zones(bridge, prefix);
        let serial = 1;
        let forward = Arc::new(build(&own, &own, serial, vec![]));
        let mut alias_zones = vec![];
        for a in aliases {
            let a = zone_name(a).map_err(|_| Error::Config {
                field: "dns.zone (alias)".into(),
                message: format!("{a:?} is not a DNS name"),
            })?;
            if a != own && !alias_zones.iter().any(|(n, _)| *n == a) {
                let h = Arc::new(build(&a, &a, serial, vec![]));
                alias_zones.push((a, h));
            }
        }
        let ptr_zone = match ptr_zone {
            None => own.clone(),
            Some(p) => {
                let p = zone_name(p)?;
                if p != own && !alias_zones.iter().any(|(n, _)| *n == p) {
                    return Err(Error::Config {
                        field: "dns.zone".into(),
                        message: format!("PTR zone {p} is neither the zone nor an alias of it"),
                    });
                }
                p
            }
        };
        let reverse = reverse_names
            .iter()
            .map(|r| Arc::new(build(r, &own, serial, vec![])))
            .collect();
        Ok(LocalZones {
            zone: own,
            forward,
            aliases: alias_zones,
            reverse,
            reverse_names,
            ptr_zone,
            serial: serial.into(),
        })
    }

    /// The forward zone's names: the zone, then its aliases.
    pub fn forward_names(&self) -> Vec<Name> {
        let mut v = vec![self.zone.clone()];
        v.extend(self.aliases.iter().map(|(n, _)| n.clone()));
        v
    }

    pub fn reverse_names(&self) -> &[Name] {
        &self.reverse_names
    }

    /// Replaces every zone's records with the ones for `hosts` (A in the forward zone, PTR in
    /// whichever reverse zone holds the address; addresses outside the bridge subnet get
    /// only the A record). Returns how many names were loaded.
    pub async fn replace(&self, hosts: &[HostEntry]) -> usize {
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let mut fwd = Vec::new();
        let mut alias: Vec<Vec<Record>> = vec![Vec::new(); self.aliases.len()];
        let mut rev: Vec<Vec<Record>> = vec![Vec::new(); self.reverse_names.len()];
        let mut loaded = 0;
        for h in hosts {
            let Ok(label) = Name::from_ascii(&h.name) else {
                continue;
            };
            let Ok(name) = label.clone().append_domain(&self.zone) else {
                continue;
            };
            loaded += 1;
            let mut ptr_target = name.clone();
            fwd.push(Record::from_rdata(name, LOCAL_TTL, RData::A(A(h.ip))));
            for ((zone, _), records) in self.aliases.iter().zip(&mut alias) {
                let Ok(name) = label.clone().append_domain(zone) else {
                    continue;
                };
                if *zone == self.ptr_zone {
                    ptr_target = name.clone();
                }
                records.push(Record::from_rdata(name, LOCAL_TTL, RData::A(A(h.ip))));
            }
            let pname = ptr_name(h.ip);
            if let Some(i) = self.reverse_names.iter().position(|z| z.zone_of(&pname)) {
                rev[i].push(Record::from_rdata(
                    pname,
                    LOCAL_TTL,
                    RData::PTR(PTR(ptr_target)),
                ));
            }
        }
        swap(&self.forward, build(&self.zone, &self.zone, serial, fwd)).await;
        for ((zone, handler), records) in self.aliases.iter().zip(alias) {
            swap(handler, build(zone, zone, serial, records)).await;
        }
        for ((handler, name), records) in self.reverse.iter().zip(&self.reverse_names).zip(rev) {
            swap(handler, build(name, &self.zone, serial, records)).await;
        }
        loaded
    }
}

/// `lab` / `lab.` -> the absolute name `lab.`.
pub fn zone_name(zone: &str) -> Result<Name, Error> {
    let z = zone.trim_end_matches('.');
    Name::from_ascii(format!("{z}."))
        .ok()
        .filter(|n| !n.is_root())
        .ok_or_else(|| Error::Config {
            field: "dns.zone".into(),
            message: format!("{zone:?} is not a DNS name"),
        })
}

fn build(origin: &Name, zone: &Name, serial: u32, records: Vec<Record>) -> InMemoryZoneHandler {
    let mut h: InMemoryZoneHandler =
        InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let mname = Name::from_ascii("ns")
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone());
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_domain(zone))
        .unwrap_or_else(|_| zone.clone());
    let soa = SOA::new(mname, rname, serial, 3600, 600, 86400, LOCAL_TTL);
    h.upsert_mut(
        Record::from_rdata(origin.clone(), LOCAL_TTL, RData::SOA(soa)),
        serial,
    );
    for r in records {
        h.upsert_mut(r, serial);
    }
    h
}

async fn swap(live: &InMemoryZoneHandler, mut fresh: InMemoryZoneHandler) {
    let records: BTreeMap<RrKey, Arc<RecordSet>> = std::mem::take(fresh.records_get_mut());
    *live.records_mut().await = records;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: Vec<Name>) -> Vec<String> {
        v.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn reverse_zone_of_a_slash_24_and_16() {
        assert_eq!(
            names(reverse_zones("192.168.0.1".parse().unwrap(), 24)),
            vec!["0.168.192.in-addr.arpa."]
        );
        assert_eq!(
            names(reverse_zones("10.20.30.1".parse().unwrap(), 16)),
            vec!["20.10.in-addr.arpa."]
        );
        assert_eq!(
            names(reverse_zones("10.20.30.1".parse().unwrap(), 8)),
            vec!["10.in-addr.arpa."]
        );
    }

    #[test]
    fn reverse_zones_of_non_octet_prefixes() {
        // /23: the two /24s inside it
        assert_eq!(
            names(reverse_zones("192.168.3.1".parse().unwrap(), 23)),
            vec!["2.168.192.in-addr.arpa.", "3.168.192.in-addr.arpa."]
        );
        // /20 -> 16 zones 16..31
        let z = names(reverse_zones("172.16.17.1".parse().unwrap(), 20));
        assert_eq!(z.len(), 16);
        assert_eq!(z[0], "16.16.172.in-addr.arpa.");
        assert_eq!(z[15], "31.16.172.in-addr.arpa.");
        // /28 -> the enclosing /24
        assert_eq!(
            names(reverse_zones("192.168.5.17".parse().unwrap(), 28)),
            vec!["5.168.192.in-addr.arpa."]
        );
    }

    #[test]
    fn ptr_names() {
        assert_eq!(
            ptr_name("192.168.0.7".parse().unwrap()).to_string(),
            "7.0.168.192.in-addr.arpa."
        );
    }

    /// Record names of one type in a zone handler.
    async fn names_of(
        h: &InMemoryZoneHandler,
        t: hickory_server::proto::rr::RecordType,
    ) -> Vec<String> {
        let recs = h.records().await;
        let mut v: Vec<String> = recs
            .values()
            .filter(|rs| rs.record_type() == t)
            .flat_map(|rs| {
                rs.records_without_rrsigs()
                    .map(|r| format!("{} {}", r.name, r.data))
                    .collect::<Vec<_>>()
            })
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn replace_fills_forward_and_the_right_reverse_zone() {
        use hickory_server::proto::rr::RecordType;
        let z = LocalZones::new("lab", "10.0.2.1".parse().unwrap(), 23).unwrap();
        let h = |ip: &str, n: &str| HostEntry {
            ip: ip.parse().unwrap(),
            name: n.into(),
        };
        let n = z
            .replace(&[h("10.0.2.5", "a"), h("10.0.3.7", "b"), h("172.16.0.1", "c")])
            .await;
        assert_eq!(n, 3);
        assert_eq!(
            names_of(&z.forward, RecordType::A).await,
            vec!["a.lab. 10.0.2.5", "b.lab. 10.0.3.7", "c.lab. 172.16.0.1"]
        );
        assert_eq!(
            names_of(&z.reverse[0], RecordType::PTR).await,
            vec!["5.2.0.10.in-addr.arpa. a.lab."]
        );
        assert_eq!(
            names_of(&z.reverse[1], RecordType::PTR).await,
            vec!["7.3.0.10.in-addr.arpa. b.lab."]
        );
        // A second load replaces everything (b is gone) and bumps the SOA serial.
        let serial = z.forward.serial().await;
        z.replace(&[h("10.0.2.5", "a")]).await;
        assert_eq!(
            names_of(&z.forward, RecordType::A).await,
            vec!["a.lab. 10.0.2.5"]
        );
        assert!(names_of(&z.reverse[1], RecordType::PTR).await.is_empty());
        assert!(z.forward.serial().await > serial);
        assert_eq!(
            names_of(&z.reverse[1], RecordType::SOA).await.len(),
            1,
            "SOA kept"
        );
    }

    #[tokio::test]
    async fn aliases_hold_the_same_hosts_and_ptr_names_the_alias() {
        use hickory_server::proto::rr::RecordType;
        let z = LocalZones::with_aliases(
            "lab",
            &["laba.lab".into()],
            Some("laba.lab"),
            "10.0.2.1".parse().unwrap(),
            24,
        )
        .unwrap();
        let h = HostEntry {
            ip: "10.0.2.5".parse().unwrap(),
            name: "vm1".into(),
        };
        z.replace(&[h]).await;
        assert_eq!(
            names_of(&z.forward, RecordType::A).await,
            vec!["vm1.lab. 10.0.2.5"]
        );
        assert_eq!(
            names_of(&z.aliases[0].1, RecordType::A).await,
            vec!["vm1.laba.lab. 10.0.2.5"]
        );
        assert_eq!(
            names_of(&z.reverse[0], RecordType::PTR).await,
            vec!["5.2.0.10.in-addr.arpa. vm1.laba.lab."]
        );
        assert!(LocalZones::with_aliases(
            "lab",
            &[],
            Some("x.lab"),
            "10.0.2.1".parse().unwrap(),
            24
        )
        .is_err());
    }

    #[test]
    fn zone_names() {
        assert_eq!(zone_name("lab").unwrap().to_string(), "lab.");
        assert_eq!(
            zone_name("lab.example.").unwrap().to_string(),
            "lab.example."
        );
        assert!(zone_name(".").is_err());
    }
}
