//! What every labnet crate's tests share, written once:
//!
//! - [`golden!`] / [`check_golden`] / [`check_golden_tree`]: generated text against files under
//!   `tests/golden/`; `LABNET_BLESS=1` rewrites them instead of comparing.
//! - The root gate: a test that needs root is marked
//!   `#[ignore = "needs root (CAP_NET_ADMIN, netns)"]` and starts with [`require_root`], so a plain
//!   `cargo test` reports it *ignored* (never a silent pass) and CI runs it with
//!   `-- --include-ignored`, where a non-root run fails loudly.
//! - [`wait_for`] (and [`wait_until`], which says what it saw last), [`temp_dir`], [`unique`],
//!   [`static_kmount`], and the test's end of sd_notify
//!   ([`notify_socket`], [`wait_ready`]).
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that makes the golden checkers rewrite their files.
pub const BLESS: &str = "LABNET_BLESS";

fn blessing() -> bool {
    std::env::var_os(BLESS).is_some_and(|v| v == "1")
}

/// Compares `actual` with the file at `path`, or (with `LABNET_BLESS=1`) writes it there.
/// Panics with both texts when they differ.
pub fn check_golden(path: impl AsRef<Path>, actual: &str) {
    let path = path.as_ref();
    if blessing() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(path, actual).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let want = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "golden {}: {e} (run with {BLESS}=1 to create it)",
            path.display()
        )
    });
    assert!(
        want == actual,
        "golden {} differs ({BLESS}=1 regenerates)\n--- want\n{want}\n--- got\n{actual}",
        path.display()
    );
}

/// Compares a set of generated files (relative path, text) with the tree under `dir`: the same
/// file names and the same contents. With `LABNET_BLESS=1` the tree is replaced by `files`.
pub fn check_golden_tree(dir: impl AsRef<Path>, files: &[(PathBuf, String)]) {
    let dir = dir.as_ref();
    if blessing() {
        let _ = std::fs::remove_dir_all(dir);
        for (rel, text) in files {
            check_golden(dir.join(rel), text);
        }
        return;
    }
    let mut want = vec![];
    list_files(dir, dir, &mut want);
    want.sort();
    let mut got: Vec<PathBuf> = files.iter().map(|(p, _)| p.clone()).collect();
    got.sort();
    assert_eq!(
        got,
        want,
        "generated files differ from the goldens in {} ({BLESS}=1 rewrites)",
        dir.display()
    );
    for (rel, text) in files {
        check_golden(dir.join(rel), text);
    }
}

fn list_files(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "golden dir {}: {e} (run with {BLESS}=1 to create it)",
            dir.display()
        )
    });
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            list_files(&p, base, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            out.push(rel.to_path_buf());
        }
    }
}

/// `golden!("name.txt", &text)`: [`check_golden`] against the calling crate's
/// `tests/golden/name.txt`.
#[macro_export]
macro_rules! golden {
    ($name:expr, $actual:expr) => {
        $crate::check_golden(
            ::std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden")
                .join($name),
            $actual,
        )
    };
}

/// Bytes as hex, 16 a line, so a golden diff shows where an encoding changed.
pub fn hex_lines(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect()
}

/// True when the tests run as root (they make namespaces, links, nft tables).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The first line of a root test (one marked `#[ignore = "needs root …"]`): fails, naming why,
/// when it was asked to run (`--include-ignored`) without root.
pub fn require_root() {
    assert!(
        is_root(),
        "this test needs root (CAP_NET_ADMIN, network namespaces); CI runs it as root with \
         `cargo test --workspace -- --include-ignored`"
    );
}

/// Sends `sig` (0: only check that it exists) to `pid` (negative: a process group); true when
/// delivered.
pub fn signal(pid: i32, sig: i32) -> bool {
    use nix::sys::signal::{kill, Signal};
    let sig = match sig {
        0 => None,
        n => Some(Signal::try_from(n).unwrap_or_else(|e| panic!("signal {n}: {e}"))),
    };
    kill(nix::unistd::Pid::from_raw(pid), sig).is_ok()
}

/// Runs `f` on a thread of its own inside network namespace `ns` (`/run/netns/NS`); the
/// sockets it makes stay in that namespace.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        enter_netns(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Moves the calling thread into network namespace `ns` (`/run/netns/NS`) for good: for a
/// thread that serves in it (a fake peer) rather than doing one piece of work.
pub fn enter_netns(ns: &str) {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

/// Polls `f` every 20 ms until it is true; panics naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    wait_until(what, timeout, Duration::from_millis(20), || {
        f().then_some(()).ok_or_else(String::new)
    })
}

/// Polls `f` every `every` until it returns `Ok(value)`, and returns the value; after
/// `timeout` panics naming `what` and the last `Err` (what was seen instead), so a failure
/// says what the system looked like rather than only that time ran out.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f() {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}{}{last}",
            if last.is_empty() { "" } else { "; last seen: " }
        );
        std::thread::sleep(every);
    }
}

/// A private temporary directory, removed when dropped; its name says which test made it.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("labnet-test-{tag}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("temp dir for {tag}: {e}"))
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short unique name: PREFIX + pid (base 36) + a per-process counter; ≤ 15 bytes (an
/// interface name) with a 2-letter prefix and a 2-letter suffix.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}{}{}", base36(std::process::id()), base36(n))
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = String::new();
    loop {
        s.insert(0, char::from(DIGITS[(n % 36) as usize]));
        n /= 36;
        if n == 0 {
            return s;
        }
    }
}

/// The workspace root (testkit sits directly below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit is inside the workspace")
        .to_path_buf()
}

/// The static `kmount` busybox guests run (no libc in the generated initramfs), built with the
/// command documented in mountgen's crate docs. Cargo's own lock on the target dir makes
/// parallel callers wait for one build; afterwards it is a no-op.
pub fn static_kmount() -> PathBuf {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(&root)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--release",
            "-p",
            "mountgen",
            "--bin",
            "kmount",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        out.status.success(),
        "static kmount build failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("x86_64-unknown-linux-gnu/release/kmount");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// The test's end of sd_notify: a datagram socket at `path` to hand a daemon as NOTIFY_SOCKET.
pub fn notify_socket(path: &Path) -> UnixDatagram {
    let _ = std::fs::remove_file(path);
    let sock = UnixDatagram::bind(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sock
}

/// Waits until the daemon says READY=1 on `sock` (Ok), or exits first (Err with its status).
/// Panics after `timeout`, showing the daemon's `log`.
pub fn wait_ready(
    child: &mut Child,
    sock: &UnixDatagram,
    timeout: Duration,
    log: &Path,
) -> Result<(), ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                return Ok(());
            }
        }
        if let Some(st) = child.try_wait().expect("waitpid on the daemon") {
            return Err(st);
        }
        assert!(
            Instant::now() < deadline,
            "no READY=1 within {timeout:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn wait_until_returns_the_value_and_names_what_it_saw() {
        let mut n = 0;
        let got = super::wait_until(
            "n to reach 3",
            Duration::from_secs(5),
            Duration::ZERO,
            || {
                n += 1;
                if n >= 3 {
                    Ok(n * 10)
                } else {
                    Err(format!("n = {n}"))
                }
            },
        );
        assert_eq!(got, 30);
        let e = std::panic::catch_unwind(|| {
            super::wait_until::<()>("never", Duration::ZERO, Duration::ZERO, || {
                Err("still 7".into())
            })
        })
        .unwrap_err();
        let msg = e.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("waiting for never; last seen: still 7"),
            "{msg}"
        );
    }

    use super::*;

    #[test]
    fn golden_checker_catches_a_difference_and_blesses() {
        let d = temp_dir("golden");
        let p = d.path().join("a.txt");
        std::fs::write(&p, "one\n").unwrap();
        check_golden(&p, "one\n");
        let differs = std::panic::catch_unwind(|| check_golden(&p, "two\n"));
        assert!(differs.is_err());
        let missing = std::panic::catch_unwind(|| check_golden(d.path().join("none"), "x"));
        assert!(missing.is_err());
    }

    #[test]
    fn golden_tree_catches_an_extra_file() {
        let d = temp_dir("tree");
        std::fs::create_dir_all(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/x"), "x").unwrap();
        check_golden_tree(d.path(), &[("sub/x".into(), "x".into())]);
        std::fs::write(d.path().join("y"), "y").unwrap();
        let extra = std::panic::catch_unwind(|| {
            check_golden_tree(d.path(), &[("sub/x".into(), "x".into())])
        });
        assert!(extra.is_err());
    }

    #[test]
    fn names_are_unique_and_short() {
        let (a, b) = (unique("la"), unique("la"));
        assert_ne!(a, b);
        assert!(a.len() + 2 <= 15, "{a}");
        assert_eq!(hex_lines(&[0, 1, 255]), "00 01 ff\n");
    }

    #[test]
    fn wait_for_times_out_naming_what() {
        let r = std::panic::catch_unwind(|| wait_for("never", Duration::from_millis(30), || false));
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("never"), "{msg}");
        let mut n = 0;
        wait_for("third poll", Duration::from_secs(5), || {
            n += 1;
            n == 3
        });
    }
}
