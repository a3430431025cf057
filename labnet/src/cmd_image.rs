//! `labnet image build|list|rm`: parse, call the `image` crate, print.
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build a Debian root disk image (mmdebstrap + mkfs.ext4 -d) for `vm start --image`.
    Build(BuildArgs),
    /// List the images (name, suite, kernel, size, date).
    List(ListArgs),
    /// Remove an image.
    Rm(RmArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// Image name (default: the suite).
    pub name: Option<String>,
    /// Debian suite (codename) to install.
    #[arg(long, default_value = "bookworm")]
    pub suite: String,
    /// File system size (the disk is sparse / qcow2: only what is used takes space).
    #[arg(long, default_value = "4G")]
    pub size: String,
    /// Extra Debian package (repeatable).
    #[arg(long = "package", value_name = "P")]
    pub packages: Vec<String>,
    /// Disk format: qcow2 (compact, what `vm start --image` overlays) or raw.
    #[arg(long, default_value = "qcow2")]
    pub format: String,
    /// Debian mirror URL (default: the one the host's apt uses).
    #[arg(long)]
    pub mirror: Option<String>,
    /// The kmount binary to install (default: `kmount` next to this labnet binary). Build it
    /// static: see the README's kmount section.
    #[arg(long)]
    pub kmount: Option<PathBuf>,
    /// Build without kmount.
    #[arg(long, conflicts_with = "kmount")]
    pub no_kmount: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print JSON (one array of manifests, each with its dir) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RmArgs {
    /// The image's name.
    pub name: String,
}

pub fn run(c: ImageCommand) -> Result<()> {
    match c {
        ImageCommand::Build(a) => build(a),
        ImageCommand::List(a) => list(a),
        ImageCommand::Rm(a) => {
            let dir = image::store::remove(&a.name)?;
            println!("{}: removed {}", a.name, dir.display());
            Ok(())
        }
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let kmount = if a.no_kmount {
        None
    } else {
        match a.kmount {
            Some(k) => Some(k),
            None => {
                let k = std::env::current_exe()?.with_file_name("kmount");
                if !k.is_file() {
                    anyhow::bail!(
                        "--kmount: no kmount next to {} (build it: see the README's kmount section), or pass --no-kmount",
                        std::env::current_exe()?.display()
                    );
                }
                Some(k)
            }
        }
    };
    let o = image::build::Options {
        name: a.name.unwrap_or_else(|| a.suite.clone()),
        suite: a.suite,
        mirror: a.mirror,
        size_bytes: image::parse_size(&a.size)?,
        packages: a.packages,
        format: image::build::Format::parse(&a.format)?,
        kmount,
    };
    let img = image::build::build(&o, &mut |line| eprintln!("{}: {line}", o.name))?;
    let m = &img.manifest;
    println!(
        "{}: {} ({}, kernel {}, {} packages) built in {:.0} s",
        m.name,
        img.disk().display(),
        m.format,
        m.kernel_release,
        m.packages.len(),
        m.build_secs
    );
    Ok(())
}

fn list(a: ListArgs) -> Result<()> {
    let imgs = image::store::list()?;
    if a.json {
        let v: Vec<serde_json::Value> = imgs
            .iter()
            .map(|i| {
                let mut v = serde_json::to_value(&i.manifest).expect("manifest serializes");
                v["dir"] = i.dir.display().to_string().into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<10} {:<18} {:>6} {:<6} CREATED",
        "NAME", "SUITE", "KERNEL", "SIZE", "FORMAT"
    );
    for i in imgs {
        let m = &i.manifest;
        println!(
            "{:<16} {:<10} {:<18} {:>5}G {:<6} {}",
            m.name,
            m.suite,
            m.kernel_release,
            m.size_bytes >> 30,
            m.format,
            m.created
        );
    }
    Ok(())
}
