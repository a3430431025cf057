//! `up` as a plan: what the system shows ([`Observed`], read by [`crate::system::observe`]) and the
//! config give, by a pure function ([`plan`]), the [`Step`]s that make the lab — each with
//! its undo, the [`Resource`] recorded *before* the step runs — or, for a lab that is up, the
//! steps that repair its drift. [`crate::exec`] runs them over the [`crate::exec::Net`] trait
//! and undoes a record ([`undo_order`]), so `up`, drift repair and `down` share one plan type.
//! Golden tests (no root) pin the plan and the undo order for every uplink kind.
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use crate::config::{Ipv4Cidr, Lab, Peer, Peering, Uplink, WgBackend, Wireguard};
use crate::etc_netns::{etc_netns_dir, resolv_conf, NSSWITCH_CONF};
use crate::state::Resource;
use crate::{nft, paths};

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

/// What [`plan`] needs to know about the system.
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
    fn new(action: Action, undo: Option<Resource>) -> Step {
        Step {
            action,
            undo,
            drift: None,
            makes: false,
        }
    }
    fn repair(action: Action, drift: String) -> Step {
        Step {
            action,
            undo: None,
            drift: Some(drift),
            makes: false,
        }
    }
    /// A step of a lab that is up which makes something new (recorded before, like `up`'s).
    fn change(action: Action, undo: Option<Resource>, why: String) -> Step {
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

/// The plan for a lab: its steps in order, or why it cannot be made (a name taken, drift
/// that cannot be repaired in place), each reason naming the component.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub blocked: Vec<String>,
    /// The WireGuard backend the steps use ("kernel" or "userspace").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_backend: Option<String>,
}

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

/// Pure: the steps that bring the system as `obs` shows it to what `lab` asks for — the whole
/// lab when its namespace does not exist, else the repairs of its drift. Daemons are added by
/// [`start_daemons`].
pub fn plan(lab: &Lab, obs: &Observed) -> Plan {
    if obs.netns {
        repair(lab, obs)
    } else {
        build(lab, obs)
    }
}

/// Appends the steps that start the lab's daemons (hand-run `up`).
pub fn start_daemons(plan: &mut Plan, lab: &Lab, daemons: &[DaemonSpec]) {
    for d in daemons {
        plan.steps.push(Step::new(
            Action::StartDaemon {
                lab: lab.name.clone(),
                daemon: d.clone(),
            },
            Some(Resource::Daemon {
                name: d.name.clone(),
                pid: None,
                exe: d.argv.join("\0"),
            }),
        ));
    }
}

fn build(lab: &Lab, obs: &Observed) -> Plan {
    let mut p = Plan::default();
    for n in &obs.host_links_taken {
        p.blocked.push(format!(
            "{}: interface {n} already exists in labnet's namespace; pick another name (uplink.interface) or remove it",
            lab.source
        ));
    }
    for n in &obs.uapi_taken {
        p.blocked.push(format!(
            "{}: a userspace WireGuard device named {n} already runs on this host ({}); names must be unique host-wide",
            lab.source,
            crate::wg::uapi_socket(n).display()
        ));
    }
    let ns = lab.name.clone();
    let s = &mut p.steps;
    let root_link = |name: &str| Some(Resource::RootLink { name: name.into() });

    // wireguard-go takes longest to start (Go runtime): start it first, in labnet's own
    // namespace, and build the lab while it boots.
    let mut userspace = false;
    if let Uplink::Wireguard(w) = &lab.uplink {
        userspace = userspace_for(w.backend, obs.wireguard_module);
        if w.backend == WgBackend::Kernel && !obs.wireguard_module {
            p.blocked.push(format!(
                "{}: uplink.backend = \"kernel\" but this kernel has no WireGuard support; use \"auto\" or \"userspace\" (wireguard-go)",
                lab.source
            ));
        }
        let iface = w.interface.clone();
        if userspace {
            s.push(Step::new(
                Action::CreateTun {
                    iface: iface.clone(),
                },
                root_link(&iface),
            ));
            s.push(Step::new(
                Action::StartWireguardGo {
                    iface: iface.clone(),
                    log: paths::lab_run_dir(&lab.name).join("wireguard-go.log"),
                },
                Some(Resource::WgUserspace {
                    iface: iface.clone(),
                    pid: None,
                }),
            ));
        } else {
            s.push(Step::new(
                Action::CreateWireguardLink {
                    iface: iface.clone(),
                },
                root_link(&iface),
            ));
            s.push(Step::new(
                Action::ConfigureWireguard {
                    wireguard: Box::new(w.clone()),
                    userspace: false,
                },
                None,
            ));
        }
        p.wg_backend = Some(if userspace { "userspace" } else { "kernel" }.into());
    }
    // The peering link's wireguard-go boots alongside.
    let peering = lab.peering.as_ref().map(|pr| {
        let u = userspace_for(pr.backend, obs.wireguard_module);
        if pr.backend == WgBackend::Kernel && !obs.wireguard_module {
            p.blocked.push(format!(
                "{}: peering.backend = \"kernel\" but this kernel has no WireGuard support; use \"auto\" or \"userspace\" (wireguard-go)",
                lab.source
            ));
        }
        s.extend(peering_start(lab, pr, u));
        (pr, u)
    });

    s.push(Step::new(
        Action::CreateNetns { name: ns.clone() },
        Some(Resource::Netns { name: ns.clone() }),
    ));
    let (lab_ns, br) = (Some(ns.clone()), lab.bridge.name.clone());
    s.push(Step::new(
        Action::LinkUp {
            netns: lab_ns.clone(),
            link: "lo".into(),
        },
        None,
    ));
    s.push(Step::new(
        Action::AddBridge {
            netns: ns.clone(),
            name: br.clone(),
        },
        None,
    ));
    s.push(Step::new(
        Action::AddAddress {
            netns: lab_ns.clone(),
            link: br.clone(),
            address: lab.bridge.address,
        },
        None,
    ));
    s.push(Step::new(
        Action::LinkUp {
            netns: lab_ns.clone(),
            link: br.clone(),
        },
        None,
    ));
    // The lab routes between its bridge and its uplink.
    s.push(Step::new(
        Action::Sysctl {
            netns: lab_ns.clone(),
            path: IP_FORWARD.into(),
            value: "1".into(),
        },
        None,
    ));
    let lab_table = |uplink: &str| {
        Step::new(
            Action::NftLabTable {
                netns: ns.clone(),
                bridge: br.clone(),
                uplink: uplink.into(),
                peering: lab.peering.as_ref().map(|p| p.interface.clone()),
                replace: false,
            },
            Some(Resource::NftTable {
                netns: Some(ns.clone()),
                family: "ip".into(),
                name: nft::LAB_TABLE.into(),
            }),
        )
    };
    let lab_side = |s: &mut Vec<Step>, link: &str, address: Ipv4Cidr, via: Ipv4Addr| {
        s.push(Step::new(
            Action::AddAddress {
                netns: lab_ns.clone(),
                link: link.into(),
                address,
            },
            None,
        ));
        s.push(Step::new(
            Action::LinkUp {
                netns: lab_ns.clone(),
                link: link.into(),
            },
            None,
        ));
        s.push(Step::new(
            Action::DefaultRoute {
                netns: ns.clone(),
                link: link.into(),
                via,
            },
            None,
        ));
    };

    match &lab.uplink {
        Uplink::None => {}
        Uplink::Wireguard(w) => {
            // The masquerade matches the uplink by name: the table can go in before the link.
            s.push(lab_table(&w.interface));
            if userspace {
                s.push(Step::new(
                    Action::WaitWireguardGo {
                        iface: w.interface.clone(),
                    },
                    None,
                ));
                s.push(Step::new(
                    Action::ConfigureWireguard {
                        wireguard: Box::new(w.clone()),
                        userspace: true,
                    },
                    None,
                ));
            }
            s.push(Step::new(
                Action::MoveLink {
                    link: w.interface.clone(),
                    netns: ns.clone(),
                },
                None,
            ));
            lab_side(s, &w.interface, w.address, w.gateway);
        }
        Uplink::Host(h) => {
            s.push(Step::new(
                Action::AddVeth {
                    name: h.host_interface.clone(),
                    peer: h.lab_interface.clone(),
                },
                root_link(&h.host_interface),
            ));
            s.push(Step::new(
                Action::MoveLink {
                    link: h.lab_interface.clone(),
                    netns: ns.clone(),
                },
                None,
            ));
            s.push(Step::new(
                Action::AddAddress {
                    netns: None,
                    link: h.host_interface.clone(),
                    address: h.host_address,
                },
                None,
            ));
            s.push(Step::new(
                Action::LinkUp {
                    netns: None,
                    link: h.host_interface.clone(),
                },
                None,
            ));
            lab_side(s, &h.lab_interface, h.lab_address, h.host_address.addr);
            s.push(lab_table(&h.lab_interface));
            if let Some(old) = obs.host_ip_forward.as_ref().filter(|v| *v != "1") {
                s.push(Step::new(
                    Action::Sysctl {
                        netns: None,
                        path: IP_FORWARD.into(),
                        value: "1".into(),
                    },
                    Some(Resource::Sysctl {
                        path: IP_FORWARD.into(),
                        old: old.clone(),
                    }),
                ));
            }
            s.push(Step::new(
                Action::NftHostTable {
                    lab: ns.clone(),
                    host_interface: h.host_interface.clone(),
                    replace: false,
                },
                Some(Resource::NftTable {
                    netns: None,
                    family: "ip".into(),
                    name: nft::host_table(&ns),
                }),
            ));
        }
    }

    if let Some((pr, u)) = peering {
        s.extend(peering_finish(lab, pr, u));
    }

    // /etc/netns/LAB: what `ip netns exec LAB` bind-mounts.
    let dir = etc_netns_dir(&lab.name);
    if !obs.etc_dir_exists {
        s.push(Step::new(
            Action::MakeDir { path: dir.clone() },
            Some(Resource::Dir { path: dir.clone() }),
        ));
    }
    for (path, text) in etc_files(lab) {
        let save_to = obs.etc_files_existing.contains(&path).then(|| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            dir.join(format!("{name}.labnet-saved"))
        });
        s.push(Step::new(
            Action::WriteFile {
                path: path.clone(),
                text,
                save_to: save_to.clone(),
            },
            Some(Resource::File {
                path,
                saved: save_to,
            }),
        ));
    }
    p
}

/// Whether a WireGuard link with `backend` runs on wireguard-go, given the kernel's support.
fn userspace_for(backend: WgBackend, module: bool) -> bool {
    match backend {
        WgBackend::Userspace => true,
        WgBackend::Auto => !module,
        WgBackend::Kernel => false,
    }
}

/// The peering link's first steps: made in labnet's own namespace (its UDP socket keeps the
/// host's route to the other hosts), wireguard-go started so it boots while later steps run.
fn peering_start(lab: &Lab, p: &Peering, userspace: bool) -> Vec<Step> {
    let iface = p.interface.clone();
    let root_link = Some(Resource::RootLink {
        name: iface.clone(),
    });
    if !userspace {
        return vec![Step::new(Action::CreateWireguardLink { iface }, root_link)];
    }
    let log = paths::lab_run_dir(&lab.name).join(format!("wireguard-go-{iface}.log"));
    vec![
        Step::new(
            Action::CreateTun {
                iface: iface.clone(),
            },
            root_link,
        ),
        Step::new(
            Action::StartWireguardGo {
                iface: iface.clone(),
                log,
            },
            Some(Resource::WgUserspace { iface, pid: None }),
        ),
    ]
}

/// The rest of the peering link: its key and port, moved into the lab, its MTU, up; then
/// each peer ([`peer_steps`]) and the MSS clamp.
fn peering_finish(lab: &Lab, p: &Peering, userspace: bool) -> Vec<Step> {
    let (ns, iface) = (lab.name.clone(), p.interface.clone());
    let mut s = vec![];
    if userspace {
        s.push(Step::new(
            Action::WaitWireguardGo {
                iface: iface.clone(),
            },
            None,
        ));
    }
    s.push(Step::new(
        Action::ConfigurePeeringLink {
            peering: Box::new(p.clone()),
            userspace,
            netns: None,
        },
        None,
    ));
    s.push(Step::new(
        Action::MoveLink {
            link: iface.clone(),
            netns: ns.clone(),
        },
        None,
    ));
    s.push(Step::new(
        Action::SetMtu {
            netns: ns.clone(),
            link: iface.clone(),
            mtu: u32::from(p.mtu),
        },
        None,
    ));
    s.push(Step::new(
        Action::LinkUp {
            netns: Some(ns.clone()),
            link: iface.clone(),
        },
        None,
    ));
    for peer in &lab.peers {
        s.extend(peer_steps(lab, p, peer, userspace));
    }
    s.push(peering_table(lab, p, false));
    s
}

/// One peer lab: on the device (AllowedIPs = its subnet), and its subnet routed over the link.
fn peer_steps(lab: &Lab, p: &Peering, peer: &Peer, userspace: bool) -> [Step; 2] {
    [
        Step::new(add_wg_peer(lab, p, peer, userspace), None),
        Step::new(peer_route(lab, p, peer), None),
    ]
}

fn add_wg_peer(lab: &Lab, p: &Peering, peer: &Peer, userspace: bool) -> Action {
    Action::AddWgPeer {
        netns: lab.name.clone(),
        iface: p.interface.clone(),
        peer: Box::new(peer.clone()),
        userspace,
    }
}

fn peer_route(lab: &Lab, p: &Peering, peer: &Peer) -> Action {
    Action::AddRoute {
        netns: lab.name.clone(),
        link: p.interface.clone(),
        dest: peer.subnet,
        src: lab.bridge.address.addr,
    }
}

fn peering_table(lab: &Lab, p: &Peering, replace: bool) -> Step {
    Step::new(
        Action::NftPeeringTable {
            netns: lab.name.clone(),
            peering: p.interface.clone(),
            replace,
        },
        Some(Resource::NftTable {
            netns: Some(lab.name.clone()),
            family: "ip".into(),
            name: nft::PEERING_TABLE.into(),
        }),
    )
}

/// Whether the device's entry for `peer` is what [`Action::AddWgPeer`] sets (an endpoint the
/// config leaves open is the device's to learn).
pub fn peer_matches(peer: &Peer, d: &WgPeerObs) -> bool {
    let keepalive = |k: Option<u16>| k.filter(|k| *k != 0);
    d.allowed_ips == [peer.subnet]
        && (peer.endpoint.is_none() || d.endpoint == peer.endpoint)
        && keepalive(d.persistent_keepalive) == keepalive(peer.persistent_keepalive)
}

/// The steps that bring the peering link of a lab that is up to the config: the whole link
/// when it is missing (each part recorded before it is made, as `up` does), else only what
/// differs — a peer added touches only its own device entry and route, a peer removed
/// only its own; the bridge, the daemons and their leases, the other peers stay as they are.
fn peering_repair(lab: &Lab, p: &Peering, obs: &Observed, plan: &mut Plan) {
    let iface = &p.interface;
    let s = &mut plan.steps;
    let Some(o) = &obs.peering else {
        for n in obs.uapi_taken.iter().filter(|n| *n == iface) {
            plan.blocked.push(format!(
                "{}: a userspace WireGuard device named {n} already runs on this host ({}); peering.interface must be unique host-wide",
                lab.source,
                crate::wg::uapi_socket(n).display()
            ));
        }
        if p.backend == WgBackend::Kernel && !obs.wireguard_module {
            plan.blocked.push(format!(
                "{}: peering.backend = \"kernel\" but this kernel has no WireGuard support; use \"auto\" or \"userspace\" (wireguard-go)",
                lab.source
            ));
        }
        let userspace = userspace_for(p.backend, obs.wireguard_module);
        let why = format!("peering link {iface} was missing");
        for st in peering_start(lab, p, userspace)
            .into_iter()
            .chain(peering_finish(lab, p, userspace))
        {
            s.push(Step::change(st.action, st.undo, why.clone()));
        }
        return;
    };
    let ns = lab.name.clone();
    if let Some(e) = &o.device_error {
        // wireguard-go's socket must be in labnet's namespace and its TUN is in the lab's
        // now: a dead one cannot be started again in place.
        plan.blocked.push(format!(
            "the peering link {iface} is there but its WireGuard device cannot be read ({e})"
        ));
        return;
    }
    if !o.up {
        s.push(Step::repair(
            Action::LinkUp {
                netns: Some(ns.clone()),
                link: iface.clone(),
            },
            format!("{iface} was down"),
        ));
    }
    let mtu = u32::from(p.mtu);
    if o.mtu != Some(mtu) {
        s.push(Step::repair(
            Action::SetMtu {
                netns: ns.clone(),
                link: iface.clone(),
                mtu,
            },
            format!(
                "{iface} had mtu {}, not {mtu}",
                o.mtu.map_or("-".to_string(), |m| m.to_string())
            ),
        ));
    }
    if p.listen_port.is_some() && o.listen_port != p.listen_port {
        s.push(Step::repair(
            Action::ConfigurePeeringLink {
                peering: Box::new(p.clone()),
                userspace: o.userspace,
                netns: Some(ns.clone()),
            },
            format!(
                "{iface} listened on {}, not {}",
                o.listen_port.map_or("-".to_string(), |m| m.to_string()),
                p.listen_port.unwrap_or_default()
            ),
        ));
    }
    for d in &o.peers {
        if !lab.peers.iter().any(|c| c.public_key == d.public_key) {
            s.push(Step::repair(
                Action::RemoveWgPeer {
                    netns: ns.clone(),
                    iface: iface.clone(),
                    public_key: d.public_key.clone(),
                    userspace: o.userspace,
                },
                format!(
                    "peer {} on {iface} is not in the config",
                    &d.public_key[..d.public_key.len().min(8)]
                ),
            ));
        }
    }
    for r in &o.routes {
        if !lab.peers.iter().any(|c| c.subnet == *r) {
            s.push(Step::repair(
                Action::DelRoute {
                    netns: ns.clone(),
                    link: iface.clone(),
                    dest: *r,
                },
                format!("route {r} dev {iface} is no peer's subnet"),
            ));
        }
    }
    for peer in &lab.peers {
        match o.peers.iter().find(|d| d.public_key == peer.public_key) {
            None => s.push(Step::repair(
                add_wg_peer(lab, p, peer, o.userspace),
                format!("peer {} was not on {iface}", peer.name),
            )),
            Some(d) if !peer_matches(peer, d) => s.push(Step::repair(
                add_wg_peer(lab, p, peer, o.userspace),
                format!(
                    "peer {} on {iface} had allowed-ips {:?}, endpoint {}, keepalive {:?}",
                    peer.name,
                    d.allowed_ips
                        .iter()
                        .map(|a| a.to_string())
                        .collect::<Vec<_>>(),
                    d.endpoint.map_or("-".to_string(), |e| e.to_string()),
                    d.persistent_keepalive
                ),
            )),
            Some(_) => {}
        }
        if !o.routes.contains(&peer.subnet) {
            s.push(Step::repair(
                peer_route(lab, p, peer),
                format!("route {} dev {iface} was missing", peer.subnet),
            ));
        }
    }
    if !o.nft {
        let t = peering_table(lab, p, true);
        s.push(Step::change(
            t.action,
            t.undo,
            format!(
                "nft table ip {} (the MSS clamp) was missing or changed",
                nft::PEERING_TABLE
            ),
        ));
    }
}

/// The peer zones the lab's dns forwards, per config: (zone, dns server).
pub fn peer_zones(lab: &Lab) -> Vec<(String, Ipv4Addr)> {
    lab.peers.iter().map(|p| (p.zone.clone(), p.dns)).collect()
}

/// `lab` with the peering link the running lab was built with (`built`), when the config no
/// longer has one: the link stays until `down`, its peers and routes go.
pub fn with_built_peering(lab: &Lab, built: Option<&Lab>) -> Lab {
    let mut l = lab.clone();
    if l.peering.is_none() {
        l.peering = built.and_then(|b| b.peering.clone());
    }
    l
}

/// The repairs that bring a lab that is up back to its config, in the order they must run
/// (links before addresses before routes); what cannot be repaired in place is `blocked`.
fn repair(lab: &Lab, obs: &Observed) -> Plan {
    let mut p = Plan::default();
    let ns = Some(lab.name.clone());
    let mut want: Vec<(String, Option<Ipv4Cidr>)> = vec![
        ("lo".into(), None),
        (lab.bridge.name.clone(), Some(lab.bridge.address)),
    ];
    let uplink = uplink_of(lab);
    if let Some((name, addr, _)) = &uplink {
        want.push((name.clone(), Some(*addr)));
    }
    let (mut ups, mut addrs) = (vec![], vec![]);
    let mut check = |netns: &Option<String>, name: &str, l: &LinkObs, addr: Option<Ipv4Cidr>| {
        if !l.up {
            ups.push(Step::repair(
                Action::LinkUp {
                    netns: netns.clone(),
                    link: name.into(),
                },
                format!("{name} was down"),
            ));
        }
        if let Some(a) = addr.filter(|a| !l.addrs.contains(a)) {
            addrs.push(Step::repair(
                Action::AddAddress {
                    netns: netns.clone(),
                    link: name.into(),
                    address: a,
                },
                format!("{name} had lost {a}"),
            ));
        }
    };
    for (name, addr) in &want {
        match obs.links.get(name) {
            Some(l) => check(&ns, name, l, *addr),
            None => p
                .blocked
                .push(format!("{name} is missing from the lab's namespace")),
        }
    }
    if let Uplink::Host(h) = &lab.uplink {
        match &obs.host_link {
            Some(l) => check(&None, &h.host_interface, l, Some(h.host_address)),
            None => p.blocked.push(format!(
                "{} is missing from labnet's namespace",
                h.host_interface
            )),
        }
    }
    p.steps.extend(ups);
    p.steps.extend(addrs);
    if let Some((link, _, via)) = &uplink {
        let right = obs
            .default_route
            .as_ref()
            .is_some_and(|(gw, dev)| *gw == Some(*via) && dev.as_deref() == Some(link.as_str()));
        if !right && obs.links.contains_key(link) {
            if obs.default_route.is_some() {
                p.blocked.push(format!(
                    "the lab's default route is {:?}, not via {via} dev {link}",
                    obs.default_route
                ));
            } else {
                p.steps.push(Step::repair(
                    Action::DefaultRoute {
                        netns: lab.name.clone(),
                        link: link.clone(),
                        via: *via,
                    },
                    format!("default route via {via} dev {link} was missing"),
                ));
            }
        }
    }
    if !obs.ip_forward {
        p.steps.push(Step::repair(
            Action::Sysctl {
                netns: ns.clone(),
                path: IP_FORWARD.into(),
                value: "1".into(),
            },
            format!("{IP_FORWARD} was not 1"),
        ));
    }
    p.steps.extend(lab_table_repair(lab, obs));
    if let Uplink::Host(h) = &lab.uplink {
        if !obs.host_nft {
            p.steps.push(Step::repair(
                Action::NftHostTable {
                    lab: lab.name.clone(),
                    host_interface: h.host_interface.clone(),
                    replace: true,
                },
                format!(
                    "nft table ip {} (host namespace) was missing",
                    nft::host_table(&lab.name)
                ),
            ));
        }
    }
    for (path, text) in etc_files(lab) {
        if obs.files_changed.contains(&path) {
            p.steps.push(Step::repair(
                Action::WriteFile {
                    path: path.clone(),
                    text,
                    save_to: None,
                },
                format!("{} was missing or changed", path.display()),
            ));
        }
    }
    if let Some(pr) = &lab.peering {
        peering_repair(lab, pr, obs, &mut p);
    }
    for (name, argv) in &obs.dead_daemons {
        p.steps.push(Step::repair(
            Action::StartDaemon {
                lab: lab.name.clone(),
                daemon: DaemonSpec {
                    name: name.clone(),
                    argv: argv.clone(),
                },
            },
            format!("{name} was not running"),
        ));
    }
    p.steps.extend(dns_reload(lab, obs));
    p
}

/// The lab table again when it is not as labnet makes it (the masquerade out of the uplink,
/// the input/forward policy letting the peering link in).
fn lab_table_repair(lab: &Lab, obs: &Observed) -> Option<Step> {
    let (link, _, _) = uplink_of(lab)?;
    (!obs.lab_nft).then(|| {
        Step::repair(
            Action::NftLabTable {
                netns: lab.name.clone(),
                bridge: lab.bridge.name.clone(),
                uplink: link.clone(),
                peering: lab.peering.as_ref().map(|p| p.interface.clone()),
                replace: true,
            },
            format!(
                "nft table ip {} lacked the masquerade out of {link}",
                nft::LAB_TABLE
            ),
        )
    })
}

/// The dns forwards peer zones: one started with other peers reads its config again (a
/// dead one is started afresh by the repair).
fn dns_reload(lab: &Lab, obs: &Observed) -> Option<Step> {
    let d = obs.dns.as_ref()?;
    let dead = obs.dead_daemons.iter().any(|(n, _)| n == "dns");
    (!dead && d.peer_zones != peer_zones(lab)).then(|| {
        Step::repair(
            Action::ReloadDaemon {
                lab: lab.name.clone(),
                daemon: DaemonSpec {
                    name: "dns".into(),
                    argv: d.argv.clone(),
                },
                pid: d.pid,
            },
            "dns forwards other peer zones than the config's".into(),
        )
    })
}

/// Pure: for `labnet peer add/remove` on a lab that is up, only the steps its peering needs
/// (see [`plan`] for the whole repair): the peering link's difference from the config, the
/// lab table letting the link in, the dns taking up the new peer zones. Nothing else of the
/// lab is touched.
pub fn peers_plan(lab: &Lab, obs: &Observed) -> Plan {
    let mut p = Plan::default();
    if let Some(pr) = &lab.peering {
        p.steps.extend(lab_table_repair(lab, obs));
        peering_repair(lab, pr, obs, &mut p);
    }
    p.steps.extend(dns_reload(lab, obs));
    p
}

/// Pure: the order `down` undoes a record in. wireguard-go first: it only detaches from its
/// (persistent) TUN while nothing else holds the rtnl lock. Then the rest, newest first. The
/// lab's namespace last: the kernel tears it down (and every link and table in it)
/// asynchronously, holding the rtnl lock for tens of ms, which netlink requests for the other
/// steps would otherwise queue behind.
pub fn undo_order(resources: &[Resource]) -> Vec<Resource> {
    let wg = resources
        .iter()
        .filter(|r| matches!(r, Resource::WgUserspace { .. }));
    let rest = resources
        .iter()
        .rev()
        .filter(|r| !matches!(r, Resource::WgUserspace { .. } | Resource::Netns { .. }));
    let netns = resources
        .iter()
        .rev()
        .filter(|r| matches!(r, Resource::Netns { .. }));
    wg.chain(rest).chain(netns).cloned().collect()
}
