//! What the server needs to know, taken from the lab config ([`ServerConfig::from_lab`]) or
//! built directly (tests, benchmarks).
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// A static binding: this MAC gets this address (if given) and this hostname (if given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub mac: [u8; 6],
    pub ip: Option<Ipv4Addr>,
    pub hostname: Option<String>,
    /// The labnet VM that registered it (reservations dir), if any.
    pub vm: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The bridge the socket is bound to (SO_BINDTODEVICE).
    pub interface: String,
    /// Our address on the bridge: server identifier, and the default router and DNS server.
    pub server_ip: Ipv4Addr,
    pub prefix: u8,
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_secs: u32,
    pub routers: Vec<Ipv4Addr>,
    pub dns_servers: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    /// Interface MTU option (26); `None` reads the bridge's MTU at start.
    pub mtu: Option<u16>,
    pub reservations: Vec<Reservation>,
    /// Run-time reservations (`labnet vm`), watched for changes.
    pub reservations_dir: Option<PathBuf>,
    /// Lease log and hosts file live here.
    pub state_dir: PathBuf,
    pub server_port: u16,
    pub client_port: u16,
    /// How long an offered address is held for the client it was offered to.
    pub offer_secs: u64,
    /// How long a declined address stays out of the pool.
    pub decline_secs: u64,
    /// At most this many packets per second from one client are answered (flood guard).
    pub per_client_pps: u32,
}

impl ServerConfig {
    /// The lab's DHCP settings: the bridge address is server, router and DNS server; the
    /// lab zone is the domain name; state under `model::paths::state_dir(lab)`.
    pub fn from_lab(lab: &model::Lab) -> ServerConfig {
        let addr = lab.bridge.address;
        ServerConfig {
            interface: lab.bridge.name.clone(),
            server_ip: addr.addr,
            prefix: addr.prefix,
            range_start: lab.dhcp.range_start,
            range_end: lab.dhcp.range_end,
            lease_secs: lab.dhcp.lease_secs,
            routers: vec![addr.addr],
            dns_servers: vec![addr.addr],
            domain: Some(lab.dns.zone.trim_end_matches('.').to_string()).filter(|z| !z.is_empty()),
            mtu: None,
            reservations: lab
                .dhcp
                .reservations
                .iter()
                .map(|r| Reservation {
                    mac: r.mac,
                    ip: r.ip,
                    hostname: r.hostname.clone(),
                    vm: None,
                })
                .collect(),
            reservations_dir: Some(model::paths::reservations_dir(&lab.name)),
            state_dir: model::paths::state_dir(&lab.name),
            server_port: 67,
            client_port: 68,
            offer_secs: 30,
            decline_secs: 600,
            per_client_pps: 50,
        }
    }

    /// The served subnet: our address and its prefix (the CIDR arithmetic is the model's).
    pub fn subnet(&self) -> model::Ipv4Cidr {
        model::Ipv4Cidr {
            addr: self.server_ip,
            prefix: self.prefix,
        }
    }

    pub fn netmask(&self) -> Ipv4Addr {
        self.subnet().netmask()
    }

    pub fn mask(&self) -> u32 {
        self.subnet().mask()
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        self.subnet().broadcast()
    }

    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        self.subnet().contains(ip)
    }

    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        let i = u32::from(ip);
        i >= u32::from(self.range_start) && i <= u32::from(self.range_end)
    }

    /// A usable host address of the subnet (not network, broadcast or our own).
    pub fn is_host(&self, ip: Ipv4Addr) -> bool {
        let net = u32::from(self.server_ip) & self.mask();
        self.in_subnet(ip) && ip != self.server_ip && u32::from(ip) != net && ip != self.broadcast()
    }
}
