//! What labnet's crates and processes agree on, written once and read by the same code:
//!
//! - [`config`]: the lab TOML and its validation (with the wg-quick parser); [`cidr`]: IPv4
//!   subnets; [`wg_key`]: WireGuard private key files;
//! - [`paths`]: where each lab's runtime and durable state lives, and atomic writes;
//! - [`state`]: the typed record of what `up` made (`/run/labnet/LAB.json`) and the lab lock;
//! - [`reservation`]: run-time DHCP reservations (`labnet vm` writes, dhcpd reads);
//! - [`hosts`]: the hosts file (dhcpd writes, dns reads);
//! - [`lease`]: the lease record and log (dhcpd writes, `labnet leases` and `vm` read);
//! - [`invitation`]: peer invitations (`labnet peer invite` writes, `peer add` reads) and
//!   the `[[peers]]` edits of a lab's config file;
//! - [`netns`]: entering a lab's network namespace;
//! - [`notify`]: sd_notify (the daemons send READY=1, `labnet up` and systemd wait for it).
//!
//! It depends on no netlink, WireGuard or nftables crate, so the daemons and the unit
//! generator can read a lab without them.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod cidr;
pub mod config;
pub mod hosts;
pub mod invitation;
pub mod lease;
pub mod netns;
pub mod notify;
pub mod paths;
pub mod reservation;
pub mod state;
pub mod wg_key;

pub use config::{ConfigError, Ipv4Cidr, Lab, Peer, Peering, Uplink};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt state: {source}")]
    CorruptState {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Setns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another `labnet up` or `down` of lab {lab} holds {path}; try again when it has finished"
    )]
    LockBusy { lab: String, path: PathBuf },
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}
