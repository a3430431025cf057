//! Names derived from (lab, VM name): they must be the same on every start so the VM keeps
//! its DHCP address and DNS name, and they must fit the kernel's limits.

/// FNV-1a 64: a fixed, documented hash (std's DefaultHasher may change between releases,
/// and a changed MAC would lose the VM's lease).
pub fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0;
            h = h.wrapping_mul(0x100000001b3);
        }
        for b in p.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    h
}

/// A VM name doubles as the guest hostname and DNS label: 1-63 of [a-z0-9-], not starting
/// or ending with '-'.
pub fn check_name(name: &str) -> Result<(), crate::Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(crate::Error::invalid(
            "--name",
            format!(
                "{name:?} is not a valid VM name (1-63 of a-z, 0-9, '-'; it becomes the hostname)"
            ),
        ))
    }
}

/// 52:54:00:xx:xx:xx (QEMU's prefix; its first octet has the locally-administered bit set)
/// with the low 24 bits from hash(lab, name).
pub fn mac_for(lab: &str, name: &str) -> String {
    let h = fnv1a(&[lab, name]);
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        (h >> 16) as u8,
        (h >> 8) as u8,
        h as u8
    )
}

/// The tap's name inside the lab namespace: `tap-NAME` when it fits IFNAMSIZ (15 bytes),
/// else `tap-` plus 11 hex digits of the hash.
pub fn tap_for(lab: &str, name: &str) -> String {
    let t = format!("tap-{name}");
    if t.len() <= 15 {
        t
    } else {
        format!("tap-{:011x}", fnv1a(&[lab, name]) & 0xfff_ffff_ffff)
    }
}

/// SCSI serial / NAA wwn for a multipath disk: the same for both paths, stable per VM.
pub fn multipath_ids(lab: &str, name: &str) -> (String, String) {
    let h = fnv1a(&[lab, name, "multipath"]);
    (
        format!("LABNET{:08X}", h as u32),
        format!("{:#018x}", multipath_wwn(lab, name)),
    )
}

/// The WWN of [`multipath_ids`] as a number (what QMP's `device_add` takes).
pub fn multipath_wwn(lab: &str, name: &str) -> u64 {
    0x5000_c500_0000_0000 | (fnv1a(&[lab, name, "multipath"]) >> 32)
}

/// The first PREFIX<N> in lab `lab` without a VM: `vm run`'s and `vm start`'s default name.
/// Names (and so MACs and leases) are reused, so repeated anonymous runs do not use up the
/// DHCP range.
pub fn free_name(lab: &str, prefix: &str) -> String {
    (1..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| {
            // Free: nobody holds its lock (a VM being prepared holds it before it has state).
            matches!(crate::state::try_lock(lab, n), Ok(Some(_)))
        })
        .expect("an endless range of names")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_stable_and_local() {
        let m = mac_for("sepian", "vm1");
        assert_eq!(m, mac_for("sepian", "vm1"));
        assert_ne!(m, mac_for("sepian", "vm2"));
        assert_ne!(m, mac_for("other", "vm1"));
        let first = u8::from_str_radix(&m[..2], 16).unwrap();
        assert_eq!(first & 0x02, 0x02, "locally administered");
        assert_eq!(first & 0x01, 0, "unicast");
        // Pinned: a change here would move every VM to a new address.
        assert_eq!(mac_for("sepian", "vm1"), "52:54:00:".to_string() + &m[9..]);
        assert_eq!(fnv1a(&["a"]), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn tap_fits_ifnamsiz() {
        assert_eq!(tap_for("l", "vm1"), "tap-vm1");
        let long = tap_for("l", "a-very-long-vm-name");
        assert!(long.len() <= 15, "{long}");
        assert_ne!(long, tap_for("l", "a-very-long-vm-name2"));
    }

    #[test]
    fn names() {
        assert!(check_name("vm1").is_ok());
        assert!(check_name("ceph-client-0").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.starts_with("--name:"), "{e}");
        }
    }
}
