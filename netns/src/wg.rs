//! The WireGuard uplink. Both backends create the interface in labnet's own namespace, so its
//! UDP socket keeps the host's connectivity to the bounce box, then move it into the lab:
//! - kernel: an rtnetlink `wireguard` link, configured over generic netlink;
//! - userspace (no module, e.g. this CI machine): `wireguard-go IFACE` in the foreground,
//!   attached to a persistent TUN labnet made (see [`crate::tun`]), configured through its
//!   UAPI socket /var/run/wireguard/IFACE.sock.
//!
//! The private key goes from its 0600 file to netlink/UAPI only: never argv, never env.
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use wireguard_control::{Backend, Device, DeviceUpdate, InterfaceName, Key, PeerConfigBuilder};

use crate::config::{read_private_key, Peer, Peering, Wireguard};
use crate::Error;

pub const UAPI_DIR: &str = "/var/run/wireguard";

pub fn uapi_socket(iface: &str) -> std::path::PathBuf {
    Path::new(UAPI_DIR).join(format!("{iface}.sock"))
}

fn iface_name(name: &str) -> Result<InterfaceName, Error> {
    name.parse().map_err(|e| Error::BadName {
        name: name.into(),
        expected: format!("not a WireGuard interface name ({e:?})"),
    })
}

fn device_update(wg: &Wireguard) -> Result<DeviceUpdate, Error> {
    let key = read_private_key(&wg.private_key_file).map_err(|source| Error::Key {
        field: "uplink.private_key_file".into(),
        source,
    })?;
    let private = Key::from_base64(&key).map_err(|_| Error::BadKey {
        what: wg.private_key_file.display().to_string(),
    })?;
    let public = Key::from_base64(&wg.peer_public_key).map_err(|_| Error::BadKey {
        what: "uplink.peer_public_key".into(),
    })?;
    let mut peer = PeerConfigBuilder::new(&public).replace_allowed_ips();
    for a in &wg.allowed_ips {
        peer = peer.add_allowed_ip(IpAddr::V4(a.addr), a.prefix);
    }
    if let Some(e) = wg.endpoint {
        peer = peer.set_endpoint(e);
    }
    if let Some(k) = wg.persistent_keepalive {
        peer = peer.set_persistent_keepalive_interval(k);
    }
    let mut upd = DeviceUpdate::new()
        .set_private_key(private)
        .replace_peers()
        .add_peer(peer);
    if let Some(p) = wg.listen_port {
        upd = upd.set_listen_port(p);
    }
    Ok(upd)
}

/// Configures an existing interface (kernel link or running wireguard-go) from the config.
pub fn configure(wg: &Wireguard, backend: Backend) -> Result<(), Error> {
    let name = iface_name(&wg.interface)?;
    device_update(wg)?
        .apply(&name, backend)
        .map_err(|e| Error::Wireguard {
            what: "configuring".into(),
            iface: wg.interface.clone(),
            detail: e.to_string(),
        })
}

/// Waits for wireguard-go's UAPI socket to accept connections.
pub fn wait_for_uapi(iface: &str, pid: u32, timeout: Duration, log: &Path) -> Result<(), Error> {
    let path = uapi_socket(iface);
    let deadline = Instant::now() + timeout;
    loop {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Ok(());
        }
        if !crate::daemon::process_alive(pid) {
            return Err(Error::DaemonFailed {
                name: format!("wireguard-go for {iface}"),
                what: format!("exited before its socket {} appeared", path.display()),
                log: log.to_path_buf(),
            });
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!(
                    "wireguard-go did not open {} within {timeout:?}",
                    path.display()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The peer's state as the device reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    pub public_key: String,
    pub endpoint: Option<String>,
    /// Seconds since the last handshake (None = never).
    pub last_handshake_secs_ago: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Its IPv4 AllowedIPs.
    pub allowed_ips: Vec<crate::config::Ipv4Cidr>,
    pub persistent_keepalive: Option<u16>,
}

/// Reads the device from labnet's namespace (kernel) or its UAPI socket (userspace).
pub fn peers(iface: &str, userspace: bool, lab_ns: &str) -> Result<Vec<PeerStatus>, Error> {
    let name = iface_name(iface)?;
    let read = move || -> Result<Vec<PeerStatus>, Error> {
        let backend = if userspace {
            Backend::Userspace
        } else {
            Backend::Kernel
        };
        let dev = Device::get(&name, backend).map_err(|e| Error::Wireguard {
            what: "reading".into(),
            iface: format!("{name:?}"),
            detail: e.to_string(),
        })?;
        Ok(dev
            .peers
            .iter()
            .map(|p| PeerStatus {
                public_key: p.config.public_key.to_base64(),
                endpoint: p.config.endpoint.map(|e| e.to_string()),
                last_handshake_secs_ago: p
                    .stats
                    .last_handshake_time
                    .filter(|t| *t > SystemTime::UNIX_EPOCH)
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .map(|d| d.as_secs()),
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
                allowed_ips: p
                    .config
                    .allowed_ips
                    .iter()
                    .filter_map(|a| match a.address {
                        IpAddr::V4(addr) => Some(crate::config::Ipv4Cidr {
                            addr,
                            prefix: a.cidr,
                        }),
                        IpAddr::V6(_) => None,
                    })
                    .collect(),
                persistent_keepalive: p.config.persistent_keepalive_interval,
            })
            .collect())
    };
    if userspace {
        read()
    } else {
        // The kernel link lives in the lab namespace after the move: ask netlink there.
        crate::nsfs::in_netns(Some(lab_ns), read)
    }
}

/// The peering link's key pair: its private key file is made (0600, from the kernel's
/// random bytes via `Key::generate_private`) when missing; only the public key leaves here.
pub fn peering_public_key(p: &Peering) -> Result<String, Error> {
    let path = &p.private_key_file;
    if !path.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let key = Key::generate_private();
        // create_new: two labnets racing here keep one key, not a mix.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(mut f) => f
                .write_all(format!("{}\n", key.to_base64()).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(peering_private_key(p)?.get_public().to_base64())
}

fn peering_private_key(p: &Peering) -> Result<Key, Error> {
    let text = read_private_key(&p.private_key_file).map_err(|source| Error::Key {
        field: "peering.private_key_file".into(),
        source,
    })?;
    Key::from_base64(&text).map_err(|_| Error::BadKey {
        what: p.private_key_file.display().to_string(),
    })
}

fn peer_config(p: &Peer) -> Result<PeerConfigBuilder, Error> {
    let key = Key::from_base64(&p.public_key).map_err(|_| Error::BadKey {
        what: format!("peer {}: public_key", p.name),
    })?;
    // Cryptokey routing: the peer may send from, and is sent, its lab subnet only.
    let mut b = PeerConfigBuilder::new(&key)
        .replace_allowed_ips()
        .add_allowed_ip(IpAddr::V4(p.subnet.addr), p.subnet.prefix);
    if let Some(e) = p.endpoint {
        b = b.set_endpoint(e);
    }
    b = match p.persistent_keepalive {
        Some(k) => b.set_persistent_keepalive_interval(k),
        None => b.unset_persistent_keepalive(),
    };
    Ok(b)
}

fn apply_update(iface: &str, upd: DeviceUpdate, backend: Backend) -> Result<(), Error> {
    let name = iface_name(iface)?;
    upd.apply(&name, backend).map_err(|e| Error::Wireguard {
        what: "configuring".into(),
        iface: iface.into(),
        detail: e.to_string(),
    })
}

/// The peering link's private key (its file made when missing, as for `peer invite`) and
/// listen port; its peers are set one by one with [`add_peer`].
pub fn configure_peering_link(p: &Peering, backend: Backend) -> Result<(), Error> {
    peering_public_key(p)?;
    let mut upd = DeviceUpdate::new().set_private_key(peering_private_key(p)?);
    if let Some(port) = p.listen_port {
        upd = upd.set_listen_port(port);
    }
    apply_update(&p.interface, upd, backend)
}

/// Adds `peer` to the device, or updates it in place (a session with it keeps going).
pub fn add_peer(iface: &str, peer: &Peer, backend: Backend) -> Result<(), Error> {
    apply_update(
        iface,
        DeviceUpdate::new().add_peer(peer_config(peer)?),
        backend,
    )
}

/// Removes the peer with public key `key` from the device.
pub fn remove_peer(iface: &str, key: &str, backend: Backend) -> Result<(), Error> {
    let k = Key::from_base64(key).map_err(|_| Error::BadKey {
        what: format!("a peer of {iface}"),
    })?;
    apply_update(iface, DeviceUpdate::new().remove_peer_by_key(&k), backend)
}

/// The device's listen port (None when it has no socket yet or cannot be read).
pub fn listen_port(iface: &str, userspace: bool, lab_ns: &str) -> Option<u16> {
    let name = iface_name(iface).ok()?;
    let read = move || -> Result<Option<u16>, Error> {
        let backend = if userspace {
            Backend::Userspace
        } else {
            Backend::Kernel
        };
        Ok(Device::get(&name, backend).ok().and_then(|d| d.listen_port))
    };
    if userspace {
        read().ok().flatten()
    } else {
        crate::nsfs::in_netns(Some(lab_ns), read).ok().flatten()
    }
}

/// Whether a userspace device (wireguard-go) serves `iface` on this host.
pub fn is_userspace(iface: &str) -> bool {
    std::os::unix::net::UnixStream::connect(uapi_socket(iface)).is_ok()
}
