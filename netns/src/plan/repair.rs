//! Drift repair: the steps that bring a lab that is up back to its config, or why that
//! cannot be done in place.
use super::layout::{etc_files, uplink_of, IP_FORWARD};
use super::peering::{peer_zones, peering_repair};
use super::{Action, DaemonSpec, LinkObs, Observed, Plan, Step};
use crate::config::{Ipv4Cidr, Lab, Uplink};
use crate::nft;

/// The repairs that bring a lab that is up back to its config, in the order they must run
/// (links before addresses before routes); what cannot be repaired in place is `blocked`.
pub(super) fn repair(lab: &Lab, obs: &Observed) -> Plan {
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
pub(super) fn lab_table_repair(lab: &Lab, obs: &Observed) -> Option<Step> {
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
pub(super) fn dns_reload(lab: &Lab, obs: &Observed) -> Option<Step> {
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
