//! `labnet`: the command line. Wiring only: every subcommand parses its arguments and calls
//! into one library crate. Each subcommand lives in its own module (cmd_*.rs).
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
use anyhow::Result;
use clap::{Parser, Subcommand};

mod cmd_dhcpd;
mod cmd_dns;
mod cmd_lab;
mod cmd_mount;
mod cmd_units;
mod cmd_vm;

#[derive(Parser)]
#[command(
    name = "labnet",
    version,
    about = "Private lab networks for kernel test VMs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab (namespace, uplink, bridge, NAT, DHCP, DNS). Idempotent.
    Up(cmd_lab::UpArgs),
    /// Remove everything `up` created for the lab, and only that.
    Down(cmd_lab::DownArgs),
    /// Show each component of the lab and whether it matches the config.
    Status(cmd_lab::StatusArgs),
    /// Diagnose why the lab cannot reach the bounce box, resolve names, or forward traffic.
    Doctor(cmd_lab::DoctorArgs),
    /// Run the DHCP server for a lab (inside the lab namespace).
    Dhcpd(cmd_dhcpd::DhcpdArgs),
    /// List DHCP leases of a lab.
    Leases(cmd_dhcpd::LeasesArgs),
    /// Run the DNS server for a lab (inside the lab namespace).
    Dns(cmd_dns::DnsArgs),
    /// Launch and manage QEMU VMs in the lab.
    #[command(subcommand)]
    Vm(cmd_vm::VmCommand),
    /// Print a CephFS kernel mount (command line, fstab, unit, JSON) from `ceph mon dump`.
    Mount(cmd_mount::MountArgs),
    /// Print or merge the CephFS kernel config fragment.
    KernelConfig(cmd_mount::KernelConfigArgs),
    /// Print, install or remove the generated systemd units.
    #[command(subcommand)]
    Units(cmd_units::UnitsCommand),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(a) => cmd_lab::up(a),
        Command::Down(a) => cmd_lab::down(a),
        Command::Status(a) => cmd_lab::status(a),
        Command::Doctor(a) => cmd_lab::doctor(a),
        Command::Dhcpd(a) => cmd_dhcpd::dhcpd(a),
        Command::Leases(a) => cmd_dhcpd::leases(a),
        Command::Dns(a) => cmd_dns::dns(a),
        Command::Vm(c) => cmd_vm::run(c),
        Command::Mount(a) => cmd_mount::mount(a),
        Command::KernelConfig(a) => cmd_mount::kernel_config(a),
        Command::Units(c) => cmd_units::run(c),
    }
}
