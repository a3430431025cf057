//! `labnet units print|install|remove`: systemd units for a lab (see the `units` crate).
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

use crate::ctx::Ctx;

#[derive(Subcommand)]
pub enum UnitsCommand {
    /// Print the units `install` would write (or, with --for-service, a drop-in that puts a
    /// service of yours into the lab).
    Print(PrintArgs),
    /// Write the units to /etc/systemd/system (or under --root) and reload systemd.
    Install(InstallArgs),
    /// Stop the lab's units (when systemd runs) and delete what `install` wrote for the lab.
    Remove(RemoveArgs),
}

#[derive(Args)]
pub struct GenArgs {
    /// Lab name [default: see `labnet --help`]. The units pass the absolute path of its
    /// config file (--config, or /etc/labnet/LAB.toml) on.
    pub lab: Option<String>,
    /// The labnet binary the units run (default: this binary).
    #[arg(long, value_name = "PATH")]
    pub labnet_bin: Option<PathBuf>,
}

#[derive(Args)]
pub struct PrintArgs {
    #[command(flatten)]
    pub gen: GenArgs,
    /// Print instead the drop-in for your own NAME.service: NetworkNamespacePath= of the lab,
    /// the lab's resolv.conf/nsswitch.conf bound over /etc, After=/BindsTo= the lab unit.
    /// Save it as /etc/systemd/system/NAME.service.d/labnet-LAB.conf.
    #[arg(long, value_name = "NAME.service")]
    pub for_service: Option<String>,
}

#[derive(Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub gen: GenArgs,
    /// Also enable the lab unit at boot (multi-user.target).
    #[arg(long)]
    pub enable: bool,
    /// Root directory to install under, like `systemctl --root` (units go to ROOT/etc/systemd/system).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Root directory the units were installed under.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

pub fn run(ctx: &Ctx, c: UnitsCommand) -> Result<()> {
    match c {
        UnitsCommand::Print(PrintArgs {
            gen,
            for_service: Some(service),
        }) => {
            let lab = ctx.lab_name(gen.lab.as_deref())?;
            let f = units::service_dropin(&lab, &service)?;
            print!(
                "{}",
                units::render(&[f], &Path::new("/").join(units::UNIT_DIR))
            );
            Ok(())
        }
        UnitsCommand::Print(PrintArgs { gen: a, .. }) => {
            let (_, files) = generate(ctx, &a)?;
            print!(
                "{}",
                units::render(&files, &Path::new("/").join(units::UNIT_DIR))
            );
            Ok(())
        }
        UnitsCommand::Install(a) => install(ctx, a),
        UnitsCommand::Remove(a) => remove(ctx, a),
    }
}

fn generate(ctx: &Ctx, a: &GenArgs) -> Result<(netns::Lab, Vec<units::UnitFile>)> {
    let lab = ctx.load(a.lab.as_deref())?;
    // The file the lab came from (--config, or /etc/labnet/LAB.toml), absolute.
    let config = if let Some(c) = ctx.config() {
        Some(std::fs::canonicalize(c).with_context(|| format!("{}", c.display()))?)
    } else if Path::new(&lab.source).is_absolute() {
        Some(PathBuf::from(&lab.source))
    } else if Path::new(&lab.source).exists() {
        Some(std::fs::canonicalize(&lab.source).with_context(|| lab.source.clone())?)
    } else {
        None
    };
    let labnet_bin = match &a.labnet_bin {
        Some(p) => {
            std::path::absolute(p).with_context(|| format!("--labnet-bin {}", p.display()))?
        }
        None => {
            let exe = std::env::current_exe()
                .context("cannot find the labnet binary; pass --labnet-bin")?;
            if exe.components().any(|c| c.as_os_str() == "target") {
                eprintln!(
                    "labnet: warning: the units will run {} (a build tree); install labnet (e.g. cargo install --path labnet) or pass --labnet-bin",
                    exe.display()
                );
            }
            exe
        }
    };
    let files = units::generate(&lab, &units::Options { labnet_bin, config })?;
    Ok((lab, files))
}

fn install(ctx: &Ctx, a: InstallArgs) -> Result<()> {
    let (lab, files) = generate(ctx, &a.gen)?;
    let changes = units::install(&a.root, &lab.name, &files, a.enable)?;
    for c in &changes {
        println!("{c}");
    }
    let unit = units::lab_unit(&lab.name);
    if units::systemd_running(&a.root) {
        units::systemctl(&["daemon-reload"])?;
        println!("systemd reloaded; start the lab with: systemctl start {unit}");
    } else {
        println!("systemd is not running here (or --root is not /); nothing reloaded");
    }
    Ok(())
}

fn remove(ctx: &Ctx, a: RemoveArgs) -> Result<()> {
    let name = match ctx.given(a.lab.as_deref())? {
        Some(l) => l,
        None => netns::Lab::embedded_default().name,
    };
    let running = units::systemd_running(&a.root);
    let unit = units::lab_unit(&name);
    if running && units::installed_labs(&a.root)?.contains(&name) {
        // Stopping the lab unit stops its daemons too (BindsTo=) and runs `labnet down`.
        units::systemctl(&["stop", &unit])?;
    }
    let changes = units::remove(&a.root, &name)?;
    if changes.is_empty() {
        println!(
            "no units of lab {name} under {}",
            a.root.join(units::UNIT_DIR).display()
        );
    }
    for c in &changes {
        println!("{c}");
    }
    if running && !changes.is_empty() {
        units::systemctl(&["daemon-reload"])?;
    }
    Ok(())
}
