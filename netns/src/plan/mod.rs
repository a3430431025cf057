//! `up` as a plan: what the system shows ([`Observed`], read by [`crate::system::observe`]) and the
//! config give, by a pure function ([`plan`]), the [`Step`]s that make the lab — each with
//! its undo, the [`Resource`] recorded *before* the step runs — or, for a lab that is up, the
//! steps that repair its drift. [`crate::exec`] runs them over the [`crate::exec::Net`] trait
//! and undoes a record ([`undo_order`]), so `up`, drift repair and `down` share one plan type.
//! Golden tests (no root) pin the plan and the undo order for every uplink kind.
//!
//! One file per job, so each can be read alone: the step type (`step`), what the system
//! shows (`observed`), the lab's parts per config (`layout`), building a lab from scratch
//! (`build`), repairing one that is up (`repair`), the peering link (`peering`), and the
//! order `down` undoes in (`undo`).
use serde::Serialize;

use crate::config::Lab;
use crate::state::Resource;

mod build;
mod layout;
mod observed;
mod peering;
mod repair;
mod step;
mod undo;

pub use layout::{etc_files, host_links, lab_links, uplink_of, IP_FORWARD};
pub use observed::{DnsObs, LinkObs, Observed, PeeringObs, WgPeerObs};
pub use peering::{peer_matches, peer_zones, peers_plan, with_built_peering};
pub use step::{Action, DaemonSpec, Step};
pub use undo::undo_order;

use build::build;
use repair::repair;

/// The plan for a lab: its steps in order, or why it cannot be made (a name taken, drift
/// that cannot be repaired in place), each reason naming the component.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub blocked: Vec<String>,
    /// The WireGuard backend the steps use ("kernel" or "userspace").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wg_backend: Option<String>,
}

/// Pure: the steps that bring the system as `obs` shows it to what `lab` asks for — the whole
/// lab when its namespace does not exist, else the repairs of its drift. Daemons are added by
/// [`start_daemons`].
pub fn plan(lab: &Lab, obs: &Observed) -> Plan {
    if obs.netns {
        repair(lab, obs)
    } else {
        build(lab, obs)
    }
}

/// Appends the steps that start the lab's daemons (hand-run `up`).
pub fn start_daemons(plan: &mut Plan, lab: &Lab, daemons: &[DaemonSpec]) {
    for d in daemons {
        plan.steps.push(Step::new(
            Action::StartDaemon {
                lab: lab.name.clone(),
                daemon: d.clone(),
            },
            Some(Resource::Daemon {
                name: d.name.clone(),
                pid: None,
                exe: d.argv.join("\0"),
            }),
        ));
    }
}
