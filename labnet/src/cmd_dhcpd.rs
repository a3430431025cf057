//! `labnet dhcpd LAB` (the lab's DHCP server) and `labnet leases [LAB]`; see the `dhcpd` crate.
use std::collections::HashMap;

use anyhow::{Context, Result};
use clap::Args;

use crate::ctx::Ctx;

pub const LEASES_EXAMPLES: &str = "\
Examples:
  labnet leases                      # the default lab's leases, with the VM holding each
  labnet leases uxlab --json | jq -r '.[] | select(.state == \"active\") | .ip'";

#[derive(Args)]
pub struct DhcpdArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Enter the lab's network namespace (/run/netns/LAB) first. systemd uses
    /// NetworkNamespacePath= instead.
    #[arg(long)]
    pub enter_netns: bool,
}

#[derive(Args)]
pub struct LeasesArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Print JSON (one array of leases) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn dhcpd(ctx: &Ctx, a: DhcpdArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    if a.enter_netns {
        // Before the runtime exists: setns only moves the calling thread.
        dhcpd::daemon::enter_netns(&netns::paths::netns_path(&lab.name))
            .context("entering the lab's network namespace")?;
    }
    let cfg = dhcpd::ServerConfig::from_lab(&lab);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(dhcpd::run(cfg))?;
    Ok(())
}

#[derive(serde::Serialize)]
struct Row {
    #[serde(flatten)]
    lease: dhcpd::Lease,
    vm: Option<String>,
}

pub fn leases(ctx: &Ctx, a: LeasesArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    let leases = dhcpd::leases::load(&netns::paths::state_dir(&lab.name))?;
    // MAC -> VM name, from the reservations `labnet vm` registers.
    let (res, _) = dhcpd::server::load_reservations_dir(&netns::paths::reservations_dir(&lab.name));
    let vms: HashMap<String, String> = res
        .into_iter()
        .filter_map(|r| Some((dhcpd::leases::hex_colon(&r.mac), r.vm?)))
        .collect();
    let rows: Vec<Row> = leases
        .into_iter()
        .map(|l| Row {
            vm: vms.get(&l.mac).cloned(),
            lease: l,
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<15} {:<17} {:<9} {:<20} {:<20} {:<16} {:<12} CLIENT-ID",
        "ADDRESS", "MAC", "STATE", "START", "EXPIRES", "HOSTNAME", "VM"
    );
    for r in rows {
        let l = &r.lease;
        println!(
            "{:<15} {:<17} {:<9} {:<20} {:<20} {:<16} {:<12} {}",
            l.ip.to_string(),
            l.mac,
            l.state.to_string(),
            dhcpd::utc_text(l.start),
            dhcpd::utc_text(l.expires),
            l.hostname.as_deref().unwrap_or("-"),
            r.vm.as_deref().unwrap_or("-"),
            l.client_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
