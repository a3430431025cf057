//! `up` and `down`: seed 000's oneshot as a plan of steps over netlink. Each step's resource
//! is recorded before it is made ([`LabState::record`]); `down` undoes the record in reverse.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wireguard_control::Backend;

use crate::config::{Lab, Uplink, WgBackend};
use crate::daemon;
use crate::nft;
use crate::nl::{self, with_netlink};
use crate::nsfs::{self, netns_exists};
use crate::paths;
use crate::state::{LabLock, LabState, Resource};
use crate::wg;
use crate::Error;

/// A daemon `up` starts in the lab (hand-run mode); under systemd the units run them instead.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    pub name: String,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    pub daemons: Vec<DaemonSpec>,
}

#[derive(Debug, PartialEq)]
pub enum UpOutcome {
    Created,
    /// The lab was up already: what had drifted from the config and was repaired, and
    /// daemons that had died and were started again.
    AlreadyUp {
        repaired: Vec<String>,
        restarted: Vec<String>,
    },
}

#[derive(Debug, PartialEq)]
pub enum DownOutcome {
    Removed,
    NotUp,
}

pub fn etc_netns_dir(lab: &str) -> PathBuf {
    std::env::var_os("LABNET_ETC_NETNS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/netns"))
        .join(lab)
}

const LOCK_WAIT: Duration = Duration::from_secs(60);
const DAEMON_READY: Duration = Duration::from_secs(20);

/// Brings the lab up. Idempotent; on failure everything made so far is undone.
pub fn up(lab: &Lab, opts: &UpOptions) -> Result<UpOutcome, Error> {
    lab.check_files()?;
    let _lock = LabLock::acquire(&lab.name, LOCK_WAIT)?;
    if let Some(mut st) = LabState::load(&lab.name)? {
        if st.complete && netns_exists(&lab.name) {
            let changed = changed_sections(st.config.as_ref(), lab);
            if !changed.is_empty() {
                return Err(Error::Other(format!(
                    "lab {} is up, but {} changed in {} since; `labnet down {}` then `labnet up` applies it",
                    lab.name,
                    changed.join(", "),
                    lab.source,
                    lab.name
                )));
            }
            return converge(lab, &mut st);
        }
        // A crashed or killed `up`, or a reboot: clear what is left, then build afresh.
        undo(&mut st)?;
    } else if netns_exists(&lab.name) {
        return Err(Error::Other(format!(
            "network namespace {} exists but labnet did not create it (no {}); remove it or pick another lab name",
            lab.name,
            paths::lab_state_file(&lab.name).display()
        )));
    }
    preflight(lab)?;
    let mut st = LabState {
        lab: lab.name.clone(),
        config: Some(lab.clone()),
        ..Default::default()
    };
    st.save()?;
    match build(lab, opts, &mut st).and_then(|()| crate::peering::sync(lab, &mut st).map(|_| ())) {
        Ok(()) => {
            st.complete = true;
            st.save()?;
            Ok(UpOutcome::Created)
        }
        Err(e) => {
            if let Err(u) = undo(&mut st) {
                return Err(Error::Other(format!(
                    "{e}; and undoing the partial lab failed too: {u}"
                )));
            }
            Err(e)
        }
    }
}

/// Brings a lab that is up back to its config: repairs drift in place (links down, lost
/// addresses or route, ip_forward, labnet's nft tables, /etc/netns files), restarts dead
/// daemons, then checks with `status` that nothing is left; what cannot be repaired in place
/// is an error naming it.
fn converge(lab: &Lab, st: &mut LabState) -> Result<UpOutcome, Error> {
    let plan = crate::converge::plan(lab, &crate::converge::observe(lab)?);
    if !plan.unrepairable.is_empty() {
        return Err(Error::Drift {
            lab: lab.name.clone(),
            what: plan.unrepairable.join("; "),
        });
    }
    crate::converge::apply(&mut crate::converge::SystemNet, &plan.steps)?;
    crate::peering::sync(lab, st)?;
    let restarted = restart_dead_daemons(st)?;
    let report = crate::status::status(lab)?;
    if !report.ok {
        let failing: Vec<String> = report
            .components
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        return Err(Error::Drift {
            lab: lab.name.clone(),
            what: failing.join("; "),
        });
    }
    Ok(UpOutcome::AlreadyUp {
        repaired: plan.steps.iter().map(|s| s.describe()).collect(),
        restarted,
    })
}

/// Top-level config sections that differ from what the running lab was built from.
fn changed_sections(built: Option<&Lab>, lab: &Lab) -> Vec<String> {
    let Some(b) = built else { return vec![] };
    [
        ("bridge", b.bridge == lab.bridge),
        ("uplink", b.uplink == lab.uplink),
        ("dhcp", b.dhcp == lab.dhcp),
        ("dns", b.dns == lab.dns),
    ]
    .iter()
    .filter(|(_, same)| !same)
    .map(|(k, _)| format!("[{k}]"))
    .collect()
}

/// Conflicts that would make `up` fail half-way, checked before anything is made.
fn preflight(lab: &Lab) -> Result<(), Error> {
    let names: Vec<String> = match &lab.uplink {
        Uplink::Wireguard(w) => vec![w.interface.clone()],
        Uplink::Host(h) => vec![h.host_interface.clone()],
        Uplink::None => vec![],
    };
    for n in names {
        let m = n.clone();
        if with_netlink(None, move |h| async move { nl::link_by_name(&h, &m).await })?.is_some() {
            return Err(Error::Other(format!(
                "{}: interface {n} already exists in labnet's namespace; pick another name (uplink.interface) or remove it",
                lab.source
            )));
        }
        if let Uplink::Wireguard(_) = lab.uplink {
            if std::os::unix::net::UnixStream::connect(wg::uapi_socket(&n)).is_ok() {
                return Err(Error::Other(format!(
                    "{}: a userspace WireGuard device named {n} already runs on this host ({}); names must be unique host-wide",
                    lab.source,
                    wg::uapi_socket(&n).display()
                )));
            }
        }
    }
    Ok(())
}

fn build(lab: &Lab, opts: &UpOptions, st: &mut LabState) -> Result<(), Error> {
    let ns = lab.name.clone();
    // wireguard-go takes longest to start (Go runtime): start it first, in labnet's own
    // namespace, and build the lab while it boots.
    let wg_started = match &lab.uplink {
        Uplink::Wireguard(w) => Some(start_wireguard(lab, w, st)?),
        _ => None,
    };
    st.record(Resource::Netns { name: ns.clone() })?;
    nsfs::create_netns(&ns)?;

    // lo and the bridge, inside the lab.
    let (br, br_addr) = (lab.bridge.name.clone(), lab.bridge.address);
    with_netlink(Some(&ns), move |h| async move {
        nl::set_up(&h, "lo").await?;
        nl::add_bridge(&h, &br).await?;
        nl::add_address(&h, &br, br_addr.addr, br_addr.prefix).await?;
        nl::set_up(&h, &br).await
    })?;
    // The lab routes between its bridge and its uplink.
    nsfs::in_netns(Some(&ns), || {
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    })?;

    match &lab.uplink {
        Uplink::None => {}
        Uplink::Wireguard(w) => {
            // The masquerade rule matches the uplink by name, so nft (a process, ~10 ms) can
            // run while the WireGuard interface is still being configured and moved.
            st.record(Resource::NftTable {
                netns: Some(ns.clone()),
                family: "ip".into(),
                name: nft::LAB_TABLE.into(),
            })?;
            let rules = nft::lab_table_peered(
                &lab.bridge.name,
                &w.interface,
                lab.peering.as_ref().map(|p| p.interface.as_str()),
            );
            let nft_ns = ns.clone();
            let nft_job = std::thread::spawn(move || nft::apply(Some(&nft_ns), rules));
            let started = wg_started.expect("wireguard started above");
            let userspace = started.userspace;
            let wired = finish_wireguard(lab, w, started);
            let nft_done = nft_job
                .join()
                .unwrap_or_else(|_| Err(Error::Other("the nft worker panicked".into())));
            wired?;
            nft_done?;
            st.wg_backend = Some(if userspace { "userspace" } else { "kernel" }.into());
            let (iface, addr, gw) = (w.interface.clone(), w.address, w.gateway);
            with_netlink(Some(&ns), move |h| async move {
                nl::add_address(&h, &iface, addr.addr, addr.prefix).await?;
                nl::set_up(&h, &iface).await?;
                nl::add_default_route(&h, &iface, gw).await
            })?;
        }
        Uplink::Host(hu) => {
            st.record(Resource::RootLink {
                name: hu.host_interface.clone(),
            })?;
            let nsfile = File::open(nsfs::netns_path(&ns))
                .map_err(|e| Error::io(nsfs::netns_path(&ns), e))?;
            let (hi, li, ha) = (
                hu.host_interface.clone(),
                hu.lab_interface.clone(),
                hu.host_address,
            );
            with_netlink(None, move |h| async move {
                nl::add_veth(&h, &hi, &li).await?;
                nl::move_to_netns(&h, &li, nsfile.as_raw_fd()).await?;
                nl::add_address(&h, &hi, ha.addr, ha.prefix).await?;
                nl::set_up(&h, &hi).await
            })?;
            let (li, la, gw) = (
                hu.lab_interface.clone(),
                hu.lab_address,
                hu.host_address.addr,
            );
            with_netlink(Some(&ns), move |h| async move {
                nl::add_address(&h, &li, la.addr, la.prefix).await?;
                nl::set_up(&h, &li).await?;
                nl::add_default_route(&h, &li, gw).await
            })?;
            st.record(Resource::NftTable {
                netns: Some(ns.clone()),
                family: "ip".into(),
                name: nft::LAB_TABLE.into(),
            })?;
            nft::apply(
                Some(&ns),
                nft::lab_table_peered(
                    &lab.bridge.name,
                    &hu.lab_interface,
                    lab.peering.as_ref().map(|p| p.interface.as_str()),
                ),
            )?;
            let path = "/proc/sys/net/ipv4/ip_forward";
            let old = std::fs::read_to_string(path)
                .map_err(|e| Error::io(path, e))?
                .trim()
                .to_string();
            if old != "1" {
                st.record(Resource::Sysctl {
                    path: path.into(),
                    old,
                })?;
                write_sysctl(path, "1")?;
            }
            st.record(Resource::NftTable {
                netns: None,
                family: "ip".into(),
                name: nft::host_table(&ns),
            })?;
            nft::apply(None, nft::host_masquerade(&ns, &hu.host_interface))?;
        }
    }

    write_etc_netns(lab, st)?;

    for d in &opts.daemons {
        start_daemon(&ns, d, st)?;
    }
    Ok(())
}

/// A WireGuard interface that exists (kernel link, or wireguard-go starting) in labnet's own
/// namespace, not yet moved into the lab.
struct WgStarted {
    userspace: bool,
    /// wireguard-go's pid and log, while its UAPI socket may not be up yet.
    process: Option<(u32, PathBuf)>,
}

/// Creates the interface: a kernel link (configured at once) or a wireguard-go process.
fn start_wireguard(
    lab: &Lab,
    w: &crate::config::Wireguard,
    st: &mut LabState,
) -> Result<WgStarted, Error> {
    let iface = w.interface.clone();
    if w.backend != WgBackend::Userspace {
        st.record(Resource::RootLink {
            name: iface.clone(),
        })?;
        let i = iface.clone();
        let made = with_netlink(
            None,
            move |h| async move { nl::add_wireguard(&h, &i).await },
        )?;
        if made {
            let wc = w.clone();
            nsfs::in_netns(None, move || wg::configure(&wc, Backend::Kernel))?;
            return Ok(WgStarted {
                userspace: false,
                process: None,
            });
        } else if w.backend == WgBackend::Kernel {
            return Err(Error::Other(format!(
                "{}: uplink.backend = \"kernel\" but this kernel has no WireGuard support; use \"auto\" or \"userspace\" (wireguard-go)",
                lab.source
            )));
        }
        st.resources.pop();
        st.save()?;
    }
    // labnet makes the TUN, persistent, and wireguard-go attaches to it by name. Its exit
    // then only detaches (a TUN that dies with its last descriptor is unregistered on the
    // exiting process's path: tens of ms of RCU waits that `down` would sit through); the
    // device goes with the lab's namespace, or as a root link if it was never moved.
    st.record(Resource::RootLink {
        name: iface.clone(),
    })?;
    let i = iface.clone();
    nsfs::in_netns(None, move || {
        crate::tun::create_persistent(&i, crate::tun::Kind::Tun, None)
    })?;
    st.record(Resource::WgUserspace {
        iface: iface.clone(),
        pid: None,
    })?;
    let argv = vec![wireguard_go(), iface.clone()];
    // Foreground mode gives labnet the real pid (no daemonizing fork to chase).
    let envs = vec![("WG_PROCESS_FOREGROUND".to_string(), "1".to_string())];
    let log = paths::lab_run_dir(&lab.name).join("wireguard-go.log");
    let pid = daemon::spawn_detached(&argv, &envs, &log)?;
    st.update_last(Resource::WgUserspace {
        iface,
        pid: Some(pid),
    })?;
    Ok(WgStarted {
        userspace: true,
        process: Some((pid, log)),
    })
}

/// Configures wireguard-go once its socket answers, then moves the interface into the lab.
fn finish_wireguard(
    lab: &Lab,
    w: &crate::config::Wireguard,
    started: WgStarted,
) -> Result<(), Error> {
    let iface = w.interface.clone();
    if let Some((pid, log)) = &started.process {
        wg::wait_for_uapi(&iface, *pid, Duration::from_secs(5), log)?;
        wg::configure(w, Backend::Userspace)?;
    }
    let ns = &lab.name;
    let nsfile =
        File::open(nsfs::netns_path(ns)).map_err(|e| Error::io(nsfs::netns_path(ns), e))?;
    with_netlink(None, move |h| async move {
        nl::move_to_netns(&h, &iface, nsfile.as_raw_fd()).await
    })
}

pub(crate) fn wireguard_go() -> String {
    std::env::var("LABNET_WIREGUARD_GO").unwrap_or_else(|_| "wireguard-go".into())
}

fn write_sysctl(path: &str, value: &str) -> Result<(), Error> {
    std::fs::write(path, value).map_err(|e| Error::io(path, e))
}

/// The resolv.conf `ip netns exec LAB` bind-mounts: labnet's DNS on the bridge address.
pub fn resolv_conf(lab: &Lab) -> String {
    format!(
        "# Written by labnet for lab {}; `labnet down {}` removes it.\nnameserver {}\nsearch {}\n",
        lab.name, lab.name, lab.bridge.address.addr, lab.dns.zone
    )
}

/// Keeps lookups inside the lab off the host's resolver (no systemd-resolved, no mdns).
pub const NSSWITCH_CONF: &str =
    "# Written by labnet: lab lookups use only /etc/hosts and the lab's DNS.\nhosts: files dns\n";

fn write_etc_netns(lab: &Lab, st: &mut LabState) -> Result<(), Error> {
    let dir = etc_netns_dir(&lab.name);
    if !dir.exists() {
        st.record(Resource::Dir { path: dir.clone() })?;
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    for (name, text) in [
        ("resolv.conf", resolv_conf(lab)),
        ("nsswitch.conf", NSSWITCH_CONF.to_string()),
    ] {
        let path = dir.join(name);
        let saved = if path.exists() {
            let saved = dir.join(format!("{name}.labnet-saved"));
            Some(saved)
        } else {
            None
        };
        st.record(Resource::File {
            path: path.clone(),
            saved: saved.clone(),
        })?;
        if let Some(s) = &saved {
            std::fs::rename(&path, s).map_err(|e| Error::io(&path, e))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

fn start_daemon(ns: &str, d: &DaemonSpec, st: &mut LabState) -> Result<(), Error> {
    st.record(Resource::Daemon {
        name: d.name.clone(),
        pid: None,
        exe: d.argv.join("\0"),
    })?;
    let dir = paths::lab_run_dir(ns);
    let pid = daemon::spawn_notify(
        &d.name,
        &d.argv,
        &dir.join(format!("{}.log", d.name)),
        &dir,
        DAEMON_READY,
    )?;
    st.update_last(Resource::Daemon {
        name: d.name.clone(),
        pid: Some(pid),
        exe: d.argv.join("\0"),
    })?;
    Ok(())
}

fn restart_dead_daemons(st: &mut LabState) -> Result<Vec<String>, Error> {
    let mut restarted = vec![];
    for i in 0..st.resources.len() {
        let Resource::Daemon { name, pid, exe } = st.resources[i].clone() else {
            continue;
        };
        if pid.is_some_and(|p| daemon_is_ours(p, &exe)) {
            continue;
        }
        let argv: Vec<String> = exe.split('\0').map(String::from).collect();
        let dir = paths::lab_run_dir(&st.lab);
        let pid = daemon::spawn_notify(
            &name,
            &argv,
            &dir.join(format!("{name}.log")),
            &dir,
            DAEMON_READY,
        )?;
        st.resources[i] = Resource::Daemon {
            name: name.clone(),
            pid: Some(pid),
            exe,
        };
        st.save()?;
        restarted.push(name);
    }
    Ok(restarted)
}

/// True when `pid` runs the exact command line labnet started (pids get reused).
pub fn daemon_is_ours(pid: u32, exe: &str) -> bool {
    daemon::process_alive(pid) && daemon::process_cmdline(pid).join("\0") == exe
}

/// Removes the lab described by the persisted state. Uses only the state, never today's config.
pub fn down(lab: &str) -> Result<DownOutcome, Error> {
    // A lab that never ran here: nothing to lock, nothing to create.
    let Some(lock) = LabLock::acquire_existing(lab, LOCK_WAIT)? else {
        return Ok(DownOutcome::NotUp);
    };
    let Some(mut st) = LabState::load(lab)? else {
        lock.remove()?;
        return Ok(DownOutcome::NotUp);
    };
    undo(&mut st)?;
    // Runtime leftovers (daemon logs, VM records). A failed `up` keeps them for its error
    // message to point at; `down` is the end of the lab. Leases stay in state_dir.
    let run = paths::lab_run_dir(lab);
    match std::fs::remove_dir_all(&run) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&run, e)),
    }
    lock.remove()?;
    Ok(DownOutcome::Removed)
}

/// Undoes every recorded resource in reverse order. "Already gone" counts as done. Resources
/// that could not be removed stay recorded (and the error says which), so a later `down` can
/// retry.
pub fn undo(st: &mut LabState) -> Result<(), Error> {
    let mut failed = vec![];
    let mut errors = vec![];
    // wireguard-go first: it only detaches from its (persistent) TUN, while nothing else
    // holds the rtnl lock. The lab's namespace last: the kernel tears it down (and every
    // link in it) asynchronously, holding the rtnl lock for tens of ms, which netlink
    // requests for the other steps would otherwise queue behind.
    let (first, rest): (Vec<Resource>, Vec<Resource>) = std::mem::take(&mut st.resources)
        .into_iter()
        .partition(|r| matches!(r, Resource::WgUserspace { .. }));
    let (last, rest): (Vec<Resource>, Vec<Resource>) = rest
        .into_iter()
        .partition(|r| matches!(r, Resource::Netns { .. }));
    st.resources = last;
    st.resources.extend(rest);
    for r in first {
        if let Err(e) = undo_one(&r) {
            errors.push(e.to_string());
            failed.push(r);
        }
    }
    while let Some(r) = st.resources.pop() {
        if let Err(e) = undo_one(&r) {
            errors.push(e.to_string());
            failed.push(r);
        }
    }
    if failed.is_empty() {
        st.remove_file()?;
        Ok(())
    } else {
        failed.reverse();
        st.resources = failed;
        st.complete = false;
        st.save()?;
        Err(Error::Other(format!(
            "could not remove everything: {}",
            errors.join("; ")
        )))
    }
}

/// Consecutive empty looks (5 ms apart) before a crashed `up`'s wireguard-go counts as gone:
/// spans a fork→exec that is slow under load.
const QUIET_CHECKS: u32 = 5;

fn undo_one(r: &Resource) -> Result<(), Error> {
    match r {
        Resource::Netns { name } => nsfs::delete_netns(name),
        Resource::RootLink { name } => {
            let n = name.clone();
            with_netlink(None, move |h| async move { nl::del_link(&h, &n).await }).map(|_| ())
        }
        Resource::WgUserspace { iface, pid } => {
            // A SIGKILL of `up` can land between fork and exec of wireguard-go, so a
            // recorded pid may still be labnet's copy, and an unrecorded one shows up only
            // once it has exec'd: keep looking until several checks in a row find nothing.
            // SIGKILL: wireguard-go's graceful exit takes ~40 ms and only removes what is
            // removed here anyway (its socket; the TUN dies with its file descriptor).
            let deadline = std::time::Instant::now() + Duration::from_millis(500);
            // The usual case, a finished `up`: the recorded pid is wireguard-go; no hunting.
            let ours = |p: u32| {
                daemon::process_comm(p).as_deref() == Some("wireguard-go")
                    && daemon::process_cmdline(p).last() == Some(iface)
            };
            let mut quiet = match pid {
                Some(p) if ours(*p) => {
                    daemon::kill_and_wait(*p, Duration::ZERO);
                    QUIET_CHECKS
                }
                _ => 0,
            };
            while quiet < QUIET_CHECKS && std::time::Instant::now() < deadline {
                let mut pids = daemon::find_processes("wireguard-go", iface);
                let mut pending = false;
                if let Some(p) = pid {
                    if daemon::process_alive(*p) {
                        if daemon::process_comm(*p).as_deref() == Some("wireguard-go") {
                            if !pids.contains(p) {
                                pids.push(*p);
                            }
                        } else {
                            pending = daemon::process_cmdline(*p).iter().any(|a| a == "up");
                        }
                    }
                }
                for p in &pids {
                    daemon::kill_and_wait(*p, Duration::ZERO);
                }
                quiet = if pids.is_empty() && !pending {
                    quiet + 1
                } else {
                    0
                };
                if quiet < QUIET_CHECKS {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            // The socket file outlives a SIGKILLed wireguard-go; remove it once nothing
            // answers on it (the listener closes with the process's last thread).
            let sock = wg::uapi_socket(iface);
            let until = std::time::Instant::now() + Duration::from_millis(300);
            while sock.exists() {
                if std::os::unix::net::UnixStream::connect(&sock).is_err() {
                    let _ = std::fs::remove_file(&sock);
                    break;
                }
                if std::time::Instant::now() > until {
                    return Err(Error::Other(format!(
                        "{} is still served by a process labnet did not start; not removed",
                        sock.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            // The TUN is persistent: it goes with the lab's namespace, or as the RootLink
            // recorded before it if it was never moved.
            Ok(())
        }
        // A table inside the lab goes with the lab's namespace (always undone last); only a
        // table in labnet's own namespace needs deleting.
        Resource::NftTable { netns: Some(_), .. } => Ok(()),
        Resource::NftTable {
            netns: None, name, ..
        } => nft::delete_table(None, name),
        Resource::Sysctl { path, old } => write_sysctl(path, old),
        Resource::Dir { path } => match std::fs::remove_dir(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Someone put their own files there: leave the directory (nothing lost).
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        },
        Resource::File { path, saved } => {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(path, e)),
            }
            if let Some(s) = saved {
                if s.exists() {
                    std::fs::rename(s, path).map_err(|e| Error::io(s, e))?;
                }
            }
            Ok(())
        }
        Resource::Daemon { pid, exe, .. } => {
            let mut pids: Vec<u32> = pid
                .iter()
                .copied()
                .filter(|p| daemon_is_ours(*p, exe))
                .collect();
            if pid.is_none() {
                pids.extend(find_by_cmdline(exe));
            }
            for p in pids {
                daemon::kill_and_wait(p, Duration::from_secs(5));
            }
            Ok(())
        }
    }
}

fn find_by_cmdline(exe: &str) -> Vec<u32> {
    daemon::processes_where(|argv| argv.join("\0") == exe)
}

/// True when the path exists (used by status for /etc/netns files).
pub fn file_matches(path: &Path, expected: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|s| s == expected)
}

#[cfg(test)]
mod tests {
    #[test]
    fn etc_netns_files_golden() {
        let lab = crate::Lab::embedded_default();
        let text = format!(
            "# resolv.conf\n{}# nsswitch.conf\n{}",
            super::resolv_conf(&lab),
            super::NSSWITCH_CONF
        );
        testkit::golden!("etc-netns-sepian.txt", &text);
    }
}
