//! Persistent TUN/TAP devices, made with TUNSETIFF + TUNSETPERSIST (rtnetlink cannot create
//! them: EOPNOTSUPP). A device is born in the namespace of the thread that opens
//! /dev/net/tun, so callers run this inside [`crate::nsfs::in_netns`] when it matters.
//!
//! Persistent means the device outlives the file descriptor: a process that attaches to it
//! (QEMU, wireguard-go) can exit without the kernel unregistering the device on its exit
//! path; the device goes when it is made non-persistent again ([`delete_persistent`]), is
//! deleted over netlink, or goes with its namespace.
use std::os::fd::AsRawFd;

use crate::Error;

// <linux/if_tun.h>: TUNSETIFF, TUNSETPERSIST and TUNSETOWNER are _IOW('T', 202..204, int);
// TUNSETIFF really takes a struct ifreq pointer ("bad" in nix's terms).
nix::ioctl_write_ptr_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    libc::ifreq
);
nix::ioctl_write_int!(tun_set_persist, b'T', 203);
nix::ioctl_write_int!(tun_set_owner, b'T', 204);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Layer 3 (what WireGuard uses).
    Tun,
    /// Layer 2 (what a VM's NIC uses).
    Tap,
}

/// A zeroed `struct ifreq` naming interface `name` (1-15 bytes).
pub(crate) fn ifreq(name: &str) -> Result<libc::ifreq, Error> {
    if name.is_empty() || name.len() > 15 {
        return Err(Error::BadName { name: name.into() });
    }
    // SAFETY: ifreq is plain old data (arrays, integers and a union of such); all-zero is a
    // valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

pub(crate) fn sys(what: &str, name: &str) -> impl FnOnce(nix::errno::Errno) -> Error {
    let what = format!("{what} {name}");
    move |source| Error::Sys { what, source }
}

/// Opens /dev/net/tun attached to device `name` (made if it does not exist).
fn attach(name: &str, kind: Kind) -> Result<std::fs::File, Error> {
    let mut req = ifreq(name)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("/dev/net/tun", e))?;
    req.ifr_ifru.ifru_flags = (libc::IFF_NO_PI
        | match kind {
            Kind::Tun => libc::IFF_TUN,
            Kind::Tap => libc::IFF_TAP,
        }) as libc::c_short;
    // SAFETY: `req` is an initialised ifreq that outlives the call; the fd is open (`f`).
    unsafe { tun_set_iff(f.as_raw_fd(), &req) }.map_err(sys("TUNSETIFF", name))?;
    Ok(f)
}

/// Creates (or re-opens) the persistent device `name` in the calling thread's namespace,
/// owned by `owner` (a uid) when given.
pub fn create_persistent(name: &str, kind: Kind, owner: Option<u32>) -> Result<(), Error> {
    let f = attach(name, kind)?;
    let fd = f.as_raw_fd();
    if let Some(uid) = owner {
        // SAFETY: an integer argument on an open fd.
        unsafe { tun_set_owner(fd, uid as _) }.map_err(sys("TUNSETOWNER", name))?;
    }
    // SAFETY: an integer argument on an open fd.
    unsafe { tun_set_persist(fd, 1) }.map_err(sys("TUNSETPERSIST", name))?;
    Ok(())
}

/// Deletes the persistent device `name` in the calling thread's namespace: attached, it is
/// made non-persistent, and goes when the fd closes. `Ok(false)` when there is no such link.
/// Fails (EBUSY) while a process (QEMU) still has it open.
pub fn delete_persistent(name: &str, kind: Kind) -> Result<bool, Error> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(_) => {}
        Err(nix::errno::Errno::ENODEV) => return Ok(false),
        Err(e) => return Err(sys("look up", name)(e)),
    }
    let f = attach(name, kind)?;
    // SAFETY: an integer argument on an open fd.
    unsafe { tun_set_persist(f.as_raw_fd(), 0) }.map_err(sys("TUNSETPERSIST 0", name))?;
    drop(f);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kinds, in a namespace of the test thread's own (gone with the thread), as
    /// `ip -d link` reports them.
    #[test]
    #[ignore = "needs root (CAP_NET_ADMIN, netns)"]
    fn makes_persistent_tap_and_tun_devices() {
        testkit::require_root();
        let shown = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            create_persistent("latap0", Kind::Tap, Some(4242)).unwrap();
            create_persistent("latun0", Kind::Tun, None).unwrap();
            // Again: a persistent device is re-opened, not an error.
            create_persistent("latun0", Kind::Tun, None).unwrap();
            let tid = nix::unistd::gettid();
            let out = std::process::Command::new("nsenter")
                .arg(format!(
                    "--net=/proc/{}/task/{tid}/ns/net",
                    std::process::id()
                ))
                .args(["ip", "-d", "-o", "link", "show"])
                .output()
                .unwrap();
            // Deleted: gone at once; again, or never made, is Ok(false).
            assert!(delete_persistent("latun0", Kind::Tun).unwrap());
            assert_eq!(
                nix::net::if_::if_nametoindex("latun0"),
                Err(nix::errno::Errno::ENODEV)
            );
            assert!(!delete_persistent("latun0", Kind::Tun).unwrap());
            // Held open by a process (QEMU would be): busy, and still there.
            let held = attach("latap0", Kind::Tap).unwrap();
            assert!(delete_persistent("latap0", Kind::Tap).is_err());
            drop(held);
            assert!(delete_persistent("latap0", Kind::Tap).unwrap());
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .join()
        .unwrap();
        let line = |n: &str| {
            shown
                .lines()
                .find(|l| l.contains(&format!(": {n}:")))
                .unwrap_or_else(|| panic!("{n} missing:\n{shown}"))
                .to_string()
        };
        let tap = line("latap0");
        assert!(
            tap.contains("tun type tap") && tap.contains("persist on") && tap.contains("user 4242"),
            "{tap}"
        );
        let tun = line("latun0");
        assert!(
            tun.contains("tun type tun") && tun.contains("pi off") && tun.contains("persist on"),
            "{tun}"
        );
        assert!(create_persistent("", Kind::Tun, None).is_err());
    }
}
