//! `labnet units` (owned by the units work).
use anyhow::{bail, Result};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum UnitsCommand {
    /// Print the generated units.
    Print,
}

pub fn run(_c: UnitsCommand) -> Result<()> {
    bail!("not implemented yet")
}
