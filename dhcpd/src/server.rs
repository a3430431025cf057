//! The running server: the socket on the bridge, the receive loop, the lease writer, and
//! the watchers for the reservations dir and the hosts file.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::{Reservation, ServerConfig};
use crate::core::{Core, Drop, Reply};
use crate::leases::now_secs;
use crate::store::{Job, LeaseLog, Store};
use crate::{log, Error};

/// A bound server, not yet serving. Bind, report readiness, then [`Server::run`].
pub struct Server {
    core: Arc<Mutex<Core>>,
    sock: tokio::net::UdpSocket,
    store: Store,
    cfg: ServerConfig,
}

/// Opens the UDP socket on the bridge: bound to 0.0.0.0:port (broadcasts arrive there) and
/// to the device, so broadcast replies leave through the bridge and not the default route.
pub fn bind_socket(interface: &str, port: u16) -> Result<StdUdp, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let what = |s: &str, e: std::io::Error| Error::Io {
        path: format!("{s} ({interface}, port {port})"),
        source: e,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| what("socket", e))?;
    s.set_reuse_address(true)
        .map_err(|e| what("SO_REUSEADDR", e))?;
    s.bind_device(Some(interface.as_bytes()))
        .map_err(|e| what("SO_BINDTODEVICE", e))?;
    s.set_broadcast(true).map_err(|e| what("SO_BROADCAST", e))?;
    // Bursts of thousands of clients: a deep receive queue instead of drops.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    s.bind(&addr.into()).map_err(|e| what("bind", e))?;
    s.set_nonblocking(true).map_err(|e| what("O_NONBLOCK", e))?;
    Ok(s.into())
}

/// The interface's MTU (SIOCGIFMTU), for option 26.
pub fn interface_mtu(sock: &impl AsRawFd, interface: &str) -> Option<u16> {
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        mtu: libc::c_int,
        _pad: [u8; 20],
    }
    let mut r = IfReq {
        name: [0; 16],
        mtu: 0,
        _pad: [0; 20],
    };
    let n = interface.len().min(15);
    r.name[..n].copy_from_slice(&interface.as_bytes()[..n]);
    const SIOCGIFMTU: libc::c_ulong = 0x8921;
    // SAFETY: IfReq has the layout of struct ifreq (40 bytes) and lives for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGIFMTU as _, &mut r as *mut IfReq) };
    (rc == 0 && r.mtu > 0 && r.mtu <= u16::MAX as i32).then_some(r.mtu as u16)
}

/// Sends on a non-blocking socket from a plain thread: waits for room if the queue is full.
fn send_blocking(sock: &StdUdp, r: &Reply) {
    for _ in 0..50 {
        match sock.send_to(&r.bytes, r.dest) {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let mut p = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLOUT,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut p, 1, 20) };
            }
            Err(e) => {
                log!("send {:?} to {}: {e}", r.kind, r.dest);
                return;
            }
        }
    }
    log!(
        "send {:?} to {}: socket stayed full, dropped",
        r.kind,
        r.dest
    );
}

impl Server {
    /// Recovers the lease log, binds the socket, loads reservations. Must be called inside
    /// a tokio runtime (the socket registers with it).
    pub fn bind(cfg: ServerConfig) -> Result<Server, Error> {
        let (lease_log, warnings) = LeaseLog::open(&cfg.state_dir)?;
        for w in warnings {
            log!("{w}");
        }
        let std_sock = bind_socket(&cfg.interface, cfg.server_port)?;
        let mut core = Core::new(cfg.clone(), lease_log.leases().cloned());
        core.set_mtu(cfg.mtu.or_else(|| interface_mtu(&std_sock, &cfg.interface)));
        if let Some(dir) = &cfg.reservations_dir {
            core.set_dynamic_reservations(load_reservations_dir(dir).0);
        }
        let send_sock = std_sock.try_clone().map_err(|e| Error::Io {
            path: "dup DHCP socket".into(),
            source: e,
        })?;
        let store = lease_log.spawn(move |r| send_blocking(&send_sock, r), |e| log!("{e}"));
        let sock = tokio::net::UdpSocket::from_std(std_sock).map_err(|e| Error::Io {
            path: "register DHCP socket".into(),
            source: e,
        })?;
        // Write the hosts file for the recovered leases right away.
        let core = Arc::new(Mutex::new(core));
        let _ = write_hosts(
            &cfg.state_dir,
            &core.lock().expect("core").hosts_text(now_secs()),
        );
        log!(
            "serving {} on {} ({}/{}, pool {}-{}, lease {}s, state in {})",
            cfg.server_ip,
            cfg.interface,
            cfg.server_ip,
            cfg.prefix,
            cfg.range_start,
            cfg.range_end,
            cfg.lease_secs,
            cfg.state_dir.display()
        );
        Ok(Server {
            core,
            sock,
            store,
            cfg,
        })
    }

    /// The local address the socket is bound to.
    pub fn local_port(&self) -> u16 {
        self.sock.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` completes, then makes every queued lease durable and returns.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let Server {
            core,
            sock,
            mut store,
            cfg,
        } = self;
        let watcher = tokio::spawn(watch(core.clone(), cfg.clone()));
        let mut buf = vec![0u8; 4096];
        let mut drops: BTreeMap<&'static str, u64> = BTreeMap::new();
        // The first ignored packet is reported at once, then a summary every 10 s at most.
        let mut last_drop_log = 0u64;
        let (mut log_sec, mut logged, mut suppressed) = (0u64, 0u32, 0u64);
        let mut last_recv_err: Option<String> = None;
        tokio::pin!(shutdown);
        loop {
            let (n, from) = tokio::select! {
                _ = &mut shutdown => break,
                r = sock.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // E.g. the bridge went away: say so once, keep trying quietly.
                        let msg = e.to_string();
                        if last_recv_err.as_ref() != Some(&msg) {
                            log!("receive on {}: {msg} (retrying)", cfg.interface);
                            last_recv_err = Some(msg);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            last_recv_err = None;
            let now = now_secs();
            let out = core.lock().expect("core").handle(&buf[..n], now);
            match out {
                Ok(o) => {
                    if let Some(l) = o.log {
                        // At most 20 lines a second: pool exhaustion under a flood must not
                        // turn into a log flood.
                        if now != log_sec {
                            if suppressed > 0 {
                                log!("({suppressed} more log lines suppressed)");
                            }
                            (log_sec, logged, suppressed) = (now, 0, 0);
                        }
                        if logged < 20 {
                            logged += 1;
                            log!("{l}");
                        } else {
                            suppressed += 1;
                        }
                    }
                    if o.records.is_empty() {
                        if let Some(r) = o.reply {
                            if let Err(e) = sock.send_to(&r.bytes, r.dest).await {
                                log!("send {:?} to {}: {e}", r.kind, r.dest);
                            }
                        }
                    } else {
                        store.submit(Job {
                            records: o.records,
                            reply: o.reply,
                        });
                    }
                }
                Err(d) => {
                    let k = match d {
                        Drop::Short => "short",
                        Drop::NotRequest => "not a BOOTREQUEST",
                        Drop::NotEthernet => "not ethernet",
                        Drop::BadMagic => "bad magic cookie",
                        Drop::Undecodable => "undecodable",
                        Drop::NoMessageType => "no message type (BOOTP)",
                        Drop::RateLimited => "rate limited (flood from one client)",
                    };
                    *drops.entry(k).or_default() += 1;
                    // One summary line per 10 s at most, whatever the flood.
                    if now >= last_drop_log + 10 {
                        log!("ignored packets since the last report (last from {from}): {drops:?}");
                        drops.clear();
                        last_drop_log = now;
                    }
                }
            }
        }
        watcher.abort();
        let c = core.clone();
        let sd = cfg.state_dir.clone();
        tokio::task::spawn_blocking(move || {
            store.close();
            let _ = write_hosts(&sd, &c.lock().expect("core").hosts_text(now_secs()));
        })
        .await
        .ok();
        log!("stopped; leases are on disk");
        Ok(())
    }
}

/// Polls the reservations dir and rewrites the hosts file when its content changes.
async fn watch(core: Arc<Mutex<Core>>, cfg: ServerConfig) {
    let mut last_fp: Option<Vec<(String, SystemTime, u64)>> = None;
    let mut last_hosts: Option<String> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = now_secs();
        if let Some(dir) = &cfg.reservations_dir {
            let fp = fingerprint(dir);
            if last_fp.as_ref() != Some(&fp) {
                let (res, errs) = load_reservations_dir(dir);
                for e in errs {
                    log!("{e}");
                }
                if last_fp.is_some() {
                    log!("{}: {} reservation(s)", dir.display(), res.len());
                }
                core.lock().expect("core").set_dynamic_reservations(res);
                last_fp = Some(fp);
            }
        }
        let text = {
            let mut c = core.lock().expect("core");
            c.tick(now);
            c.hosts_text(now)
        };
        if last_hosts.as_ref() != Some(&text) {
            match write_hosts(&cfg.state_dir, &text) {
                Ok(()) => last_hosts = Some(text),
                Err(e) => log!("{e}"),
            }
        }
    }
}

fn fingerprint(dir: &Path) -> Vec<(String, SystemTime, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m.modified().ok()?,
                m.len(),
            ))
        })
        .collect();
    v.sort();
    v
}

#[derive(serde::Deserialize)]
struct ResFile {
    vm: Option<String>,
    mac: String,
    hostname: Option<String>,
    ip: Option<Ipv4Addr>,
}

/// Reads `DIR/*.json` (`{"vm","mac","hostname","ip"?}`); bad files are reported by name and
/// skipped. A missing dir means no reservations.
pub fn load_reservations_dir(dir: &Path) -> (Vec<Reservation>, Vec<String>) {
    let mut out = vec![];
    let mut errs = vec![];
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for p in paths {
        let parsed = std::fs::read_to_string(&p)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<ResFile>(&t).map_err(|e| e.to_string()))
            .and_then(|r| {
                let mac = netns::config::parse_mac(&r.mac).ok_or_else(|| {
                    format!(
                        "mac: expected a MAC like 52:54:00:12:34:56, got {:?}",
                        r.mac
                    )
                })?;
                Ok(Reservation {
                    mac,
                    ip: r.ip,
                    hostname: r.hostname.or_else(|| r.vm.clone()),
                    vm: r
                        .vm
                        .or_else(|| p.file_stem().map(|s| s.to_string_lossy().into_owned())),
                })
            });
        match parsed {
            Ok(r) => out.push(r),
            Err(e) => errs.push(format!("{}: skipped: {e}", p.display())),
        }
    }
    (out, errs)
}

/// Writes `STATE_DIR/hosts` atomically (temp file + rename).
pub fn write_hosts(state_dir: &Path, text: &str) -> Result<(), Error> {
    let path = state_dir.join("hosts");
    netns::paths::write_atomic(&path, text.as_bytes(), false).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })
}
