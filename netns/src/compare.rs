//! `labnet status` against the plan: the steps `up` makes for the lab as configured
//! ([`expected_plan`]) each checked against what the system shows ([`Snapshot`], read by
//! [`crate::system::snapshot`]) — as planned, missing, different, or (for addresses, routes,
//! nft rules) something extra labnet did not make. Pure: golden-tested without root.
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{Ipv4Cidr, Lab};
use crate::nft;
use crate::plan::{self, Action, DaemonSpec, Observed, Plan, WgPeerObs};
use crate::state::{LabState, Resource};

/// A default route: (gateway, output link name).
pub type Route = (Option<Ipv4Addr>, Option<String>);

/// One link as the system shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkSnap {
    pub kind: Option<String>,
    pub up: bool,
    pub addrs: Vec<Ipv4Cidr>,
    pub mtu: Option<u32>,
}

/// What the system shows of everything a plan's steps make. Keys with a namespace use None
/// for labnet's own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub netns: bool,
    pub links: BTreeMap<(Option<String>, String), LinkSnap>,
    /// Per namespace: its IPv4 default route (gateway, output link), None when it has none.
    pub default_routes: BTreeMap<String, Option<Route>>,
    pub sysctls: BTreeMap<(Option<String>, String), String>,
    pub nft_tables: BTreeMap<(Option<String>, String), Option<nftables::schema::Nftables<'static>>>,
    pub dirs: Vec<PathBuf>,
    /// Each file's text (None: missing or unreadable).
    pub files: BTreeMap<PathBuf, Option<String>>,
    /// Per namespace: its IPv4 routes other than the default (destination, output link).
    pub routes: BTreeMap<String, Vec<(Ipv4Cidr, Option<String>)>>,
    /// Recorded processes (daemons by name, "wireguard-go IFACE"): the pid of labnet's when it
    /// still runs, None when it does not.
    pub processes: BTreeMap<String, Option<u32>>,
    /// WireGuard interfaces whose UAPI socket answers.
    pub uapi: Vec<String>,
    /// Per WireGuard interface: its peers, or why the device could not be read.
    pub wg_peers: BTreeMap<String, Result<Vec<WgPeerObs>, String>>,
    /// Per WireGuard interface: the port it listens on (None: none, or not read).
    pub wg_listen_ports: BTreeMap<String, Option<u16>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    Ok,
    Missing,
    Different,
    Extra,
}

/// One step of the plan (or something extra next to it) and how the system has it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCheck {
    pub step: String,
    pub found: Found,
    pub detail: String,
}

/// The plan `up` would run for `lab` from scratch, with what the record says `up` chose (the
/// WireGuard backend of each link, the daemons it started).
pub fn expected_plan(lab: &Lab, st: Option<&LabState>) -> Plan {
    use crate::config::{Uplink, WgBackend};
    let recorded = st.map(|s| s.resources.as_slice()).unwrap_or_default();
    let on_wireguard_go = |iface: &str| {
        recorded
            .iter()
            .any(|r| matches!(r, Resource::WgUserspace { iface: i, .. } if i == iface))
    };
    // "auto" chose wireguard-go when the kernel had no WireGuard: a link that did says so.
    let mut auto_userspace = st.and_then(|s| s.wg_backend.as_deref()) == Some("userspace")
        && matches!(&lab.uplink, Uplink::Wireguard(w) if w.backend == WgBackend::Auto);
    if let Uplink::Wireguard(w) = &lab.uplink {
        auto_userspace |= w.backend == WgBackend::Auto && on_wireguard_go(&w.interface);
    }
    if let Some(p) = &lab.peering {
        auto_userspace |= p.backend == WgBackend::Auto && on_wireguard_go(&p.interface);
    }
    let obs = Observed {
        wireguard_module: !auto_userspace,
        // Whatever it was before, a host uplink needs it on while the lab is up.
        host_ip_forward: Some("0".into()),
        ..Default::default()
    };
    let mut p = plan::plan(lab, &obs);
    let daemons: Vec<DaemonSpec> = st
        .map(|s| s.resources.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| match r {
            Resource::Daemon { name, exe, .. } => Some(DaemonSpec {
                name: name.clone(),
                argv: exe.split('\0').map(String::from).collect(),
            }),
            _ => None,
        })
        .collect();
    plan::start_daemons(&mut p, lab, &daemons);
    p
}

fn check(step: String, found: Found, detail: impl Into<String>) -> StepCheck {
    StepCheck {
        step,
        found,
        detail: detail.into(),
    }
}

fn where_(ns: &Option<String>) -> String {
    match ns {
        Some(n) => format!("netns {n}"),
        None => "labnet's namespace".into(),
    }
}

/// Pure: each step of `p` against `snap`, then what is extra (addresses on labnet's links,
/// a default route, nft rules labnet did not make).
pub fn compare(p: &Plan, snap: &Snapshot) -> Vec<StepCheck> {
    let mut out = vec![];
    let link = |ns: &Option<String>, name: &str| snap.links.get(&(ns.clone(), name.to_string()));
    let lab_ns = p.steps.iter().find_map(|s| match &s.action {
        Action::CreateNetns { name } => Some(name.clone()),
        _ => None,
    });
    for s in &p.steps {
        let d = s.describe();
        let c = match &s.action {
            Action::CreateNetns { name } => match snap.netns {
                true => check(d, Found::Ok, format!("/run/netns/{name}")),
                false => check(d, Found::Missing, format!("/run/netns/{name} missing")),
            },
            Action::CreateWireguardLink { iface } | Action::CreateTun { iface } => {
                let want = match s.action {
                    Action::CreateTun { .. } => "tun",
                    _ => "wireguard",
                };
                match link(&lab_ns, iface).or_else(|| link(&None, iface)) {
                    None => check(d, Found::Missing, format!("{iface} missing")),
                    Some(l) if l.kind.as_deref() != Some(want) => check(
                        d,
                        Found::Different,
                        format!("{iface} is a {:?} link, not {want}", l.kind),
                    ),
                    Some(_) => check(d, Found::Ok, format!("{iface} ({want})")),
                }
            }
            Action::StartWireguardGo { iface, .. } => {
                process(d, snap, &format!("wireguard-go {iface}"))
            }
            Action::WaitWireguardGo { iface } => match snap.uapi.contains(iface) {
                true => check(
                    d,
                    Found::Ok,
                    format!("{} answers", crate::wg::uapi_socket(iface).display()),
                ),
                false => check(
                    d,
                    Found::Missing,
                    format!(
                        "{} does not answer",
                        crate::wg::uapi_socket(iface).display()
                    ),
                ),
            },
            Action::ConfigureWireguard { wireguard, .. } => {
                let key = &wireguard.peer_public_key;
                match snap.wg_peers.get(&wireguard.interface) {
                    Some(Ok(keys)) if keys.iter().any(|p| &p.public_key == key) => {
                        check(d, Found::Ok, format!("peer {}", &key[..key.len().min(8)]))
                    }
                    Some(Ok(keys)) => check(
                        d,
                        Found::Different,
                        format!(
                            "the configured peer is not on the device ({} other peer(s))",
                            keys.len()
                        ),
                    ),
                    Some(Err(e)) => check(d, Found::Missing, e.clone()),
                    None => check(d, Found::Missing, "device not read"),
                }
            }
            Action::ConfigurePeeringLink { peering, .. } => {
                let iface = &peering.interface;
                match (
                    snap.wg_peers.get(iface),
                    snap.wg_listen_ports.get(iface).copied().flatten(),
                    peering.listen_port,
                ) {
                    (Some(Err(e)), _, _) => check(d, Found::Missing, e.clone()),
                    (None, _, _) => check(d, Found::Missing, format!("{iface} not read")),
                    (_, got, Some(want)) if got != Some(want) => check(
                        d,
                        Found::Different,
                        format!(
                            "{iface} listens on {}, not {want}",
                            got.map_or("no port".to_string(), |p| p.to_string())
                        ),
                    ),
                    (_, got, _) => check(
                        d,
                        Found::Ok,
                        format!(
                            "{iface} listening on {}",
                            got.map_or("-".to_string(), |p| p.to_string())
                        ),
                    ),
                }
            }
            Action::AddWgPeer { iface, peer, .. } => match snap.wg_peers.get(iface) {
                Some(Ok(ps)) => match ps.iter().find(|p| p.public_key == peer.public_key) {
                    Some(x) if plan::peer_matches(peer, x) => check(
                        d,
                        Found::Ok,
                        format!("peer {} on {iface}, allowed-ips {}", peer.name, peer.subnet),
                    ),
                    Some(x) => check(
                        d,
                        Found::Different,
                        format!(
                            "peer {} on {iface} has allowed-ips {:?}, endpoint {}, keepalive {:?}",
                            peer.name,
                            x.allowed_ips
                                .iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>(),
                            x.endpoint.map_or("-".to_string(), |e| e.to_string()),
                            x.persistent_keepalive
                        ),
                    ),
                    None => check(
                        d,
                        Found::Missing,
                        format!("peer {} is not on {iface}", peer.name),
                    ),
                },
                Some(Err(e)) => check(d, Found::Missing, e.clone()),
                None => check(d, Found::Missing, format!("{iface} not read")),
            },
            Action::RemoveWgPeer {
                iface, public_key, ..
            } => match snap.wg_peers.get(iface) {
                Some(Ok(ps)) if ps.iter().any(|p| &p.public_key == public_key) => {
                    check(d, Found::Extra, format!("still on {iface}"))
                }
                _ => check(d, Found::Ok, format!("not on {iface}")),
            },
            Action::SetMtu {
                netns,
                link: l,
                mtu,
            } => match link(&Some(netns.clone()), l) {
                Some(x) if x.mtu == Some(*mtu) => check(d, Found::Ok, format!("{l} mtu {mtu}")),
                Some(x) => check(
                    d,
                    Found::Different,
                    format!(
                        "{l} has mtu {}",
                        x.mtu.map_or("-".to_string(), |m| m.to_string())
                    ),
                ),
                None => check(d, Found::Missing, format!("{l} missing from netns {netns}")),
            },
            Action::AddRoute {
                netns,
                link: l,
                dest,
                ..
            } => {
                let routes = snap.routes.get(netns).cloned().unwrap_or_default();
                match routes.iter().find(|(r, _)| r == dest) {
                    Some((_, dev)) if dev.as_deref() == Some(l.as_str()) => {
                        check(d, Found::Ok, format!("{dest} dev {l}"))
                    }
                    Some((_, dev)) => check(
                        d,
                        Found::Different,
                        format!("{dest} dev {}", dev.as_deref().unwrap_or("-")),
                    ),
                    None => check(d, Found::Missing, format!("no route to {dest}")),
                }
            }
            Action::DelRoute {
                netns,
                link: l,
                dest,
            } => {
                let routes = snap.routes.get(netns).cloned().unwrap_or_default();
                match routes
                    .iter()
                    .any(|(r, dev)| r == dest && dev.as_deref() == Some(l.as_str()))
                {
                    true => check(d, Found::Extra, format!("{dest} dev {l} still there")),
                    false => check(d, Found::Ok, format!("no route {dest} dev {l}")),
                }
            }
            Action::NftPeeringTable { netns, peering, .. } => table(
                d,
                snap,
                &Some(netns.clone()),
                nft::PEERING_TABLE,
                &nft::peering_table(peering),
            ),
            Action::ReloadDaemon { daemon, .. } => process(d, snap, &daemon.name),
            Action::AddBridge { netns, name } => {
                kind(d, link(&Some(netns.clone()), name), name, "bridge")
            }
            Action::AddVeth { name, .. } => kind(d, link(&None, name), name, "veth"),
            Action::MoveLink { link: l, netns } => {
                match (link(&Some(netns.clone()), l), link(&None, l)) {
                    (Some(_), _) => check(d, Found::Ok, format!("{l} in netns {netns}")),
                    (None, Some(_)) => check(
                        d,
                        Found::Different,
                        format!("{l} is still in labnet's namespace"),
                    ),
                    (None, None) => check(d, Found::Missing, format!("{l} missing")),
                }
            }
            Action::LinkUp { netns, link: l } => match link(netns, l) {
                Some(x) if x.up => check(d, Found::Ok, format!("{l} up")),
                Some(_) => check(d, Found::Different, format!("{l} is down")),
                None => check(
                    d,
                    Found::Missing,
                    format!("{l} missing from {}", where_(netns)),
                ),
            },
            Action::AddAddress {
                netns,
                link: l,
                address,
            } => match link(netns, l) {
                Some(x) if x.addrs.contains(address) => {
                    check(d, Found::Ok, format!("{l} has {address}"))
                }
                Some(x) => check(
                    d,
                    Found::Missing,
                    format!(
                        "{l} has {:?}, not {address}",
                        x.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()
                    ),
                ),
                None => check(
                    d,
                    Found::Missing,
                    format!("{l} missing from {}", where_(netns)),
                ),
            },
            Action::DefaultRoute {
                netns,
                link: l,
                via,
            } => match snap.default_routes.get(netns).cloned().flatten() {
                Some((gw, dev)) if gw == Some(*via) && dev.as_deref() == Some(l.as_str()) => {
                    check(d, Found::Ok, format!("default via {via} dev {l}"))
                }
                Some((gw, dev)) => check(
                    d,
                    Found::Different,
                    format!(
                        "default via {} dev {}",
                        gw.map(|g| g.to_string()).unwrap_or("-".into()),
                        dev.unwrap_or("-".into())
                    ),
                ),
                None => check(d, Found::Missing, "no default route"),
            },
            Action::Sysctl { netns, path, value } => {
                match snap.sysctls.get(&(netns.clone(), path.clone())) {
                    Some(v) if v == value => check(d, Found::Ok, format!("{path} = {v}")),
                    Some(v) => check(d, Found::Different, format!("{path} = {v}")),
                    None => check(d, Found::Missing, format!("{path} unreadable")),
                }
            }
            Action::NftLabTable {
                netns,
                bridge,
                uplink,
                peering,
                ..
            } => table(
                d,
                snap,
                &Some(netns.clone()),
                nft::LAB_TABLE,
                &nft::lab_table_peered(bridge, uplink, peering.as_deref()),
            ),
            Action::NftHostTable {
                lab,
                host_interface,
                ..
            } => table(
                d,
                snap,
                &None,
                &nft::host_table(lab),
                &nft::host_masquerade(lab, host_interface),
            ),
            Action::MakeDir { path } => match snap.dirs.contains(path) {
                true => check(d, Found::Ok, path.display().to_string()),
                false => check(d, Found::Missing, format!("{} missing", path.display())),
            },
            Action::WriteFile { path, text, .. } => match snap.files.get(path).cloned().flatten() {
                Some(t) if &t == text => check(d, Found::Ok, path.display().to_string()),
                Some(_) => check(d, Found::Different, format!("{} changed", path.display())),
                None => check(d, Found::Missing, format!("{} missing", path.display())),
            },
            Action::StartDaemon { daemon, .. } => process(d, snap, &daemon.name),
        };
        out.push(c);
    }
    // Extra: addresses on labnet's links that no step added.
    let mut wanted: BTreeMap<(Option<String>, String), Vec<Ipv4Cidr>> = BTreeMap::new();
    for s in &p.steps {
        if let Action::AddAddress {
            netns,
            link,
            address,
        } = &s.action
        {
            wanted
                .entry((netns.clone(), link.clone()))
                .or_default()
                .push(*address);
        }
    }
    for (key, want) in &wanted {
        if let Some(l) = snap.links.get(key) {
            for a in l.addrs.iter().filter(|a| !want.contains(a)) {
                out.push(check(
                    format!("addresses of {} in {}", key.1, where_(&key.0)),
                    Found::Extra,
                    format!("{a} (labnet did not add it)"),
                ));
            }
        }
    }
    // Extra: peers on the peering link no step adds, routes out of it no step adds (a peer
    // removed from the config whose entry or route stayed).
    for s in &p.steps {
        let Action::ConfigurePeeringLink { peering, .. } = &s.action else {
            continue;
        };
        let iface = &peering.interface;
        let added = |key: &str| {
            p.steps.iter().any(|s| {
                matches!(&s.action, Action::AddWgPeer { iface: i, peer, .. } if i == iface && peer.public_key == key)
            })
        };
        if let Some(Ok(ps)) = snap.wg_peers.get(iface) {
            for x in ps.iter().filter(|x| !added(&x.public_key)) {
                out.push(check(
                    format!("peers of {iface}"),
                    Found::Extra,
                    format!(
                        "peer {} (labnet did not add it)",
                        &x.public_key[..x.public_key.len().min(8)]
                    ),
                ));
            }
        }
        let routed = |dest: &Ipv4Cidr| {
            p.steps.iter().any(|s| {
                matches!(&s.action, Action::AddRoute { link, dest: d, .. } if link == iface && d == dest)
            })
        };
        if let Some(ns) = &lab_ns {
            for (r, _) in snap
                .routes
                .get(ns)
                .into_iter()
                .flatten()
                .filter(|(r, dev)| dev.as_deref() == Some(iface.as_str()) && !routed(r))
            {
                out.push(check(
                    format!("routes out of {iface} in netns {ns}"),
                    Found::Extra,
                    format!("{r} (labnet did not add it)"),
                ));
            }
        }
    }
    // Extra: a default route in a lab the plan gives none (an isolated lab).
    if let Some(ns) = &lab_ns {
        let planned = p
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::DefaultRoute { .. }));
        if let (false, Some(Some((gw, dev)))) = (planned, snap.default_routes.get(ns)) {
            out.push(check(
                format!("default route in {ns}"),
                Found::Extra,
                format!("via {gw:?} dev {dev:?} (an isolated lab has none)"),
            ));
        }
    }
    out
}

fn process(d: String, snap: &Snapshot, name: &str) -> StepCheck {
    match snap.processes.get(name) {
        Some(Some(pid)) => check(d, Found::Ok, format!("{name} running (pid {pid})")),
        _ => check(
            d,
            Found::Missing,
            format!("{name} NOT running (labnet up restarts it)"),
        ),
    }
}

fn kind(d: String, l: Option<&LinkSnap>, name: &str, want: &str) -> StepCheck {
    match l {
        None => check(d, Found::Missing, format!("{name} missing")),
        Some(l) if l.kind.as_deref() != Some(want) => check(
            d,
            Found::Different,
            format!("{name} is a {:?} link, not {want}", l.kind),
        ),
        Some(_) => check(d, Found::Ok, format!("{name} ({want})")),
    }
}

fn table(
    d: String,
    snap: &Snapshot,
    ns: &Option<String>,
    name: &str,
    want: &nftables::schema::Nftables<'static>,
) -> StepCheck {
    let Some(Some(listed)) = snap.nft_tables.get(&(ns.clone(), name.to_string())) else {
        return check(
            d,
            Found::Missing,
            format!("table ip {name} missing from {}", where_(ns)),
        );
    };
    let diffs = nft::diff(want, listed);
    let found = match diffs.first() {
        None => Found::Ok,
        Some(nft::TableDiff::Missing(_)) => Found::Missing,
        Some(nft::TableDiff::Different(_)) => Found::Different,
        Some(nft::TableDiff::Extra(_)) => Found::Extra,
    };
    let detail = if diffs.is_empty() {
        format!("table ip {name} as labnet made it")
    } else {
        diffs
            .iter()
            .map(|x| match x {
                nft::TableDiff::Missing(w) => format!("missing {w}"),
                nft::TableDiff::Different(w) => format!("different {w}"),
                nft::TableDiff::Extra(w) => format!("extra {w}"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    check(d, found, detail)
}
