//! `up` and `down`, orchestrated: observe the system, [`plan`](crate::plan::plan) the steps,
//! run them over [`SystemNet`] with each step's undo recorded in /run/labnet/LAB.json before
//! it is made ([`exec::run`]); `down` undoes the record ([`exec::undo`]). A lock serializes
//! `up`/`down` of one lab.
use std::time::Duration;

use crate::config::Lab;
use crate::exec::{self, Net};
use crate::nsfs::netns_exists;
use crate::paths;
use crate::plan::{self, Plan};
use crate::state::{LabLock, LabState};
use crate::system::{observe, SystemNet};
use crate::Error;

pub use crate::lab_daemons::daemon_is_ours;
pub use crate::plan::DaemonSpec;

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    pub daemons: Vec<DaemonSpec>,
}

#[derive(Debug, PartialEq)]
pub enum UpOutcome {
    Created,
    /// The lab was up already: what had drifted from the config and was repaired, and
    /// daemons that had died and were started again.
    AlreadyUp {
        repaired: Vec<String>,
        restarted: Vec<String>,
    },
}

#[derive(Debug, PartialEq)]
pub enum DownOutcome {
    Removed,
    NotUp,
}

const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Brings the lab up. Idempotent; on failure everything made so far is undone.
pub fn up(lab: &Lab, opts: &UpOptions) -> Result<UpOutcome, Error> {
    lab.check_files()?;
    let _lock = LabLock::acquire(&lab.name, LOCK_WAIT)?;
    let mut net = SystemNet::default();
    if let Some(mut st) = LabState::load(&lab.name)? {
        if st.complete && netns_exists(&lab.name) {
            let changed = changed_sections(st.config.as_ref(), lab);
            if !changed.is_empty() {
                return Err(Error::ConfigChanged {
                    lab: lab.name.clone(),
                    sections: changed.join(", "),
                    source_file: lab.source.clone(),
                });
            }
            return converge(lab, &mut st, &mut net);
        }
        // A crashed or killed `up`, or a reboot: clear what is left, then build afresh.
        exec::undo(&mut net, &mut st)?;
    } else if netns_exists(&lab.name) {
        return Err(Error::NotOurs {
            lab: lab.name.clone(),
            state_file: paths::lab_state_file(&lab.name),
        });
    }
    let mut p = plan::plan(lab, &observe(lab, None)?);
    blocked(lab, &p)?;
    plan::start_daemons(&mut p, lab, &opts.daemons);
    let mut st = LabState {
        lab: lab.name.clone(),
        config: Some(lab.clone()),
        wg_backend: p.wg_backend.clone(),
        ..Default::default()
    };
    st.save()?;
    match exec::run(&mut net, &p.steps, &mut st) {
        Ok(()) => {
            st.complete = true;
            st.save()?;
            Ok(UpOutcome::Created)
        }
        Err(e) => match exec::undo(&mut net, &mut st) {
            Ok(()) => Err(e),
            Err(u) => Err(Error::UndoAfterFailure {
                error: Box::new(e),
                undo: Box::new(u),
            }),
        },
    }
}

/// A plan that cannot run: names taken (before anything is made), drift that cannot be
/// repaired in place.
fn blocked(lab: &Lab, p: &Plan) -> Result<(), Error> {
    if p.blocked.is_empty() {
        return Ok(());
    }
    if netns_exists(&lab.name) {
        Err(Error::Drift {
            lab: lab.name.clone(),
            what: p.blocked.join("; "),
        })
    } else {
        Err(Error::Conflict {
            what: p.blocked.join("; "),
        })
    }
}

/// Brings a lab that is up back to its config: repairs drift in place (links down, lost
/// addresses or route, ip_forward, labnet's nft tables, /etc/netns files, dead daemons), then
/// checks with `status` that nothing is left; what cannot be repaired in place is an error
/// naming it.
fn converge(lab: &Lab, st: &mut LabState, net: &mut dyn Net) -> Result<UpOutcome, Error> {
    let lab = &plan::with_built_peering(lab, st.config.as_ref());
    let p = plan::plan(lab, &observe(lab, Some(st))?);
    blocked(lab, &p)?;
    exec::run(net, &p.steps, st)?;
    // The peers (and their zones, for the dns) are the config's now.
    st.config = Some(lab.clone());
    st.save()?;
    let report = crate::status::status(lab)?;
    if !report.ok {
        return Err(Error::Drift {
            lab: lab.name.clone(),
            what: report.failing().join("; "),
        });
    }
    let (restarts, repairs): (Vec<_>, Vec<_>) = p
        .steps
        .iter()
        .partition(|s| matches!(s.action, plan::Action::StartDaemon { .. }));
    Ok(UpOutcome::AlreadyUp {
        repaired: repairs.iter().map(|s| s.describe()).collect(),
        restarted: restarts
            .iter()
            .filter_map(|s| match &s.action {
                plan::Action::StartDaemon { daemon, .. } => Some(daemon.name.clone()),
                _ => None,
            })
            .collect(),
    })
}

/// Top-level config sections that differ from what the running lab was built from.
fn changed_sections(built: Option<&Lab>, lab: &Lab) -> Vec<String> {
    let Some(b) = built else { return vec![] };
    [
        ("bridge", b.bridge == lab.bridge),
        ("uplink", b.uplink == lab.uplink),
        ("dhcp", b.dhcp == lab.dhcp),
        ("dns", b.dns == lab.dns),
    ]
    .iter()
    .filter(|(_, same)| !same)
    .map(|(k, _)| format!("[{k}]"))
    .collect()
}

/// Removes the lab described by the persisted state. Uses only the state, never today's config.
pub fn down(lab: &str) -> Result<DownOutcome, Error> {
    // A lab that never ran here: nothing to lock, nothing to create.
    let Some(lock) = LabLock::acquire_existing(lab, LOCK_WAIT)? else {
        return Ok(DownOutcome::NotUp);
    };
    let Some(mut st) = LabState::load(lab)? else {
        lock.remove()?;
        return Ok(DownOutcome::NotUp);
    };
    exec::undo(&mut SystemNet::default(), &mut st)?;
    // Runtime leftovers (daemon logs, VM records). A failed `up` keeps them for its error
    // message to point at; `down` is the end of the lab. Leases stay in state_dir.
    let run = paths::lab_run_dir(lab);
    match std::fs::remove_dir_all(&run) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&run, e)),
    }
    lock.remove()?;
    Ok(DownOutcome::Removed)
}
