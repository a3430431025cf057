//! `labnet dns` (owned by the dns work).
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args)]
pub struct DnsArgs {
    /// Lab name.
    pub lab: String,
}

pub fn dns(_a: DnsArgs) -> Result<()> {
    bail!("not implemented yet")
}
