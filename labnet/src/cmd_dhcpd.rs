//! `labnet dhcpd LAB` (the lab's DHCP server) and `labnet leases [LAB]`; see the `dhcpd` crate.
use std::collections::HashMap;

use anyhow::{Context, Result};
use clap::Args;
use model::lease::{Lease, LeaseState};

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
    /// Release the leases of VMs that no longer exist (and forget their reservations).
    #[arg(long)]
    pub prune: bool,
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
    lease: Lease,
    /// The labnet VM whose reservation holds this MAC.
    vm: Option<String>,
    /// That VM: running, stopped (still known to `vm list`) or gone (removed, or a finished
    /// throwaway run); `leases --prune` and `vm rm` release a gone VM's lease.
    vm_state: Option<&'static str>,
}

/// running / stopped / gone for VM `name` of the lab.
fn vm_state(lab: &str, name: &str) -> &'static str {
    match vm::state::VmState::load(lab, name) {
        Ok(Some(st)) if st.status != vm::state::Status::Stopped && st.qemu_alive() => "running",
        Ok(Some(_)) => "stopped",
        _ => "gone",
    }
}

/// MAC (aa:bb:..) -> VM name, from the reservations `labnet vm` registers.
fn vm_reservations(lab: &str) -> HashMap<String, String> {
    let (res, _) = dhcpd::server::load_reservations_dir(&netns::paths::reservations_dir(lab));
    res.into_iter()
        .filter_map(|r| Some((model::lease::hex_colon(&r.mac), r.vm?)))
        .collect()
}

/// The active leases of `macs`: taken before their reservations go, since the lab's dhcpd
/// releases them as soon as it sees a reservation gone.
pub fn active_leases_of(lab: &str, macs: &[String]) -> Result<Vec<Lease>> {
    let now = vm::state::now();
    Ok(model::lease::load(&netns::paths::state_dir(lab))?
        .into_iter()
        .filter(|l| macs.contains(&l.mac) && l.state_at(now) == LeaseState::Active)
        .collect())
}

/// Releases `leases` (from [`active_leases_of`]) once their reservations are gone. With the
/// lab up its dhcpd does it (it watches the reservations dir) and this waits for that; with
/// the lab down nothing serves the lease log, so the records are written here.
pub fn release_leases(lab: &str, leases: Vec<Lease>) -> Result<Vec<Lease>> {
    if leases.is_empty() {
        return Ok(leases);
    }
    let dir = netns::paths::state_dir(lab);
    let macs: Vec<String> = leases.iter().map(|l| l.mac.clone()).collect();
    if netns::paths::netns_path(lab).exists() {
        let t0 = std::time::Instant::now();
        while !active_leases_of(lab, &macs)?.is_empty() {
            if t0.elapsed() > std::time::Duration::from_secs(10) {
                anyhow::bail!(
                    "lab {lab}'s dhcpd did not release {} within 10 s (is it running? `labnet status {lab}`)",
                    leases.iter().map(|l| l.ip.to_string()).collect::<Vec<_>>().join(", ")
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    } else {
        let (mut log, _) = dhcpd::store::LeaseLog::open(&dir)?;
        let now = vm::state::now();
        let records: Vec<Lease> = leases
            .iter()
            .map(|l| Lease {
                state: LeaseState::Released,
                expires: now,
                ..l.clone()
            })
            .collect();
        log.commit(&records)?;
    }
    Ok(leases)
}

fn prune(lab: &str) -> Result<()> {
    let gone: Vec<(String, String)> = vm_reservations(lab)
        .into_iter()
        .filter(|(_, vm)| vm_state(lab, vm) == "gone")
        .collect();
    let macs: Vec<String> = gone.iter().map(|(m, _)| m.clone()).collect();
    let active = active_leases_of(lab, &macs)?;
    for (_, vm) in &gone {
        let f = model::reservation::file(lab, vm);
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("{}", f.display())),
        }
    }
    let released = release_leases(lab, active)?;
    for l in &released {
        let vm = gone
            .iter()
            .find(|(m, _)| *m == l.mac)
            .map(|(_, v)| v.as_str());
        println!(
            "released {} ({}, VM {} is gone)",
            l.ip,
            l.mac,
            vm.unwrap_or("?")
        );
    }
    if released.is_empty() {
        println!("no leases of gone VMs in lab {lab}");
    }
    Ok(())
}

pub fn leases(ctx: &Ctx, a: LeasesArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    if a.prune {
        return prune(&lab.name);
    }
    let dir = netns::paths::state_dir(&lab.name);
    let read = model::lease::read(&dir)?;
    // A torn last line is the dhcpd appending right now; anything else is damage to say.
    for bad in read.skipped.iter().filter(|b| !b.why.is_torn()) {
        eprintln!(
            "warning: {} {bad}: skipped",
            model::lease::log_path(&dir).display()
        );
    }
    let leases = read.leases;
    let vms = vm_reservations(&lab.name);
    let rows: Vec<Row> = leases
        .into_iter()
        .map(|l| {
            let vm = vms.get(&l.mac).cloned();
            Row {
                vm_state: vm.as_deref().map(|v| vm_state(&lab.name, v)),
                vm,
                lease: l,
            }
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<15} {:<17} {:<9} {:<20} {:<20} {:<16} {:<18} CLIENT-ID",
        "ADDRESS", "MAC", "STATE", "START", "EXPIRES", "HOSTNAME", "VM"
    );
    for r in rows {
        let l = &r.lease;
        println!(
            "{:<15} {:<17} {:<9} {:<20} {:<20} {:<16} {:<18} {}",
            l.ip.to_string(),
            l.mac,
            l.state.to_string(),
            dhcpd::utc_text(l.start),
            dhcpd::utc_text(l.expires),
            l.hostname.as_deref().unwrap_or("-"),
            match (&r.vm, r.vm_state) {
                (Some(v), Some("gone")) => format!("{v} (gone)"),
                (Some(v), _) => v.clone(),
                _ => "-".into(),
            },
            l.client_id.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
