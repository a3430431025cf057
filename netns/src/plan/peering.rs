//! The peering link of labs joined across hosts: its steps when the lab is built, and its
//! difference from the config on a lab that is up (`labnet peer add/remove` run only that).
use std::net::Ipv4Addr;

use super::build::userspace_for;
use super::repair::{dns_reload, lab_table_repair};
use super::{Action, Observed, Plan, Step, WgPeerObs};
use crate::config::{Lab, Peer, Peering, WgBackend};
use crate::state::Resource;
use crate::{nft, paths};

/// The peering link's first steps: made in labnet's own namespace (its UDP socket keeps the
/// host's route to the other hosts), wireguard-go started so it boots while later steps run.
pub(super) fn peering_start(lab: &Lab, p: &Peering, userspace: bool) -> Vec<Step> {
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
pub(super) fn peering_finish(lab: &Lab, p: &Peering, userspace: bool) -> Vec<Step> {
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
pub(super) fn peering_repair(lab: &Lab, p: &Peering, obs: &Observed, plan: &mut Plan) {
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

/// Pure: for `labnet peer add/remove` on a lab that is up, only the steps its peering needs
/// (see [`super::plan`] for the whole repair): the peering link's difference from the config, the
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
