//! Persistent TUN/TAP devices, made with TUNSETIFF + TUNSETPERSIST (rtnetlink cannot create
//! them: EOPNOTSUPP). A device is born in the namespace of the thread that opens
//! /dev/net/tun, so callers run this inside [`crate::nsfs::in_netns`] when it matters.
//!
//! Persistent means the device outlives the file descriptor: a process that attaches to it
//! (QEMU, wireguard-go) can exit without the kernel unregistering the device on its exit
//! path; the device goes when it is deleted over netlink or with its namespace.
use std::os::fd::AsRawFd;

use crate::Error;

const TUNSETIFF: libc::c_ulong = 0x400454ca;
const TUNSETPERSIST: libc::c_ulong = 0x400454cb;
const TUNSETOWNER: libc::c_ulong = 0x400454cc;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Layer 3 (what WireGuard uses).
    Tun,
    /// Layer 2 (what a VM's NIC uses).
    Tap,
}

#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates (or re-opens) the persistent device `name` in the calling thread's namespace,
/// owned by `owner` (a uid) when given.
pub fn create_persistent(name: &str, kind: Kind, owner: Option<u32>) -> Result<(), Error> {
    if name.is_empty() || name.len() > 15 {
        return Err(Error::Other(format!(
            "interface name {name:?}: expected 1-15 bytes"
        )));
    }
    let sys = |what: &str| Error::sys(&format!("{what} {name}"), nix::errno::Errno::last());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("/dev/net/tun", e))?;
    let mut req = IfReq {
        name: [0; 16],
        flags: IFF_NO_PI
            | match kind {
                Kind::Tun => IFF_TUN,
                Kind::Tap => IFF_TAP,
            },
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    let fd = f.as_raw_fd();
    // SAFETY: `req` has the layout of struct ifreq's name + flags (40 bytes) and outlives
    // the call; `fd` is open.
    if unsafe { libc::ioctl(fd, TUNSETIFF as _, &req) } < 0 {
        return Err(sys("TUNSETIFF"));
    }
    if let Some(uid) = owner {
        // SAFETY: plain integer argument.
        if unsafe { libc::ioctl(fd, TUNSETOWNER as _, uid as libc::c_ulong) } < 0 {
            return Err(sys("TUNSETOWNER"));
        }
    }
    // SAFETY: plain integer argument.
    if unsafe { libc::ioctl(fd, TUNSETPERSIST as _, 1 as libc::c_ulong) } < 0 {
        return Err(sys("TUNSETPERSIST"));
    }
    Ok(())
}
