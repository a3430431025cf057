//! What the system shows, as [`super::plan`] needs it: read by [`crate::system::observe`],
//! made by hand in the golden tests, so a plan can be pinned without root.
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::config::Ipv4Cidr;

/// One link as the system shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkObs {
    pub up: bool,
    pub addrs: Vec<Ipv4Cidr>,
}

/// The peering link of a lab that is up, as the system shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeeringObs {
    pub up: bool,
    pub mtu: Option<u32>,
    /// wireguard-go serves it (its UAPI socket answers); else the kernel.
    pub userspace: bool,
    pub listen_port: Option<u16>,
    /// The device's peers.
    pub peers: Vec<WgPeerObs>,
    /// The subnets routed out of the link.
    pub routes: Vec<Ipv4Cidr>,
    /// `table ip labnet-peering` (the MSS clamp) is as labnet makes it.
    pub nft: bool,
    /// Why the WireGuard device could not be read (e.g. its wireguard-go died), if not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_error: Option<String>,
}

/// One peer of a WireGuard device, as the device lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WgPeerObs {
    pub public_key: String,
    pub allowed_ips: Vec<Ipv4Cidr>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
}

/// The lab's dns as `up` recorded it: its process and the peer zones it was started (or last
/// reloaded) with, from the record's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DnsObs {
    pub pid: Option<u32>,
    pub argv: Vec<String>,
    /// (zone, dns server) per peer.
    pub peer_zones: Vec<(String, Ipv4Addr)>,
}

/// What [`super::plan`] needs to know about the system.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observed {
    /// /run/netns/LAB exists. False: the lab is built from scratch; true: its drift repaired.
    pub netns: bool,
    // --- for building
    /// The kernel has WireGuard (loaded, built in, or a module to load).
    pub wireguard_module: bool,
    /// Names the lab would create in labnet's own namespace that exist already.
    pub host_links_taken: Vec<String>,
    /// WireGuard interface names a userspace device already serves (UAPI socket answers).
    pub uapi_taken: Vec<String>,
    /// net.ipv4.ip_forward in labnet's own namespace (a host uplink sets it, `down` restores).
    pub host_ip_forward: Option<String>,
    /// /etc/netns/LAB exists already (then `down` leaves it).
    pub etc_dir_exists: bool,
    /// Files under /etc/netns/LAB that exist already (saved aside, restored by `down`).
    pub etc_files_existing: Vec<PathBuf>,
    // --- for repairing a lab that is up
    /// Links inside the lab by name; a missing name is a missing link.
    pub links: BTreeMap<String, LinkObs>,
    /// For a host uplink: its veth end in labnet's own namespace.
    pub host_link: Option<LinkObs>,
    /// The lab's IPv4 default route: (gateway, output link name).
    pub default_route: Option<(Option<Ipv4Addr>, Option<String>)>,
    pub ip_forward: bool,
    /// `table ip labnet` in the lab masquerades out of the uplink and filters input/forward.
    pub lab_nft: bool,
    /// For a host uplink: the lab's table in labnet's own namespace exists.
    pub host_nft: bool,
    /// Files under /etc/netns/LAB that do not hold what labnet wrote.
    pub files_changed: Vec<PathBuf>,
    /// Daemons `up` recorded that no longer run: (name, argv).
    pub dead_daemons: Vec<(String, Vec<String>)>,
    /// The peering link (None: missing, or the lab has no `[peering]`).
    pub peering: Option<PeeringObs>,
    /// The dns `up` started (None: none recorded, e.g. systemd runs it).
    pub dns: Option<DnsObs>,
}
