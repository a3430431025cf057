//! `labnet status`: the lab's record, then each step `up` makes for this config against what
//! the system shows ([`crate::compare`]: every link, address, route, sysctl, nft table, file,
//! WireGuard peer and process the plan names), then the few [`Probe`]s the plan cannot
//! express: the dns answering a query, each WireGuard peer's latest handshake. Nothing is
//! checked twice.
use serde::Serialize;
use std::net::SocketAddr;

use crate::compare::{compare, expected_plan, Found, StepCheck};
use crate::config::{Lab, Uplink};
use crate::nsfs::netns_exists;
use crate::plan::{self, Action, Plan};
use crate::probe::{dns_query, DnsReply};
use crate::state::{LabState, Resource};
use crate::{paths, wg, Error};

/// A check outside the plan: the record, or what only asking the lab tells.
#[derive(Debug, Serialize)]
pub struct Probe {
    pub name: String,
    pub ok: bool,
    /// Shown, not required (a handshake: the other end may simply be down or idle).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub info: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub lab: String,
    /// True when the lab is up, every step is as planned and every probe passes.
    pub ok: bool,
    pub state_file: String,
    /// Each step `up` makes for this config, against what the system shows (only the
    /// namespace when it is gone: everything else is in it).
    pub plan: Vec<StepCheck>,
    /// The record, then what the plan cannot express (dns answering, handshake ages).
    pub probes: Vec<Probe>,
}

impl StatusReport {
    /// Pure: the report of the plan's checks and the probes (ok when every one is).
    pub fn new(lab: &str, state_file: String, plan: Vec<StepCheck>, probes: Vec<Probe>) -> Self {
        StatusReport {
            lab: lab.into(),
            ok: plan.iter().all(|c| c.found == Found::Ok) && probes.iter().all(|p| p.ok),
            state_file,
            plan,
            probes,
        }
    }

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
        for p in &self.probes {
            let tag = match (p.ok, p.info) {
                (_, true) => "info",
                (true, _) => " ok ",
                (false, _) => "FAIL",
            };
            s += &format!("  [{tag}] {:<14} {}\n", p.name, p.detail);
        }
        s
    }

    /// What is not as it should be, one line each (for errors).
    pub fn failing(&self) -> Vec<String> {
        let steps = self
            .plan
            .iter()
            .filter(|c| c.found != Found::Ok)
            .map(|c| format!("{}: {}", c.step, c.detail));
        let probes = self
            .probes
            .iter()
            .filter(|p| !p.ok)
            .map(|p| format!("{}: {}", p.name, p.detail));
        steps.chain(probes).collect()
    }
}

pub fn probe(name: &str, ok: bool, detail: impl Into<String>) -> Probe {
    Probe {
        name: name.into(),
        ok,
        info: false,
        detail: detail.into(),
    }
}

/// A probe that is shown, not required.
pub fn info(name: &str, detail: impl Into<String>) -> Probe {
    Probe {
        info: true,
        ..probe(name, true, detail)
    }
}

pub fn status(lab: &Lab) -> Result<StatusReport, Error> {
    let st = LabState::load(&lab.name)?;
    let state_file = paths::lab_state_file(&lab.name).display().to_string();
    let mut probes = vec![probe(
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
    )];
    // A config without [peering] any more: the link the lab was built with stays until down.
    let lab = &plan::with_built_peering(lab, st.as_ref().and_then(|s| s.config.as_ref()));
    let expected = expected_plan(lab, st.as_ref());
    let plan = if netns_exists(&lab.name) {
        let snap = crate::system::snapshot(lab, &expected, st.as_ref())?;
        let checks = compare(&expected, &snap);
        probes.extend(probes_of(lab, st.as_ref(), &checks)?);
        checks
    } else {
        // Everything else lives in the namespace: only its absence is worth saying.
        let netns: Vec<_> = expected
            .steps
            .iter()
            .filter(|s| matches!(s.action, Action::CreateNetns { .. }))
            .cloned()
            .collect();
        let only = Plan {
            steps: netns,
            ..Default::default()
        };
        compare(&only, &Default::default())
    };
    Ok(StatusReport::new(&lab.name, state_file, plan, probes))
}

/// What the plan cannot express: the lab's dns answering a query for its zone (when the
/// plan's check found its process running), the uplink's and each peer's latest handshake.
fn probes_of(lab: &Lab, st: Option<&LabState>, checks: &[StepCheck]) -> Result<Vec<Probe>, Error> {
    let mut out = vec![];
    let ns = &lab.name;
    let dns_runs = st.is_some_and(|s| {
        s.resources
            .iter()
            .any(|r| matches!(r, Resource::Daemon { name, .. } if name == "dns"))
    }) && checks
        .iter()
        .any(|c| c.step == "start dns" && c.found == Found::Ok);
    if dns_runs {
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::RecordType;
        let at = SocketAddr::from((lab.bridge.address.addr, 53));
        let zone = format!("{}.", lab.dns.zone.trim_end_matches('.'));
        let reply = dns_query(ns, at, &zone, RecordType::SOA)?;
        let ok = matches!(reply, DnsReply::Answered { code: ResponseCode::NoError, answers, .. } if answers > 0);
        out.push(probe(
            "dns answers",
            ok,
            match reply {
                _ if ok => format!("{zone} SOA answered on {at}"),
                DnsReply::Silent => format!("no reply to {zone} SOA on {at} within 1 s"),
                DnsReply::Answered { code, .. } => format!("{zone} SOA on {at}: {code}"),
            },
        ));
    }
    let handshake = |s: Option<u64>| s.map_or("never".to_string(), |s| format!("{s} s ago"));
    if let Uplink::Wireguard(w) = &lab.uplink {
        let userspace = st.and_then(|s| s.wg_backend.as_deref()) == Some("userspace");
        let peers = wg::peers(&w.interface, userspace, ns).unwrap_or_default();
        if let Some(p) = peers.iter().find(|p| p.public_key == w.peer_public_key) {
            out.push(info(
                "wg peer",
                format!(
                    "{} endpoint {} latest handshake {}",
                    &p.public_key[..p.public_key.len().min(8)],
                    p.endpoint.clone().unwrap_or("-".into()),
                    handshake(p.last_handshake_secs_ago)
                ),
            ));
        }
    }
    if let Some(pr) = &lab.peering {
        let userspace = wg::is_userspace(&pr.interface);
        let device = wg::peers(&pr.interface, userspace, ns).unwrap_or_default();
        for peer in &lab.peers {
            if let Some(d) = device.iter().find(|d| d.public_key == peer.public_key) {
                out.push(info(
                    &format!("peer {}", peer.name),
                    format!(
                        "{} endpoint {} latest handshake {}",
                        peer.subnet,
                        d.endpoint.clone().unwrap_or("-".into()),
                        handshake(d.last_handshake_secs_ago)
                    ),
                ));
            }
        }
    }
    Ok(out)
}
