//! `labnet dns LAB`: the lab's DNS server (forwarder + local zone), see the `dns` crate.
use std::path::PathBuf;

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
    // The dns crate reports skipped hosts lines and failures through `tracing`: to stderr
    // (the journal under systemd), warnings and up unless LABNET_LOG says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_env("LABNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
    if a.enter_netns {
        // Before any thread exists: setns only moves the calling thread.
        model::netns::enter(&lab.name)?;
    }
    let cfg = dns::Config::from_lab(&lab);
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
