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
use crate::plan::{self, Action, DaemonSpec, Observed, Plan};
use crate::state::{LabState, Resource};

/// A default route: (gateway, output link name).
pub type Route = (Option<Ipv4Addr>, Option<String>);

/// One link as the system shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkSnap {
    pub kind: Option<String>,
    pub up: bool,
    pub addrs: Vec<Ipv4Cidr>,
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
    /// Recorded processes (daemons by name, "wireguard-go") and whether labnet's still runs.
    pub processes: BTreeMap<String, bool>,
    /// WireGuard interfaces whose UAPI socket answers.
    pub uapi: Vec<String>,
    /// Per WireGuard interface: the peers' public keys, or why the device could not be read.
    pub wg_peers: BTreeMap<String, Result<Vec<String>, String>>,
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
/// WireGuard backend, the daemons it started).
pub fn expected_plan(lab: &Lab, st: Option<&LabState>) -> Plan {
    let backend = st.and_then(|s| s.wg_backend.as_deref());
    let obs = Observed {
        wireguard_module: backend != Some("userspace"),
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
            Action::StartWireguardGo { .. } => process(d, snap, "wireguard-go"),
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
                    Some(Ok(keys)) if keys.contains(key) => {
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
        Some(true) => check(d, Found::Ok, format!("{name} running")),
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
