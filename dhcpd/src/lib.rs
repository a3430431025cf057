//! dhcpd: labnet's DHCPv4 server for one lab bridge.
//!
//! - [`leases`]: the durable lease log format and the reading API (`labnet leases`, vm, dns).
//! - [`core`]: the protocol engine (RFC 2131 states, address choice, replies), pure.
//! - [`store`]: the lease log: one write + fdatasync per batch of requests, compaction.
//! - [`server`]: the socket on the bridge, reservations dir and hosts file watchers.
//! - [`daemon`]: setns, sd_notify, SIGTERM/SIGINT.
//! - [`run`]: all of it, as `labnet dhcpd LAB` runs it.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod config;
pub mod core;
pub mod daemon;
pub mod leases;
pub mod server;
pub mod store;

pub use config::{Reservation, ServerConfig};
pub use leases::{Lease, LeaseState};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// Logs a line to stderr (the daemon's log file / journal), prefixed `dhcpd:`.
#[macro_export]
#[doc(hidden)]
macro_rules! log {
    ($($t:tt)*) => { eprintln!("dhcpd: {}", format_args!($($t)*)) };
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
