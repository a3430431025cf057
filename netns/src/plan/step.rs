//! One step of a plan: the change ([`Action`]), the record that undoes it, and how reports
//! name it. Kept apart from the planning so [`crate::exec`] and `status` share the one type.
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{Ipv4Cidr, Peer, Peering, Wireguard};
use crate::nft;
use crate::state::Resource;

/// A daemon `up` starts in the lab (hand-run mode); under systemd the units run them instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DaemonSpec {
    pub name: String,
    pub argv: Vec<String>,
}

/// What one step changes. `netns: None` is labnet's own namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    CreateNetns {
        name: String,
    },
    /// A kernel WireGuard link in labnet's own namespace (its UDP socket keeps the host's
    /// route to the peer), not yet configured.
    CreateWireguardLink {
        iface: String,
    },
    /// A persistent TUN for wireguard-go (it then goes with the lab's namespace, not on
    /// wireguard-go's exit path).
    CreateTun {
        iface: String,
    },
    /// wireguard-go IFACE in the foreground, detached; it boots while later steps run.
    StartWireguardGo {
        iface: String,
        log: PathBuf,
    },
    /// Waits for wireguard-go's UAPI socket (it names `log` if wireguard-go died).
    WaitWireguardGo {
        iface: String,
    },
    /// Private key, peer, endpoint, allowed IPs, onto an existing interface.
    ConfigureWireguard {
        wireguard: Box<Wireguard>,
        userspace: bool,
    },
    /// The peering link's private key and listen port (no peers), on the kernel link in
    /// `netns` (None: labnet's own, before the move) or through wireguard-go's UAPI socket.
    ConfigurePeeringLink {
        peering: Box<Peering>,
        userspace: bool,
        netns: Option<String>,
    },
    /// Adds (or updates in place: its session keeps going) one peer lab on the peering link:
    /// AllowedIPs = its subnet, its endpoint and keepalive.
    AddWgPeer {
        netns: String,
        iface: String,
        peer: Box<Peer>,
        userspace: bool,
    },
    /// Removes a peer the device has and the config no longer names.
    RemoveWgPeer {
        netns: String,
        iface: String,
        public_key: String,
        userspace: bool,
    },
    AddBridge {
        netns: String,
        name: String,
    },
    /// A veth pair in labnet's own namespace.
    AddVeth {
        name: String,
        peer: String,
    },
    /// Moves a link from labnet's own namespace into the lab's.
    MoveLink {
        link: String,
        netns: String,
    },
    LinkUp {
        netns: Option<String>,
        link: String,
    },
    AddAddress {
        netns: Option<String>,
        link: String,
        address: Ipv4Cidr,
    },
    DefaultRoute {
        netns: String,
        link: String,
        via: Ipv4Addr,
    },
    SetMtu {
        netns: String,
        link: String,
        mtu: u32,
    },
    /// A route to `dest` out of `link` (no gateway: a WireGuard link), `src` the lab host's
    /// preferred source (its bridge address, inside the subnet the peers allow).
    AddRoute {
        netns: String,
        link: String,
        dest: Ipv4Cidr,
        src: Ipv4Addr,
    },
    DelRoute {
        netns: String,
        link: String,
        dest: Ipv4Cidr,
    },
    Sysctl {
        netns: Option<String>,
        path: String,
        value: String,
    },
    /// [`nft::lab_table`] inside the lab; `replace` deletes a table that is there first (a
    /// flushed or edited table comes back as labnet made it).
    NftLabTable {
        netns: String,
        bridge: String,
        uplink: String,
        /// The peering link the table lets in ([`nft::lab_table_peered`]), if the lab has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peering: Option<String>,
        replace: bool,
    },
    /// [`nft::peering_table`] (the MSS clamp into the tunnel) inside the lab.
    NftPeeringTable {
        netns: String,
        peering: String,
        replace: bool,
    },
    /// [`nft::host_masquerade`] in labnet's own namespace.
    NftHostTable {
        lab: String,
        host_interface: String,
        replace: bool,
    },
    MakeDir {
        path: PathBuf,
    },
    /// Writes `text` (atomically); a file that was there moves to `save_to` first.
    WriteFile {
        path: PathBuf,
        text: String,
        save_to: Option<PathBuf>,
    },
    /// Starts a daemon in the lab and waits for its sd_notify READY.
    StartDaemon {
        lab: String,
        daemon: DaemonSpec,
    },
    /// Has a running daemon read its config again: SIGHUP when it reloads on it, else a
    /// restart (the record gets the new pid).
    ReloadDaemon {
        lab: String,
        daemon: DaemonSpec,
        pid: Option<u32>,
    },
}

/// One step of a plan: the change, the record that undoes it (written before the change is
/// made; None when it goes with something recorded earlier, e.g. a link inside the lab's
/// namespace, or when the lab is up and the record exists), and for a repair what was wrong.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undo: Option<Resource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    /// A step of a lab that is up which makes something new (not a repair of what drifted):
    /// reported by what it does.
    #[serde(skip)]
    pub makes: bool,
}

impl Step {
    pub(super) fn new(action: Action, undo: Option<Resource>) -> Step {
        Step {
            action,
            undo,
            drift: None,
            makes: false,
        }
    }
    pub(super) fn repair(action: Action, drift: String) -> Step {
        Step {
            action,
            undo: None,
            drift: Some(drift),
            makes: false,
        }
    }
    /// A step of a lab that is up which makes something new (recorded before, like `up`'s).
    pub(super) fn change(action: Action, undo: Option<Resource>, why: String) -> Step {
        Step {
            action,
            undo,
            drift: Some(why),
            makes: true,
        }
    }

    /// What the step does (and, for a repair, what was wrong), for reports and errors.
    pub fn describe(&self) -> String {
        match &self.drift {
            Some(d) if self.makes => format!("{d}: {}", self.action.describe()),
            Some(d) => format!("{d}: {}", self.action.fix()),
            None => self.action.describe(),
        }
    }
}

impl Action {
    pub fn describe(&self) -> String {
        let ns = |n: &Option<String>| match n {
            Some(n) => format!(" in {n}"),
            None => String::new(),
        };
        match self {
            Action::CreateNetns { name } => format!("create netns {name}"),
            Action::CreateWireguardLink { iface } => format!("create wireguard link {iface}"),
            Action::CreateTun { iface } => format!("create persistent tun {iface}"),
            Action::StartWireguardGo { iface, .. } => format!("start wireguard-go {iface}"),
            Action::WaitWireguardGo { iface } => format!("wait for wireguard-go {iface}"),
            Action::ConfigureWireguard {
                wireguard,
                userspace,
            } => format!(
                "configure wireguard {} ({})",
                wireguard.interface,
                if *userspace { "userspace" } else { "kernel" }
            ),
            Action::ConfigurePeeringLink {
                peering, userspace, ..
            } => format!(
                "configure peering link {} ({}): private key, listen port {}",
                peering.interface,
                if *userspace { "userspace" } else { "kernel" },
                peering
                    .listen_port
                    .map_or("any".to_string(), |p| p.to_string())
            ),
            Action::AddWgPeer { iface, peer, .. } => format!(
                "wireguard peer {} on {iface}: allowed-ips {}{}",
                peer.name,
                peer.subnet,
                peer.endpoint
                    .map(|e| format!(", endpoint {e}"))
                    .unwrap_or_default()
            ),
            Action::RemoveWgPeer {
                iface, public_key, ..
            } => format!(
                "remove wireguard peer {} from {iface}",
                &public_key[..public_key.len().min(8)]
            ),
            Action::AddBridge { netns, name } => format!("create bridge {name} in {netns}"),
            Action::AddVeth { name, peer } => format!("create veth {name}/{peer}"),
            Action::MoveLink { link, netns } => format!("move {link} into {netns}"),
            Action::LinkUp { netns, link } => format!("set {link} up{}", ns(netns)),
            Action::AddAddress {
                netns,
                link,
                address,
            } => format!("add {address} to {link}{}", ns(netns)),
            Action::DefaultRoute { netns, link, via } => {
                format!("default route via {via} dev {link} in {netns}")
            }
            Action::SetMtu { netns, link, mtu } => format!("mtu {mtu} on {link} in {netns}"),
            Action::AddRoute {
                netns, link, dest, ..
            } => format!("route {dest} dev {link} in {netns}"),
            Action::DelRoute { netns, link, dest } => {
                format!("remove route {dest} dev {link} in {netns}")
            }
            Action::Sysctl { netns, path, value } => format!("{path} = {value}{}", ns(netns)),
            Action::NftLabTable { netns, uplink, .. } => format!(
                "nft table ip {} in {netns} (masquerade out of {uplink}, input/forward policy)",
                nft::LAB_TABLE
            ),
            Action::NftPeeringTable { netns, peering, .. } => format!(
                "nft table ip {} in {netns} (MSS clamp into {peering})",
                nft::PEERING_TABLE
            ),
            Action::NftHostTable { lab, .. } => {
                format!("nft table ip {} (host namespace)", nft::host_table(lab))
            }
            Action::MakeDir { path } => format!("create {}", path.display()),
            Action::WriteFile { path, .. } => format!("write {}", path.display()),
            Action::StartDaemon { daemon, .. } => format!("start {}", daemon.name),
            Action::ReloadDaemon { daemon, .. } => format!("reload {}", daemon.name),
        }
    }

    /// The verb a repair report uses after what was wrong.
    fn fix(&self) -> &'static str {
        match self {
            Action::LinkUp { .. } => "set up",
            Action::AddAddress { .. } | Action::DefaultRoute { .. } | Action::AddRoute { .. } => {
                "added"
            }
            Action::DelRoute { .. } | Action::RemoveWgPeer { .. } => "removed",
            Action::SetMtu { .. } | Action::ConfigurePeeringLink { .. } => "set",
            Action::AddWgPeer { .. } => "configured",
            Action::CreateWireguardLink { .. } | Action::CreateTun { .. } => "created",
            Action::NftPeeringTable { .. } => "rebuilt",
            Action::ReloadDaemon { .. } => "reloaded",
            Action::Sysctl { .. } => "set",
            Action::NftLabTable { .. } => "rebuilt (with its input/forward policy)",
            Action::NftHostTable { .. } => "rebuilt",
            Action::WriteFile { .. } => "rewritten",
            Action::StartDaemon { .. } => "restarted",
            _ => "done",
        }
    }
}
