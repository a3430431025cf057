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

use arc_swap::ArcSwap;

use crate::forward::{Forward, Forwarding};
use crate::handler::LabHandler;
use crate::relay::Relay;
use crate::zone::LocalZones;
use crate::{hosts, udp, Config, Error};

/// How often the hosts file's metadata is checked (dhcpd rewrites it by rename).
pub const HOSTS_POLL: Duration = Duration::from_millis(250);
/// A TCP client that sends nothing for this long is dropped.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// Sockets bound (queries queue in the kernel until [`serve`] reads them).
pub struct Bound {
    udp: Vec<std::net::UdpSocket>,
    tcp: std::net::TcpListener,
}

impl Bound {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.first()?.local_addr().ok()
    }
}

/// Binds UDP and TCP on `cfg.listen`.
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

    // One UDP socket per core on the same address (SO_REUSEPORT): the kernel spreads clients
    // over them and each is served by its own thread.
    let n = std::env::var("LABNET_DNS_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
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
        udp.push(s.into());
    }

    Ok(Bound {
        udp,
        tcp: tcp.into(),
    })
}

/// Serves until `shutdown` completes. `ready` runs once the zones are loaded and the sockets
/// are handed to the server (the place for sd_notify READY=1).
///
/// The first UDP socket, TCP and the hosts-file watcher are served on the caller's runtime;
/// every further UDP socket gets a thread with its own single-threaded runtime, server and
/// upstream sockets. A query is then received, answered (or forwarded, and its upstream
/// answer received) and sent on one thread: no cross-thread wakeups, which is what a
/// multi-threaded runtime adds to every query's latency.
pub async fn serve(
    cfg: Config,
    bound: Bound,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let (_, never) = tokio::sync::mpsc::unbounded_channel();
    serve_reloadable(cfg, bound, ready, shutdown, never).await
}

/// A new forward table for a running server, and where to say whether it took it.
pub type Reload = (
    Vec<Forward>,
    tokio::sync::oneshot::Sender<Result<(), Error>>,
);

/// [`serve`], and replaces the forward table with each one `reloads` brings (`labnet dns`
/// sends one on SIGHUP, after a peer was added or removed): checked like the first one (a bad
/// one is refused and the old table kept), swapped whole for every thread at once, the answer
/// cache dropped.
pub async fn serve_reloadable(
    cfg: Config,
    bound: Bound,
    ready: impl FnOnce(),
    shutdown: impl Future<Output = ()>,
    mut reloads: tokio::sync::mpsc::UnboundedReceiver<Reload>,
) -> Result<(), Error> {
    let zones = Arc::new(LocalZones::with_aliases(
        &cfg.zone,
        &cfg.zone_aliases,
        cfg.ptr_zone.as_deref(),
        cfg.bridge,
        cfg.prefix,
    )?);
    let mut own = zones.forward_names();
    own.extend(zones.reverse_names().iter().cloned());
    let forwarding = Arc::new(ArcSwap::from_pointee(Forwarding::new(&own, &cfg.forwards)?));
    // Always a relay: a reload may bring forwards to a lab that had none (and no upstreams).
    let relay = Some(Relay::new(
        &cfg.upstreams,
        cfg.listen.ip(),
        cfg.timeout,
        cfg.cache_size,
    )?);
    let routes = Routes {
        forwarding: forwarding.clone(),
        upstreams: !cfg.upstreams.is_empty(),
    };
    let reloader = {
        let relay = relay.clone();
        async move {
            while let Some((forwards, done)) = reloads.recv().await {
                let r = Forwarding::new(&own, &forwards).map(|f| {
                    forwarding.store(Arc::new(f));
                    if let Some(r) = &relay {
                        r.clear_cache();
                    }
                });
                let _ = done.send(r);
            }
            std::future::pending::<()>().await
        }
    };

    // Load the hosts file before the first query is read.
    let mut watcher = HostsWatcher::new(cfg.hosts_file.clone(), cfg.zone.clone());
    watcher.poll(&zones).await;
    let watch = {
        let zones = zones.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(HOSTS_POLL).await;
                watcher.poll(&zones).await;
            }
        })
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (failed_tx, mut failed_rx) = tokio::sync::mpsc::unbounded_channel::<Error>();
    let mut udp = bound.udp.into_iter();
    let first = udp.next().expect("bind makes at least one UDP socket");
    let mut threads = Vec::new();
    let mut started = Vec::new();
    for (i, sock) in udp.enumerate() {
        let (zones, relay, routes) = (zones.clone(), relay.clone(), routes.clone());
        let (mut stop, failed) = (stop_rx.clone(), failed_tx.clone());
        let (up_tx, up_rx) = tokio::sync::oneshot::channel::<Result<(), Error>>();
        started.push(up_rx);
        let t = std::thread::Builder::new()
            .name(format!("dns-udp-{}", i + 1))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = up_tx.send(Err(Error::Serve(format!("runtime: {e}"))));
                        return;
                    }
                };
                rt.block_on(async move {
                    let setup = (|| {
                        let relay = relay.as_ref().map(|r| r.sibling()).transpose()?;
                        let sock = tokio::net::UdpSocket::from_std(sock)
                            .map_err(|e| Error::Serve(format!("udp socket: {e}")))?;
                        Ok::<_, Error>((
                            Arc::new(sock),
                            Arc::new(lab_handler(&zones, &routes, relay)),
                        ))
                    })();
                    let (sock, handler) = match setup {
                        Ok(s) => {
                            let _ = up_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = up_tx.send(Err(e));
                            return;
                        }
                    };
                    tokio::select! {
                        r = udp::serve(sock, handler) => {
                            let _ = failed.send(udp_failed(r));
                        }
                        _ = stop.wait_for(|s| *s) => {}
                    }
                });
            })
            .map_err(|e| Error::Serve(format!("thread: {e}")))?;
        threads.push(t);
    }
    let stop_threads = |threads: Vec<std::thread::JoinHandle<()>>| {
        let _ = stop_tx.send(true);
        for t in threads {
            let _ = t.join();
        }
    };
    for up in started {
        match up.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                stop_threads(threads);
                watch.abort();
                return Err(e);
            }
            Err(_) => {
                stop_threads(threads);
                watch.abort();
                return Err(Error::Serve("a udp thread died while starting".into()));
            }
        }
    }

    // TCP through hickory's server (framing, idle timeouts); UDP through our own loop.
    let mut server = Server::new(lab_handler(&zones, &routes, relay.clone()));
    let handler = Arc::new(lab_handler(&zones, &routes, relay));
    let sock = tokio::net::UdpSocket::from_std(first)
        .map_err(|e| Error::Serve(format!("udp socket: {e}")))?;
    let tcp = tokio::net::TcpListener::from_std(bound.tcp)
        .map_err(|e| Error::Serve(format!("tcp socket: {e}")))?;
    server.register_listener(tcp, TCP_IDLE, 64 * 1024);
    ready();

    let token = server.shutdown_token().clone();
    let result = tokio::select! {
        r = server.block_until_done() => r.map_err(|e| Error::Serve(e.to_string())),
        r = udp::serve(Arc::new(sock), handler) => Err(udp_failed(r)),
        Some(e) = failed_rx.recv() => Err(e),
        _ = reloader => Ok(()),
        _ = shutdown => Ok(()),
    };
    // Tasks stop at once; do not let a stuck one hold the exit.
    token.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), server.block_until_done()).await;
    stop_threads(threads);
    watch.abort();
    result
}

fn udp_failed(r: std::io::Result<()>) -> Error {
    match r {
        Ok(()) => Error::Serve("udp socket closed".into()),
        Err(e) => Error::Serve(format!("udp socket: {e}")),
    }
}

/// What decides between the relay's targets: the forwarded zones (swapped on reload), and
/// whether there are default upstreams.
#[derive(Clone)]
struct Routes {
    forwarding: Arc<ArcSwap<Forwarding>>,
    upstreams: bool,
}

/// The request handler of one serving thread: the local zones (shared by all threads) in a
/// catalog, the zone table, and that thread's relay.
fn lab_handler(zones: &LocalZones, routes: &Routes, relay: Option<Arc<Relay>>) -> LabHandler {
    let mut catalog = Catalog::new();
    // Without upstreams the catalog answers REFUSED for other names: nothing is made up.
    let mut local = vec![LowerName::from(zones.zone.clone())];
    catalog.upsert(
        local[0].clone(),
        vec![zones.forward.clone() as Arc<dyn ZoneHandler>],
    );
    for (name, h) in &zones.aliases {
        local.push(LowerName::from(name.clone()));
        catalog.upsert(
            LowerName::from(name.clone()),
            vec![h.clone() as Arc<dyn ZoneHandler>],
        );
    }
    for (name, h) in zones.reverse_names().iter().zip(&zones.reverse) {
        local.push(LowerName::from(name.clone()));
        catalog.upsert(
            LowerName::from(name.clone()),
            vec![h.clone() as Arc<dyn ZoneHandler>],
        );
    }
    LabHandler::new(
        catalog,
        local,
        routes.forwarding.clone(),
        routes.upstreams,
        relay,
    )
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
