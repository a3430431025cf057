//! `up` as a plan: what the system shows ([`Observed`], read by [`crate::observe`]) and the
//! config give, by a pure function ([`plan`]), the [`Step`]s that make the lab — each with
//! its undo, the [`Resource`] recorded *before* the step runs — or, for a lab that is up, the
//! steps that repair its drift. [`crate::exec`] runs them over the [`crate::exec::Net`] trait
//! and undoes a record ([`undo_order`]), so `up`, drift repair and `down` share one plan type.
//! Golden tests (no root) pin the plan and the undo order for every uplink kind.
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{Ipv4Cidr, Lab, Uplink, WgBackend, Wireguard};
use crate::etc_netns::{etc_netns_dir, resolv_conf, NSSWITCH_CONF};
use crate::state::Resource;
use crate::{nft, paths};

/// One link as the system shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkObs {
    pub up: bool,
    pub addrs: Vec<Ipv4Cidr>,
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
}

impl Step {
    fn new(action: Action, undo: Option<Resource>) -> Step {
        Step {
            action,
            undo,
            drift: None,
        }
    }
    fn repair(action: Action, drift: String) -> Step {
        Step {
            action,
            undo: None,
            drift: Some(drift),
        }
    }

    /// What the step does (and, for a repair, what was wrong), for reports and errors.
    pub fn describe(&self) -> String {
        match &self.drift {
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
            Action::Sysctl { netns, path, value } => format!("{path} = {value}{}", ns(netns)),
            Action::NftLabTable { netns, uplink, .. } => format!(
                "nft table ip {} in {netns} (masquerade out of {uplink}, input/forward policy)",
                nft::LAB_TABLE
            ),
            Action::NftHostTable { lab, .. } => {
                format!("nft table ip {} (host namespace)", nft::host_table(lab))
            }
            Action::MakeDir { path } => format!("create {}", path.display()),
            Action::WriteFile { path, .. } => format!("write {}", path.display()),
            Action::StartDaemon { daemon, .. } => format!("start {}", daemon.name),
        }
    }

    /// The verb a repair report uses after what was wrong.
    fn fix(&self) -> &'static str {
        match self {
            Action::LinkUp { .. } => "set up",
            Action::AddAddress { .. } | Action::DefaultRoute { .. } => "added",
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
    match &lab.uplink {
        Uplink::Wireguard(w) => vec![w.interface.clone()],
        Uplink::Host(h) => vec![h.host_interface.clone()],
        Uplink::None => vec![],
    }
}

/// The links [`crate::observe`] looks at inside the lab.
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
        userspace = match w.backend {
            WgBackend::Userspace => true,
            WgBackend::Auto => !obs.wireguard_module,
            WgBackend::Kernel => {
                if !obs.wireguard_module {
                    p.blocked.push(format!(
                        "{}: uplink.backend = \"kernel\" but this kernel has no WireGuard support; use \"auto\" or \"userspace\" (wireguard-go)",
                        lab.source
                    ));
                }
                false
            }
        };
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
    if let Some((link, _, _)) = &uplink {
        if !obs.lab_nft {
            p.steps.push(Step::repair(
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
            ));
        }
    }
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
