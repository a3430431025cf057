//! ssh into the lab's VMs: the lab's own key (generated once, 0600, under
//! /var/lib/labnet/LAB/ssh/), a labnet-managed known_hosts pinned to the image's host key
//! (never `StrictHostKeyChecking=no`), and one multiplexed connection per VM whose control
//! socket lives in the VM's runtime dir (so `vm stop` can close and remove it).
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::state::VmState;
use crate::Error;

pub fn ssh_dir(lab: &str) -> PathBuf {
    model::paths::state_dir(lab).join("ssh")
}

/// The lab's private key (ed25519), made with ssh-keygen the first time.
pub fn lab_key(lab: &str) -> Result<PathBuf, Error> {
    use std::os::unix::fs::PermissionsExt;
    let dir = ssh_dir(lab);
    let key = dir.join("id_ed25519");
    if key.exists() && key.with_extension("pub").exists() {
        return Ok(key);
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io(&dir, e))?;
    // Two VMs starting at once: one makes the key, the other waits and takes it.
    let lockp = dir.join("key.lock");
    let lock = std::fs::File::create(&lockp).map_err(|e| Error::io(&lockp, e))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(&lockp, e.into()))?;
    if key.exists() && key.with_extension("pub").exists() {
        return Ok(key);
    }
    let keygen = crate::which("ssh-keygen").ok_or_else(|| Error::MissingProgram {
        program: "ssh-keygen".into(),
        hint: " (apt-get install openssh-client)".into(),
    })?;
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    let out = Command::new(keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("labnet-lab-{lab}"))
        .arg("-f")
        .arg(&key)
        .output()
        .map_err(|e| Error::io("ssh-keygen", e))?;
    if !out.status.success() {
        return Err(Error::ProgramFailed {
            program: format!("ssh-keygen -f {}", key.display()),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(&key, e))?;
    Ok(key)
}

/// The lab's public key as "TYPE BASE64".
pub fn lab_public_key(lab: &str) -> Result<String, Error> {
    let p = lab_key(lab)?.with_extension("pub");
    let t = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    Ok(t.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
}

pub fn known_hosts(lab: &str) -> PathBuf {
    ssh_dir(lab).join("known_hosts")
}

/// The name a VM's host key is filed under in the lab's known_hosts (ssh's HostKeyAlias),
/// independent of the address it leased.
pub fn alias(name: &str) -> String {
    format!("{name}.labnet")
}

/// Records `key` ("TYPE BASE64") as the only host key of VM `name`; `None` forgets it.
pub fn pin(lab: &str, name: &str, key: Option<&str>) -> Result<(), Error> {
    let dir = ssh_dir(lab);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    pin_in(&known_hosts(lab), name, key)
}

fn pin_in(p: &Path, name: &str, key: Option<&str>) -> Result<(), Error> {
    let old = std::fs::read_to_string(p).unwrap_or_default();
    let a = alias(name);
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(a.as_str()))
        .map(str::to_string)
        .collect();
    if let Some(k) = key {
        lines.push(format!("{a} {k}"));
    }
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    model::paths::write_atomic(p, text.as_bytes(), false).map_err(|e| Error::io(p, e))
}

pub fn control_path(st: &VmState) -> PathBuf {
    st.dir.join("ssh.ctl")
}

/// The options every ssh/scp to the VM gets.
pub fn options(lab: &str, st: &VmState) -> Result<Vec<String>, Error> {
    let key = lab_key(lab)?;
    let strict = if st.host_key.is_some() {
        "yes"
    } else {
        // A disk of the user's own (--drive): its key is unknown until first contact, so it
        // is recorded then and held to afterwards.
        "accept-new"
    };
    let o = [
        format!("IdentityFile={}", key.display()),
        "IdentitiesOnly=yes".into(),
        format!("UserKnownHostsFile={}", known_hosts(lab).display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        format!("HostKeyAlias={}", alias(&st.name)),
        format!("StrictHostKeyChecking={strict}"),
        "BatchMode=yes".into(),
        "ConnectTimeout=10".into(),
        "ServerAliveInterval=15".into(),
        "LogLevel=ERROR".into(),
        "ControlMaster=auto".into(),
        format!("ControlPath={}", control_path(st).display()),
        "ControlPersist=60".into(),
    ];
    Ok(o.iter()
        .flat_map(|x| ["-o".to_string(), x.clone()])
        .collect())
}

/// After ssh failed with 255: does the VM present a different host key than the pinned
/// one? Returns the message to show (ssh-keyscan from inside the lab).
pub fn host_key_mismatch(lab: &str, st: &VmState, ip: std::net::Ipv4Addr) -> Option<String> {
    let pinned = st.host_key.as_ref()?;
    let ktype = pinned.split_whitespace().next()?;
    let out = crate::manage::output_in_lab(
        lab,
        "ssh-keyscan",
        &[
            "-T".into(),
            "5".into(),
            "-t".into(),
            ktype.into(),
            ip.to_string(),
        ],
    )
    .ok()?;
    let seen: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3).then(|| format!("{} {}", w[1], w[2]))
        })
        .collect();
    let got = seen.first()?;
    (got != pinned).then(|| {
        format!(
            "{name} ({ip}) presents host key {got}, but image {img} recorded {pinned}: refusing to connect. \
             The guest's /etc/ssh/ssh_host_{kt}_key changed, or another machine answers at {ip}. \
             If the change is yours, restart the VM from the image (`labnet vm stop {name}`; `labnet vm start --image {img} --name {name}`).",
            name = st.name,
            img = st.image.as_deref().unwrap_or("?"),
            kt = ktype.trim_start_matches("ssh-"),
        )
    })
}

/// Closes the VM's multiplexed ssh connection (if any) and removes its control socket.
pub fn close_master(lab: &str, st: &VmState) {
    let ctl = control_path(st);
    if !ctl.exists() {
        return;
    }
    let _ = crate::manage::output_in_lab(
        lab,
        "ssh",
        &[
            "-o".into(),
            format!("ControlPath={}", ctl.display()),
            "-O".into(),
            "exit".into(),
            st.name.clone(),
        ],
    );
    let _ = std::fs::remove_file(&ctl);
}

/// The ssh_config block for `ssh NAME.ZONE` from the host: ProxyCommand runs `labnet vm
/// proxy`, which connects from inside the lab's namespace to the VM's current lease.
pub fn config_block(lab: &str, st: &VmState, zone: &str, labnet: &Path) -> Result<String, Error> {
    let key = lab_key(lab)?;
    let strict = if st.host_key.is_some() {
        "yes"
    } else {
        "accept-new"
    };
    Ok(format!(
        "Host {name}.{zone} {name}\n\
         \x20   User root\n\
         \x20   IdentityFile {key}\n\
         \x20   IdentitiesOnly yes\n\
         \x20   UserKnownHostsFile {kh}\n\
         \x20   HostKeyAlias {alias}\n\
         \x20   StrictHostKeyChecking {strict}\n\
         \x20   ProxyCommand {labnet} vm proxy --lab {lab} {name} %p\n",
        name = st.name,
        key = key.display(),
        kh = known_hosts(lab).display(),
        alias = alias(&st.name),
        labnet = labnet.display(),
    ))
}

/// Waits up to `wait` for the VM's lease in this boot; `ip_of(mac, since)` looks the lease up
/// (usually [`crate::manage::lease_ip`]).
pub fn wait_lease(
    lab: &str,
    st: &VmState,
    wait: Duration,
    ip_of: &dyn Fn(&str, u64) -> Option<Ipv4Addr>,
) -> Result<Ipv4Addr, Error> {
    let t0 = Instant::now();
    loop {
        if let Some(ip) = crate::manage::lease_of(st, ip_of) {
            return Ok(ip);
        }
        if t0.elapsed() >= wait {
            return Err(Error::NoLease {
                lab: lab.into(),
                name: st.name.clone(),
                mac: st.mac.clone(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `ssh true` until sshd lets `user` in, for up to `budget`; a changed host key ends
/// the wait at once (with [`host_key_mismatch`]'s words when it can tell).
pub fn wait_sshd(
    lab: &str,
    st: &VmState,
    ip: Ipv4Addr,
    user: &str,
    budget: Duration,
) -> Result<(), Error> {
    let t0 = Instant::now();
    let mut args = options(lab, st)?;
    args.extend([
        "-o".into(),
        "ConnectTimeout=3".into(),
        format!("{user}@{ip}"),
        "true".into(),
    ]);
    loop {
        let (mut cmd, _ns) = crate::manage::lab_command(lab, "ssh", &args)?;
        let out = cmd
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| Error::Spawn {
                program: "ssh".into(),
                source,
            })?;
        if out.status.success() {
            return Ok(());
        }
        if out.status.code() == Some(255) {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("Host key verification failed")
                || err.contains("HOST IDENTIFICATION HAS CHANGED")
            {
                return Err(Error::HostKeyChanged {
                    name: st.name.clone(),
                    ip,
                    detail: host_key_mismatch(lab, st, ip).unwrap_or_else(|| err.trim().into()),
                });
            }
        }
        if t0.elapsed() >= budget {
            return Err(Error::SshdTimeout {
                name: st.name.clone(),
                ip,
                secs: budget.as_secs(),
                last: String::from_utf8_lossy(&out.stderr).trim().into(),
                serial_log: st.dir.join("serial.log").display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits (up to `wait` in all) for the VM's lease and then its sshd: `vm ssh --wait`.
pub fn wait_ready(
    lab: &str,
    st: &VmState,
    user: &str,
    wait: Duration,
    ip_of: &dyn Fn(&str, u64) -> Option<Ipv4Addr>,
) -> Result<Ipv4Addr, Error> {
    let t0 = Instant::now();
    let ip = wait_lease(lab, st, wait, ip_of)?;
    wait_sshd(lab, st, ip, user, wait.saturating_sub(t0.elapsed()))?;
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_replaces_only_that_vm() {
        let d = tempfile::tempdir().unwrap();
        let kh = d.path().join("known_hosts");
        pin_in(&kh, "k1", Some("ssh-ed25519 AAA1")).unwrap();
        pin_in(&kh, "k2", Some("ssh-ed25519 BBB2")).unwrap();
        pin_in(&kh, "k1", Some("ssh-ed25519 CCC3")).unwrap();
        let t = std::fs::read_to_string(&kh).unwrap();
        assert_eq!(
            t,
            "k2.labnet ssh-ed25519 BBB2\nk1.labnet ssh-ed25519 CCC3\n"
        );
        pin_in(&kh, "k2", None).unwrap();
        assert_eq!(
            std::fs::read_to_string(&kh).unwrap(),
            "k1.labnet ssh-ed25519 CCC3\n"
        );
    }
}
