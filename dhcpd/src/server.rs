//! The running server: the socket on the bridge, the receive loop, the lease writer, and
//! the watchers for the reservations dir and the hosts file.
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::{Reservation, ServerConfig};
use crate::core::{Core, Drop, Reply};
use crate::store::LeaseLog;
use crate::{log, Error};
use model::lease::now_secs;

/// A bound server, not yet serving. Bind, report readiness, then [`Server::run`].
pub struct Server {
    core: Core,
    sock: tokio::net::UdpSocket,
    log: LeaseLog,
    cfg: ServerConfig,
}

/// Most requests handled before their records are committed and the ACKs sent.
const MAX_BATCH: usize = 256;
/// How often the reservations dir is checked and the hosts file brought up to date.
const WATCH_EVERY: Duration = Duration::from_millis(250);

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

// <linux/sockios.h>: SIOCGIFMTU reads into a struct ifreq (a "bad" ioctl: not an _IOR number).
nix::ioctl_read_bad!(siocgifmtu, libc::SIOCGIFMTU, libc::ifreq);

/// The interface's MTU (SIOCGIFMTU), for option 26.
pub fn interface_mtu(sock: &impl AsRawFd, interface: &str) -> Option<u16> {
    // SAFETY: struct ifreq is plain data (a name and a union of integers and addresses), so
    // all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.bytes().take(libc::IFNAMSIZ - 1);
    for (d, s) in r.ifr_name.iter_mut().zip(name) {
        *d = s as libc::c_char;
    }
    // SAFETY: `r` is a struct ifreq that lives for the call; SIOCGIFMTU fills its ifru_mtu.
    unsafe { siocgifmtu(sock.as_raw_fd(), &mut r) }.ok()?;
    // SAFETY: SIOCGIFMTU succeeded, so the union holds the MTU.
    let mtu = unsafe { r.ifr_ifru.ifru_mtu };
    u16::try_from(mtu).ok().filter(|m| *m > 0)
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
        let sock = tokio::net::UdpSocket::from_std(std_sock).map_err(|e| Error::Io {
            path: "register DHCP socket".into(),
            source: e,
        })?;
        // Write the hosts file for the recovered leases right away.
        let _ = write_hosts(&cfg.state_dir, &core.hosts_text(now_secs()));
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
            log: lease_log,
            cfg,
        })
    }

    /// The local address the socket is bound to.
    pub fn local_port(&self) -> u16 {
        self.sock.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` completes; every ACKed lease is on disk when it returns.
    ///
    /// One loop does everything: wait until requests are readable, read up to
    /// [`MAX_BATCH`] of them, handle each (replies that need no record, OFFERs and NAKs, go
    /// out at once), commit all their lease records with one write + fdatasync, send the
    /// ACKs. Requests that arrive meanwhile queue in the socket and form the next batch.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), Error> {
        let Server {
            mut core,
            sock,
            mut log,
            cfg,
        } = self;
        let mut watcher = Watcher::default();
        let mut watch_tick = tokio::time::interval(WATCH_EVERY);
        watch_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 4096];
        let mut drops = DropLog::default();
        let lines = LineLimit::default();
        let mut last_recv_err: Option<String> = None;
        let mut records = Vec::new();
        let mut acks: Vec<Reply> = Vec::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                _ = watch_tick.tick() => {
                    let released = watcher.poll(&mut core, &cfg);
                    for l in &released {
                        log!("RELEASE {} of {}: its VM's reservation is gone", l.ip, l.mac);
                    }
                    if !released.is_empty() {
                        if let Err(e) = log.commit(&released) {
                            log!("{e}");
                        }
                    }
                    lines.flush();
                    continue;
                }
                r = sock.readable() => if let Err(e) = r {
                    log!("waiting on {}: {e}", cfg.interface);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                },
            }
            let now = now_secs();
            for _ in 0..MAX_BATCH {
                let (n, from) = match sock.try_recv_from(&mut buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // E.g. the bridge went away: say so once, keep trying quietly.
                        let msg = e.to_string();
                        if last_recv_err.as_ref() != Some(&msg) {
                            log!("receive on {}: {msg} (retrying)", cfg.interface);
                            last_recv_err = Some(msg);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        break;
                    }
                };
                last_recv_err = None;
                match core.handle(&buf[..n], now) {
                    Ok(o) => {
                        if let Some(l) = o.log {
                            lines.log(&l);
                        }
                        match o.reply {
                            Some(r) if o.records.is_empty() => send(&sock, &r, &lines).await,
                            Some(r) => {
                                records.extend(o.records);
                                acks.push(r);
                            }
                            None => records.extend(o.records),
                        }
                    }
                    Err(d) => drops.count(d, from, now),
                }
            }
            if records.is_empty() && acks.is_empty() {
                continue;
            }
            // The ACKs wait for this: an ACK is only sent for a lease on disk.
            match log.commit(&records) {
                Ok(()) => {
                    for r in &acks {
                        send(&sock, r, &lines).await;
                    }
                }
                Err(e) => log!("{e}; {} repl(ies) not sent", acks.len()),
            }
            records.clear();
            acks.clear();
        }
        log.close();
        let _ = write_hosts(&cfg.state_dir, &core.hosts_text(now_secs()));
        log!("stopped; leases are on disk");
        Ok(())
    }
}

/// Sends a reply; waits for room if the socket's queue is full.
async fn send(sock: &tokio::net::UdpSocket, r: &Reply, lines: &LineLimit) {
    let sent = match sock.try_send_to(&r.bytes, r.dest.into()) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            match tokio::time::timeout(Duration::from_secs(1), sock.send_to(&r.bytes, r.dest)).await
            {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err(std::io::Error::other("socket stayed full, dropped")),
            }
        }
        r => r.map(|_| ()),
    };
    if let Err(e) = sent {
        lines.log(&format!("send {:?} to {}: {e}", r.kind, r.dest));
    }
}

/// Log lines a client can cause per packet (the engine's, failed sends), rate-limited per
/// kind — the line's first word: DISCOVER, NAK, RELEASE, send… — with a "suppressed N
/// similar" summary (pool exhaustion under a flood must not turn into a log flood).
#[derive(Default)]
struct LineLimit {
    limit: daemonlog::RateLimit<String>,
}

impl LineLimit {
    fn log(&self, line: &str) {
        let kind = line.split_whitespace().next().unwrap_or_default();
        if let Some(n) = self
            .limit
            .check(&kind.to_string(), std::time::Instant::now())
        {
            if n > 0 {
                log!("{}", daemonlog::summary(kind, n));
            }
            log!("{line}");
        }
    }

    /// Summaries of the kinds whose window ended with lines suppressed.
    fn flush(&self) {
        for (kind, n) in self.limit.flush(std::time::Instant::now()) {
            log!("{}", daemonlog::summary(&kind, n));
        }
    }
}

/// Ignored packets, counted by reason: the first is reported at once, then one summary
/// every 10 s at most, whatever the flood.
#[derive(Default)]
struct DropLog {
    counts: BTreeMap<&'static str, u64>,
    last: u64,
}

impl DropLog {
    fn count(&mut self, d: Drop, from: SocketAddr, now: u64) {
        let k = match d {
            Drop::Short => "short",
            Drop::NotRequest => "not a BOOTREQUEST",
            Drop::NotEthernet => "not ethernet",
            Drop::BadMagic => "bad magic cookie",
            Drop::Undecodable => "undecodable",
            Drop::NoMessageType => "no message type (BOOTP)",
            Drop::RateLimited => "rate limited (flood from one client)",
        };
        *self.counts.entry(k).or_default() += 1;
        if now >= self.last + 10 {
            log!(
                "ignored packets since the last report (last from {from}): {:?}",
                self.counts
            );
            self.counts.clear();
            self.last = now;
        }
    }
}

/// Brings run-time reservations in from the reservations dir and the hosts file up to
/// date, when either changed.
#[derive(Default)]
struct Watcher {
    last_fp: Option<Vec<(String, SystemTime, u64)>>,
    last_hosts: Option<String>,
}

impl Watcher {
    /// Returns the leases released because their VM's reservation went away.
    #[must_use]
    fn poll(&mut self, core: &mut Core, cfg: &ServerConfig) -> Vec<crate::Lease> {
        let now = now_secs();
        let mut released = vec![];
        if let Some(dir) = &cfg.reservations_dir {
            let fp = fingerprint(dir);
            if self.last_fp.as_ref() != Some(&fp) {
                let (res, errs) = load_reservations_dir(dir);
                for e in errs {
                    log!("{e}");
                }
                if self.last_fp.is_some() {
                    log!("{}: {} reservation(s)", dir.display(), res.len());
                }
                released = core.replace_dynamic_reservations(res, now);
                self.last_fp = Some(fp);
            }
        }
        core.tick(now);
        let text = core.hosts_text(now);
        if self.last_hosts.as_ref() != Some(&text) {
            match write_hosts(&cfg.state_dir, &text) {
                Ok(()) => self.last_hosts = Some(text),
                Err(e) => log!("{e}"),
            }
        }
        released
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

/// Reads `DIR/*.json` ([`model::reservation`], written by `labnet vm`); bad files are
/// reported by name and skipped. A missing dir means no reservations.
pub fn load_reservations_dir(dir: &Path) -> (Vec<Reservation>, Vec<String>) {
    let (loaded, errs) = model::reservation::load_dir(dir);
    let res = loaded
        .into_iter()
        .map(|r| Reservation {
            mac: r.mac,
            ip: r.ip,
            hostname: r.hostname,
            vm: r.vm,
        })
        .collect();
    (res, errs)
}

/// Writes `STATE_DIR/hosts` atomically (temp file + rename).
pub fn write_hosts(state_dir: &Path, text: &str) -> Result<(), Error> {
    model::hosts::write(state_dir, text).map_err(|e| match e {
        model::Error::Io { path, source } => Error::Io {
            path: path.display().to_string(),
            source,
        },
        other => Error::Io {
            path: state_dir.join("hosts").display().to_string(),
            source: std::io::Error::other(other.to_string()),
        },
    })
}
