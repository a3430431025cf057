//! Labs of several hosts joined over WireGuard (`[peering]`, `[[peers]]`): the peering link
//! (a WireGuard link of its own, not the uplink), one peer per other lab with AllowedIPs =
//! that lab's subnet (cryptokey routing), a route per peer subnet over the link inside the
//! lab, no NAT (the lab table masquerades only out of the uplink), and the MSS clamp into
//! the tunnel. All of it is made by [`crate::plan`] steps (`up` builds the link with the
//! lab); [`apply`] runs the steps a running lab's peering differs by ([`plan::peers_plan`])
//! after `labnet peer add/remove` edited the config.
use std::time::Duration;

use crate::config::Lab;
use crate::exec;
use crate::plan::{self, Action, Plan};
use crate::state::{LabState, Resource};
use crate::system::{observe, SystemNet};
use crate::{nsfs, wg, Error};

/// What [`apply`] changed.
#[derive(Debug, Default, PartialEq, serde::Serialize)]
pub struct PeersReport {
    /// The peering link was made (first peer of a lab that was up without one).
    pub link_created: bool,
    /// The configured peer labs.
    pub peers: Vec<String>,
    /// Public keys the device had that are no longer configured: removed.
    pub removed_keys: Vec<String>,
    pub routes_added: Vec<String>,
    pub routes_removed: Vec<String>,
    /// What was done so the lab's dns serves the new peer zones.
    pub dns: Option<String>,
    /// Every step run, as `up` would report it.
    pub steps: Vec<String>,
}

impl PeersReport {
    fn of(lab: &Lab, p: &Plan) -> PeersReport {
        let iface = lab.peering.as_ref().map(|p| p.interface.as_str());
        let mut r = PeersReport {
            peers: lab.peers.iter().map(|p| p.name.clone()).collect(),
            steps: p.steps.iter().map(|s| s.describe()).collect(),
            ..Default::default()
        };
        for s in &p.steps {
            match &s.action {
                Action::CreateWireguardLink { iface: i } | Action::CreateTun { iface: i }
                    if Some(i.as_str()) == iface =>
                {
                    r.link_created = true
                }
                Action::RemoveWgPeer { public_key, .. } => r.removed_keys.push(public_key.clone()),
                Action::AddRoute { link, dest, .. } => {
                    r.routes_added.push(format!("{dest} dev {link}"))
                }
                Action::DelRoute { link, dest, .. } => {
                    r.routes_removed.push(format!("{dest} dev {link}"))
                }
                _ => {}
            }
        }
        r
    }
}

/// For `labnet peer add/remove`: applies the (edited) config's peers to the lab if it is up,
/// under the lab lock: the plan difference only ([`plan::peers_plan`]: the peer's device entry
/// and route, the link when it is missing, the dns taking up the new zones); the bridge,
/// dhcpd and its leases, the other peers and any other lab are not touched. None when the
/// lab is not up (the config change waits for `up`).
pub fn apply(lab: &Lab) -> Result<Option<PeersReport>, Error> {
    let Some(_lock) = crate::state::LabLock::acquire_existing(&lab.name, Duration::from_secs(60))?
    else {
        return Ok(None);
    };
    let mut st = match LabState::load(&lab.name)? {
        Some(st) if st.complete && nsfs::netns_exists(&lab.name) => st,
        _ => return Ok(None),
    };
    let lab = &plan::with_built_peering(lab, st.config.as_ref());
    if let Some(p) = &lab.peering {
        // Made when missing: what `peer invite` hands out must be the link's.
        wg::peering_public_key(p)?;
    }
    let p = plan::peers_plan(lab, &observe(lab, Some(&st))?);
    if !p.blocked.is_empty() {
        return Err(Error::Conflict {
            what: p.blocked.join("; "),
        });
    }
    let dns_pid = |st: &LabState| {
        st.resources.iter().find_map(|r| match r {
            Resource::Daemon { name, pid, .. } if name == "dns" => *pid,
            _ => None,
        })
    };
    let before = dns_pid(&st);
    exec::run(&mut SystemNet::default(), &p.steps, &mut st)?;
    let mut report = PeersReport::of(lab, &p);
    if p.steps
        .iter()
        .any(|s| matches!(s.action, Action::ReloadDaemon { .. }))
    {
        let after = dns_pid(&st);
        report.dns = Some(match after {
            Some(n) if after != before => format!("dns restarted (pid {n})"),
            _ => format!(
                "dns (pid {}) reloaded",
                after.map_or("-".to_string(), |p| p.to_string())
            ),
        });
    }
    st.config = Some(lab.clone());
    st.save()?;
    Ok(Some(report))
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
