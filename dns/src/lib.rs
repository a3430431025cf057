//! labnet's DNS server for a lab: listens on the bridge address inside the lab's network
//! namespace, answers the local zone (`lab.` by default: one A record per host in the hosts
//! file dhcpd writes, PTR records in the bridge subnet's reverse zone) and forwards every
//! other name to the lab's upstreams with failover, a hard timeout and a TTL-respecting
//! cache. Built on hickory-server: its [`Server`](hickory_server::Server) serves TCP, a
//! [`Catalog`](hickory_server::zone_handler::Catalog) of in-memory zones answers the local
//! names, and [`relay`] forwards the rest: names in a forwarded zone ([`forward`]: a peer
//! lab's zone and reverse zones) to that zone's servers, everything else to the upstreams. UDP is read by [`udp`]: one SO_REUSEPORT socket and
//! one thread (single-threaded runtime, own upstream sockets) per core, up to 4
//! (`LABNET_DNS_THREADS` overrides the count), see [`server::serve`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), dns::Error> {
//! let cfg = dns::Config {
//!     listen: "192.168.0.1:53".parse().unwrap(),
//!     zone: "lab".into(),
//!     zone_aliases: vec![],
//!     ptr_zone: None,
//!     bridge: "192.168.0.1".parse().unwrap(),
//!     prefix: 24,
//!     upstreams: vec!["192.168.20.2:53".parse().unwrap()],
//!     cache_size: 1024,
//!     timeout: std::time::Duration::from_millis(1500),
//!     hosts_file: "/var/lib/labnet/sepian/hosts".into(),
//!     forwards: vec![],
//! };
//! let bound = dns::server::bind(&cfg)?;
//! dns::server::serve(cfg, bound, || { dns::notify::ready(); }, std::future::pending()).await
//! # }
//! ```
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod forward;
pub mod handler;
pub use model::hosts;
pub use model::notify;
pub mod relay;
pub mod server;
pub mod udp;
pub mod zone;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {message}")]
    Config { field: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("dns server stopped: {0}")]
    Serve(String),
}

/// What the server needs; `labnet dns` fills it from the lab config.
#[derive(Debug, Clone)]
pub struct Config {
    /// UDP and TCP listen address (the bridge address, port 53).
    pub listen: SocketAddr,
    /// Local zone, e.g. "lab".
    pub zone: String,
    /// Other names of the local zone, with the same hosts: the zone peer labs know this lab
    /// by when its own is the default `lab` (`laba.lab` for lab `laba`).
    pub zone_aliases: Vec<String>,
    /// The zone PTR answers name hosts in (None: `zone`): the alias once the lab is joined
    /// with others, so a peer lab resolves the name a PTR gives it.
    pub ptr_zone: Option<String>,
    /// Bridge address and prefix: the reverse zone(s) come from this subnet.
    pub bridge: Ipv4Addr,
    pub prefix: u8,
    /// Where everything outside the local zones goes; empty = REFUSED for those names.
    pub upstreams: Vec<SocketAddr>,
    /// Cached answers (0 = no cache).
    pub cache_size: usize,
    /// Deadline for a forwarded query; past it the client gets SERVFAIL.
    pub timeout: Duration,
    /// `IP NAME` lines, written by dhcpd; reloaded when it changes.
    pub hosts_file: PathBuf,
    /// Zones forwarded to their own servers instead of the upstreams (peer labs' zones and
    /// reverse zones); the longest zone holding a name decides, see [`forward`].
    pub forwards: Vec<forward::Forward>,
}

impl Config {
    /// The lab's DNS: on the bridge address, port 53; the lab zone (and the zone peers know
    /// the lab by, see `Lab::peer_zone`); its upstreams (by default the WireGuard peer); the
    /// hosts file dhcpd writes; each peer's zone and reverse zones forwarded to the peer's dns.
    pub fn from_lab(lab: &model::Lab) -> Result<Config, Error> {
        let peer_zone = lab.peer_zone();
        let aliased = peer_zone.trim_end_matches('.') != lab.dns.zone.trim_end_matches('.');
        let mut forwards = vec![];
        for p in &lab.peers {
            forwards.extend(forward::peer_forwards(
                &p.name,
                &p.zone,
                SocketAddr::from((p.dns, 53)),
                p.subnet.addr,
                p.subnet.prefix,
            )?);
        }
        Ok(Config {
            listen: (lab.bridge.address.addr, 53).into(),
            zone: lab.dns.zone.clone(),
            zone_aliases: if aliased {
                vec![peer_zone.clone()]
            } else {
                vec![]
            },
            ptr_zone: (aliased && lab.peering.is_some()).then_some(peer_zone),
            bridge: lab.bridge.address.addr,
            prefix: lab.bridge.address.prefix,
            upstreams: lab.effective_upstreams(),
            cache_size: lab.dns.cache_size,
            timeout: Duration::from_millis(lab.dns.timeout_ms.max(1)),
            hosts_file: model::hosts::file(&lab.name),
            forwards,
        })
    }
}
