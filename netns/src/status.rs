//! `labnet status`: each component of the lab as it is on the system, next to what the config
//! asks for.
use serde::Serialize;

use crate::compare::{compare, expected_plan, Found, StepCheck};
use crate::config::{Lab, Uplink};
use crate::etc_netns::{etc_netns_dir, file_matches, resolv_conf, NSSWITCH_CONF};
use crate::lab_daemons::daemon_is_ours;
use crate::nl::{self, with_netlink};
use crate::nsfs::{in_netns, netns_exists};
use crate::state::{LabState, Resource};
use crate::{nft, paths, wg, Error};

#[derive(Debug, Serialize)]
pub struct Component {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub lab: String,
    /// True when every component matches the config.
    pub ok: bool,
    pub state_file: String,
    pub components: Vec<Component>,
    /// Each step `up` makes for this config, against what the system shows (empty when the
    /// lab's namespace is gone: everything in it is).
    pub plan: Vec<StepCheck>,
}

impl StatusReport {
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "lab {}: {}\n",
            self.lab,
            if self.ok {
                "up, matches its config"
            } else {
                "NOT as configured"
            }
        );
        for c in &self.components {
            s += &format!(
                "  [{}] {:<14} {}\n",
                if c.ok { " ok " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        let off: Vec<&StepCheck> = self.plan.iter().filter(|c| c.found != Found::Ok).collect();
        if !self.plan.is_empty() {
            s += &format!(
                "  plan: {} of {} steps as planned\n",
                self.plan.len() - off.len(),
                self.plan.len()
            );
        }
        for c in off {
            let tag = match c.found {
                Found::Missing => "MISSING",
                Found::Different => "DIFFERENT",
                Found::Extra => "EXTRA",
                Found::Ok => "ok",
            };
            s += &format!("    [{tag}] {}: {}\n", c.step, c.detail);
        }
        s
    }
}

fn comp(name: &str, ok: bool, detail: impl Into<String>) -> Component {
    Component {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

struct LinkFacts {
    exists: bool,
    up: bool,
    addrs: Vec<(std::net::Ipv4Addr, u8)>,
}

pub fn status(lab: &Lab) -> Result<StatusReport, Error> {
    let st = LabState::load(&lab.name)?;
    let mut c = vec![];
    let ns = lab.name.clone();
    let state_file = paths::lab_state_file(&lab.name).display().to_string();
    c.push(comp(
        "state",
        st.as_ref().is_some_and(|s| s.complete),
        match &st {
            None => format!("no {state_file}: the lab is not up"),
            Some(s) if !s.complete => format!(
                "{state_file}: an `up` did not finish; run `labnet down {}`",
                lab.name
            ),
            Some(_) => state_file.clone(),
        },
    ));
    let exists = netns_exists(&ns);
    c.push(comp(
        "netns",
        exists,
        if exists {
            format!("/run/netns/{ns}")
        } else {
            format!("/run/netns/{ns} missing")
        },
    ));
    if !exists {
        return Ok(finish(lab, state_file, c, vec![]));
    }
    let expected = expected_plan(lab, st.as_ref());
    let plan_checks = compare(
        &expected,
        &crate::system::snapshot(lab, &expected, st.as_ref())?,
    );

    let mut names = vec!["lo".to_string(), lab.bridge.name.clone()];
    let uplink_if = match &lab.uplink {
        Uplink::Wireguard(w) => Some(w.interface.clone()),
        Uplink::Host(h) => Some(h.lab_interface.clone()),
        Uplink::None => None,
    };
    names.extend(uplink_if.clone());
    let n2 = names.clone();
    let (facts, route) = with_netlink(Some(&ns), move |h| async move {
        let mut out = vec![];
        for n in &n2 {
            let m = nl::link_by_name(&h, n).await?;
            out.push(LinkFacts {
                exists: m.is_some(),
                up: m.as_ref().is_some_and(nl::link_is_up),
                addrs: nl::ipv4_addresses(&h, n).await?,
            });
        }
        let route = match nl::default_route(&h).await? {
            Some((gw, Some(oif))) => {
                let name = h.link().get().match_index(oif).execute();
                use futures::TryStreamExt;
                let mut name = name;
                let n = name.try_next().await.ok().flatten().and_then(|m| {
                    m.attributes.iter().find_map(|a| match a {
                        rtnetlink::packet_route::link::LinkAttribute::IfName(n) => Some(n.clone()),
                        _ => None,
                    })
                });
                Some((gw, n))
            }
            Some((gw, None)) => Some((gw, None)),
            None => None,
        };
        Ok((out, route))
    })?;
    c.push(comp(
        "lo",
        facts[0].up,
        if facts[0].up { "up" } else { "down" },
    ));
    let br = &facts[1];
    let want = (lab.bridge.address.addr, lab.bridge.address.prefix);
    c.push(comp(
        "bridge",
        br.exists && br.up && br.addrs.contains(&want),
        if !br.exists {
            format!("{} missing", lab.bridge.name)
        } else {
            format!(
                "{} {} addresses {:?} (want {})",
                lab.bridge.name,
                if br.up { "up" } else { "DOWN" },
                br.addrs
                    .iter()
                    .map(|(a, p)| format!("{a}/{p}"))
                    .collect::<Vec<_>>(),
                lab.bridge.address
            )
        },
    ));
    let fwd = in_netns(Some(&ns), || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .map_err(|e| Error::io("ip_forward", e))
    })?;
    c.push(comp(
        "ip_forward",
        fwd.trim() == "1",
        format!("net.ipv4.ip_forward = {}", fwd.trim()),
    ));

    match &lab.uplink {
        Uplink::None => c.push(comp(
            "uplink",
            route.is_none(),
            if route.is_none() {
                "none (isolated lab)".to_string()
            } else {
                format!("unexpected default route {route:?}")
            },
        )),
        Uplink::Wireguard(w) => {
            let f = &facts[2];
            let want = (w.address.addr, w.address.prefix);
            c.push(comp(
                "uplink",
                f.exists && f.up && f.addrs.contains(&want),
                format!(
                    "{} {} {}",
                    w.interface,
                    if f.exists {
                        if f.up {
                            "up"
                        } else {
                            "DOWN"
                        }
                    } else {
                        "missing"
                    },
                    w.address
                ),
            ));
            let rok = route.as_ref().is_some_and(|(gw, dev)| {
                *gw == Some(w.gateway) && dev.as_deref() == Some(&w.interface)
            });
            c.push(comp(
                "route",
                rok,
                match &route {
                    Some((gw, dev)) => format!(
                        "default via {} dev {} (want via {} dev {})",
                        gw.map(|g| g.to_string()).unwrap_or("-".into()),
                        dev.clone().unwrap_or("-".into()),
                        w.gateway,
                        w.interface
                    ),
                    None => format!(
                        "no default route (want via {} dev {})",
                        w.gateway, w.interface
                    ),
                },
            ));
            let userspace =
                st.as_ref().and_then(|s| s.wg_backend.clone()).as_deref() == Some("userspace");
            if userspace {
                let pid = st.as_ref().and_then(|s| {
                    s.resources.iter().find_map(|r| match r {
                        Resource::WgUserspace { pid, .. } => *pid,
                        _ => None,
                    })
                });
                let alive = pid.is_some_and(crate::daemon::process_alive);
                c.push(comp(
                    "wireguard-go",
                    alive,
                    format!(
                        "pid {} {}",
                        pid.map(|p| p.to_string()).unwrap_or("-".into()),
                        if alive { "running" } else { "NOT running" }
                    ),
                ));
            }
            match wg::peers(&w.interface, userspace, &ns) {
                Ok(peers) => {
                    let p = peers.iter().find(|p| p.public_key == w.peer_public_key);
                    c.push(comp(
                        "wg peer",
                        p.is_some(),
                        match p {
                            Some(p) => format!(
                                "{} endpoint {} latest handshake {}",
                                &p.public_key[..8],
                                p.endpoint.clone().unwrap_or("-".into()),
                                p.last_handshake_secs_ago
                                    .map(|s| format!("{s} s ago"))
                                    .unwrap_or("never".into())
                            ),
                            None => "configured peer missing from the device".into(),
                        },
                    ));
                }
                Err(e) => c.push(comp("wg peer", false, e.to_string())),
            }
            let peering = lab.peering.as_ref().map(|p| p.interface.as_str());
            let want = nft::lab_table_peered(&lab.bridge.name, &w.interface, peering);
            let ok = nft::read_table(Some(&ns), nft::LAB_TABLE)?
                .is_some_and(|t| nft::diff(&want, &t).is_empty());
            c.push(comp(
                "nft",
                ok,
                if ok {
                    format!(
                        "table ip {} masquerades oifname {} and lets in only replies from it",
                        nft::LAB_TABLE,
                        w.interface
                    )
                } else {
                    format!(
                        "table ip {} missing, without the masquerade rule or the input/forward policy",
                        nft::LAB_TABLE
                    )
                },
            ));
        }
        Uplink::Host(hu) => {
            let f = &facts[2];
            c.push(comp(
                "uplink",
                f.exists && f.up,
                format!(
                    "{} {}",
                    hu.lab_interface,
                    if f.exists { "present" } else { "missing" }
                ),
            ));
            let rok = route
                .as_ref()
                .is_some_and(|(gw, _)| *gw == Some(hu.host_address.addr));
            c.push(comp(
                "route",
                rok,
                format!(
                    "default route {route:?} (want via {})",
                    hu.host_address.addr
                ),
            ));
            let ok = nft::table_exists(None, &nft::host_table(&lab.name))?;
            c.push(comp(
                "nft",
                ok,
                format!(
                    "table ip {} in the host namespace {}",
                    nft::host_table(&lab.name),
                    if ok { "present" } else { "missing" }
                ),
            ));
        }
    }

    c.extend(peering_components(lab)?);

    let dir = etc_netns_dir(&lab.name);
    let rok = file_matches(&dir.join("resolv.conf"), &resolv_conf(lab))
        && file_matches(&dir.join("nsswitch.conf"), NSSWITCH_CONF);
    c.push(comp(
        "resolv.conf",
        rok,
        format!(
            "{}/resolv.conf {}",
            dir.display(),
            if rok {
                format!("-> nameserver {}", lab.bridge.address.addr)
            } else {
                "missing or changed".into()
            }
        ),
    ));

    if let Some(s) = &st {
        for r in &s.resources {
            if let Resource::Daemon { name, pid, exe } = r {
                let ok = pid.is_some_and(|p| daemon_is_ours(p, exe));
                c.push(comp(
                    name,
                    ok,
                    format!(
                        "pid {} {}",
                        pid.map(|p| p.to_string()).unwrap_or("-".into()),
                        if ok {
                            "running"
                        } else {
                            "NOT running (labnet up restarts it)"
                        }
                    ),
                ));
            }
        }
    }
    Ok(finish(lab, state_file, c, plan_checks))
}

fn finish(
    lab: &Lab,
    state_file: String,
    components: Vec<Component>,
    plan: Vec<StepCheck>,
) -> StatusReport {
    StatusReport {
        lab: lab.name.clone(),
        ok: components.iter().all(|c| c.ok) && plan.iter().all(|c| c.found == Found::Ok),
        state_file,
        components,
        plan,
    }
}

/// The peering link (up, its MTU, the MSS clamp) and each peer (on the device, its route,
/// its latest handshake). A handshake is shown, not required: the other lab may be down.
fn peering_components(lab: &Lab) -> Result<Vec<Component>, Error> {
    let Some(p) = &lab.peering else {
        return Ok(vec![]);
    };
    let mut c = vec![];
    let ns = lab.name.clone();
    let iface = p.interface.clone();
    let (link, routes) = with_netlink(Some(&ns), move |h| async move {
        let m = nl::link_by_name(&h, &iface).await?;
        let up = m.as_ref().is_some_and(nl::link_is_up);
        let mtu = nl::mtu_of(&h, &iface).await?;
        let idx = m.map(|m| m.header.index);
        Ok(((idx, up, mtu), nl::routes(&h).await?))
    })?;
    let (idx, up, mtu) = link;
    let userspace = wg::is_userspace(&p.interface);
    let port = wg::listen_port(&p.interface, userspace, &ns);
    let clamp = nft::read_table(Some(&ns), nft::PEERING_TABLE)?
        .is_some_and(|t| nft::diff(&nft::peering_table(&p.interface), &t).is_empty());
    let mtu_ok = mtu == Some(u32::from(p.mtu));
    c.push(comp(
        "peering",
        idx.is_some()
            && up
            && mtu_ok
            && clamp
            && (p.listen_port.is_none() || port == p.listen_port),
        match idx {
            None => format!("{} missing (labnet up makes it)", p.interface),
            Some(_) => format!(
                "{} {} ({}) listening on {} mtu {} (want {}), MSS clamp {}",
                p.interface,
                if up { "up" } else { "DOWN" },
                if userspace { "wireguard-go" } else { "kernel" },
                port.map(|p| p.to_string()).unwrap_or("-".into()),
                mtu.map(|m| m.to_string()).unwrap_or("-".into()),
                p.mtu,
                if clamp { "on" } else { "MISSING" }
            ),
        },
    ));
    if idx.is_none() {
        return Ok(c);
    }
    let device = wg::peers(&p.interface, userspace, &ns).unwrap_or_default();
    for peer in &lab.peers {
        let d = device.iter().find(|d| d.public_key == peer.public_key);
        let route = routes
            .iter()
            .any(|r| r.dest == peer.subnet.addr && r.prefix == peer.subnet.prefix && r.oif == idx);
        c.push(comp(
            &format!("peer {}", peer.name),
            d.is_some() && route,
            format!(
                "{} {} route {}, endpoint {}, latest handshake {}",
                peer.subnet,
                if d.is_some() {
                    "on the link,"
                } else {
                    "NOT on the link,"
                },
                if route { "present" } else { "MISSING" },
                d.and_then(|d| d.endpoint.clone())
                    .or(peer.endpoint.map(|e| e.to_string()))
                    .unwrap_or("-".into()),
                d.and_then(|d| d.last_handshake_secs_ago)
                    .map(|s| format!("{s} s ago"))
                    .unwrap_or("never".into())
            ),
        ));
    }
    Ok(c)
}
