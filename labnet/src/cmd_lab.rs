//! `labnet up|down|status|doctor`.
use anyhow::{bail, Result};
use clap::Args;

#[derive(Args)]
pub struct UpArgs {
    pub lab: Option<String>,
}
#[derive(Args)]
pub struct DownArgs {
    pub lab: Option<String>,
}
#[derive(Args)]
pub struct StatusArgs {
    pub lab: Option<String>,
    #[arg(long)]
    pub json: bool,
}
#[derive(Args)]
pub struct DoctorArgs {
    pub lab: Option<String>,
}

pub fn up(_a: UpArgs) -> Result<()> {
    bail!("not implemented yet")
}
pub fn down(_a: DownArgs) -> Result<()> {
    bail!("not implemented yet")
}
pub fn status(_a: StatusArgs) -> Result<()> {
    bail!("not implemented yet")
}
pub fn doctor(_a: DoctorArgs) -> Result<()> {
    bail!("not implemented yet")
}
