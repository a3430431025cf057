//! `labnet dhcpd LAB` (the lab's DHCP server) and `labnet leases [LAB]`; see the `dhcpd` crate.
use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct DhcpdArgs {
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

#[derive(Args)]
pub struct LeasesArgs {
    /// Lab name (default: the embedded default lab).
    pub lab: Option<String>,
    /// Lab config file (default: /etc/labnet/LAB.toml, else the embedded default lab).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print JSON (one array of leases) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn dhcpd(a: DhcpdArgs) -> Result<()> {
    let lab = netns::Lab::load(Some(&a.lab), a.config.as_deref())?;
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

pub fn leases(a: LeasesArgs) -> Result<()> {
    let lab = netns::Lab::load(a.lab.as_deref(), a.config.as_deref())?;
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
            utc(l.start),
            utc(l.expires),
            l.hostname.as_deref().unwrap_or("-"),
            r.vm.as_deref().unwrap_or("-"),
            l.client_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` UTC (civil-from-days, no date crate needed).
fn utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}
