//! `labnet vm path NAME fail|restore|list [PATH]`: pulls one SCSI path of the `--multipath`
//! pair out of a running VM and plugs it back, through QMP — a cable pull for dm-multipath
//! failover tests (seed 002 did it with the monitor's `drive_del`).
//!
//! The pair is two `scsi-hd` devices (`path1`, `path2`, SCSI targets 0 and 1 on `scsi0.0`)
//! over two block nodes (`mpath1`, `mpath2`) of the same image, with the same serial and WWN
//! (see qemu.rs). `fail` removes the device (`device_del`: the guest sees the disk go) and then
//! its node (`blockdev-del`), after noting the node's driver and file in the VM's directory;
//! `restore` adds the node again (`blockdev-add`) and the device on the same target
//! (`device_add`: the guest rescans and sees the disk come back).
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::qmp::Qmp;
use crate::state::{Status, VmState};
use crate::Error;

/// The virtio-scsi bus both paths sit on.
pub const SCSI_BUS: &str = "scsi0.0";

/// One path of the pair: 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiPath(u8);

pub const PATHS: [ScsiPath; 2] = [ScsiPath(1), ScsiPath(2)];

impl ScsiPath {
    /// `path1`: the name `vm path` takes and shows, and the QEMU device id.
    pub fn device(self) -> String {
        format!("path{}", self.0)
    }
    /// `mpath1`: the block node under the device.
    pub fn node(self) -> String {
        format!("mpath{}", self.0)
    }
    /// The SCSI target id (the guest's H:C:T:L has it as T; the LUN is 0).
    pub fn scsi_id(self) -> u8 {
        self.0 - 1
    }
    /// `1` or `path1` (and `2`, `path2`).
    pub fn parse(s: &str) -> Result<ScsiPath, Error> {
        PATHS
            .into_iter()
            .find(|p| s == p.0.to_string() || s == p.device())
            .ok_or_else(|| {
                Error::invalid("PATH", format!("{s:?}: expected path1 or path2 (or 1, 2)"))
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathState {
    /// The device is plugged in.
    Active,
    /// Pulled by `vm path fail`.
    Failed,
}

/// One row of `vm path NAME list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathStatus {
    pub path: String,
    pub state: PathState,
    pub node: String,
    pub scsi_id: u8,
    pub lun: u8,
}

/// What `fail` notes so `restore` can add the node back: its format driver and file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Backing {
    driver: String,
    filename: String,
}

fn backing_file(dir: &std::path::Path, p: ScsiPath) -> std::path::PathBuf {
    dir.join(format!("{}.backing.json", p.device()))
}

/// A running VM and its QMP connection.
fn connect(lab: &str, name: &str) -> Result<(VmState, Qmp), Error> {
    let st = crate::manage::load(lab, name)?;
    if st.status != Status::Running || !st.qemu_alive() {
        return Err(Error::NotRunning { name: name.into() });
    }
    let q = Qmp::connect(&crate::qemu::qmp_sock(&st.dir), Duration::from_secs(10))?;
    Ok((st, q))
}

/// The paths whose device QEMU has now.
fn plugged(q: &mut Qmp) -> Result<Vec<ScsiPath>, Error> {
    let children = q.execute_with("qom-list", Some(json!({ "path": "/machine/peripheral" })))?;
    let names: Vec<&str> = children
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    Ok(PATHS
        .into_iter()
        .filter(|p| names.contains(&p.device().as_str()))
        .collect())
}

/// Each path's state; an error when the VM has no pair at all (nothing plugged, nothing
/// pulled by `fail`).
fn statuses(st: &VmState, plugged: &[ScsiPath]) -> Result<Vec<PathStatus>, Error> {
    pair_statuses(&st.name, &st.dir, plugged)
}

fn pair_statuses(
    name: &str,
    dir: &std::path::Path,
    plugged: &[ScsiPath],
) -> Result<Vec<PathStatus>, Error> {
    if plugged.is_empty() && !PATHS.iter().any(|p| backing_file(dir, *p).exists()) {
        return Err(Error::conflict(
            name,
            "it has no multipath pair",
            "start it with --multipath IMAGE",
        ));
    }
    Ok(PATHS
        .into_iter()
        .map(|p| PathStatus {
            path: p.device(),
            state: if plugged.contains(&p) {
                PathState::Active
            } else {
                PathState::Failed
            },
            node: p.node(),
            scsi_id: p.scsi_id(),
            lun: 0,
        })
        .collect())
}

/// Each path's state.
pub fn list(lab: &str, name: &str) -> Result<Vec<PathStatus>, Error> {
    let (st, mut q) = connect(lab, name)?;
    let now = plugged(&mut q)?;
    statuses(&st, &now)
}

/// Pulls `which` (default: the first active path) and returns it once QEMU has dropped both
/// its device and its block node.
pub fn fail(lab: &str, name: &str, which: Option<ScsiPath>) -> Result<ScsiPath, Error> {
    let (st, mut q) = connect(lab, name)?;
    let now = plugged(&mut q)?;
    statuses(&st, &now)?;
    let p = match which {
        Some(p) if !now.contains(&p) => {
            return Err(Error::conflict(
                name,
                format!("{} has already failed", p.device()),
                format!(
                    "`labnet vm path {name} restore {}` plugs it back",
                    p.device()
                ),
            ))
        }
        Some(p) => p,
        None => *now.first().ok_or_else(|| {
            Error::conflict(
                name,
                "both paths have failed already",
                format!("`labnet vm path {name} restore` plugs one back"),
            )
        })?,
    };
    let backing = node_backing(&mut q, name, &p.node())?;
    let file = backing_file(&st.dir, p);
    let json = serde_json::to_string(&backing).expect("a path's backing serializes");
    std::fs::write(&file, json).map_err(|e| Error::io(&file, e))?;
    q.execute_with("device_del", Some(json!({ "id": p.device() })))?;
    // virtio-scsi unplugs at once (the guest is told, not asked); wait to be sure.
    let t0 = Instant::now();
    while plugged(&mut q)?.contains(&p) {
        if t0.elapsed() > Duration::from_secs(15) {
            return Err(Error::StillPlugged {
                name: name.to_string(),
                device: p.device(),
                secs: 15,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The node is free once the device is gone; retry briefly in case QEMU is not done.
    let t0 = Instant::now();
    loop {
        match q.execute_with("blockdev-del", Some(json!({ "node-name": p.node() }))) {
            Ok(_) => break,
            Err(e) if t0.elapsed() > Duration::from_secs(5) => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Ok(p)
}

/// Plugs `which` (default: the first failed path) back in: node, then device, on its old
/// SCSI target with the pair's serial and WWN.
pub fn restore(lab: &str, name: &str, which: Option<ScsiPath>) -> Result<ScsiPath, Error> {
    let (st, mut q) = connect(lab, name)?;
    let now = plugged(&mut q)?;
    statuses(&st, &now)?;
    let p = match which {
        Some(p) if now.contains(&p) => {
            return Err(Error::conflict(
                name,
                format!("{} is active", p.device()),
                format!("only a failed path can be restored (`labnet vm path {name} list`)"),
            ))
        }
        Some(p) => p,
        None => PATHS
            .into_iter()
            .find(|p| !now.contains(p))
            .ok_or_else(|| {
                Error::conflict(
                    name,
                    "both paths are active",
                    format!("nothing to restore; `labnet vm path {name} fail` pulls one"),
                )
            })?,
    };
    let file = backing_file(&st.dir, p);
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let b: Backing = serde_json::from_str(&text).map_err(|source| Error::Corrupt {
        path: file.display().to_string(),
        what: "multipath path backing",
        source,
    })?;
    q.execute_with(
        "blockdev-add",
        Some(json!({
            "driver": b.driver,
            "node-name": p.node(),
            "file": { "driver": "file", "filename": b.filename },
        })),
    )?;
    let (serial, _) = crate::naming::multipath_ids(&st.lab, &st.name);
    let wwn = crate::naming::multipath_wwn(&st.lab, &st.name);
    let added = q.execute_with(
        "device_add",
        Some(json!({
            "driver": "scsi-hd",
            "id": p.device(),
            "drive": p.node(),
            "bus": SCSI_BUS,
            "scsi-id": p.scsi_id(),
            "lun": 0,
            "serial": serial,
            "wwn": wwn,
            "share-rw": true,
        })),
    );
    if let Err(e) = added {
        let _ = q.execute_with("blockdev-del", Some(json!({ "node-name": p.node() })));
        return Err(e);
    }
    let _ = std::fs::remove_file(&file);
    Ok(p)
}

/// The format driver and file under a block node (from `query-named-block-nodes`).
fn node_backing(q: &mut Qmp, name: &str, node: &str) -> Result<Backing, Error> {
    let nodes = q.execute_with("query-named-block-nodes", Some(json!({ "flat": true })))?;
    let bad = |found: Option<&serde_json::Value>| Error::BlockNode {
        name: name.to_string(),
        node: node.to_string(),
        found: found.map(|n| n.to_string()),
    };
    let n = nodes
        .as_array()
        .and_then(|a| a.iter().find(|n| n["node-name"] == node))
        .ok_or_else(|| bad(None))?;
    match (n["drv"].as_str(), n["file"].as_str()) {
        (Some(d), Some(f)) if !f.starts_with("json:") => Ok(Backing {
            driver: d.into(),
            filename: f.into(),
        }),
        _ => Err(bad(Some(n))),
    }
}

/// `vm path NAME list` as a table.
pub fn render(rows: &[PathStatus]) -> String {
    let mut s = String::from("PATH   STATE   NODE    SCSI\n");
    for r in rows {
        let state = match r.state {
            PathState::Active => "active",
            PathState::Failed => "failed",
        };
        s.push_str(&format!(
            "{:<6} {:<7} {:<7} {}:{}\n",
            r.path, state, r.node, r.scsi_id, r.lun
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_names() {
        assert_eq!(ScsiPath::parse("1").unwrap(), PATHS[0]);
        assert_eq!(ScsiPath::parse("path2").unwrap(), PATHS[1]);
        let e = ScsiPath::parse("3").unwrap_err().to_string();
        assert_eq!(e, "PATH: \"3\": expected path1 or path2 (or 1, 2)");
        assert_eq!(
            (PATHS[1].device(), PATHS[1].node(), PATHS[1].scsi_id()),
            ("path2".to_string(), "mpath2".to_string(), 1)
        );
    }

    #[test]
    fn list_table_and_json_golden() {
        let dir = std::path::Path::new("/nonexistent");
        let rows = pair_statuses("vm1", dir, &[PATHS[1]]).unwrap();
        crate::qemu::golden::check("path-list.txt", &render(&rows));
        crate::qemu::golden::check(
            "path-list.json",
            &format!("{}\n", serde_json::to_string_pretty(&rows).unwrap()),
        );
        let e = pair_statuses("vm1", dir, &[]).unwrap_err().to_string();
        assert!(e.contains("has no multipath pair"), "{e}");
    }
}
