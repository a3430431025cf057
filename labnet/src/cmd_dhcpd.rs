//! `labnet dhcpd` and `labnet leases` (owned by the dhcpd work).
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args)]
pub struct DhcpdArgs {
    /// Lab name.
    pub lab: String,
}

#[derive(Args)]
pub struct LeasesArgs {
    /// Lab name.
    pub lab: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn dhcpd(_a: DhcpdArgs) -> Result<()> {
    bail!("not implemented yet")
}

pub fn leases(_a: LeasesArgs) -> Result<()> {
    bail!("not implemented yet")
}
