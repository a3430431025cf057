//! A VM's tap: a persistent tap ([`crate::tun`]) made on a thread inside the lab's namespace
//! (a tap is born in the opener's namespace), owned by the invoking user, then attached to
//! the lab's bridge (SIOCBRADDIF) and set up (SIOCSIFFLAGS) on that same thread. Plain
//! ioctls, no netlink: the VM launcher needs no rtnetlink.
use std::os::fd::{AsRawFd, OwnedFd};

use crate::tun::{create_persistent, delete_persistent, ifreq, sys, Kind};
use crate::Error;

// <linux/sockios.h>: bridge port add, interface flags get/set; each takes a struct ifreq
// (socket ioctls are plain numbers, not _IOW-encoded; libc names SIOCBRADDIF only for
// Android, so it is spelled out here).
const SIOCBRADDIF: libc::c_ulong = 0x89a2;
nix::ioctl_write_ptr_bad!(siocbraddif, SIOCBRADDIF, libc::ifreq);
nix::ioctl_read_bad!(siocgifflags, libc::SIOCGIFFLAGS, libc::ifreq);
nix::ioctl_write_ptr_bad!(siocsifflags, libc::SIOCSIFFLAGS, libc::ifreq);

/// Runs `f` on a fresh thread moved into lab `lab`'s namespace (/run/netns/LAB).
fn in_lab<T: Send + 'static>(
    lab: &str,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let name = lab.to_string();
    std::thread::spawn(move || {
        model::netns::enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| Error::WorkerPanicked { lab: lab.into() })?
}

/// The ifindex of link `name` in the calling thread's namespace; None when there is none.
fn index(name: &str) -> Result<Option<u32>, Error> {
    match nix::net::if_::if_nametoindex(name) {
        Ok(i) => Ok(Some(i)),
        Err(nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(sys("look up link", name)(e)),
    }
}

fn inet_socket() -> Result<OwnedFd, Error> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys("socket", "for interface ioctls"))
}

/// Makes `tap` a port of `bridge` and sets it up, in the calling thread's namespace.
fn attach_and_up(lab: &str, bridge: &str, tap: &str) -> Result<(), Error> {
    let no = |name: &str| Error::NoSuchLink {
        lab: lab.into(),
        name: name.into(),
    };
    let idx = index(tap)?.ok_or_else(|| no(tap))?;
    if index(bridge)?.is_none() {
        return Err(no(bridge));
    }
    let sock = inet_socket()?;
    let mut port = ifreq(bridge)?;
    port.ifr_ifru.ifru_ifindex = idx as libc::c_int;
    // SAFETY: `port` is an initialised ifreq (the bridge's name, the port's index) that
    // outlives the call; `sock` is open.
    unsafe { siocbraddif(sock.as_raw_fd(), &port) }
        .map_err(sys(&format!("attach {tap} to"), bridge))?;
    let mut flags = ifreq(tap)?;
    // SAFETY: `flags` is an initialised ifreq that outlives the call; the kernel fills
    // its flags field.
    unsafe { siocgifflags(sock.as_raw_fd(), &mut flags) }.map_err(sys("SIOCGIFFLAGS", tap))?;
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds the flags.
    let up = unsafe { flags.ifr_ifru.ifru_flags } | libc::IFF_UP as libc::c_short;
    flags.ifr_ifru.ifru_flags = up;
    // SAFETY: `flags` is an initialised ifreq that outlives the call.
    unsafe { siocsifflags(sock.as_raw_fd(), &flags) }.map_err(sys("set up", tap))?;
    Ok(())
}

/// Creates (or re-opens) the persistent tap `name` in lab `lab`'s namespace, owned by uid
/// `owner`, attached to `bridge` and up. A tap that cannot be attached is deleted again.
pub fn create(lab: &str, bridge: &str, name: &str, owner: u32) -> Result<(), Error> {
    let (l, tap, br) = (lab.to_string(), name.to_string(), bridge.to_string());
    let res = in_lab(lab, move || {
        create_persistent(&tap, Kind::Tap, Some(owner))?;
        attach_and_up(&l, &br, &tap)
    });
    if res.is_err() {
        let _ = delete(lab, name);
    }
    res
}

/// Deletes the tap; a missing tap or a lab that is already gone is fine (`Ok(false)`).
pub fn delete(lab: &str, name: &str) -> Result<bool, Error> {
    if !model::paths::netns_path(lab).exists() {
        return Ok(false);
    }
    let tap = name.to_string();
    in_lab(lab, move || delete_persistent(&tap, Kind::Tap))
}

/// True when the link exists in the lab's namespace (false when the lab is gone).
pub fn exists(lab: &str, name: &str) -> Result<bool, Error> {
    if !model::paths::netns_path(lab).exists() {
        return Ok(false);
    }
    let tap = name.to_string();
    in_lab(lab, move || Ok(index(&tap)?.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ip(args: &[&str]) -> String {
        let out = Command::new("ip").args(args).output().expect("ip runs");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A throwaway namespace (`ip netns add`, like `labnet up` binds it) with a bridge: the
    /// tap is made in it, owned by the uid given, a port of the bridge and up; deleted, it is
    /// gone; a missing bridge is an error naming it and leaves no tap.
    #[test]
    #[ignore = "needs root (CAP_NET_ADMIN, netns)"]
    fn tap_in_a_lab_namespace_on_its_bridge() {
        testkit::require_root();
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ns = Gone(testkit::unique("latap"));
        ip(&["netns", "add", &ns.0]);
        ip(&["-n", &ns.0, "link", "add", "labr0", "type", "bridge"]);
        create(&ns.0, "labr0", "latap1", 4242).unwrap();
        assert!(exists(&ns.0, "latap1").unwrap());
        let shown = ip(&["-n", &ns.0, "-d", "-o", "link", "show", "latap1"]);
        assert!(
            shown.contains("master labr0")
                && shown.contains("user 4242")
                && shown.contains("persist on"),
            "{shown}"
        );
        assert!(shown.contains(",UP"), "{shown}");
        assert!(delete(&ns.0, "latap1").unwrap());
        assert!(!exists(&ns.0, "latap1").unwrap());
        assert!(!delete(&ns.0, "latap1").unwrap(), "already gone is fine");
        let err = create(&ns.0, "nobridge", "latap2", 0).unwrap_err();
        assert!(err.to_string().contains("nobridge"), "{err}");
        assert!(
            !exists(&ns.0, "latap2").unwrap(),
            "a tap that cannot be attached goes"
        );
        assert!(!exists("la-no-such-lab", "latap1").unwrap());
    }
}
