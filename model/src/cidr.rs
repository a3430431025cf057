//! IPv4 subnets (`192.168.0.1/24`): the one CIDR arithmetic labnet's crates use (the lab
//! config, dhcpd's served subnet, dns's reverse zones, netns's addresses).
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// An IPv4 address with a prefix length, e.g. `192.168.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = s.split_once('/')?;
        let addr: Ipv4Addr = a.trim().parse().ok()?;
        let prefix: u8 = p.trim().parse().ok()?;
        (prefix <= 32).then_some(Ipv4Cidr { addr, prefix })
    }
    /// The netmask as a number; a prefix over 32 (the fields are public) counts as 32.
    pub fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0)
    }
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Whether two subnets share any address.
pub fn overlaps(a: &Ipv4Cidr, b: &Ipv4Cidr) -> bool {
    let m = a.mask() & b.mask();
    u32::from(a.addr) & m == u32::from(b.addr) & m
}

#[cfg(test)]
mod cidr_tests {
    use super::Ipv4Cidr;
    use std::net::Ipv4Addr;

    /// The one CIDR arithmetic dhcpd, dns and netns use: the edges of the prefix range.
    #[test]
    fn masks_at_the_edges() {
        let c = |prefix| Ipv4Cidr {
            addr: Ipv4Addr::new(192, 168, 7, 9),
            prefix,
        };
        assert_eq!(c(0).mask(), 0);
        assert!(c(0).contains(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c(1).netmask(), Ipv4Addr::new(128, 0, 0, 0));
        assert_eq!(c(24).netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c(24).network(), Ipv4Addr::new(192, 168, 7, 0));
        assert_eq!(c(24).broadcast(), Ipv4Addr::new(192, 168, 7, 255));
        assert_eq!(c(32).mask(), u32::MAX);
        assert!(!c(32).contains(Ipv4Addr::new(192, 168, 7, 8)));
        // Public fields can hold more than 32: read as /32, not a shift overflow.
        assert_eq!(c(40).mask(), u32::MAX);
    }
}
