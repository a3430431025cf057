//! The whole lab from scratch (its namespace is not there): every step with its undo, in the
//! order that lets wireguard-go boot while the rest is made.
use std::net::Ipv4Addr;

use super::layout::{etc_files, IP_FORWARD};
use super::peering::{peering_finish, peering_start};
use super::{Action, Observed, Plan, Step};
use crate::config::{Ipv4Cidr, Lab, Uplink, WgBackend};
use crate::etc_netns::etc_netns_dir;
use crate::state::Resource;
use crate::{nft, paths};

pub(super) fn build(lab: &Lab, obs: &Observed) -> Plan {
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
pub(super) fn userspace_for(backend: WgBackend, module: bool) -> bool {
    match backend {
        WgBackend::Userspace => true,
        WgBackend::Auto => !module,
        WgBackend::Kernel => false,
    }
}
