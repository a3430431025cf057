//! The VM's tap, made by [`tuntap::tap`]: a persistent tap inside the lab's namespace, owned
//! by the invoking user, attached to the lab's bridge and up.
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
    Ok(tuntap::tap::create(lab, bridge, name, owner)?)
}

/// Deletes the tap; a missing tap or a lab that is already gone is fine.
pub fn delete(lab: &str, name: &str) -> Result<bool, Error> {
    Ok(tuntap::tap::delete(lab, name)?)
}

/// True when the link exists in the lab namespace.
pub fn exists(lab: &str, name: &str) -> Result<bool, Error> {
    Ok(tuntap::tap::exists(lab, name)?)
}
