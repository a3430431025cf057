//! The DNS server: binds UDP and TCP on one address (the bridge's), serves the local zones
//! and forwards the rest, and reloads the hosts file when it changes.
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_server::proto::rr::LowerName;
use hickory_server::zone_handler::{Catalog, ZoneHandler};
use hickory_server::Server;

use crate::handler::LabHandler;
use crate::relay::Relay;
use crate::zone::LocalZones;
use crate::{hosts, Config, Error};

/// How often the hosts file's metadata is checked (dhcpd rewrites it by rename).
pub const HOSTS_POLL: Duration = Duration::from_millis(250);
/// A TCP client that sends nothing for this long is dropped.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Sockets bound (queries queue in the kernel until [`serve`] reads them).
pub struct Bound {
    udp: Vec<tokio::net::UdpSocket>,
    tcp: tokio::net::TcpListener,
}

impl Bound {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.first()?.local_addr().ok()
    }
}

/// Binds UDP and TCP on `cfg.listen` (needs a tokio runtime).
pub fn bind(cfg: &Config) -> Result<Bound, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr = cfg.listen;
    let bind_err = |what: &str, e: std::io::Error| Error::Bind {
        addr: format!("{what} {addr}"),
        source: e,
    };
    let domain = Domain::for_address(addr);

    // TCP first: it has no SO_REUSEPORT, so a second server on this address fails here
    // before its UDP sockets could take a share of the queries.
    let tcp =
        Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|e| bind_err("tcp", e))?;
    tcp.set_reuse_address(true)
        .map_err(|e| bind_err("tcp", e))?;
    tcp.set_nonblocking(true).map_err(|e| bind_err("tcp", e))?;
    tcp.bind(&addr.into()).map_err(|e| bind_err("tcp", e))?;
    tcp.listen(128).map_err(|e| bind_err("tcp", e))?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into()).map_err(|e| bind_err("tcp", e))?;

    // One UDP socket per core on the same address (SO_REUSEPORT): the kernel spreads clients
    // over them and hickory reads each one on its own task.
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4);
    let mut udp = Vec::new();
    for _ in 0..n {
        let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| bind_err("udp", e))?;
        // A bigger receive queue rides out bursts instead of dropping them.
        let _ = s.set_recv_buffer_size(4 << 20);
        s.set_reuse_port(n > 1).map_err(|e| bind_err("udp", e))?;
        s.set_nonblocking(true).map_err(|e| bind_err("udp", e))?;
        s.bind(&addr.into()).map_err(|e| bind_err("udp", e))?;
        udp.push(tokio::net::UdpSocket::from_std(s.into()).map_err(|e| bind_err("udp", e))?);
    }

    Ok(Bound { udp, tcp })
}

/// Serves until `shutdown` completes. `ready` runs once the zones are loaded and the sockets
/// are handed to the server (the place for sd_notify READY=1).
pub async fn serve(
    cfg: Config,
    bound: Bound,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let zones = Arc::new(LocalZones::new(&cfg.zone, cfg.bridge, cfg.prefix)?);
    let mut catalog = Catalog::new();
    // Without upstreams the catalog answers REFUSED for other names: nothing is made up.
    let mut local = vec![LowerName::from(zones.zone.clone())];
    catalog.upsert(
        local[0].clone(),
        vec![zones.forward.clone() as Arc<dyn ZoneHandler>],
    );
    for (name, h) in zones.reverse_names().iter().zip(&zones.reverse) {
        local.push(LowerName::from(name.clone()));
        catalog.upsert(
            LowerName::from(name.clone()),
            vec![h.clone() as Arc<dyn ZoneHandler>],
        );
    }
    let relay = if cfg.upstreams.is_empty() {
        None
    } else {
        Some(Relay::new(&cfg.upstreams, cfg.timeout, cfg.cache_size)?)
    };
    let handler = LabHandler::new(catalog, local, relay);

    // Load the hosts file before the first query is read.
    let mut watcher = HostsWatcher::new(cfg.hosts_file.clone(), cfg.zone.clone());
    watcher.poll(&zones).await;
    let watch = tokio::spawn(async move {
        loop {
            tokio::time::sleep(HOSTS_POLL).await;
            watcher.poll(&zones).await;
        }
    });

    let mut server = Server::new(handler);
    for s in bound.udp {
        server.register_socket(s);
    }
    server.register_listener(bound.tcp, TCP_IDLE, 64 * 1024);
    ready();

    let token = server.shutdown_token().clone();
    let result = tokio::select! {
        r = server.block_until_done() => r.map_err(|e| Error::Serve(e.to_string())),
        _ = shutdown => {
            token.cancel();
            // Tasks stop at once; do not let a stuck one hold the exit.
            let _ = tokio::time::timeout(Duration::from_secs(2), server.block_until_done()).await;
            Ok(())
        }
    };
    watch.abort();
    result
}

/// Reloads the local zones when the hosts file's (inode, size, mtime) changes.
pub struct HostsWatcher {
    path: PathBuf,
    zone: String,
    seen: Option<Option<(u64, u64, SystemTime)>>,
}

impl HostsWatcher {
    pub fn new(path: PathBuf, zone: String) -> Self {
        HostsWatcher {
            path,
            zone,
            seen: None,
        }
    }

    fn stamp(path: &Path) -> Option<(u64, u64, SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some((m.ino(), m.len(), m.modified().ok()?))
    }

    /// Reloads if the file changed since the last call (or on the first call). A missing file
    /// (dhcpd not started yet) means no hosts.
    pub async fn poll(&mut self, zones: &LocalZones) {
        let stamp = Self::stamp(&self.path);
        if self.seen == Some(stamp) {
            return;
        }
        self.seen = Some(stamp);
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                tracing::warn!("{}: {e}", self.path.display());
                return;
            }
        };
        let (entries, bad) = hosts::parse(&text, &self.zone);
        for b in &bad {
            tracing::warn!("{}:{}: skipped: {}", self.path.display(), b.line, b.message);
        }
        let n = zones.replace(&entries).await;
        tracing::info!("{}: {n} names loaded", self.path.display());
    }
}
