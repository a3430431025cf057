//! The lab core of labnet (the config, paths and state record are in the `model` crate): the
//! plan that builds a lab over netlink ([`lab`]): every step is recorded in
//! /run/labnet/LAB.json *before* it is made, so `down` can undo a lab after a crash, a
//! SIGKILL half-way through `up`, or a reboot.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod converge;
pub mod daemon;
pub mod doctor;
pub mod lab;
pub mod nft;
pub mod nl;
pub mod nsfs;
pub mod peering;
pub mod probe;
pub mod status;
pub mod tun;
pub mod wg;

// The model moved to its own crate; these paths keep working.
pub use model::{config, paths, state};
pub use model::{Ipv4Cidr, Lab, Uplink};

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Model(#[from] model::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("lab {lab} is up but not as configured, and this cannot be repaired in place: {what}; `labnet down {lab}` then `labnet up {lab}` rebuilds it")]
    Drift { lab: String, what: String },
    #[error("repairing the lab: {step}: {source}")]
    Repair { step: String, source: Box<Error> },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
    pub fn sys(what: &str, source: nix::errno::Errno) -> Error {
        Error::Sys {
            what: what.to_string(),
            source,
        }
    }
}
