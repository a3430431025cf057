//! The lease log: durable appends and background compaction (format: [`model::lease`]).
//!
//! The server's loop reads every request waiting on the socket, handles them, and then
//! commits all their records with one write and one fdatasync before it sends the replies
//! that waited on them (group commit: while one fdatasync runs, new requests queue in the
//! socket and share the next). No other thread is involved, so an ACK never waits for a
//! thread to be woken and scheduled, only for the disk.
//!
//! Only bindings are live: the latest record of an address while it is an unexpired active
//! or declined lease. A release (or expiry) is still appended, so a replay of the log never
//! brings the lease back, but the address leaves the live state, and a compaction leaves it
//! out of the file: the log, like the server's memory, holds at most one record per address
//! in use, whatever number of clients came and went.
//!
//! When the log holds many more records than live addresses, a thread writes a snapshot of
//! the live state to `leases.log.tmp` and fsyncs it, while commits keep appending to the old
//! log and remember what they appended since the snapshot. The next commit after the snapshot
//! is done adds those records to it, fsyncs, and renames it over the log.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use crate::core::is_held;
use model::lease::{
    encode_record, log_path, now_secs, parse_log, Lease, LeaseError, LeaseState, HEADER,
};

/// Preallocation step: the log is kept this much ahead of its data, filled with NULs.
const PREALLOC: u64 = 4 << 20;

/// The log file: data up to `off`, NULs (already written, so allocated) up to `cap`.
struct LogFile {
    file: File,
    off: u64,
    cap: u64,
}

impl LogFile {
    /// Writes `buf` at the end of the data, growing the NUL area first if it is too small.
    /// Not durable until [`LogFile::sync`].
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let end = self.off + buf.len() as u64;
        if end > self.cap {
            let new_cap = end + PREALLOC;
            let zeros = vec![0u8; (new_cap - self.cap) as usize];
            self.file.write_all_at(&zeros, self.cap)?;
            self.cap = new_cap;
        }
        self.file.write_all_at(buf, self.off)?;
        self.off = end;
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}
use crate::Error;

/// A running compaction: the snapshot writer, and what was appended since it started.
type Compaction = (JoinHandle<Result<(LogFile, usize), Error>>, Vec<u8>);

/// The opened, recovered lease log.
pub struct LeaseLog {
    dir: PathBuf,
    file: LogFile,
    state: BTreeMap<Ipv4Addr, Lease>,
    records_in_file: usize,
    compaction: Option<Compaction>,
    buf: Vec<u8>,
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn fsync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Writes `leases` as a fresh, preallocated log to `leases.log.tmp`, fsynced; returns it
/// and the number of records.
fn write_snapshot<'a>(
    dir: &Path,
    leases: impl Iterator<Item = &'a Lease>,
) -> Result<(LogFile, usize), Error> {
    let tmp = dir.join("leases.log.tmp");
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| io(&tmp, e))?;
    let mut buf = format!("{HEADER}\n");
    let mut n = 0;
    for l in leases {
        buf.push_str(&encode_record(l));
        n += 1;
    }
    let mut f = LogFile {
        file,
        off: 0,
        cap: 0,
    };
    f.append(buf.as_bytes()).map_err(|e| io(&tmp, e))?;
    f.file.sync_all().map_err(|e| io(&tmp, e))?;
    Ok((f, n))
}

fn install_snapshot(dir: &Path) -> Result<(), Error> {
    let tmp = dir.join("leases.log.tmp");
    let log = log_path(dir);
    std::fs::rename(&tmp, &log).map_err(|e| io(&log, e))?;
    fsync_dir(dir)
}

impl LeaseLog {
    /// Opens (creating) `dir/leases.log`, recovers it, and rewrites it compacted. Torn or
    /// corrupt lines are skipped and copied to `leases.log.corrupt` for inspection; a log
    /// that is not a lease log at all is an error naming the file (never overwritten).
    pub fn open(dir: &Path) -> Result<(LeaseLog, Vec<String>), Error> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = log_path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(io(&path, e)),
        };
        // Not a lease log at all: refused (naming the file), never overwritten; move it
        // away to start with no leases.
        let parsed = parse_log(&bytes).map_err(|e| {
            Error::NotALeaseLog(LeaseError::Header {
                path: path.clone(),
                found: e.found,
            })
        })?;
        let mut warnings = vec![];
        if !parsed.bad.is_empty() {
            let corrupt = dir.join("leases.log.corrupt");
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&corrupt)
                .map_err(|e| io(&corrupt, e))?;
            for (i, bad) in parsed.bad.iter().enumerate() {
                let (a, b) = (bad.start, bad.end);
                // Which lines and why, for the first few (a damaged disk may give thousands).
                if i < 10 {
                    warnings.push(format!("{} {bad}: skipped", path.display()));
                }
                f.write_all(&bytes[a..b]).map_err(|e| io(&corrupt, e))?;
                if bytes.get(b - 1) != Some(&b'\n') {
                    f.write_all(b"\n").map_err(|e| io(&corrupt, e))?;
                }
            }
            f.sync_all().map_err(|e| io(&corrupt, e))?;
            warnings.push(format!(
                "{}: skipped {} torn or corrupt record(s) (copied to {})",
                path.display(),
                parsed.bad.len(),
                corrupt.display()
            ));
        }
        let now = now_secs();
        let mut state = parsed.latest();
        state.retain(|_, l| is_held(l, now));
        let (file, n) = write_snapshot(dir, state.values())?;
        install_snapshot(dir)?;
        Ok((
            LeaseLog {
                dir: dir.to_path_buf(),
                file,
                state,
                records_in_file: n,
                compaction: None,
                buf: Vec::with_capacity(1 << 16),
            },
            warnings,
        ))
    }

    /// The live leases: what was recovered and committed since, less what was released or
    /// ran out (as of the last compaction).
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.state.values()
    }

    /// Appends `records` in one write and fdatasyncs: when this returns Ok they are on
    /// disk. Also finishes a compaction whose snapshot is written, and starts one when the
    /// log holds too much garbage.
    pub fn commit(&mut self, records: &[Lease]) -> Result<(), Error> {
        let path = log_path(&self.dir);
        if !records.is_empty() {
            self.buf.clear();
            for r in records {
                self.buf.extend_from_slice(encode_record(r).as_bytes());
            }
            self.file.append(&self.buf).map_err(|e| io(&path, e))?;
            for r in records {
                if matches!(r.state, LeaseState::Active | LeaseState::Declined) {
                    self.state.insert(r.ip, r.clone());
                } else {
                    self.state.remove(&r.ip);
                }
            }
            self.records_in_file += records.len();
            if let Some((_, pending)) = self.compaction.as_mut() {
                pending.extend_from_slice(&self.buf);
            }
            self.file.sync().map_err(|e| io(&path, e))?;
        }
        self.maintain();
        Ok(())
    }

    /// Finishes a compaction whose snapshot is written; starts one when the log holds
    /// [`COMPACT_MIN_GARBAGE`] more records than live addresses (and [`COMPACT_RATIO`]
    /// times as many). A failed compaction keeps the log as it is and says why on stderr.
    fn maintain(&mut self) {
        if self
            .compaction
            .as_ref()
            .is_some_and(|(h, _)| h.is_finished())
        {
            let (h, pending) = self.compaction.take().expect("checked");
            let path = log_path(&self.dir);
            let done = h
                .join()
                .unwrap_or_else(|_| Err(Error::CompactionPanicked))
                .and_then(|(mut f, k)| {
                    f.append(&pending).map_err(|e| io(&path, e))?;
                    f.sync().map_err(|e| io(&path, e))?;
                    install_snapshot(&self.dir)?;
                    Ok((f, k))
                });
            match done {
                Ok((f, k)) => {
                    self.file = f;
                    self.records_in_file = k + count_lines(&pending);
                }
                Err(e) => {
                    crate::log!("lease log compaction failed (log kept as is): {e}")
                }
            }
        }
        let live = self.state.len();
        if self.compaction.is_none()
            && self.records_in_file > live + COMPACT_MIN_GARBAGE
            && self.records_in_file > live * COMPACT_RATIO
        {
            // Leases that ran out since are not carried over.
            let now = now_secs();
            self.state.retain(|_, l| is_held(l, now));
            let dir = self.dir.clone();
            let snap: Vec<Lease> = self.state.values().cloned().collect();
            let h = std::thread::Builder::new()
                .name("dhcpd-compact".into())
                .spawn(move || write_snapshot(&dir, snap.iter()));
            match h {
                Ok(h) => self.compaction = Some((h, Vec::new())),
                Err(e) => crate::log!("lease log compaction not started: {e}"),
            }
        }
    }

    /// Lets a running compaction finish writing its temp file (shutting down: the log itself,
    /// complete and fsynced, stays as it is).
    pub fn close(&mut self) {
        if let Some((h, _)) = self.compaction.take() {
            let _ = h.join();
        }
    }
}

/// Compact when the file holds this many records more than live addresses, and at least
/// `COMPACT_RATIO` times as many.
const COMPACT_MIN_GARBAGE: usize = 10_000;
const COMPACT_RATIO: usize = 4;

fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::lease::{load, LeaseState};

    fn lease(i: u32) -> Lease {
        Lease {
            ip: Ipv4Addr::from(0x0a00_0000 + (i % 50)),
            mac: format!("52:54:00:00:00:{:02x}", i % 50),
            hostname: None,
            client_id: None,
            start: i as u64,
            expires: u64::MAX / 2,
            state: LeaseState::Active,
        }
    }

    #[test]
    fn records_are_durable_and_compaction_keeps_latest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, w) = LeaseLog::open(dir.path()).unwrap();
        assert!(w.is_empty());
        // 30 000 records over 50 addresses, 100 per commit: far past the compaction threshold.
        for batch in 0..300u32 {
            let recs: Vec<Lease> = (batch * 100..batch * 100 + 100).map(lease).collect();
            log.commit(&recs).unwrap();
            if batch % 25 != 0 {
                continue;
            }
            // What a commit returned for is on disk, whatever compaction is doing.
            let got = load(dir.path()).unwrap();
            let newest = batch * 100 + 99;
            assert!(
                got.iter().any(|l| l.start == newest as u64),
                "record {newest} not on disk after its commit"
            );
        }
        // Compaction runs in the background; keep committing until it has happened.
        for i in 30_000..30_100 {
            log.commit(&[lease(i)]).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        log.commit(&[]).unwrap();
        let got = load(dir.path()).unwrap();
        assert_eq!(got.len(), 50);
        for l in &got {
            let last = (30_000..30_100)
                .rev()
                .find(|i| lease(*i).ip == l.ip)
                .unwrap();
            assert_eq!(l.start, last as u64, "{l:?}");
        }
        let bytes = std::fs::read(log_path(dir.path())).unwrap();
        let lines = bytes.iter().filter(|&&b| b == b'\n').count();
        assert!(lines < 20_000, "log was never compacted: {lines} lines");
        log.close();
    }

    #[test]
    fn torn_tail_recovered_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("{HEADER}\n{}", encode_record(&lease(1)));
        text += &encode_record(&lease(2))[..20];
        std::fs::write(log_path(dir.path()), text).unwrap();
        let (log, w) = LeaseLog::open(dir.path()).unwrap();
        // The line and why, then the summary.
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].ends_with("leases.log line 3: torn record (no newline): skipped"),
            "{w:?}"
        );
        assert!(
            w[1].contains("skipped 1 torn or corrupt record(s)"),
            "{w:?}"
        );
        assert_eq!(log.leases().count(), 1);
        let clean = std::fs::read(log_path(dir.path())).unwrap();
        let want = format!("{HEADER}\n{}", encode_record(&lease(1)));
        assert_eq!(&clean[..want.len()], want.as_bytes());
        assert!(
            clean[want.len()..].iter().all(|&b| b == 0),
            "preallocated with NULs"
        );
        assert!(clean.len() as u64 >= PREALLOC);
        assert!(dir.path().join("leases.log.corrupt").exists());
    }

    #[test]
    fn foreign_file_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(log_path(dir.path()), "lease 10.0.0.1 {\n}\n").unwrap();
        let e = LeaseLog::open(dir.path()).err().unwrap().to_string();
        assert!(
            e.contains("leases.log: not a labnet lease log (first line is \"lease 10.0.0.1 {\"")
                && e.ends_with("move it away to start with no leases"),
            "{e}"
        );
        assert_eq!(
            std::fs::read_to_string(log_path(dir.path())).unwrap(),
            "lease 10.0.0.1 {\n}\n"
        );
    }
}
