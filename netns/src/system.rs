//! The real system behind the plan: [`SystemNet`] makes the steps with rtnetlink, nft,
//! /proc/sys, files and processes; [`observe`] is the only code that reads what the plan is
//! made from.
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::config::{Ipv4Cidr, Lab, Peer, Peering, Uplink, Wireguard};
use crate::nl::{self, with_netlink};
use crate::nsfs::{self, in_netns, netns_exists};
use crate::plan::{
    etc_files, host_links, lab_links, uplink_of, DaemonSpec, DnsObs, LinkObs, Observed, PeeringObs,
    WgPeerObs, IP_FORWARD,
};
use crate::state::Resource;
use crate::{etc_netns, lab_daemons, nft, wg, wg_life, Error};

/// rtnetlink, nft, /proc/sys, files and processes. Remembers the wireguard-go it started, so
/// a later step can wait for it.
#[derive(Default)]
pub struct SystemNet {
    wireguard_go: HashMap<String, (u32, PathBuf)>,
}

fn backend(userspace: bool) -> wireguard_control::Backend {
    if userspace {
        wireguard_control::Backend::Userspace
    } else {
        wireguard_control::Backend::Kernel
    }
}

/// Runs `f` where WireGuard device `iface` answers: wireguard-go through its UAPI socket
/// (any namespace), a kernel link over generic netlink in the namespace it is in.
fn on_device<T: Send + 'static>(
    userspace: bool,
    netns: Option<&str>,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    if userspace {
        f()
    } else {
        in_netns(netns, f)
    }
}

fn netns_file(ns: &str) -> Result<File, Error> {
    let path = crate::paths::netns_path(ns);
    File::open(&path).map_err(|e| Error::io(&path, e))
}

impl crate::exec::Net for SystemNet {
    fn create_netns(&mut self, name: &str) -> Result<(), Error> {
        nsfs::create_netns(name)
    }
    fn create_wireguard_link(&mut self, iface: &str) -> Result<(), Error> {
        let i = iface.to_string();
        if with_netlink(
            None,
            move |h| async move { nl::add_wireguard(&h, &i).await },
        )? {
            Ok(())
        } else {
            Err(Error::Unsupported {
                what: format!(
                    "creating WireGuard link {iface}: this kernel has no WireGuard support"
                ),
            })
        }
    }
    fn create_tun(&mut self, iface: &str) -> Result<(), Error> {
        wg_life::create_tun(iface)
    }
    fn start_wireguard_go(&mut self, iface: &str, log: &Path) -> Result<u32, Error> {
        let pid = wg_life::start(iface, log)?;
        self.wireguard_go
            .insert(iface.to_string(), (pid, log.to_path_buf()));
        Ok(pid)
    }
    fn wait_wireguard_go(&mut self, iface: &str) -> Result<(), Error> {
        let (pid, log) =
            self.wireguard_go
                .get(iface)
                .cloned()
                .ok_or_else(|| Error::NotRunning {
                    what: format!("wireguard-go for {iface} (not started by this run)"),
                })?;
        wg_life::wait(iface, pid, &log)
    }
    fn configure_wireguard(&mut self, w: &Wireguard, userspace: bool) -> Result<(), Error> {
        let w = w.clone();
        in_netns(None, move || wg::configure(&w, backend(userspace)))
    }
    fn configure_peering_link(
        &mut self,
        p: &Peering,
        userspace: bool,
        netns: Option<&str>,
    ) -> Result<(), Error> {
        let p = p.clone();
        on_device(userspace, netns, move || {
            wg::configure_peering_link(&p, backend(userspace))
        })
    }
    fn add_wg_peer(
        &mut self,
        netns: &str,
        iface: &str,
        peer: &Peer,
        userspace: bool,
    ) -> Result<(), Error> {
        let (i, peer) = (iface.to_string(), peer.clone());
        on_device(userspace, Some(netns), move || {
            wg::add_peer(&i, &peer, backend(userspace))
        })
    }
    fn remove_wg_peer(
        &mut self,
        netns: &str,
        iface: &str,
        public_key: &str,
        userspace: bool,
    ) -> Result<(), Error> {
        let (i, k) = (iface.to_string(), public_key.to_string());
        on_device(userspace, Some(netns), move || {
            wg::remove_peer(&i, &k, backend(userspace))
        })
    }
    fn add_bridge(&mut self, netns: &str, name: &str) -> Result<(), Error> {
        let n = name.to_string();
        with_netlink(
            Some(netns),
            move |h| async move { nl::add_bridge(&h, &n).await },
        )
        .map(|_| ())
    }
    fn add_veth(&mut self, name: &str, peer: &str) -> Result<(), Error> {
        let (n, p) = (name.to_string(), peer.to_string());
        with_netlink(None, move |h| async move { nl::add_veth(&h, &n, &p).await })
    }
    fn move_link(&mut self, link: &str, netns: &str) -> Result<(), Error> {
        let f = netns_file(netns)?;
        let l = link.to_string();
        with_netlink(None, move |h| async move {
            nl::move_to_netns(&h, &l, f.as_raw_fd()).await
        })
    }
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
    fn set_mtu(&mut self, netns: &str, link: &str, mtu: u32) -> Result<(), Error> {
        let link = link.to_string();
        with_netlink(Some(netns), move |h| async move {
            nl::set_mtu(&h, &link, mtu).await
        })
    }
    fn add_route(
        &mut self,
        netns: &str,
        link: &str,
        dest: Ipv4Cidr,
        src: Ipv4Addr,
    ) -> Result<(), Error> {
        let link = link.to_string();
        with_netlink(Some(netns), move |h| async move {
            nl::add_subnet_route(&h, &link, dest.addr, dest.prefix, src).await
        })
    }
    fn del_route(&mut self, netns: &str, link: &str, dest: Ipv4Cidr) -> Result<(), Error> {
        let link = link.to_string();
        with_netlink(Some(netns), move |h| async move {
            nl::del_subnet_route(&h, &link, dest.addr, dest.prefix).await
        })
    }
    fn sysctl(&mut self, netns: Option<&str>, path: &str, value: &str) -> Result<(), Error> {
        let (path, value) = (path.to_string(), value.to_string());
        in_netns(netns, move || {
            std::fs::write(&path, &value).map_err(|e| Error::io(&path, e))
        })
    }
    fn nft_table(
        &mut self,
        netns: Option<&str>,
        table: &str,
        ruleset: nftables::schema::Nftables<'static>,
        replace: bool,
    ) -> Result<(), Error> {
        if replace {
            nft::delete_table(netns, table)?;
        }
        nft::apply(netns, ruleset)
    }
    fn make_dir(&mut self, path: &Path) -> Result<(), Error> {
        etc_netns::make_dir(path)
    }
    fn write_file(&mut self, path: &Path, text: &str, save_to: Option<&Path>) -> Result<(), Error> {
        etc_netns::write_file(path, text, save_to)
    }
    fn start_daemon(&mut self, lab: &str, d: &DaemonSpec) -> Result<u32, Error> {
        lab_daemons::start(lab, d)
    }
    fn reload_daemon(&mut self, lab: &str, d: &DaemonSpec, pid: Option<u32>) -> Result<u32, Error> {
        lab_daemons::reload(lab, d, pid)
    }
    fn remove(&mut self, r: &Resource) -> Result<(), Error> {
        match r {
            Resource::Netns { name } => nsfs::delete_netns(name),
            Resource::RootLink { name } => {
                let n = name.clone();
                with_netlink(None, move |h| async move { nl::del_link(&h, &n).await }).map(|_| ())
            }
            Resource::WgUserspace { iface, pid } => wg_life::stop(iface, *pid),
            // A table inside the lab goes with the lab's namespace (always undone last); only
            // a table in labnet's own namespace needs deleting.
            Resource::NftTable { netns: Some(_), .. } => Ok(()),
            Resource::NftTable {
                netns: None, name, ..
            } => nft::delete_table(None, name),
            Resource::Sysctl { path, old } => {
                std::fs::write(path, old).map_err(|e| Error::io(path, e))
            }
            Resource::Dir { path } => etc_netns::remove_dir(path),
            Resource::File { path, saved } => etc_netns::restore_file(path, saved.as_deref()),
            Resource::Daemon { pid, exe, .. } => {
                lab_daemons::stop(*pid, exe);
                Ok(())
            }
        }
    }
}

/// Whether this kernel has WireGuard: loaded, built in, or a module modprobe can load.
fn kernel_has_wireguard() -> bool {
    if Path::new("/sys/module/wireguard").exists() {
        return true;
    }
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let dir = Path::new("/lib/modules").join(release.trim());
    ["modules.builtin", "modules.dep"].iter().any(|f| {
        std::fs::read_to_string(dir.join(f)).is_ok_and(|s| {
            s.lines().any(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|m| m.ends_with("/wireguard.ko") || m.contains("/wireguard.ko."))
            })
        })
    })
}

/// Reads what [`crate::plan::plan`] compares: for a lab whose namespace is not there, what
/// building it depends on (free names, the WireGuard module, the host's ip_forward, files in
/// /etc/netns); for one that is up, its links, addresses and default route over rtnetlink, the
/// sysctl, labnet's nft tables, the /etc/netns files and the `recorded` daemons.
pub fn observe(lab: &Lab, st: Option<&crate::state::LabState>) -> Result<Observed, Error> {
    let recorded = st.map(|s| s.resources.as_slice()).unwrap_or_default();
    let mut o = Observed {
        netns: netns_exists(&lab.name),
        ..Default::default()
    };
    // The WireGuard links the lab makes (the uplink; the peering link when it is missing).
    let mut wg_links: Vec<String> = vec![];
    if !o.netns {
        for n in host_links(lab) {
            let m = n.clone();
            if with_netlink(None, move |h| async move { nl::link_by_name(&h, &m).await })?.is_some()
            {
                o.host_links_taken.push(n.clone());
            }
        }
        if let Uplink::Wireguard(w) = &lab.uplink {
            wg_links.push(w.interface.clone());
        }
        wg_links.extend(lab.peering.as_ref().map(|p| p.interface.clone()));
        wg_links_obs(&mut o, &wg_links);
        if let Uplink::Host(_) = &lab.uplink {
            o.host_ip_forward = Some(
                std::fs::read_to_string(IP_FORWARD)
                    .map_err(|e| Error::io(IP_FORWARD, e))?
                    .trim()
                    .to_string(),
            );
        }
        o.etc_dir_exists = crate::etc_netns::etc_netns_dir(&lab.name).exists();
        o.etc_files_existing = etc_files(lab)
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.exists())
            .collect();
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
        let peering = lab.peering.as_ref().map(|p| p.interface.as_str());
        let want = nft::lab_table_peered(&lab.bridge.name, &link, peering);
        o.lab_nft = nft::read_table(Some(&lab.name), nft::LAB_TABLE)?
            .is_some_and(|t| nft::diff(&want, &t).is_empty());
    }
    for (path, text) in etc_files(lab) {
        if !etc_netns::file_matches(&path, &text) {
            o.files_changed.push(path);
        }
    }
    o.dead_daemons = lab_daemons::dead(recorded);
    if let Some(p) = &lab.peering {
        o.peering = peering_obs(&lab.name, p)?;
        if o.peering.is_none() {
            wg_links_obs(&mut o, std::slice::from_ref(&p.interface));
        }
    }
    o.dns = recorded.iter().find_map(|r| match r {
        Resource::Daemon { name, pid, exe } if name == "dns" => Some(DnsObs {
            pid: *pid,
            argv: exe.split('\0').map(String::from).collect(),
            peer_zones: st
                .and_then(|s| s.config.as_ref())
                .map(crate::plan::peer_zones)
                .unwrap_or_default(),
        }),
        _ => None,
    });
    Ok(o)
}

/// For WireGuard links about to be made: the kernel's support, names a wireguard-go serves.
fn wg_links_obs(o: &mut Observed, links: &[String]) {
    if links.is_empty() {
        return;
    }
    o.wireguard_module = kernel_has_wireguard();
    o.uapi_taken
        .extend(links.iter().filter(|i| wg_life::uapi_taken(i)).cloned());
}

/// A WireGuard device's peers, or why it could not be read.
fn device_peers(iface: &str, userspace: bool, ns: &str) -> Result<Vec<WgPeerObs>, String> {
    wg::peers(iface, userspace, ns)
        .map(|ps| {
            ps.into_iter()
                .map(|d| WgPeerObs {
                    endpoint: d.endpoint.as_deref().and_then(|e| e.parse().ok()),
                    public_key: d.public_key,
                    allowed_ips: d.allowed_ips,
                    persistent_keepalive: d.persistent_keepalive,
                })
                .collect()
        })
        .map_err(|e| e.to_string())
}

/// The peering link of a lab that is up: link, MTU, the routes out of it, the device (its
/// backend, listen port, peers) and the MSS clamp table. None when the link is missing.
fn peering_obs(ns: &str, p: &Peering) -> Result<Option<PeeringObs>, Error> {
    let iface = p.interface.clone();
    let link = with_netlink(Some(ns), move |h| async move {
        let Some(m) = nl::link_by_name(&h, &iface).await? else {
            return Ok(None);
        };
        let idx = m.header.index;
        let routes = nl::routes(&h)
            .await?
            .into_iter()
            .filter(|r| r.oif == Some(idx))
            .map(|r| Ipv4Cidr {
                addr: r.dest,
                prefix: r.prefix,
            })
            .collect();
        Ok(Some((
            nl::link_is_up(&m),
            nl::mtu_of(&h, &iface).await?,
            routes,
        )))
    })?;
    let Some((up, mtu, routes)) = link else {
        return Ok(None);
    };
    let userspace = wg::is_userspace(&p.interface);
    let (peers, device_error) = match device_peers(&p.interface, userspace, ns) {
        Ok(ps) => (ps, None),
        Err(e) => (vec![], Some(e)),
    };
    let nft = nft::read_table(Some(ns), nft::PEERING_TABLE)?
        .is_some_and(|t| nft::diff(&nft::peering_table(&p.interface), &t).is_empty());
    Ok(Some(PeeringObs {
        up,
        mtu,
        userspace,
        listen_port: wg::listen_port(&p.interface, userspace, ns),
        peers,
        routes,
        nft,
        device_error,
    }))
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

/// Reads what `compare` checks the plan's steps against: every link, route, sysctl, nft
/// table, directory and file a step names, the recorded processes, WireGuard devices.
pub fn snapshot(
    lab: &Lab,
    p: &crate::plan::Plan,
    st: Option<&crate::state::LabState>,
) -> Result<crate::compare::Snapshot, Error> {
    use crate::compare::{LinkSnap, Snapshot};
    use crate::plan::Action;
    let mut snap = Snapshot {
        netns: netns_exists(&lab.name),
        ..Default::default()
    };
    let ns = lab.name.clone();
    let mut links: Vec<(Option<String>, String)> = vec![];
    for s in &p.steps {
        match &s.action {
            Action::CreateWireguardLink { iface } | Action::CreateTun { iface } => {
                links.push((Some(ns.clone()), iface.clone()));
                links.push((None, iface.clone()));
            }
            Action::AddBridge { netns, name } => links.push((Some(netns.clone()), name.clone())),
            Action::AddVeth { name, .. } => links.push((None, name.clone())),
            Action::MoveLink { link, netns } => {
                links.push((Some(netns.clone()), link.clone()));
                links.push((None, link.clone()));
            }
            Action::LinkUp { netns, link } | Action::AddAddress { netns, link, .. } => {
                links.push((netns.clone(), link.clone()))
            }
            Action::Sysctl { netns, path, .. } if netns.is_none() || snap.netns => {
                let path2 = path.clone();
                if let Ok(v) = in_netns(netns.as_deref(), move || {
                    std::fs::read_to_string(&path2).map_err(|e| Error::io(&path2, e))
                }) {
                    snap.sysctls
                        .insert((netns.clone(), path.clone()), v.trim().to_string());
                }
            }
            Action::NftLabTable { netns, .. } if snap.netns => {
                snap.nft_tables.insert(
                    (Some(netns.clone()), nft::LAB_TABLE.into()),
                    nft::read_table(Some(netns), nft::LAB_TABLE)?,
                );
            }
            Action::NftHostTable { lab, .. } => {
                let t = nft::host_table(lab);
                snap.nft_tables
                    .insert((None, t.clone()), nft::read_table(None, &t)?);
            }
            Action::MakeDir { path } if path.is_dir() => snap.dirs.push(path.clone()),
            Action::WriteFile { path, .. } => {
                snap.files
                    .insert(path.clone(), std::fs::read_to_string(path).ok());
            }
            Action::WaitWireguardGo { iface } if wg_life::uapi_taken(iface) => {
                snap.uapi.push(iface.clone())
            }
            Action::ConfigureWireguard { wireguard, .. } if snap.netns => {
                let userspace = st.and_then(|s| s.wg_backend.as_deref()) == Some("userspace");
                snap.wg_peers.insert(
                    wireguard.interface.clone(),
                    device_peers(&wireguard.interface, userspace, &ns),
                );
            }
            Action::ConfigurePeeringLink { peering, .. } if snap.netns => {
                let iface = &peering.interface;
                let userspace = wg::is_userspace(iface);
                snap.wg_peers
                    .insert(iface.clone(), device_peers(iface, userspace, &ns));
                snap.wg_listen_ports
                    .insert(iface.clone(), wg::listen_port(iface, userspace, &ns));
            }
            Action::SetMtu { netns, link, .. } => links.push((Some(netns.clone()), link.clone())),
            Action::NftPeeringTable { netns, .. } if snap.netns => {
                snap.nft_tables.insert(
                    (Some(netns.clone()), nft::PEERING_TABLE.into()),
                    nft::read_table(Some(netns), nft::PEERING_TABLE)?,
                );
            }
            _ => {}
        }
    }
    links.sort();
    links.dedup();
    for in_lab in [false, true] {
        if in_lab && !snap.netns {
            continue;
        }
        let names: Vec<String> = links
            .iter()
            .filter(|(n, _)| n.is_some() == in_lab)
            .map(|(_, l)| l.clone())
            .collect();
        let target = in_lab.then(|| ns.clone());
        let (found, route, routes) = with_netlink(target.as_deref(), move |h| async move {
            let mut found = vec![];
            for n in names {
                if let Some(m) = nl::link_by_name(&h, &n).await? {
                    let addrs = nl::ipv4_addresses(&h, &n)
                        .await?
                        .into_iter()
                        .map(|(addr, prefix)| Ipv4Cidr { addr, prefix })
                        .collect();
                    found.push((
                        n.clone(),
                        LinkSnap {
                            kind: nl::link_kind(&m),
                            up: nl::link_is_up(&m),
                            addrs,
                            mtu: nl::mtu_of(&h, &n).await?,
                        },
                    ));
                }
            }
            let (mut route, mut routes) = (None, vec![]);
            if in_lab {
                route = match nl::default_route(&h).await? {
                    Some((gw, Some(oif))) => Some((gw, nl::name_of(&h, oif).await?)),
                    Some((gw, None)) => Some((gw, None)),
                    None => None,
                };
                for r in nl::routes(&h).await? {
                    if r.prefix == 0 {
                        continue;
                    }
                    let dev = match r.oif {
                        Some(i) => nl::name_of(&h, i).await?,
                        None => None,
                    };
                    routes.push((
                        Ipv4Cidr {
                            addr: r.dest,
                            prefix: r.prefix,
                        },
                        dev,
                    ));
                }
            }
            Ok((found, route, routes))
        })?;
        for (n, l) in found {
            snap.links.insert((target.clone(), n), l);
        }
        if in_lab {
            snap.default_routes.insert(ns.clone(), route);
            snap.routes.insert(ns.clone(), routes);
        }
    }
    for r in st.map(|s| s.resources.as_slice()).unwrap_or_default() {
        match r {
            Resource::Daemon { name, pid, exe } => {
                snap.processes.insert(
                    name.clone(),
                    pid.filter(|p| lab_daemons::daemon_is_ours(*p, exe)),
                );
            }
            Resource::WgUserspace { iface, pid } => {
                let alive = pid.filter(|p| {
                    crate::daemon::process_alive(*p)
                        && crate::daemon::process_comm(*p).as_deref() == Some("wireguard-go")
                });
                snap.processes
                    .insert(format!("wireguard-go {iface}"), alive);
            }
            _ => {}
        }
    }
    Ok(snap)
}
