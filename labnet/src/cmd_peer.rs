//! `labnet peer invite|add|list|remove`: labs of other hosts joined over WireGuard. The
//! config edits are model::invitation's, the live apply netns::peering's.
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use model::invitation::{self, Invitation, PeerEdit};
use netns::Lab;
use std::path::{Path, PathBuf};

use crate::ctx::Ctx;

pub const EXAMPLES: &str = "\
Examples (host A runs lab laba, host B lab labb; both have a [peering] section):
  B$ labnet peer invite labb --endpoint 203.0.113.7:51820 --out labb.invite
  A$ labnet peer add labb.invite --lab laba     # added to laba's config, applied live
  A$ labnet peer invite laba --out laba.invite  # and the other way round on B
  A$ labnet peer list laba --json               # handshake age, bytes, endpoint
  A$ labnet peer remove labb --lab laba
An invitation holds public data only (the peering link's public key, endpoint, subnet,
zone, DNS address); private keys never leave their host.";

#[derive(Subcommand)]
pub enum PeerCommand {
    /// Write this lab's invitation (public key, endpoint, subnet, zone, DNS) to a file.
    Invite(InviteArgs),
    /// Add (or update) the lab of an invitation as a peer: config edited, applied live.
    Add(AddArgs),
    /// List the lab's peers with handshake age, bytes and endpoint.
    List(ListArgs),
    /// Remove a peer from the config and from the running lab.
    Remove(RemoveArgs),
}

impl PeerCommand {
    pub fn needs_root(&self) -> Option<&'static str> {
        match self {
            PeerCommand::Invite(_) => Some("peer invite"),
            PeerCommand::Add(_) => Some("peer add"),
            PeerCommand::Remove(_) => Some("peer remove"),
            PeerCommand::List(_) => None,
        }
    }
}

#[derive(Args)]
pub struct InviteArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// HOST:PORT where the other host reaches this lab's peering link [default: peering.endpoint].
    #[arg(long, value_name = "HOST:PORT")]
    pub endpoint: Option<String>,
    /// The invitation file to write [default: LAB.invite in the current directory].
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct AddArgs {
    /// The invitation file (`labnet peer invite` on the other host wrote it).
    pub file: PathBuf,
}

#[derive(Args)]
pub struct ListArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Print JSON (one array of peers) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RemoveArgs {
    /// The peer lab's name (as `labnet peer list` shows it).
    pub name: String,
}

pub fn run(ctx: &Ctx, c: PeerCommand) -> Result<()> {
    match c {
        PeerCommand::Invite(a) => invite(ctx, a),
        PeerCommand::Add(a) => add(ctx, a),
        PeerCommand::List(a) => list(ctx, a),
        PeerCommand::Remove(a) => remove(ctx, a),
    }
}

fn invite(ctx: &Ctx, a: InviteArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    let key = netns::peering::public_key(&lab)?;
    let inv = Invitation::for_lab(&lab, &key, a.endpoint.as_deref());
    let text = inv.to_toml();
    // What we write must be what `peer add` reads (e.g. a bad --endpoint is caught here).
    Invitation::parse(&text, "the invitation").context("the invitation would not be valid")?;
    if inv.endpoint.is_none() {
        eprintln!(
            "labnet: warning: the invitation has no endpoint (no --endpoint, no peering.endpoint): the other lab cannot reach this one first"
        );
    }
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}.invite", lab.name)));
    std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "wrote {} (lab {}, subnet {}, zone {}); on the other host: labnet peer add {}",
        out.display(),
        inv.name,
        inv.subnet,
        inv.zone,
        out.display()
    );
    Ok(())
}

/// The file that holds the lab's config, and its text: the loaded file, or for a lab
/// running from the embedded default a new LABNET_CONFIG_DIR/LAB.toml to start from it.
fn config_file(lab: &Lab) -> Result<(PathBuf, String)> {
    let path = Path::new(&lab.source);
    if path.is_file() {
        let text = std::fs::read_to_string(path).with_context(|| lab.source.clone())?;
        return Ok((path.to_path_buf(), text));
    }
    let dir = model::config::config_dir();
    Ok((
        dir.join(format!("{}.toml", lab.name)),
        model::config::DEFAULT_LAB_TOML.to_string(),
    ))
}

fn write_config(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| d.display().to_string())?;
    }
    model::paths::write_atomic(path, text.as_bytes(), true)
        .with_context(|| format!("writing {}", path.display()))
}

/// Applies the edited config to the running lab and says what happened.
fn apply(name: &str, path: &Path) -> Result<()> {
    let lab = Lab::load(Some(name), Some(path))?;
    match netns::peering::apply(&lab)? {
        None => println!("lab {name} is not up: `labnet up {name}` applies it"),
        Some(r) => {
            let mut what = vec![];
            if r.link_created {
                let p = lab.peering.as_ref().map(|p| p.interface.as_str());
                what.push(format!("peering link {} created", p.unwrap_or("-")));
            }
            what.extend(r.routes_added.iter().map(|x| format!("route {x} added")));
            what.extend(
                r.routes_removed
                    .iter()
                    .map(|x| format!("route {x} removed")),
            );
            what.extend(r.dns.clone());
            if what.is_empty() {
                what.push("nothing to change".into());
            }
            println!("applied to the running lab {name}: {}", what.join(", "));
        }
    }
    Ok(())
}

fn add(ctx: &Ctx, a: AddArgs) -> Result<()> {
    let inv = Invitation::load(&a.file)?;
    let lab = ctx.load(None)?;
    if inv.name == lab.name {
        bail!(
            "{}: the invitation is lab {}'s own; run `peer add` on the other host",
            a.file.display(),
            lab.name
        );
    }
    let (path, text) = config_file(&lab)?;
    let file = path.display().to_string();
    let (new, edit) = invitation::add_peer(&text, &file, &lab.name, &inv)?;
    if edit != PeerEdit::Unchanged {
        write_config(&path, &new)?;
    }
    println!(
        "peer {} ({}, zone {}) {} {}",
        inv.name,
        inv.subnet,
        inv.zone,
        match edit {
            PeerEdit::Added => "added to",
            PeerEdit::Updated => "updated in",
            PeerEdit::Unchanged => "already in",
        },
        path.display()
    );
    apply(&lab.name, &path)
}

fn remove(ctx: &Ctx, a: RemoveArgs) -> Result<()> {
    let lab = ctx.load(None)?;
    let (path, text) = config_file(&lab)?;
    let file = path.display().to_string();
    let Some(new) = invitation::remove_peer(&text, &file, &lab.name, &a.name)? else {
        bail!("lab {} has no peer {:?} (in {file})", lab.name, a.name);
    };
    write_config(&path, &new)?;
    println!("peer {} removed from {file}", a.name);
    apply(&lab.name, &path)
}

fn list(ctx: &Ctx, a: ListArgs) -> Result<()> {
    let lab = ctx.load(a.lab.as_deref())?;
    let rows = netns::peering::list(&lab)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<18} {:<22} {:<12} {:>10} {:>10}",
        "PEER", "SUBNET", "ENDPOINT", "HANDSHAKE", "RX", "TX"
    );
    for r in rows {
        println!(
            "{:<16} {:<18} {:<22} {:<12} {:>10} {:>10}",
            r.name,
            r.subnet,
            r.endpoint.as_deref().unwrap_or("-"),
            match (r.on_device, r.latest_handshake_secs_ago) {
                (false, _) => "not up".to_string(),
                (true, None) => "never".to_string(),
                (true, Some(s)) => format!("{s} s ago"),
            },
            r.rx_bytes,
            r.tx_bytes
        );
    }
    Ok(())
}
