//! A VM's tap: a persistent tap ([`crate::tun`]) made on a thread inside the lab's namespace
//! (a tap is born in the opener's namespace), owned by the invoking user, then attached to
//! the lab's bridge and set up over rtnetlink, on that same thread.
use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::{Handle, LinkUnspec};

use crate::netlink::in_netns;
use crate::tun::{create_persistent, Kind};
use crate::Error;

fn netlink(what: String) -> impl FnOnce(rtnetlink::Error) -> Error {
    move |source| Error::Netlink { what, source }
}

fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -errno)
}

async fn link(h: &Handle, name: &str) -> Result<Option<LinkMessage>, Error> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(m) => Ok(m),
        Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
        Err(e) => Err(netlink(format!("look up link {name}"))(e)),
    }
}

/// Creates (or re-opens) the persistent tap `name` in lab `lab`'s namespace, owned by uid
/// `owner`, attached to `bridge` and up. A tap that cannot be attached is deleted again.
pub fn create(lab: &str, bridge: &str, name: &str, owner: u32) -> Result<(), Error> {
    let (l, tap, br) = (lab.to_string(), name.to_string(), bridge.to_string());
    let res = in_netns(lab, move |h| async move {
        create_persistent(&tap, Kind::Tap, Some(owner))?;
        let no = |name: &str| Error::NoSuchLink {
            lab: l.clone(),
            name: name.into(),
        };
        let idx = link(&h, &tap).await?.ok_or_else(|| no(&tap))?.header.index;
        let br_idx = link(&h, &br).await?.ok_or_else(|| no(&br))?.header.index;
        h.link()
            .set(
                LinkUnspec::new_with_index(idx)
                    .controller(br_idx)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink(format!("attach {tap} to {br}")))
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
    in_netns(lab, move |h| async move {
        let Some(m) = link(&h, &tap).await? else {
            return Ok(false);
        };
        match h.link().del(m.header.index).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(false),
            Err(e) => Err(netlink(format!("delete link {tap}"))(e)),
        }
    })
}

/// True when the link exists in the lab's namespace (false when the lab is gone).
pub fn exists(lab: &str, name: &str) -> Result<bool, Error> {
    if !model::paths::netns_path(lab).exists() {
        return Ok(false);
    }
    let tap = name.to_string();
    in_netns(
        lab,
        move |h| async move { Ok(link(&h, &tap).await?.is_some()) },
    )
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
