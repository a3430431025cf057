//! `labnet up|down|status|doctor`: load the lab config, call netns, print the outcome.
use anyhow::{Context, Result};
use clap::Args;
use netns::lab::{DaemonSpec, DownOutcome, UpOptions, UpOutcome};
use netns::Lab;
use std::path::PathBuf;

#[derive(Args)]
pub struct UpArgs {
    /// Lab name (default: the embedded default lab, "sepian").
    pub lab: Option<String>,
    /// Lab config file (default: /etc/labnet/LAB.toml, else the embedded default).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Build the network only; do not start dhcpd and dns (systemd units run them).
    #[arg(long)]
    pub no_daemons: bool,
}

#[derive(Args)]
pub struct DownArgs {
    pub lab: Option<String>,
    /// Only used to find the lab's name when LAB is not given.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Args)]
pub struct StatusArgs {
    pub lab: Option<String>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct DoctorArgs {
    pub lab: Option<String>,
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn load(lab: Option<&str>, config: Option<&std::path::Path>) -> Result<Lab> {
    Ok(Lab::load(lab, config)?)
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

pub fn up(a: UpArgs) -> Result<()> {
    let lab = load(a.lab.as_deref(), a.config.as_deref())?;
    let mut opts = UpOptions::default();
    if !a.no_daemons {
        for sub in ["dhcpd", "dns"] {
            opts.daemons.push(DaemonSpec {
                name: sub.into(),
                argv: daemon_argv(sub, &lab, a.config.as_deref())?,
            });
        }
    }
    let t = std::time::Instant::now();
    match netns::lab::up(&lab, &opts).with_context(|| format!("labnet up {}", lab.name))? {
        UpOutcome::Created => println!(
            "lab {} is up: bridge {} {}{} ({} ms)",
            lab.name,
            lab.bridge.name,
            lab.bridge.address,
            uplink_words(&lab),
            t.elapsed().as_millis()
        ),
        UpOutcome::AlreadyUp { restarted } if restarted.is_empty() => {
            println!("lab {} is already up; nothing changed", lab.name)
        }
        UpOutcome::AlreadyUp { restarted } => println!(
            "lab {} was up; restarted {}",
            lab.name,
            restarted.join(", ")
        ),
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

pub fn down(a: DownArgs) -> Result<()> {
    let name = match (a.lab, a.config) {
        (Some(l), _) => l,
        (None, c) => load(None, c.as_deref())?.name,
    };
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

pub fn status(a: StatusArgs) -> Result<()> {
    let lab = load(a.lab.as_deref(), a.config.as_deref())?;
    let report = netns::status::status(&lab)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    if !report.ok {
        std::process::exit(3);
    }
    Ok(())
}

pub fn doctor(a: DoctorArgs) -> Result<()> {
    let lab = load(a.lab.as_deref(), a.config.as_deref())?;
    let report = netns::doctor::doctor(&lab)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    if !report.ok {
        std::process::exit(1);
    }
    Ok(())
}
