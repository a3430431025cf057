//! `labnet vm` (owned by the vm work).
use anyhow::{bail, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum VmCommand {
    /// List VMs.
    List,
}

pub fn run(_c: VmCommand) -> Result<()> {
    bail!("not implemented yet")
}
