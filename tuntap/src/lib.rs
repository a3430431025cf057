//! TUN/TAP devices for labnet, a crate of its own so the VM launcher needs neither the lab
//! core nor its netlink/nftables/WireGuard stack: [`tun`] makes persistent devices with the
//! tun ioctls (wireguard-go's TUN, a VM's TAP); [`tap`] makes a VM's tap inside the lab's
//! namespace, owned by the invoking user, attached to the lab's bridge and up (ioctls only);
//! with feature `netlink` (the lab core's), `netlink` runs rtnetlink work inside a namespace.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
#[cfg(feature = "netlink")]
pub mod netlink;
pub mod tap;
pub mod tun;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("interface name {name:?}: expected 1-15 bytes")]
    BadName { name: String },
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
    #[cfg(feature = "netlink")]
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: rtnetlink::Error,
    },
    #[error("link {name} does not exist in netns {lab}")]
    NoSuchLink { lab: String, name: String },
    #[error(transparent)]
    Model(#[from] model::Error),
    #[error("the thread working in netns {lab} panicked")]
    WorkerPanicked { lab: String },
}

impl Error {
    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
