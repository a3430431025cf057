//! The lease log writer: group commit and background compaction (format: [`crate::leases`]).
//!
//! One thread owns the file. It takes every job queued since its last write and appends all
//! their records in one write; one of two fsync threads then fdatasyncs the file and only
//! then sends the replies that waited on that batch. While the fsyncs run, new requests pile
//! up and share the next one, so the cost of durability is per batch, not per lease; with
//! two fsync threads a batch need not wait for the previous batch's fsync to finish.
//!
//! When the log holds many more records than live addresses, a second thread writes a
//! snapshot of the live state to `leases.log.tmp` and fsyncs it, while the writer keeps
//! appending to the old log and remembers what it appended since the snapshot. The writer
//! then adds those records to the snapshot, fsyncs, and renames it over the log.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::core::Reply;
use crate::leases::{encode_record, log_path, parse_log, Lease, HEADER};

/// Preallocation step: the log is kept this much ahead of its data, filled with NULs.
const PREALLOC: u64 = 4 << 20;

/// The log file: data up to `off`, NULs (already written, so allocated) up to `cap`.
struct LogFile {
    file: Arc<File>,
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

/// A batch element: records to make durable, then a reply to send.
pub struct Job {
    pub records: Vec<Lease>,
    pub reply: Option<Reply>,
}

enum Msg {
    Job(Job),
    /// Reply once everything queued before it is durable (tests, shutdown).
    Sync(mpsc::Sender<()>),
}

/// The opened, recovered lease log, ready to be handed to its writer thread.
pub struct LeaseLog {
    dir: PathBuf,
    file: LogFile,
    state: BTreeMap<Ipv4Addr, Lease>,
    records_in_file: usize,
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
        file: Arc::new(file),
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
        let parsed = parse_log(&bytes).map_err(|found| Error::Config(format!(
            "{}: not a labnet lease log (first line {found:?}); move it away to start with no leases",
            path.display()
        )))?;
        let mut warnings = vec![];
        if !parsed.bad.is_empty() {
            let corrupt = dir.join("leases.log.corrupt");
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&corrupt)
                .map_err(|e| io(&corrupt, e))?;
            for (a, b) in &parsed.bad {
                f.write_all(&bytes[*a..*b]).map_err(|e| io(&corrupt, e))?;
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
        let state = parsed.latest();
        let (file, n) = write_snapshot(dir, state.values())?;
        install_snapshot(dir)?;
        Ok((
            LeaseLog {
                dir: dir.to_path_buf(),
                file,
                state,
                records_in_file: n,
            },
            warnings,
        ))
    }

    /// The recovered leases (latest record per address).
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.state.values()
    }

    /// Starts the writer thread. `send` delivers replies after their records are durable;
    /// `log` reports write errors.
    pub fn spawn<S, L>(self, send: S, log: L) -> Store
    where
        S: Fn(&Reply) + Send + Sync + 'static,
        L: Fn(String) + Send + Sync + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("dhcpd-leases".into())
            .spawn(move || writer(self, rx, send, log))
            .expect("spawn lease writer");
        Store {
            tx: Some(tx),
            handle: Some(handle),
        }
    }
}

/// Handle to the writer thread.
pub struct Store {
    tx: Option<mpsc::Sender<Msg>>,
    handle: Option<JoinHandle<()>>,
}

impl Store {
    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Job(job));
        }
    }

    /// Blocks until everything submitted so far is on disk (and its replies sent).
    pub fn sync(&self) {
        let (tx, rx) = mpsc::channel();
        if let Some(t) = &self.tx {
            if t.send(Msg::Sync(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
    }

    /// Drains the queue and stops the writer.
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Compact when the file holds this many records more than live addresses, and at least
/// `COMPACT_RATIO` times as many.
const COMPACT_MIN_GARBAGE: usize = 10_000;
const COMPACT_RATIO: usize = 4;
const MAX_BATCH: usize = 4096;

/// One batch handed from the writer to a syncer: fsync `file`, then answer.
struct SyncJob {
    file: Arc<File>,
    replies: Vec<Reply>,
}

/// Jobs handed to syncers and not finished yet (replies not all sent).
#[derive(Default)]
struct InFlight {
    n: Mutex<usize>,
    idle: std::sync::Condvar,
}

impl InFlight {
    fn add(&self) {
        *self.n.lock().expect("in-flight") += 1;
    }
    fn done(&self) {
        let mut n = self.n.lock().expect("in-flight");
        *n -= 1;
        if *n == 0 {
            self.idle.notify_all();
        }
    }
    fn wait_idle(&self) {
        let mut n = self.n.lock().expect("in-flight");
        while *n > 0 {
            n = self.idle.wait(n).expect("in-flight");
        }
    }
}

/// fsyncs run on `SYNCERS` threads so that a batch written while another batch's fsync is
/// still running does not wait for it (a later fdatasync also covers everything written
/// before it started, so each batch's replies only wait for their own).
const SYNCERS: usize = 2;

fn writer<S, L>(mut log: LeaseLog, rx: mpsc::Receiver<Msg>, send: S, report: L)
where
    S: Fn(&Reply) + Send + Sync + 'static,
    L: Fn(String) + Send + Sync + 'static,
{
    let path = log_path(&log.dir);
    let send = Arc::new(send);
    let report = Arc::new(report);
    // Rendezvous: when every syncer is busy the writer waits, and requests pile up into the
    // next batch (group commit).
    let (sync_tx, sync_rx) = mpsc::sync_channel::<SyncJob>(0);
    let sync_rx = Arc::new(Mutex::new(sync_rx));
    let in_flight = Arc::new(InFlight::default());
    let syncers: Vec<JoinHandle<()>> = (0..SYNCERS)
        .map(|i| {
            let (rx, send, report, path) =
                (sync_rx.clone(), send.clone(), report.clone(), path.clone());
            let in_flight = in_flight.clone();
            std::thread::Builder::new()
                .name(format!("dhcpd-fsync{i}"))
                .spawn(move || loop {
                    let job = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(j)) => j,
                        _ => break,
                    };
                    match job.file.sync_data() {
                        // The replies wait for this: an ACK is only sent for a lease on disk.
                        Ok(()) => job.replies.iter().for_each(|r| send(r)),
                        Err(e) => report(format!(
                            "{}: fsync failed, {} repl(ies) not sent: {e}",
                            path.display(),
                            job.replies.len()
                        )),
                    }
                    in_flight.done();
                })
                .expect("spawn fsync thread")
        })
        .collect();
    // A running compaction: the snapshot writer, and what was appended since it started.
    type Compaction = (JoinHandle<Result<(LogFile, usize), Error>>, Vec<u8>);
    let mut compaction: Option<Compaction> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        buf.clear();
        let mut n = 0;
        let mut replies = vec![];
        let mut syncs = vec![];
        for m in batch {
            match m {
                Msg::Job(j) => {
                    for r in j.records {
                        buf.extend_from_slice(encode_record(&r).as_bytes());
                        log.state.insert(r.ip, r);
                        n += 1;
                    }
                    replies.extend(j.reply);
                }
                Msg::Sync(s) => syncs.push(s),
            }
        }
        if n > 0 {
            match log.file.append(&buf) {
                Ok(()) => {
                    log.records_in_file += n;
                    if let Some((_, pending)) = compaction.as_mut() {
                        pending.extend_from_slice(&buf);
                    }
                }
                Err(e) => {
                    report(format!(
                        "{}: cannot write leases, {} repl(ies) not sent: {e}",
                        path.display(),
                        replies.len()
                    ));
                    replies.clear();
                }
            }
        }
        let job = SyncJob {
            file: log.file.file.clone(),
            replies,
        };
        in_flight.add();
        if sync_tx.send(job).is_err() {
            in_flight.done();
            report("lease fsync threads are gone".into());
        }
        if !syncs.is_empty() {
            // Everything before this point is fsynced and answered once no job is in flight.
            in_flight.wait_idle();
            for s in syncs {
                let _ = s.send(());
            }
        }
        // Finish a compaction whose snapshot is written.
        if compaction.as_ref().is_some_and(|(h, _)| h.is_finished()) {
            let (h, pending) = compaction.take().expect("checked");
            let done = h
                .join()
                .unwrap_or_else(|_| Err(Error::Config("compaction thread panicked".into())))
                .and_then(|(mut f, k)| {
                    f.append(&pending).map_err(|e| io(&path, e))?;
                    f.sync().map_err(|e| io(&path, e))?;
                    install_snapshot(&log.dir)?;
                    Ok((f, k))
                });
            match done {
                Ok((f, k)) => {
                    log.file = f;
                    log.records_in_file = k + count_lines(&pending);
                }
                Err(e) => report(format!("lease log compaction failed (log kept as is): {e}")),
            }
        }
        let live = log.state.len();
        if compaction.is_none()
            && log.records_in_file > live + COMPACT_MIN_GARBAGE
            && log.records_in_file > live * COMPACT_RATIO
        {
            let dir = log.dir.clone();
            let snap: Vec<Lease> = log.state.values().cloned().collect();
            let h = std::thread::spawn(move || write_snapshot(&dir, snap.iter()));
            compaction = Some((h, Vec::new()));
        }
    }
    drop(sync_tx);
    for h in syncers {
        let _ = h.join();
    }
    // Shutting down: let a running compaction finish writing its temp file, but keep the
    // (complete, fsynced) log as it is.
    if let Some((h, _)) = compaction {
        let _ = h.join();
    }
}

fn count_lines(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leases::{load, LeaseState};

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
        let (log, w) = LeaseLog::open(dir.path()).unwrap();
        assert!(w.is_empty());
        let store = log.spawn(|_| {}, |e| panic!("{e}"));
        for i in 0..30_000 {
            store.submit(Job {
                records: vec![lease(i)],
                reply: None,
            });
        }
        store.sync();
        // Compaction runs in the background; keep writing until it has happened.
        for i in 30_000..30_100 {
            store.submit(Job {
                records: vec![lease(i)],
                reply: None,
            });
            store.sync();
        }
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
    }

    #[test]
    fn every_reply_sent_once_after_its_record_is_written() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = LeaseLog::open(dir.path()).unwrap();
        let sent = Arc::new(AtomicUsize::new(0));
        let (s2, d2) = (sent.clone(), dir.path().to_path_buf());
        let store = log.spawn(
            move |r: &Reply| {
                // The record of the lease this reply announces is already in the file.
                let ip = Ipv4Addr::from(u32::from_be_bytes(r.bytes[..4].try_into().unwrap()));
                assert!(
                    load(&d2).unwrap().iter().any(|l| l.ip == ip),
                    "{ip} not on disk yet"
                );
                s2.fetch_add(1, Ordering::SeqCst);
            },
            |e| panic!("{e}"),
        );
        for i in 0..200u32 {
            let l = lease(i);
            let reply = Reply {
                bytes: u32::from(l.ip).to_be_bytes().to_vec(),
                dest: "255.255.255.255:68".parse().unwrap(),
                kind: dhcproto::v4::MessageType::Ack,
            };
            store.submit(Job {
                records: vec![l],
                reply: Some(reply),
            });
        }
        store.sync();
        assert_eq!(sent.load(Ordering::SeqCst), 200);
    }

    #[test]
    fn torn_tail_recovered_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("{HEADER}\n{}", encode_record(&lease(1)));
        text += &encode_record(&lease(2))[..20];
        std::fs::write(log_path(dir.path()), text).unwrap();
        let (log, w) = LeaseLog::open(dir.path()).unwrap();
        assert_eq!(w.len(), 1, "{w:?}");
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
        assert!(e.contains("not a labnet lease log"), "{e}");
        assert_eq!(
            std::fs::read_to_string(log_path(dir.path())).unwrap(),
            "lease 10.0.0.1 {\n}\n"
        );
    }
}
