//! `labnet mount` and `labnet kernel-config` (owned by the mountgen work).
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args)]
pub struct MountArgs {}

#[derive(Args)]
pub struct KernelConfigArgs {}

pub fn mount(_a: MountArgs) -> Result<()> {
    bail!("not implemented yet")
}

pub fn kernel_config(_a: KernelConfigArgs) -> Result<()> {
    bail!("not implemented yet")
}
