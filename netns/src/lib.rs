//! The lab core of labnet (the config, paths and state record are in the `model` crate):
//! `up` is a pure [`plan`] of steps, each with its undo, made from what [`system::observe`]
//! reads, run by [`exec`] over the [`exec::Net`] trait ([`system::SystemNet`] for real);
//! [`lab`] orchestrates. The peering link of labs joined across hosts is part of that plan
//! (`labnet peer add/remove` run its difference, [`peering`]); [`status`] is the plan's
//! comparison with the system ([`compare`]) plus the probes a plan cannot express. Every
//! step's undo is recorded in /run/labnet/LAB.json *before* the step is made, so `down` can
//! undo a lab after a crash, a SIGKILL half-way through `up`, or a reboot.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
pub mod compare;
pub mod daemon;
pub mod doctor;
pub mod etc_netns;
pub mod exec;
pub mod lab;
pub mod lab_daemons;
pub mod nft;
pub mod nl;
pub mod nsfs;
pub mod peering;
pub mod plan;
pub mod probe;
pub mod status;
pub mod system;
pub mod wg;
pub mod wg_life;

// The model moved to its own crate; these paths keep working.
pub use model::{config, paths, state};
pub use model::{Ipv4Cidr, Lab, Uplink};
/// The TUN/TAP ioctls moved to the `tuntap` crate (the VM launcher uses it without netns).
pub use tuntap::tun;

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
    #[error(transparent)]
    Tun(#[from] tuntap::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("lab {lab} is up but not as configured, and this cannot be repaired in place: {what}; `labnet down {lab}` then `labnet up {lab}` rebuilds it")]
    Drift { lab: String, what: String },
    #[error("repairing the lab: {step}: {source}")]
    Repair { step: String, source: Box<Error> },
    #[error("{step}: {source}")]
    Step { step: String, source: Box<Error> },
    #[error("could not remove everything: {errors}")]
    Undo { errors: String },
    #[error("{error}; and undoing the partial lab failed too: {undo}")]
    UndoAfterFailure { error: Box<Error>, undo: Box<Error> },
    #[error("lab {lab} is up, but {sections} changed in {source_file} since; `labnet down {lab}` then `labnet up` applies it")]
    ConfigChanged {
        lab: String,
        sections: String,
        source_file: String,
    },
    #[error("network namespace {lab} exists but labnet did not create it (no {}); remove it or pick another lab name", state_file.display())]
    NotOurs {
        lab: String,
        state_file: std::path::PathBuf,
    },
    /// Something on the system is in the way of `up` (a name taken); nothing was made.
    #[error("{what}")]
    Conflict { what: String },
    /// The kernel or a tool lacks what the step needs.
    #[error("{what}")]
    Unsupported { what: String },
    /// A process labnet expected to be running is not.
    #[error("{what} is not running")]
    NotRunning { what: String },
    /// A host tool labnet runs is not installed.
    #[error("cannot run {tool} (Debian package {package}): {source}")]
    ToolMissing {
        tool: String,
        package: String,
        source: std::io::Error,
    },
    #[error("nft: {what}: {detail}")]
    Nft { what: String, detail: String },
    /// A process labnet did not start holds something labnet would remove.
    #[error("a process labnet did not start: {what}")]
    ForeignProcess { what: String },
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("a daemon command is empty")]
    EmptyCommand,
    /// A daemon labnet started died or never said READY (its log says why).
    #[error("{name} {what}; see {}", log.display())]
    DaemonFailed {
        name: String,
        what: String,
        log: std::path::PathBuf,
    },
    #[error("link {name} does not exist")]
    NoSuchLink { name: String },
    #[error("{what} panicked")]
    WorkerPanicked { what: String },
    #[error("{what}: {detail}")]
    Probe { what: String, detail: String },
    #[error("{field}: {source}")]
    Key {
        field: String,
        source: model::config::KeyError,
    },
    #[error("{what}: not a WireGuard key")]
    BadKey { what: String },
    #[error("interface name {name:?}: {expected}")]
    BadName { name: String, expected: String },
    #[error("{what} WireGuard interface {iface}: {detail}")]
    Wireguard {
        what: String,
        iface: String,
        detail: String,
    },
    #[error("{what}")]
    Timeout { what: String },
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
