//! Labs of several hosts joined over WireGuard (`[peering]`, `[[peers]]`): the peering link
//! (a WireGuard link of its own, not the uplink), one peer per other lab with AllowedIPs =
//! that lab's subnet (cryptokey routing), a route per peer subnet over the link inside the
//! lab, no NAT (the lab table masquerades only out of the uplink), and the MSS clamp into
//! the tunnel.
//!
//! [`sync`] brings a lab that is up to its config's peers, in place: `up` runs it after
//! building, `labnet peer add/remove` after editing the config. It makes the link when it is
//! missing (recording it in the lab's state first, like every `up` step) and otherwise only
//! adds, updates or removes peers and routes: the bridge, the daemons and their leases are
//! not touched, nor is any other lab.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;
use wireguard_control::Backend;

use crate::config::{Lab, Peering, Uplink, WgBackend};
use crate::nl::{self, with_netlink};
use crate::state::{LabState, Resource};
use crate::{nft, nsfs, paths, wg, Error};

/// What [`sync`] changed.
#[derive(Debug, Default, PartialEq, serde::Serialize)]
pub struct SyncReport {
    /// The peering link was made (first peer of a lab that was up without one).
    pub link_created: bool,
    /// Peer labs added to or updated on the device (every configured one: adds are idempotent).
    pub peers: Vec<String>,
    /// Public keys the device had that are no longer configured: removed.
    pub removed_keys: Vec<String>,
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    /// What was done so the lab's dns serves the new peer zones.
    pub dns: Option<String>,
}

fn backend(userspace: bool) -> Backend {
    if userspace {
        Backend::Userspace
    } else {
        Backend::Kernel
    }
}

/// Brings the running lab's peering to `lab`'s config (see the module doc). The caller holds
/// the lab lock; `st` is the lab's state record.
pub fn sync(lab: &Lab, st: &mut LabState) -> Result<SyncReport, Error> {
    let mut report = SyncReport::default();
    // The last peer removed from a config without [peering]: the link the lab was built
    // with stays (until `down`), its peers and routes go.
    let built = st.config.as_ref().and_then(|c| c.peering.clone());
    let Some(p) = lab.peering.as_ref().or(built.as_ref()) else {
        return Ok(report);
    };
    let ns = lab.name.clone();
    wg::peering_public_key(p)?;
    let iface = p.interface.clone();
    let i = iface.clone();
    let (exists, up, mtu) = with_netlink(Some(&ns), move |h| async move {
        let m = nl::link_by_name(&h, &i).await?;
        let up = m.as_ref().is_some_and(nl::link_is_up);
        Ok((m.is_some(), up, nl::mtu_of(&h, &i).await?))
    })?;
    if exists && (!up || mtu != Some(u32::from(p.mtu))) {
        // Drift (someone set it down, or changed its MTU): back to the config.
        let (i, m) = (iface.clone(), u32::from(p.mtu));
        with_netlink(Some(&ns), move |h| async move {
            nl::set_mtu(&h, &i, m).await?;
            nl::set_up(&h, &i).await
        })?;
    }
    if !exists {
        create_link(lab, p, st)?;
        report.link_created = true;
    } else {
        let userspace = wg::is_userspace(&iface);
        let present: Vec<String> = wg::peers(&iface, userspace, &ns)?
            .into_iter()
            .map(|s| s.public_key)
            .collect();
        report.removed_keys = present
            .iter()
            .filter(|k| !lab.peers.iter().any(|p| &p.public_key == *k))
            .cloned()
            .collect();
        let (pc, peers) = (p.clone(), lab.peers.clone());
        let configure =
            move || wg::configure_peering(&pc, &peers, &present, false, backend(userspace));
        if userspace {
            configure()?;
        } else {
            nsfs::in_netns(Some(&ns), configure)?;
        }
    }
    report.peers = lab.peers.iter().map(|p| p.name.clone()).collect();

    // One route per peer subnet over the link, with the bridge address as the lab host's
    // source (inside its own subnet, so the peer's AllowedIPs accept it); stale ones go.
    let want: Vec<(std::net::Ipv4Addr, u8)> = lab
        .peers
        .iter()
        .map(|p| (p.subnet.addr, p.subnet.prefix))
        .collect();
    let src = lab.bridge.address.addr;
    let (i, w) = (iface.clone(), want.clone());
    let (added, removed) = with_netlink(Some(&ns), move |h| async move {
        let idx = nl::index_of(&h, &i).await?;
        let have: Vec<(std::net::Ipv4Addr, u8)> = nl::routes(&h)
            .await?
            .into_iter()
            .filter(|r| r.oif == Some(idx))
            .map(|r| (r.dest, r.prefix))
            .collect();
        let (mut added, mut removed) = (vec![], vec![]);
        for (d, pfx) in &w {
            if !have.contains(&(*d, *pfx)) {
                nl::add_subnet_route(&h, &i, *d, *pfx, src).await?;
                added.push(format!("{d}/{pfx} dev {i}"));
            }
        }
        for (d, pfx) in &have {
            if !w.contains(&(*d, *pfx)) {
                nl::del_subnet_route(&h, &i, *d, *pfx).await?;
                removed.push(format!("{d}/{pfx} dev {i}"));
            }
        }
        Ok((added, removed))
    })?;
    report.routes_added = added;
    report.routes_removed = removed;

    // The MSS clamp, and (a lab with an uplink filters) the lab table letting the peers in.
    if !nft::table_exists(Some(&ns), nft::PEERING_TABLE)? {
        if !st.resources.iter().any(|r| {
            matches!(r, Resource::NftTable { netns: Some(n), name, .. } if *n == ns && name == nft::PEERING_TABLE)
        }) {
            st.record(Resource::NftTable {
                netns: Some(ns.clone()),
                family: "ip".into(),
                name: nft::PEERING_TABLE.into(),
            })?;
        }
        nft::apply(Some(&ns), nft::peering_table(&iface))?;
    }
    let uplink = match &lab.uplink {
        Uplink::Wireguard(w) => Some(w.interface.clone()),
        Uplink::Host(h) => Some(h.lab_interface.clone()),
        Uplink::None => None,
    };
    if let Some(up) = uplink {
        let want = nft::lab_table_peered(&lab.bridge.name, &up, Some(&iface));
        let listed = nft::read_table(Some(&ns), nft::LAB_TABLE)?;
        if !listed.is_some_and(|t| nft::diff(&want, &t).is_empty()) {
            nft::delete_table(Some(&ns), nft::LAB_TABLE)?;
            nft::apply(
                Some(&ns),
                nft::lab_table_peered(&lab.bridge.name, &up, Some(&iface)),
            )?;
        }
    }
    st.config = Some(lab.clone());
    st.save()?;
    Ok(report)
}

/// Makes the peering link in labnet's own namespace (kernel link, else a persistent TUN and
/// wireguard-go), configures it, moves it into the lab, sets its MTU and brings it up. Each
/// resource is recorded before it is made, so `down` removes it.
fn create_link(lab: &Lab, p: &Peering, st: &mut LabState) -> Result<(), Error> {
    let iface = p.interface.clone();
    let ns = lab.name.clone();
    if crate::wg_life::uapi_taken(&iface) {
        return Err(Error::Conflict {
            what: format!(
                "{}: a userspace WireGuard device named {iface} already runs on this host ({}); peering.interface must be unique host-wide",
                lab.source,
                wg::uapi_socket(&iface).display()
            ),
        });
    }
    let mut userspace = true;
    if p.backend != WgBackend::Userspace {
        st.record(Resource::RootLink {
            name: iface.clone(),
        })?;
        let i = iface.clone();
        let made = with_netlink(
            None,
            move |h| async move { nl::add_wireguard(&h, &i).await },
        )?;
        if made {
            userspace = false;
        } else if p.backend == WgBackend::Kernel {
            return Err(Error::Unsupported {
                what: format!(
                    "{}: peering.backend = \"kernel\" but this kernel has no WireGuard support; use \"auto\" or \"userspace\" (wireguard-go)",
                    lab.source
                ),
            });
        } else {
            st.resources.pop();
            st.save()?;
        }
    }
    if userspace {
        st.record(Resource::RootLink {
            name: iface.clone(),
        })?;
        crate::wg_life::create_tun(&iface)?;
        st.record(Resource::WgUserspace {
            iface: iface.clone(),
            pid: None,
        })?;
        let log = paths::lab_run_dir(&lab.name).join(format!("wireguard-go-{iface}.log"));
        let pid = crate::wg_life::start(&iface, &log)?;
        st.update_last(Resource::WgUserspace {
            iface: iface.clone(),
            pid: Some(pid),
        })?;
        crate::wg_life::wait(&iface, pid, &log)?;
    }
    let (pc, peers) = (p.clone(), lab.peers.clone());
    nsfs::in_netns(None, move || {
        wg::configure_peering(&pc, &peers, &[], true, backend(userspace))
    })?;
    let nsfile =
        File::open(nsfs::netns_path(&ns)).map_err(|e| Error::io(nsfs::netns_path(&ns), e))?;
    let i = iface.clone();
    with_netlink(None, move |h| async move {
        nl::move_to_netns(&h, &i, nsfile.as_raw_fd()).await
    })?;
    let mtu = u32::from(p.mtu);
    with_netlink(Some(&ns), move |h| async move {
        nl::set_mtu(&h, &iface, mtu).await?;
        nl::set_up(&h, &iface).await
    })
}

/// The peering link's public key (made with its private key file when missing): what
/// `labnet peer invite` writes.
pub fn public_key(lab: &Lab) -> Result<String, Error> {
    let p = lab.peering.as_ref().ok_or_else(|| {
        Error::Config(crate::config::ConfigError::Field {
            file: lab.source.clone(),
            field: "peering".into(),
            message: format!(
                "lab {} has no [peering] section; add one (e.g. `[peering]` with `listen_port = 51820`) to invite peers",
                lab.name
            ),
        })
    })?;
    wg::peering_public_key(p)
}

/// One peer as `labnet peer list` shows it: the config joined with the device's view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerRow {
    pub name: String,
    pub subnet: String,
    pub zone: String,
    pub public_key: String,
    /// The endpoint the device uses now (learned by roaming), else the configured one.
    pub endpoint: Option<String>,
    /// Seconds since the latest handshake; None = never (or the lab is not up).
    pub latest_handshake_secs_ago: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// The peer is configured on the running device.
    pub on_device: bool,
}

/// The configured peers with the running device's counters (all zero when the lab is down).
pub fn list(lab: &Lab) -> Result<Vec<PeerRow>, Error> {
    let device = match &lab.peering {
        Some(p) if nsfs::netns_exists(&lab.name) => {
            let userspace = wg::is_userspace(&p.interface);
            wg::peers(&p.interface, userspace, &lab.name).unwrap_or_default()
        }
        _ => vec![],
    };
    Ok(lab
        .peers
        .iter()
        .map(|p| {
            let d = device.iter().find(|d| d.public_key == p.public_key);
            PeerRow {
                name: p.name.clone(),
                subnet: p.subnet.to_string(),
                zone: p.zone.clone(),
                public_key: p.public_key.clone(),
                endpoint: d
                    .and_then(|d| d.endpoint.clone())
                    .or_else(|| p.endpoint.map(|e| e.to_string())),
                latest_handshake_secs_ago: d.and_then(|d| d.last_handshake_secs_ago),
                rx_bytes: d.map_or(0, |d| d.rx_bytes),
                tx_bytes: d.map_or(0, |d| d.tx_bytes),
                on_device: d.is_some(),
            }
        })
        .collect())
}

/// For `labnet peer add/remove`: applies the (edited) config's peers to the lab if it is up,
/// under the lab lock, and (`dns`) has the lab's dns take up the new peer zones. None when
/// the lab is not up (the config change waits for `up`).
pub fn apply(lab: &Lab, dns: bool) -> Result<Option<SyncReport>, Error> {
    let Some(_lock) = crate::state::LabLock::acquire_existing(&lab.name, Duration::from_secs(60))?
    else {
        return Ok(None);
    };
    match LabState::load(&lab.name)? {
        Some(mut st) if st.complete && nsfs::netns_exists(&lab.name) => {
            let mut r = sync(lab, &mut st)?;
            if dns {
                r.dns = reload_dns(lab, &mut st)?;
            }
            Ok(Some(r))
        }
        _ => Ok(None),
    }
}

/// Whether `pid` catches SIGHUP (bit 0 of SigCgt in /proc/PID/status): a dns that reloads
/// its config on SIGHUP rather than dying of it.
fn catches_sighup(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & 1 == 1)
}

/// Has the lab's dns (started by `up`) read the config again: SIGHUP when it reloads on it,
/// else a restart (stop, start, READY; the record gets the new pid). dhcpd and its leases
/// are not touched. None when `up` started no dns (systemd runs it: reload that unit).
fn reload_dns(lab: &Lab, st: &mut LabState) -> Result<Option<String>, Error> {
    let Some(i) = st
        .resources
        .iter()
        .position(|r| matches!(r, Resource::Daemon { name, .. } if name == "dns"))
    else {
        return Ok(None);
    };
    let Resource::Daemon { name, pid, exe } = st.resources[i].clone() else {
        return Ok(None);
    };
    if let Some(p) = pid.filter(|p| crate::lab_daemons::daemon_is_ours(*p, &exe)) {
        if catches_sighup(p) {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p as i32),
                nix::sys::signal::Signal::SIGHUP,
            )
            .map_err(|e| Error::sys("SIGHUP to the lab's dns", e))?;
            return Ok(Some(format!("dns (pid {p}) reloaded")));
        }
    }
    crate::lab_daemons::stop(pid, &exe);
    let spec = crate::plan::DaemonSpec {
        name: name.clone(),
        argv: exe.split('\0').map(String::from).collect(),
    };
    let new = crate::lab_daemons::start(&lab.name, &spec)?;
    st.resources[i] = Resource::Daemon {
        name,
        pid: Some(new),
        exe,
    };
    st.save()?;
    Ok(Some(format!("dns restarted (pid {new})")))
}
