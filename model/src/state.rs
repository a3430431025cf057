//! The persisted record of what `up` made (/run/labnet/LAB.json), and the per-lab lock.
//!
//! Each resource is appended *before* it is created and the file is replaced atomically, so
//! the record is never behind reality: `down` undoes the list in reverse and treats
//! "already gone" as done.
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use crate::config::Lab;
use crate::{paths, Error};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// /run/netns/NAME (and everything inside: bridge, moved links, taps).
    Netns { name: String },
    /// A link in labnet's own namespace (a kernel wg link before its move, a veth end).
    RootLink { name: String },
    /// A wireguard-go process serving IFACE (UAPI socket /var/run/wireguard/IFACE.sock).
    WgUserspace { iface: String, pid: Option<u32> },
    /// An nftables table (in the lab namespace, or labnet's own when `netns` is None).
    NftTable {
        netns: Option<String>,
        family: String,
        name: String,
    },
    /// A sysctl labnet changed in its own namespace; `old` is restored by down.
    Sysctl { path: String, old: String },
    /// A directory labnet created.
    Dir { path: PathBuf },
    /// A file labnet wrote; `saved` holds the previous file's copy to restore, if there was one.
    File {
        path: PathBuf,
        saved: Option<PathBuf>,
    },
    /// A daemon labnet started (dhcpd, dns) with its pid; `exe` guards against pid reuse.
    Daemon {
        name: String,
        pid: Option<u32>,
        exe: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    pub lab: String,
    /// The config the lab was built from (down must not depend on today's config file).
    /// A record written by an older labnet whose config no longer parses reads as None.
    #[serde(default, deserialize_with = "lenient")]
    pub config: Option<Lab>,
    /// True once `up` finished every step.
    pub complete: bool,
    /// Which WireGuard backend `up` chose.
    pub wg_backend: Option<String>,
    pub resources: Vec<Resource>,
}

fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Lab>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

impl LabState {
    pub fn load(lab: &str) -> Result<Option<LabState>, Error> {
        let path = paths::lab_state_file(lab);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| Error::CorruptState { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Writes the record atomically (tmp + fsync + rename).
    pub fn save(&self) -> Result<(), Error> {
        let path = paths::lab_state_file(&self.lab);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| Error::CorruptState {
            path: path.clone(),
            source,
        })?;
        paths::write_atomic(&path, &bytes, true).map_err(|e| Error::io(&path, e))
    }

    /// Records a resource before it is created.
    pub fn record(&mut self, r: Resource) -> Result<(), Error> {
        self.resources.push(r);
        self.save()
    }

    /// Replaces the last record (e.g. to add a pid once the process exists).
    pub fn update_last(&mut self, r: Resource) -> Result<(), Error> {
        if let Some(last) = self.resources.last_mut() {
            *last = r;
        }
        self.save()
    }

    pub fn remove_file(&self) -> Result<(), Error> {
        let path = paths::lab_state_file(&self.lab);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }
}

/// An exclusive lock on /run/labnet/LAB.lock, held for the whole of an up or down.
///
/// `down` deletes the lock file while it holds it. A waiter that opened the file before the
/// delete then locks an inode nobody else will see, so every lock taken is checked to still
/// be the file at the path (else it is taken again on the new file).
pub struct LabLock {
    file: File,
    path: PathBuf,
}

/// The temp file a state save writes before its rename (see [`paths::write_atomic`]).
fn state_tmp_file(lab: &str) -> PathBuf {
    let path = paths::lab_state_file(lab);
    path.with_file_name(format!(".{lab}.json.tmp"))
}

impl LabLock {
    /// Waits up to `wait` for another up/down of the same lab to finish.
    pub fn acquire(lab: &str, wait: std::time::Duration) -> Result<LabLock, Error> {
        let dir = paths::run_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!("{lab}.lock"));
        let deadline = std::time::Instant::now() + wait;
        loop {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            loop {
                // SAFETY: flock(2) on an fd that `file` owns and keeps open; no memory involved.
                let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                if r == 0 {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    return Err(Error::LockBusy {
                        lab: lab.into(),
                        path,
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            if !Self::is_current(&file, &path) {
                continue; // a `down` removed the file we waited on
            }
            // A state save killed between write and rename leaves its temp file; whoever
            // wrote it held this lock, so it is debris now.
            let tmp = state_tmp_file(lab);
            match std::fs::remove_file(&tmp) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&tmp, e)),
            }
            return Ok(LabLock { file, path });
        }
    }

    /// Like [`acquire`](Self::acquire), but only for a lab that left something in the run
    /// dir (its state, lock or a state temp file): None, and nothing created, otherwise.
    pub fn acquire_existing(
        lab: &str,
        wait: std::time::Duration,
    ) -> Result<Option<LabLock>, Error> {
        let lock = paths::run_dir().join(format!("{lab}.lock"));
        let any = [paths::lab_state_file(lab), lock, state_tmp_file(lab)]
            .iter()
            .any(|p| p.symlink_metadata().is_ok());
        if !any {
            return Ok(None);
        }
        Self::acquire(lab, wait).map(Some)
    }

    fn is_current(file: &File, path: &std::path::Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(held), Ok(now)) => held.dev() == now.dev() && held.ino() == now.ino(),
            _ => false,
        }
    }

    /// Deletes the lock file (still holding the lock, so no one else has it meanwhile) and
    /// releases it: for `down`, after which the lab leaves nothing in the run dir.
    pub fn remove(self) -> Result<(), Error> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&self.path, e)),
        }?;
        drop(self.file);
        Ok(())
    }
}
