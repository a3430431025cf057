//! `labnet dns LAB`: the lab's DNS server (forwarder + local zone), see the `dns` crate.

use anyhow::{Context, Result};
use clap::Args;

use crate::ctx::Ctx;

#[derive(Args)]
pub struct DnsArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Enter the lab's network namespace (/run/netns/LAB) first. systemd uses
    /// NetworkNamespacePath= instead.
    #[arg(long)]
    pub enter_netns: bool,
}

pub fn dns(ctx: &Ctx, a: DnsArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    // The dns crate (and hickory, per request) report through `tracing`: to stderr (the
    // journal under systemd, else the log file, capped and rotated), warnings and up unless
    // LABNET_LOG says otherwise, each callsite rate-limited (a client controls how often
    // they fire).
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LABNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    use tracing_subscriber::fmt::layer;
    // The journal stamps lines itself; a log file (`up` by hand) needs the time in the line.
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(daemonlog::RateLimitLayer::new())
        .with(journal.then(|| layer().with_writer(daemonlog::LogWriter).without_time()))
        .with((!journal).then(|| layer().with_writer(daemonlog::LogWriter)))
        .try_init();
    if a.enter_netns {
        // Before any thread exists: setns only moves the calling thread.
        model::netns::enter(&lab.name)?;
    }
    let cfg = dns::Config::from_lab(&lab)
        .with_context(|| format!("lab {} ({})", lab.name, lab.source))?;
    if cfg.upstreams.is_empty() {
        eprintln!(
            "{}labnet dns: lab {} has no DNS upstreams (dns.upstreams unset, no WireGuard uplink): only {}. is answered",
            dhcpd::log_stamp(),
            lab.name,
            cfg.zone
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        // Handlers first: a SIGTERM right after READY=1 must still mean a clean exit.
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let bound = dns::server::bind(&cfg)?;
        eprintln!(
            "{}labnet dns: lab {}: zone {}. on {} (udp+tcp), upstreams {:?}, cache {}, timeout {:?}, hosts {}",
            dhcpd::log_stamp(),
            lab.name,
            cfg.zone,
            cfg.listen,
            cfg.upstreams,
            cfg.cache_size,
            cfg.timeout,
            cfg.hosts_file.display()
        );
        // The forward table (peer labs' zones and reverse zones), one line per zone.
        for line in dns::forward::table(&cfg.forwards).lines() {
            eprintln!("{}labnet dns: lab {}: {line}", dhcpd::log_stamp(), lab.name);
        }
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        };
        // SIGHUP: the config is read again and its [[peers]] become the forward table
        // (`labnet peer add|remove` sends it); anything else in it needs a restart.
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let (reload_tx, reloads) = tokio::sync::mpsc::unbounded_channel();
        let lab_name = lab.name.clone();
        let reloading = async {
            while hup.recv().await.is_some() {
                let stamp = dhcpd::log_stamp();
                let fresh = ctx
                    .load(Some(&lab_name))
                    .and_then(|l| Ok(dns::Config::from_lab(&l)?));
                let forwards = match fresh {
                    Ok(c) => c.forwards,
                    Err(e) => {
                        eprintln!("{stamp}labnet dns: lab {lab_name}: reload refused, the forward table is unchanged: {e:#}");
                        continue;
                    }
                };
                let table = dns::forward::table(&forwards);
                let (done_tx, done) = tokio::sync::oneshot::channel();
                if reload_tx.send((forwards, done_tx)).is_err() {
                    break;
                }
                match done.await {
                    Ok(Ok(())) => {
                        eprintln!("{stamp}labnet dns: lab {lab_name}: reloaded the forward table ({} zones)", table.lines().count());
                        for line in table.lines() {
                            eprintln!("{stamp}labnet dns: lab {lab_name}: {line}");
                        }
                    }
                    Ok(Err(e)) => eprintln!("{stamp}labnet dns: lab {lab_name}: reload refused, the forward table is unchanged: {e}"),
                    Err(_) => break,
                }
            }
            std::future::pending::<()>().await
        };
        let serving = dns::server::serve_reloadable(
            cfg,
            bound,
            || {
                dns::notify::ready();
            },
            shutdown,
            reloads,
        );
        tokio::select! {
            r = serving => r?,
            _ = reloading => {}
        }
        dns::notify::notify("STOPPING=1");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

pub const RESOLVE_EXAMPLES: &str = "\
Names are the lab's DNS names (VM names, DHCP client hostnames, reservations), with or
without the zone (vm1 or vm1.lab). The lab's network lives in its namespace, so reach the
address from there; for ssh from the host, `labnet vm ssh-config >> ~/.ssh/config`.

Examples:
  labnet resolve vm1                     # 192.168.0.123
  ip netns exec sepian ping -c1 $(labnet resolve vm1)
Exit status 1 when the name is not known in the lab.";

#[derive(Args)]
pub struct ResolveArgs {
    /// The name to look up (NAME or NAME.ZONE).
    pub name: String,
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
}

/// What the lab's DNS answers for NAME in its zone: the hosts file dhcpd writes (active
/// leases with a hostname), the config's reservations, and a running VM's lease.
pub fn resolve(ctx: &Ctx, a: ResolveArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    let zone = lab.dns.zone.trim_end_matches('.').to_ascii_lowercase();
    let wanted = a.name.trim_end_matches('.').to_ascii_lowercase();
    let name = wanted
        .strip_suffix(&format!(".{zone}"))
        .unwrap_or(&wanted)
        .to_string();
    let hosts = std::fs::read_to_string(netns::paths::state_dir(&lab.name).join("hosts"))
        .unwrap_or_default();
    let (entries, _) = dns::hosts::parse(&hosts, &zone);
    let ip = entries
        .iter()
        .find(|e| e.name == name)
        .map(|e| e.ip)
        .or_else(|| {
            lab.dhcp
                .reservations
                .iter()
                .find(|r| {
                    r.hostname
                        .as_deref()
                        .is_some_and(|h| h.eq_ignore_ascii_case(&name))
                })
                .and_then(|r| r.ip)
        })
        .or_else(|| crate::cmd_vm::running_vm_ip(&lab.name, &name));
    match ip {
        Some(ip) => {
            println!("{ip}");
            Ok(())
        }
        None => anyhow::bail!(
            "{} is not known in lab {} (no lease, reservation or running VM of that name; see `labnet leases {}`)",
            a.name,
            lab.name,
            lab.name
        ),
    }
}
