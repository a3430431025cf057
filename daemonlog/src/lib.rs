//! What labnet's daemons (`labnet dns`, `labnet dhcpd`) log, and how much of it.
//!
//! A lab client controls what arrives on the daemons' sockets, so anything logged per packet
//! is a way to fill the disk (or RAM: `/run` is tmpfs). Two bounds:
//!
//! - [`RateLimit`]: per kind of message, at most [`BURST`] lines per [`WINDOW`]; the rest are
//!   counted and reported as one `suppressed N similar` line when the window ends.
//!   [`RateLimitLayer`] applies it to every `tracing` callsite (hickory's per-request warnings
//!   included).
//! - [`Sink`]: lines go to stderr, which a hand-run `labnet up` points at
//!   `/run/labnet/LAB/NAME.log`. When stderr is such a file it is capped at
//!   [`max_bytes`] (`LABNET_LOG_MAX_BYTES`, default 1 MiB) and rotated once (`NAME.log.1`),
//!   so a daemon's log never takes more than twice the cap. Under systemd stderr is the
//!   journal, which has its own rate limit and size bounds; then nothing is rotated here.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
use std::collections::HashMap;
use std::hash::Hash;
use std::io::Write;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Lines of one kind logged per window before the rest are only counted.
pub const BURST: u32 = 10;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Default size cap of a daemon's log file.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Slot {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

/// Per-key line budget: [`BURST`] lines per [`WINDOW`], the rest counted.
pub struct RateLimit<K> {
    slots: Mutex<HashMap<K, Slot>>,
    burst: u32,
    window: Duration,
}

impl<K: Hash + Eq + Clone> Default for RateLimit<K> {
    fn default() -> Self {
        Self::new(BURST, WINDOW)
    }
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    pub fn new(burst: u32, window: Duration) -> Self {
        RateLimit {
            slots: Mutex::new(HashMap::new()),
            burst,
            window,
        }
    }

    /// Whether a line of kind `key` may be logged now. `Some(n)`: log it, after a summary
    /// of the `n` (maybe 0) suppressed in the window that just ended; None: suppressed.
    pub fn check(&self, key: &K, now: Instant) -> Option<u64> {
        let mut slots = lock(&self.slots);
        let slot = slots.entry(key.clone()).or_insert(Slot {
            start: now,
            logged: 0,
            suppressed: 0,
        });
        let mut ended = 0;
        if now.duration_since(slot.start) >= self.window {
            ended = slot.suppressed;
            *slot = Slot {
                start: now,
                logged: 0,
                suppressed: 0,
            };
        }
        if slot.logged < self.burst {
            slot.logged += 1;
            Some(ended)
        } else {
            slot.suppressed += 1;
            None
        }
    }

    /// Kinds whose window has ended with lines suppressed, and how many; their counts start
    /// again. Kinds idle for a whole window are forgotten (the table stays small).
    pub fn flush(&self, now: Instant) -> Vec<(K, u64)> {
        let mut out = vec![];
        lock(&self.slots).retain(|k, slot| {
            if now.duration_since(slot.start) < self.window {
                return true;
            }
            if slot.suppressed == 0 {
                return false;
            }
            out.push((k.clone(), slot.suppressed));
            *slot = Slot {
                start: now,
                logged: slot.logged.min(self.burst),
                suppressed: 0,
            };
            true
        });
        out
    }
}

/// The summary line for `n` suppressed lines of kind `what`.
pub fn summary(what: &str, n: u64) -> String {
    format!(
        "{what}: suppressed {n} similar in the last {}s",
        WINDOW.as_secs()
    )
}

/// The size cap of a daemon log file: `LABNET_LOG_MAX_BYTES`, else [`DEFAULT_MAX_BYTES`].
pub fn max_bytes() -> u64 {
    std::env::var("LABNET_LOG_MAX_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1024)
        .unwrap_or(DEFAULT_MAX_BYTES)
}

/// Where log lines go: file descriptor `fd` (stderr for the daemons), and when that is a
/// regular file at `path`, the cap and the rotation to `path.1`.
pub struct Sink {
    fd: RawFd,
    /// Also pointed at each new file on rotation (stdout, so stray prints follow).
    also: Vec<RawFd>,
    path: Option<PathBuf>,
    max: u64,
}

impl Sink {
    /// A sink on `fd`; it rotates when `fd` is the regular file at `path`.
    pub fn new(fd: RawFd, also: Vec<RawFd>, path: Option<PathBuf>, max: u64) -> Sink {
        Sink {
            fd,
            also,
            path,
            max,
        }
    }

    /// Stderr, rotated when it is a regular file (found through /proc/self/fd/2).
    pub fn stderr() -> Sink {
        let path = std::fs::read_link("/proc/self/fd/2").ok().filter(|p| {
            use std::os::unix::fs::MetadataExt;
            let (Ok(by_path), Some(by_fd)) = (std::fs::metadata(p), fd_stat(2)) else {
                return false;
            };
            by_path.is_file() && by_path.ino() == by_fd.0 && by_path.dev() == by_fd.1
        });
        Sink::new(2, vec![1], path, max_bytes())
    }

    /// Writes `bytes` (whole lines) and rotates if the file is now over its cap.
    pub fn write(&mut self, bytes: &[u8]) {
        let mut f = FdWriter(self.fd);
        let _ = f.write_all(bytes);
        if self.path.is_some() && fd_size(self.fd).is_some_and(|n| n > self.max) {
            self.rotate();
        }
    }

    fn rotate(&mut self) {
        let Some(path) = &self.path else { return };
        let mut old = path.clone().into_os_string();
        old.push(".1");
        let _ = std::fs::rename(path, &old);
        use std::os::unix::fs::OpenOptionsExt;
        let Ok(file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
        else {
            return; // keep writing to the renamed file: still bounded by the next rename
        };
        use std::os::fd::AsRawFd;
        for fd in std::iter::once(self.fd).chain(self.also.iter().copied()) {
            // SAFETY: dup2 on two descriptors this process owns; `fd` is replaced atomically.
            unsafe { libc::dup2(file.as_raw_fd(), fd) };
        }
    }
}

fn fd_stat(fd: RawFd) -> Option<(u64, u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a full `stat` into the buffer when it returns 0.
    if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: initialised by the successful fstat above.
    let st = unsafe { st.assume_init() };
    Some((st.st_ino, st.st_dev, st.st_size as u64))
}

fn fd_size(fd: RawFd) -> Option<u64> {
    fd_stat(fd).map(|s| s.2)
}

/// Unbuffered writes to a borrowed descriptor.
struct FdWriter(RawFd);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: writes from a valid buffer of `buf.len()` bytes to a descriptor we hold.
        let n = unsafe { libc::write(self.0, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's sink on stderr (made on first use).
fn global() -> &'static Mutex<Sink> {
    static SINK: OnceLock<Mutex<Sink>> = OnceLock::new();
    SINK.get_or_init(|| Mutex::new(Sink::stderr()))
}

/// Writes one line (a newline is added) to the daemon's log.
pub fn line(text: &str) {
    let mut b = Vec::with_capacity(text.len() + 1);
    b.extend_from_slice(text.as_bytes());
    b.push(b'\n');
    lock(global()).write(&b);
}

/// A `tracing_subscriber` writer into the daemon's log: each event is written whole.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

/// One event's bytes, written on drop.
pub struct EventBuf(Vec<u8>);

impl Write for EventBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuf {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            lock(global()).write(&self.0);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = EventBuf;
    fn make_writer(&'a self) -> EventBuf {
        EventBuf(Vec::with_capacity(256))
    }
}

/// A layer that rate-limits events per callsite (see [`RateLimit`]); a thread writes the
/// summaries when a window ends.
pub struct RateLimitLayer {
    limit: &'static RateLimit<tracing::callsite::Identifier>,
}

/// Where each limited callsite is, for its summary line.
fn callsite_names() -> &'static Mutex<HashMap<tracing::callsite::Identifier, String>> {
    static NAMES: OnceLock<Mutex<HashMap<tracing::callsite::Identifier, String>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

impl RateLimitLayer {
    /// The layer, and the thread that writes its summaries once a window ends with lines
    /// suppressed (the next line of that kind would write it too, but a flood may just stop).
    pub fn new() -> RateLimitLayer {
        static LIMIT: OnceLock<RateLimit<tracing::callsite::Identifier>> = OnceLock::new();
        let limit = LIMIT.get_or_init(RateLimit::default);
        static FLUSHER: OnceLock<()> = OnceLock::new();
        FLUSHER.get_or_init(|| {
            let _ = std::thread::Builder::new()
                .name("log-summary".into())
                .spawn(move || loop {
                    std::thread::sleep(WINDOW / 4);
                    for (id, n) in limit.flush(Instant::now()) {
                        let what = lock(callsite_names()).get(&id).cloned().unwrap_or_default();
                        line(&summary(&what, n));
                    }
                });
        });
        RateLimitLayer { limit }
    }
}

impl Default for RateLimitLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RateLimitLayer {
    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        let id = meta.callsite();
        match self.limit.check(&id, Instant::now()) {
            Some(0) => true,
            Some(n) => {
                line(&summary(&describe(meta), n));
                true
            }
            None => {
                lock(callsite_names())
                    .entry(id)
                    .or_insert_with(|| describe(meta));
                false
            }
        }
    }
}

fn describe(meta: &tracing::Metadata<'_>) -> String {
    format!(
        "{} {} ({}:{})",
        meta.level(),
        meta.target(),
        meta.file().unwrap_or("?"),
        meta.line().unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_counted_then_summarised() {
        let rl = RateLimit::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let logged = (0..100).filter(|_| rl.check(&"a", t0).is_some()).count();
        assert_eq!(logged, 3);
        // Another kind has its own budget.
        assert_eq!(rl.check(&"b", t0), Some(0));
        // Within the window nothing is flushed; after it, the count of the suppressed.
        assert!(rl.flush(t0 + Duration::from_secs(5)).is_empty());
        let f = rl.flush(t0 + Duration::from_secs(10));
        assert_eq!(f, vec![("a", 97)]);
        // The next window starts from zero; an idle kind is forgotten.
        assert!(rl.flush(t0 + Duration::from_secs(30)).is_empty());
        assert_eq!(lock(&rl.slots).len(), 0);
        // The first line of a new window carries the previous window's count.
        for _ in 0..5 {
            rl.check(&"c", t0);
        }
        assert_eq!(rl.check(&"c", t0 + Duration::from_secs(11)), Some(2));
    }

    #[test]
    fn the_file_is_capped_and_rotated_once() {
        use std::os::fd::AsRawFd;
        let dir = testkit::temp_dir("daemonlog");
        let path = dir.path().join("dns.log");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut sink = Sink::new(f.as_raw_fd(), vec![], Some(path.clone()), 4096);
        let line = [b'x'; 99]
            .iter()
            .copied()
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        for _ in 0..1000 {
            sink.write(&line);
        }
        let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
        let rotated = dir.path().join("dns.log.1");
        assert!(size(&path) <= 4096, "{} bytes", size(&path));
        assert!(size(&rotated) <= 4096 + 100, "{} bytes", size(&rotated));
        // 100 kB written, at most two files' worth kept, and nothing else made.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 2);
        // A sink that is not on a file of its own never rotates.
        let mut plain = Sink::new(f.as_raw_fd(), vec![], None, 1024);
        plain.write(b"x\n");
    }
}
