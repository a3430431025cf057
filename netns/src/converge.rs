//! Drift repair for a lab that is up: what the system shows ([`observe`], the only part that
//! reads it) against what the config asks for gives a plan of [`Repair`] steps ([`plan`], pure:
//! golden-tested without root), run over the [`Net`] trait ([`apply`]) by the netlink/nft
//! implementation ([`SystemNet`]) or a recording fake in tests.
//!
//! What cannot be repaired in place (a link that is gone, a dead wireguard-go) is named in
//! [`Plan::unrepairable`]; `up` then fails naming it instead of claiming the lab is fine.
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{Ipv4Cidr, Lab, Uplink};
use crate::lab::{etc_netns_dir, resolv_conf, NSSWITCH_CONF};
use crate::nl::{self, with_netlink};
use crate::nsfs::{in_netns, netns_exists};
use crate::{nft, Error};

/// One link as the system shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LinkObs {
    pub up: bool,
    pub addrs: Vec<Ipv4Cidr>,
}

/// What [`plan`] needs to know about a running lab.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Observed {
    pub netns: bool,
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
}

/// A change that brings one component back to the config. `netns: None` is labnet's own
/// namespace.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Repair {
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
        netns: String,
        path: String,
        value: String,
    },
    /// Replace the table whole (delete, then add): a flushed or edited table comes back as
    /// labnet made it.
    NftLabMasquerade {
        netns: String,
        bridge: String,
        uplink: String,
    },
    NftHostMasquerade {
        lab: String,
        host_interface: String,
    },
    WriteFile {
        path: PathBuf,
        text: String,
    },
}

impl Repair {
    /// What was wrong and what the step does, for `up`'s report.
    pub fn describe(&self) -> String {
        match self {
            Repair::LinkUp { link, .. } => format!("{link} was down: set up"),
            Repair::AddAddress { link, address, .. } => {
                format!("{link} had lost {address}: added")
            }
            Repair::DefaultRoute { link, via, .. } => {
                format!("default route via {via} dev {link} was missing: added")
            }
            Repair::Sysctl { path, value, .. } => format!("{path} was not {value}: set"),
            Repair::NftLabMasquerade { uplink, .. } => format!(
                "nft table ip {} lacked the masquerade out of {uplink}: rebuilt (with its input/forward policy)",
                nft::LAB_TABLE
            ),
            Repair::NftHostMasquerade { lab, .. } => format!(
                "nft table ip {} (host namespace) was missing: rebuilt",
                nft::host_table(lab)
            ),
            Repair::WriteFile { path, .. } => {
                format!("{} was missing or changed: rewritten", path.display())
            }
        }
    }
}

/// The repairs, in the order they must run (links before addresses before routes).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Repair>,
    /// Components that cannot be repaired in place, each with why.
    pub unrepairable: Vec<String>,
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The lab-side uplink link, its address and the default route's gateway, per config.
fn uplink_of(lab: &Lab) -> Option<(String, Option<Ipv4Cidr>, Ipv4Addr)> {
    match &lab.uplink {
        Uplink::None => None,
        Uplink::Wireguard(w) => Some((w.interface.clone(), Some(w.address), w.gateway)),
        Uplink::Host(h) => Some((
            h.lab_interface.clone(),
            Some(h.lab_address),
            h.host_address.addr,
        )),
    }
}

/// The names [`observe`] looks at inside the lab.
fn lab_links(lab: &Lab) -> Vec<String> {
    let mut v = vec!["lo".to_string(), lab.bridge.name.clone()];
    v.extend(uplink_of(lab).map(|(n, _, _)| n));
    v
}

/// Pure: the repairs that bring `obs` to what `lab` asks for.
pub fn plan(lab: &Lab, obs: &Observed) -> Plan {
    let mut p = Plan::default();
    if !obs.netns {
        p.unrepairable.push(format!(
            "netns /run/netns/{} is gone (everything in it went with it)",
            lab.name
        ));
        return p;
    }
    let ns = Some(lab.name.clone());
    let mut want: Vec<(String, Option<Ipv4Cidr>)> = vec![
        ("lo".into(), None),
        (lab.bridge.name.clone(), Some(lab.bridge.address)),
    ];
    let uplink = uplink_of(lab);
    if let Some((name, addr, _)) = &uplink {
        want.push((name.clone(), *addr));
    }
    let (mut ups, mut addrs) = (vec![], vec![]);
    for (name, addr) in &want {
        let Some(l) = obs.links.get(name) else {
            p.unrepairable
                .push(format!("{name} is missing from the lab's namespace"));
            continue;
        };
        if !l.up {
            ups.push(Repair::LinkUp {
                netns: ns.clone(),
                link: name.clone(),
            });
        }
        if let Some(a) = addr {
            if !l.addrs.contains(a) {
                addrs.push(Repair::AddAddress {
                    netns: ns.clone(),
                    link: name.clone(),
                    address: *a,
                });
            }
        }
    }
    if let Uplink::Host(h) = &lab.uplink {
        match &obs.host_link {
            None => p.unrepairable.push(format!(
                "{} is missing from labnet's namespace",
                h.host_interface
            )),
            Some(l) => {
                if !l.up {
                    ups.push(Repair::LinkUp {
                        netns: None,
                        link: h.host_interface.clone(),
                    });
                }
                if !l.addrs.contains(&h.host_address) {
                    addrs.push(Repair::AddAddress {
                        netns: None,
                        link: h.host_interface.clone(),
                        address: h.host_address,
                    });
                }
            }
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
                p.unrepairable.push(format!(
                    "the lab's default route is {:?}, not via {via} dev {link}",
                    obs.default_route
                ));
            } else {
                p.steps.push(Repair::DefaultRoute {
                    netns: lab.name.clone(),
                    link: link.clone(),
                    via: *via,
                });
            }
        }
    }
    if !obs.ip_forward {
        p.steps.push(Repair::Sysctl {
            netns: lab.name.clone(),
            path: IP_FORWARD.into(),
            value: "1".into(),
        });
    }
    if let Some((link, _, _)) = &uplink {
        if !obs.lab_nft {
            p.steps.push(Repair::NftLabMasquerade {
                netns: lab.name.clone(),
                bridge: lab.bridge.name.clone(),
                uplink: link.clone(),
            });
        }
    }
    if let Uplink::Host(h) = &lab.uplink {
        if !obs.host_nft {
            p.steps.push(Repair::NftHostMasquerade {
                lab: lab.name.clone(),
                host_interface: h.host_interface.clone(),
            });
        }
    }
    for path in &obs.files_changed {
        let text = match path.file_name().and_then(|n| n.to_str()) {
            Some("resolv.conf") => resolv_conf(lab),
            Some("nsswitch.conf") => NSSWITCH_CONF.to_string(),
            _ => continue,
        };
        p.steps.push(Repair::WriteFile {
            path: path.clone(),
            text,
        });
    }
    p
}

/// The changes a repair plan makes, one method per kind of step.
pub trait Net {
    fn link_up(&mut self, netns: Option<&str>, link: &str) -> Result<(), Error>;
    fn add_address(&mut self, netns: Option<&str>, link: &str, a: Ipv4Cidr) -> Result<(), Error>;
    fn add_default_route(&mut self, netns: &str, link: &str, via: Ipv4Addr) -> Result<(), Error>;
    fn sysctl(&mut self, netns: &str, path: &str, value: &str) -> Result<(), Error>;
    /// Replaces table `table` in `netns` (None: labnet's own) by `ruleset`.
    fn replace_nft_table(
        &mut self,
        netns: Option<&str>,
        table: &str,
        ruleset: nftables::schema::Nftables<'static>,
    ) -> Result<(), Error>;
    fn write_file(&mut self, path: &std::path::Path, text: &str) -> Result<(), Error>;
}

/// Runs the steps in order; the first failure stops it, naming the step.
pub fn apply(net: &mut dyn Net, steps: &[Repair]) -> Result<(), Error> {
    for s in steps {
        let r = match s {
            Repair::LinkUp { netns, link } => net.link_up(netns.as_deref(), link),
            Repair::AddAddress {
                netns,
                link,
                address,
            } => net.add_address(netns.as_deref(), link, *address),
            Repair::DefaultRoute { netns, link, via } => net.add_default_route(netns, link, *via),
            Repair::Sysctl { netns, path, value } => net.sysctl(netns, path, value),
            Repair::NftLabMasquerade {
                netns,
                bridge,
                uplink,
            } => net.replace_nft_table(Some(netns), nft::LAB_TABLE, nft::lab_table(bridge, uplink)),
            Repair::NftHostMasquerade {
                lab,
                host_interface,
            } => net.replace_nft_table(
                None,
                &nft::host_table(lab),
                nft::host_masquerade(lab, host_interface),
            ),
            Repair::WriteFile { path, text } => net.write_file(path, text),
        };
        r.map_err(|e| Error::Repair {
            step: s.describe(),
            source: Box::new(e),
        })?;
    }
    Ok(())
}

/// The real system: rtnetlink, nft, /proc/sys, files.
pub struct SystemNet;

impl Net for SystemNet {
    fn link_up(&mut self, netns: Option<&str>, link: &str) -> Result<(), Error> {
        let link = link.to_string();
        with_netlink(netns, move |h| async move { nl::set_up(&h, &link).await })
    }
    fn add_address(&mut self, netns: Option<&str>, link: &str, a: Ipv4Cidr) -> Result<(), Error> {
        let link = link.to_string();
        with_netlink(netns, move |h| async move {
            nl::add_address(&h, &link, a.addr, a.prefix).await
        })
    }
    fn add_default_route(&mut self, netns: &str, link: &str, via: Ipv4Addr) -> Result<(), Error> {
        let link = link.to_string();
        with_netlink(Some(netns), move |h| async move {
            nl::add_default_route(&h, &link, via).await
        })
    }
    fn sysctl(&mut self, netns: &str, path: &str, value: &str) -> Result<(), Error> {
        let (path, value) = (path.to_string(), value.to_string());
        in_netns(Some(netns), move || {
            std::fs::write(&path, &value).map_err(|e| Error::io(&path, e))
        })
    }
    fn replace_nft_table(
        &mut self,
        netns: Option<&str>,
        table: &str,
        ruleset: nftables::schema::Nftables<'static>,
    ) -> Result<(), Error> {
        nft::delete_table(netns, table)?;
        nft::apply(netns, ruleset)
    }
    fn write_file(&mut self, path: &std::path::Path, text: &str) -> Result<(), Error> {
        model::paths::write_atomic(path, text.as_bytes(), false).map_err(|e| Error::io(path, e))
    }
}

/// Reads what [`plan`] compares: links, addresses and the default route over rtnetlink, the
/// sysctl, labnet's nft tables, the /etc/netns files.
pub fn observe(lab: &Lab) -> Result<Observed, Error> {
    let mut o = Observed {
        netns: netns_exists(&lab.name),
        ..Default::default()
    };
    if !o.netns {
        return Ok(o);
    }
    let names = lab_links(lab);
    let (links, route) = with_netlink(Some(&lab.name), move |h| async move {
        let mut links = BTreeMap::new();
        for n in &names {
            if let Some(m) = nl::link_by_name(&h, n).await? {
                links.insert(n.clone(), link_obs(&h, n, &m).await?);
            }
        }
        let route = match nl::default_route(&h).await? {
            Some((gw, Some(oif))) => Some((gw, nl::name_of(&h, oif).await?)),
            Some((gw, None)) => Some((gw, None)),
            None => None,
        };
        Ok((links, route))
    })?;
    o.links = links;
    o.default_route = route;
    if let Uplink::Host(h) = &lab.uplink {
        let n = h.host_interface.clone();
        o.host_link = with_netlink(None, move |h| async move {
            match nl::link_by_name(&h, &n).await? {
                Some(m) => Ok(Some(link_obs(&h, &n, &m).await?)),
                None => Ok(None),
            }
        })?;
        o.host_nft = nft::table_exists(None, &nft::host_table(&lab.name))?;
    }
    o.ip_forward = in_netns(Some(&lab.name), || {
        std::fs::read_to_string(IP_FORWARD).map_err(|e| Error::io(IP_FORWARD, e))
    })?
    .trim()
        == "1";
    if let Some((link, _, _)) = uplink_of(lab) {
        o.lab_nft = nft::list_table(Some(&lab.name), nft::LAB_TABLE)?
            .is_some_and(|t| nft::is_lab_table(&t, &link));
    }
    let dir = etc_netns_dir(&lab.name);
    for (name, text) in [
        ("resolv.conf", resolv_conf(lab)),
        ("nsswitch.conf", NSSWITCH_CONF.to_string()),
    ] {
        let path = dir.join(name);
        if !std::fs::read_to_string(&path).is_ok_and(|s| s == text) {
            o.files_changed.push(path);
        }
    }
    Ok(o)
}

async fn link_obs(
    h: &rtnetlink::Handle,
    name: &str,
    m: &rtnetlink::packet_route::link::LinkMessage,
) -> Result<LinkObs, Error> {
    Ok(LinkObs {
        up: nl::link_is_up(m),
        addrs: nl::ipv4_addresses(h, name)
            .await?
            .into_iter()
            .map(|(addr, prefix)| Ipv4Cidr { addr, prefix })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what a plan would do, in order.
    #[derive(Default)]
    struct RecordingNet(Vec<String>);

    impl Net for RecordingNet {
        fn link_up(&mut self, netns: Option<&str>, link: &str) -> Result<(), Error> {
            self.0.push(format!("link_up {netns:?} {link}"));
            Ok(())
        }
        fn add_address(&mut self, n: Option<&str>, link: &str, a: Ipv4Cidr) -> Result<(), Error> {
            self.0.push(format!("add_address {n:?} {link} {a}"));
            Ok(())
        }
        fn add_default_route(&mut self, n: &str, link: &str, via: Ipv4Addr) -> Result<(), Error> {
            self.0
                .push(format!("add_default_route {n} {link} via {via}"));
            Ok(())
        }
        fn sysctl(&mut self, n: &str, path: &str, value: &str) -> Result<(), Error> {
            self.0.push(format!("sysctl {n} {path}={value}"));
            Ok(())
        }
        fn replace_nft_table(
            &mut self,
            n: Option<&str>,
            table: &str,
            ruleset: nftables::schema::Nftables<'static>,
        ) -> Result<(), Error> {
            let json = serde_json::to_string(&ruleset).unwrap_or_default();
            self.0.push(format!(
                "replace_nft_table {n:?} {table} ({} bytes)",
                json.len()
            ));
            Ok(())
        }
        fn write_file(&mut self, path: &std::path::Path, text: &str) -> Result<(), Error> {
            self.0.push(format!(
                "write_file {} ({} bytes)",
                path.display(),
                text.len()
            ));
            Ok(())
        }
    }

    fn lab(uplink: &str) -> Lab {
        let toml = format!(
            "name = \"drift\"\n[bridge]\nname = \"br-drift\"\naddress = \"10.9.0.1/24\"\n{uplink}"
        );
        crate::config::parse(&toml, "drift.toml", None).expect("test config parses")
    }

    const HOST: &str = "[uplink]\nkind = \"host\"\n";
    const WIREGUARD: &str = "[uplink]\nkind = \"wireguard\"\ninterface = \"wg-drift\"\n\
        address = \"192.168.20.1/24\"\nprivate_key_file = \"/etc/labnet/drift.key\"\n\
        peer_public_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\n\
        endpoint = \"10.1.2.3:51820\"\nallowed_ips = [\"0.0.0.0/0\"]\n";

    /// What a freshly built lab shows: nothing to repair.
    fn healthy(lab: &Lab) -> Observed {
        let mut links = BTreeMap::new();
        links.insert(
            "lo".to_string(),
            LinkObs {
                up: true,
                addrs: vec![],
            },
        );
        links.insert(
            lab.bridge.name.clone(),
            LinkObs {
                up: true,
                addrs: vec![lab.bridge.address],
            },
        );
        let mut o = Observed {
            netns: true,
            ip_forward: true,
            lab_nft: true,
            host_nft: true,
            ..Default::default()
        };
        if let Some((name, addr, via)) = uplink_of(lab) {
            links.insert(
                name.clone(),
                LinkObs {
                    up: true,
                    addrs: addr.into_iter().collect(),
                },
            );
            o.default_route = Some((Some(via), Some(name)));
        }
        if let Uplink::Host(h) = &lab.uplink {
            o.host_link = Some(LinkObs {
                up: true,
                addrs: vec![h.host_address],
            });
        }
        o.links = links;
        o
    }

    /// The drift: bridge down and its address removed, the nft table flushed, the
    /// uplink down (which takes the default route with it), ip_forward off, resolv.conf edited.
    fn drifted(lab: &Lab) -> Observed {
        let mut o = healthy(lab);
        let br = o.links.get_mut(&lab.bridge.name).expect("bridge observed");
        br.up = false;
        br.addrs.clear();
        o.lab_nft = false;
        o.host_nft = false;
        o.ip_forward = false;
        if let Some((name, _, _)) = uplink_of(lab) {
            if let Some(l) = o.links.get_mut(&name) {
                l.up = false;
            }
            o.default_route = None;
        }
        o.files_changed = vec![etc_netns_dir(&lab.name).join("resolv.conf")];
        o
    }

    fn golden_plan(name: &str, lab: &Lab, obs: &Observed) {
        let p = plan(lab, obs);
        let mut text = serde_json::to_string_pretty(&p).unwrap_or_default();
        text.push_str("\n--- described\n");
        for s in &p.steps {
            text += &format!("{}\n", s.describe());
        }
        let mut net = RecordingNet::default();
        apply(&mut net, &p.steps).unwrap();
        text.push_str("--- executed\n");
        for c in &net.0 {
            text += &format!("{c}\n");
        }
        testkit::golden!(format!("repair-{name}.txt"), &text);
    }

    #[test]
    fn a_healthy_lab_needs_nothing() {
        for u in ["", HOST, WIREGUARD] {
            let l = lab(u);
            assert_eq!(plan(&l, &healthy(&l)), Plan::default(), "uplink {u:?}");
        }
    }

    #[test]
    fn drift_repair_plans_per_uplink_kind() {
        std::env::set_var("LABNET_ETC_NETNS_DIR", "/etc/netns");
        let isolated = lab("");
        golden_plan("isolated", &isolated, &drifted(&isolated));
        let host = lab(HOST);
        golden_plan("host", &host, &drifted(&host));
        let wg = lab(WIREGUARD);
        golden_plan("wireguard", &wg, &drifted(&wg));
    }

    #[test]
    fn what_cannot_be_repaired_is_named() {
        let l = lab(HOST);
        let mut o = healthy(&l);
        o.links.remove(&l.bridge.name);
        o.host_link = None;
        let p = plan(&l, &o);
        assert_eq!(
            p.unrepairable,
            [
                "br-drift is missing from the lab's namespace",
                "lnh-drift is missing from labnet's namespace"
            ]
        );
        let gone = plan(&l, &Observed::default());
        assert_eq!(gone.unrepairable.len(), 1);
        assert!(gone.unrepairable[0].contains("/run/netns/drift is gone"));
    }
}
