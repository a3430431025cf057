//! The VM's tap: a persistent tap ([`netns::tun`]) made on a thread inside the lab namespace
//! (a tap is born in the opener's namespace), owned by the invoking user, then attached to
//! the bridge and set up over netlink.
use netns::nl;

use crate::Error;

/// The user to own the tap: $SUDO_UID when run through sudo, else the caller.
pub fn invoking_uid() -> u32 {
    std::env::var("SUDO_UID")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| nix::unistd::getuid().as_raw())
}

/// Creates (or re-opens) the persistent tap `name` in namespace `lab`, owned by `owner`,
/// attached to `bridge` and up.
pub fn create(lab: &str, bridge: &str, name: &str, owner: u32) -> Result<(), Error> {
    if name.is_empty() || name.len() > 15 {
        return Err(Error::invalid("tap", format!("{name:?}: 1-15 bytes")));
    }
    let tap = name.to_string();
    netns::nsfs::in_netns(Some(lab), move || {
        netns::tun::create_persistent(&tap, netns::tun::Kind::Tap, Some(owner))
    })?;
    let (tap, br) = (name.to_string(), bridge.to_string());
    let res = nl::with_netlink(Some(lab), move |h| async move {
        let idx = nl::index_of(&h, &tap).await?;
        let br_idx = nl::index_of(&h, &br)
            .await
            .map_err(|_| netns::Error::NoSuchLink {
                name: format!("{br} (the lab's bridge)"),
            })?;
        h.link()
            .set(
                rtnetlink::LinkUnspec::new_with_index(idx)
                    .controller(br_idx)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(nl::nl(format!("attach {tap} to {br}")))
    });
    if let Err(e) = res {
        let _ = delete(lab, name);
        return Err(e.into());
    }
    Ok(())
}

/// Deletes the tap; a missing tap or a lab that is already gone is fine.
pub fn delete(lab: &str, name: &str) -> Result<bool, Error> {
    if !model::paths::netns_path(lab).exists() {
        return Ok(false);
    }
    let tap = name.to_string();
    Ok(nl::with_netlink(Some(lab), move |h| async move {
        nl::del_link(&h, &tap).await
    })?)
}

/// True when the link exists in the lab namespace.
pub fn exists(lab: &str, name: &str) -> Result<bool, Error> {
    if !model::paths::netns_path(lab).exists() {
        return Ok(false);
    }
    let tap = name.to_string();
    Ok(nl::with_netlink(Some(lab), move |h| async move {
        Ok(nl::link_by_name(&h, &tap).await?.is_some())
    })?)
}
