//! Persistent TUN/TAP devices, made with TUNSETIFF + TUNSETPERSIST (rtnetlink cannot create
//! them: EOPNOTSUPP). A device is born in the namespace of the thread that opens
//! /dev/net/tun, so callers run this inside [`crate::nsfs::in_netns`] when it matters.
//!
//! Persistent means the device outlives the file descriptor: a process that attaches to it
//! (QEMU, wireguard-go) can exit without the kernel unregistering the device on its exit
//! path; the device goes when it is deleted over netlink or with its namespace.
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

/// Creates (or re-opens) the persistent device `name` in the calling thread's namespace,
/// owned by `owner` (a uid) when given.
pub fn create_persistent(name: &str, kind: Kind, owner: Option<u32>) -> Result<(), Error> {
    if name.is_empty() || name.len() > 15 {
        return Err(Error::BadName { name: name.into() });
    }
    let sys = |what: &str, source: nix::errno::Errno| Error::Sys {
        what: format!("{what} {name}"),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("/dev/net/tun", e))?;
    // SAFETY: ifreq is plain old data (arrays, integers and a union of such); all-zero is a
    // valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_NO_PI
        | match kind {
            Kind::Tun => libc::IFF_TUN,
            Kind::Tap => libc::IFF_TAP,
        }) as libc::c_short;
    let fd = f.as_raw_fd();
    // SAFETY: `req` is an initialised ifreq that outlives the call; `fd` is open (`f`).
    unsafe { tun_set_iff(fd, &req) }.map_err(|e| sys("TUNSETIFF", e))?;
    if let Some(uid) = owner {
        // SAFETY: an integer argument on an open fd.
        unsafe { tun_set_owner(fd, uid as _) }.map_err(|e| sys("TUNSETOWNER", e))?;
    }
    // SAFETY: an integer argument on an open fd.
    unsafe { tun_set_persist(fd, 1) }.map_err(|e| sys("TUNSETPERSIST", e))?;
    Ok(())
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
