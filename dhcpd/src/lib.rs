//! dhcpd: labnet's DHCPv4 server for one lab bridge.
//!
//! - the lease record and its log format are `model::lease` (readers use that, not this crate).
//! - [`core`]: the protocol engine (RFC 2131 states, address choice, replies), pure.
//! - [`store`]: the lease log: one write + fdatasync per batch of requests, compaction.
//! - [`server`]: the socket on the bridge, reservations dir and hosts file watchers.
//! - [`daemon`]: setns, sd_notify, SIGTERM/SIGINT.
//! - [`run`]: all of it, as `labnet dhcpd LAB` runs it.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod config;
pub mod core;
pub mod daemon;
pub mod names;
pub mod server;
pub mod store;

pub use config::{Reservation, ServerConfig};
pub use model::lease::{Lease, LeaseState};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The lease log is something else (refused, never overwritten).
    #[error("{0}; move it away to start with no leases")]
    NotALeaseLog(model::lease::LeaseError),
    #[error("the lease log's compaction thread panicked")]
    CompactionPanicked,
}

/// Logs a line to stderr (the daemon's log file, capped and rotated, or the journal),
/// prefixed `dhcpd:` and, unless the journal (which stamps lines itself) is the reader, the
/// UTC time. Lines a client can cause per packet go through a rate limit first.
#[macro_export]
#[doc(hidden)]
macro_rules! log {
    ($($t:tt)*) => { $crate::log_line(format_args!($($t)*)) };
}

#[doc(hidden)]
pub fn log_line(args: std::fmt::Arguments<'_>) {
    daemonlog::line(&format!("{}dhcpd: {args}", log_stamp()));
}

/// `2026-12-01T19:55:00Z ` for a log line, or "" when stderr goes to the journal
/// (systemd sets $JOURNAL_STREAM), which keeps its own timestamps.
pub fn log_stamp() -> String {
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        return String::new();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{} ", utc_text(now).replace(' ', "T") + "Z")
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` UTC (civil-from-days, no date crate needed).
pub fn utc_text(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Runs the server on the current tokio runtime: bind, READY=1 to $NOTIFY_SOCKET, serve
/// until SIGTERM/SIGINT, leave every lease on disk.
pub async fn run(cfg: ServerConfig) -> Result<(), Error> {
    let server = server::Server::bind(cfg)?;
    daemon::sd_notify("READY=1")?;
    server
        .run(async {
            daemon::shutdown_signal().await;
            let _ = daemon::sd_notify("STOPPING=1");
        })
        .await
}
