//! `labnet dns LAB`: the lab's DNS server (forwarder + local zone), see the `dns` crate.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct DnsArgs {
    /// Lab name.
    pub lab: String,
    /// Lab config file (default: /etc/labnet/LAB.toml, else the embedded default lab).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Enter the lab's network namespace (/run/netns/LAB) first. systemd uses
    /// NetworkNamespacePath= instead.
    #[arg(long)]
    pub enter_netns: bool,
}

pub fn dns(a: DnsArgs) -> Result<()> {
    let lab = netns::Lab::load(Some(&a.lab), a.config.as_deref())?;
    // The dns crate (and hickory, per request) report through `tracing`: to stderr (the
    // journal under systemd, else the log file, capped and rotated), warnings and up unless
    // LABNET_LOG says otherwise, each callsite rate-limited (a client controls how often
    // they fire).
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("LABNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(daemonlog::RateLimitLayer::new())
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(daemonlog::LogWriter)
                .without_time(),
        )
        .try_init();
    if a.enter_netns {
        // Before any thread exists: setns only moves the calling thread.
        let path = netns::paths::netns_path(&lab.name);
        let f = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering network namespace {}", path.display()))?;
    }
    let cfg = dns::Config {
        listen: (lab.bridge.address.addr, 53).into(),
        zone: lab.dns.zone.clone(),
        bridge: lab.bridge.address.addr,
        prefix: lab.bridge.address.prefix,
        upstreams: lab.effective_upstreams(),
        cache_size: lab.dns.cache_size,
        timeout: Duration::from_millis(lab.dns.timeout_ms.max(1)),
        hosts_file: netns::paths::state_dir(&lab.name).join("hosts"),
    };
    if cfg.upstreams.is_empty() {
        eprintln!(
            "labnet dns: lab {} has no DNS upstreams (dns.upstreams unset, no WireGuard uplink): only {}. is answered",
            lab.name, cfg.zone
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
            "labnet dns: lab {}: zone {}. on {} (udp+tcp), upstreams {:?}, cache {}, timeout {:?}, hosts {}",
            lab.name,
            cfg.zone,
            cfg.listen,
            cfg.upstreams,
            cfg.cache_size,
            cfg.timeout,
            cfg.hosts_file.display()
        );
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        };
        dns::server::serve(
            cfg,
            bound,
            || {
                dns::notify::ready();
            },
            shutdown,
        )
        .await?;
        dns::notify::notify("STOPPING=1");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}
