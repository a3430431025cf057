//! The lab's parts per config (its uplink, the names it takes, its /etc/netns files):
//! shared by building, repairing and [`crate::system::observe`], so all three look at the same.
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{Ipv4Cidr, Lab, Uplink};
use crate::etc_netns::{etc_netns_dir, resolv_conf, NSSWITCH_CONF};

pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The lab-side uplink link, its address and the default route's gateway, per config.
pub fn uplink_of(lab: &Lab) -> Option<(String, Ipv4Cidr, Ipv4Addr)> {
    match &lab.uplink {
        Uplink::None => None,
        Uplink::Wireguard(w) => Some((w.interface.clone(), w.address, w.gateway)),
        Uplink::Host(h) => Some((h.lab_interface.clone(), h.lab_address, h.host_address.addr)),
    }
}

/// The names the lab creates in labnet's own namespace (they must be free).
pub fn host_links(lab: &Lab) -> Vec<String> {
    let mut v = match &lab.uplink {
        Uplink::Wireguard(w) => vec![w.interface.clone()],
        Uplink::Host(h) => vec![h.host_interface.clone()],
        Uplink::None => vec![],
    };
    v.extend(lab.peering.as_ref().map(|p| p.interface.clone()));
    v
}

/// The links [`crate::system::observe`] looks at inside the lab.
pub fn lab_links(lab: &Lab) -> Vec<String> {
    let mut v = vec!["lo".to_string(), lab.bridge.name.clone()];
    v.extend(uplink_of(lab).map(|(n, _, _)| n));
    v
}

/// The files under /etc/netns/LAB and what labnet writes there.
pub fn etc_files(lab: &Lab) -> Vec<(PathBuf, String)> {
    let dir = etc_netns_dir(&lab.name);
    vec![
        (dir.join("resolv.conf"), resolv_conf(lab)),
        (dir.join("nsswitch.conf"), NSSWITCH_CONF.to_string()),
    ]
}
