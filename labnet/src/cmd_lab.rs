//! `labnet up|down|status|doctor`: load the lab config, call netns, print the outcome.
use anyhow::{Context, Result};
use clap::Args;
use netns::lab::{DaemonSpec, DownOutcome, UpOptions, UpOutcome};
use netns::Lab;

use crate::ctx::Ctx;

pub const UP_EXAMPLES: &str = "\
Examples:
  labnet up                                   # the embedded default lab \"sepian\"
  labnet up uxlab --config ./uxlab.toml       # a lab of your own
  labnet up --no-daemons                      # the network only (systemd runs dhcpd and dns)
The daemons' logs: `labnet logs LAB` (files under /run/labnet/LAB/).";

pub const STATUS_EXAMPLES: &str = "\
Examples:
  labnet status               # exit 0: as configured; 3: something differs
  labnet status uxlab --json";

#[derive(Args)]
pub struct UpArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Build the network only; do not start dhcpd and dns (systemd units run them).
    #[arg(long)]
    pub no_daemons: bool,
}

#[derive(Args)]
pub struct DownArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
}

#[derive(Args)]
pub struct StatusArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DoctorArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Print the findings as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON (one array of labs) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The argv of a lab daemon as `up` starts it: this same binary, entering the namespace.
fn daemon_argv(sub: &str, lab: &Lab, config: Option<&std::path::Path>) -> Result<Vec<String>> {
    let exe = std::env::current_exe().context("cannot find the labnet binary")?;
    let mut argv = vec![
        exe.display().to_string(),
        sub.into(),
        lab.name.clone(),
        "--enter-netns".into(),
    ];
    if let Some(c) = config {
        let abs = std::fs::canonicalize(c).with_context(|| format!("{}", c.display()))?;
        argv.extend(["--config".into(), abs.display().to_string()]);
    }
    Ok(argv)
}

pub fn up(ctx: &Ctx, a: UpArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    let mut opts = UpOptions::default();
    if !a.no_daemons {
        for sub in ["dhcpd", "dns"] {
            opts.daemons.push(DaemonSpec {
                name: sub.into(),
                argv: daemon_argv(sub, &lab, ctx.config())?,
            });
        }
    }
    let t = std::time::Instant::now();
    match netns::lab::up(&lab, &opts).with_context(|| format!("labnet up {}", lab.name))? {
        UpOutcome::Created => {
            println!(
                "lab {} is up: bridge {} {}{} ({} ms)",
                lab.name,
                lab.bridge.name,
                lab.bridge.address,
                uplink_words(&lab),
                t.elapsed().as_millis()
            );
            if !a.no_daemons {
                println!(
                    "dhcpd and dns log to {}/{{dhcpd,dns}}.log: labnet logs {} [-f]",
                    netns::paths::lab_run_dir(&lab.name).display(),
                    lab.name
                );
            }
        }
        UpOutcome::AlreadyUp {
            repaired,
            restarted,
        } if repaired.is_empty() && restarted.is_empty() => {
            println!("lab {} is already up; nothing changed", lab.name)
        }
        UpOutcome::AlreadyUp {
            repaired,
            restarted,
        } => {
            println!(
                "lab {} was up but had drifted from its config; repaired:",
                lab.name
            );
            for r in &repaired {
                println!("  {r}");
            }
            for d in &restarted {
                println!("  {d} was not running: restarted");
            }
        }
    }
    Ok(())
}

fn uplink_words(lab: &Lab) -> String {
    match &lab.uplink {
        netns::Uplink::None => ", isolated (no uplink)".into(),
        netns::Uplink::Wireguard(w) => {
            format!(", default route via {} on {}", w.gateway, w.interface)
        }
        netns::Uplink::Host(h) => format!(", NAT to the host via {}", h.host_interface),
    }
}

pub fn down(ctx: &Ctx, a: DownArgs) -> Result<()> {
    let name = ctx.lab_name(a.lab.as_deref())?;
    // VMs first: disk guests get an ACPI power-down before their network disappears.
    for (vm, result) in vm::manage::stop_all(&name, std::time::Duration::from_secs(10)) {
        match result {
            Ok(how) => println!("vm {vm}: {how}"),
            Err(e) => eprintln!("vm {vm}: {e}"),
        }
    }
    match netns::lab::down(&name).with_context(|| format!("labnet down {name}"))? {
        DownOutcome::Removed => println!("lab {name} is down"),
        DownOutcome::NotUp => println!(
            "lab {name} is not up (no {}); nothing to do",
            netns::paths::lab_state_file(&name).display()
        ),
    }
    Ok(())
}

pub fn status(ctx: &Ctx, a: StatusArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    let report = netns::status::status(&lab)?;
    print_verdict(a.json, &report, report.to_text(), report.ok)
}

pub fn doctor(ctx: &Ctx, a: DoctorArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    let report = netns::doctor::doctor(&lab)?;
    print_verdict(a.json, &report, report.to_text(), report.ok)
}

/// Prints a status or doctor report (JSON or its text) and ends with 3 when it found the lab
/// not as configured, so scripts can tell "up but wrong" from a failure to look.
fn print_verdict(json: bool, report: &impl serde::Serialize, text: String, ok: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{text}");
    }
    if !ok {
        std::process::exit(crate::report::exit::NOT_AS_CONFIGURED.into());
    }
    Ok(())
}

/// One lab as `labnet list` shows it.
#[derive(serde::Serialize)]
struct LabRow {
    name: String,
    /// up (every step of `up` done, namespace present), partial (a record but not all of
    /// it: `up` again or `down`), down, or invalid (its config does not load).
    state: &'static str,
    /// The config file (or "<embedded default>"), or the error loading it.
    config: String,
    bridge: Option<String>,
    address: Option<String>,
    /// VMs running in it.
    vms: usize,
}

/// Every lab labnet knows of: a config in the config dir, a record of `up` in the run dir,
/// and the embedded default.
fn known_labs() -> Vec<String> {
    let mut names = vec![Lab::embedded_default().name];
    let conf = std::env::var_os("LABNET_CONFIG_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| netns::config::CONFIG_DIR.into());
    for (dir, ext) in [(conf, "toml"), (netns::paths::run_dir(), "json")] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == ext) {
                if let Some(stem) = p.file_stem().and_then(|s| s.to_str()) {
                    names.push(stem.to_string());
                }
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

pub fn list(_ctx: &Ctx, a: ListArgs) -> Result<()> {
    let mut rows = vec![];
    for name in known_labs() {
        let record = netns::state::LabState::load(&name).ok().flatten();
        let loaded = Lab::load(Some(&name), None);
        let up = record.is_some();
        let state = match (&loaded, &record) {
            (_, Some(r)) if r.complete && netns::paths::netns_path(&name).exists() => "up",
            (_, Some(_)) => "partial",
            (Err(_), None) => "invalid",
            (Ok(_), None) => "down",
        };
        let vms = if up {
            vm::state::list(&name)
                .unwrap_or_default()
                .iter()
                .filter(|v| v.status != vm::state::Status::Stopped && v.qemu_alive())
                .count()
        } else {
            0
        };
        rows.push(match loaded {
            Ok(l) => LabRow {
                name,
                state,
                config: l.source.clone(),
                bridge: Some(l.bridge.name.clone()),
                address: Some(l.bridge.address.to_string()),
                vms,
            },
            Err(e) => LabRow {
                name,
                state,
                config: e.to_string(),
                bridge: None,
                address: None,
                vms,
            },
        });
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:<12} {:<18} {:>3}  CONFIG",
        "LAB", "STATE", "BRIDGE", "ADDRESS", "VMS"
    );
    for r in rows {
        println!(
            "{:<16} {:<8} {:<12} {:<18} {:>3}  {}",
            r.name,
            r.state,
            r.bridge.as_deref().unwrap_or("-"),
            r.address.as_deref().unwrap_or("-"),
            r.vms,
            r.config.lines().next().unwrap_or("")
        );
    }
    Ok(())
}
