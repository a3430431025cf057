//! `labnet`: the command line. Wiring only: every subcommand parses its arguments and calls
//! into one library crate. Each subcommand lives in its own module (cmd_*.rs); what they
//! share (choosing the lab, how a failure is reported) is in ctx.rs and report.rs.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

mod cmd_dhcpd;
mod cmd_dns;
mod cmd_help;
mod cmd_image;
mod cmd_kernel;
mod cmd_lab;
mod cmd_logs;
mod cmd_mount;
mod cmd_peer;
mod cmd_test;
mod cmd_units;
mod cmd_vm;
mod ctx;
mod report;

use ctx::{Ctx, GlobalArgs};

const AFTER_HELP: &str = "\
Choosing the lab: the positional LAB, or --lab LAB (any command), or $LABNET_LAB; else the
lab named in --config FILE; else the embedded default lab \"sepian\". `labnet list` shows them all.

Exit status: 0 success; 1 failure (printed as `error: …` with its causes); 2 bad usage, a bad
argument (the option named) or a bad config (file and field named); 3 `status`/`doctor` found
the lab not as configured; 4 needs root (CAP_NET_ADMIN) or permission denied; 5 a host tool
labnet runs is missing (its Debian package named); 6 a process labnet started or needs is not
running (a daemon died before READY, a VM is not running, a share's virtiofsd died); 7 the VM,
image or system is not in a state for that (a VM already running, or running for `vm rm`,
started without --gdb or --multipath, a `vm path` already failed/active; an image that exists;
a name `up` needs taken: the message says what to do). `vm run` and `vm ssh` exit with the
guest command's status (see `labnet vm run --help`); `vm start --daemonize` with its
supervisor's if that exited before the VM ran.

Examples:
  labnet up                          # the default lab: bridge br0 192.168.0.1/24, DHCP, DNS
  labnet status --json               # each component vs the config
  labnet vm run --kernel arch/x86/boot/bzImage -- uname -r
  labnet leases --lab uxlab          # DHCP leases of lab uxlab
  labnet completions bash > /etc/bash_completion.d/labnet";

#[derive(Parser)]
#[command(
    name = "labnet",
    version,
    about = "Private lab networks for kernel test VMs",
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the lab (namespace, uplink, bridge, NAT, DHCP, DNS). Idempotent.
    #[command(after_help = cmd_lab::UP_EXAMPLES)]
    Up(cmd_lab::UpArgs),
    /// Remove everything `up` created for the lab, and only that.
    Down(cmd_lab::DownArgs),
    /// Show each component of the lab and whether it matches the config (exit 3 if not).
    #[command(after_help = cmd_lab::STATUS_EXAMPLES)]
    Status(cmd_lab::StatusArgs),
    /// Diagnose why the lab cannot reach the bounce box, hand out addresses, resolve names, or
    /// forward traffic (exit 3 when something is wrong, like status).
    Doctor(cmd_lab::DoctorArgs),
    /// List every lab (configured, running, or both) with its state.
    List(cmd_lab::ListArgs),
    /// Show a lab's daemon and VM logs, with timestamps.
    #[command(after_help = cmd_logs::EXAMPLES)]
    Logs(cmd_logs::LogsArgs),
    /// Run the DHCP server for a lab (inside the lab namespace).
    Dhcpd(cmd_dhcpd::DhcpdArgs),
    /// List DHCP leases of a lab (and which VM holds each).
    #[command(after_help = cmd_dhcpd::LEASES_EXAMPLES)]
    Leases(cmd_dhcpd::LeasesArgs),
    /// Run the DNS server for a lab (inside the lab namespace).
    Dns(cmd_dns::DnsArgs),
    /// Print the address of a VM or host of the lab, by name (what the lab's DNS answers).
    #[command(after_help = cmd_dns::RESOLVE_EXAMPLES)]
    Resolve(cmd_dns::ResolveArgs),
    /// Build, list and remove Debian root images for long-lived VMs (`vm start --image`).
    #[command(subcommand)]
    Image(cmd_image::ImageCommand),
    /// Launch and manage QEMU VMs in the lab.
    #[command(subcommand)]
    Vm(cmd_vm::VmCommand),
    /// Print a CephFS kernel mount (command line, fstab, unit, JSON) from `ceph mon dump`.
    #[command(after_help = cmd_mount::MOUNT_EXAMPLES)]
    Mount(cmd_mount::MountArgs),
    /// Join labs of other hosts over WireGuard: invitations, peers, their tunnels.
    #[command(subcommand, after_help = cmd_peer::EXAMPLES)]
    Peer(cmd_peer::PeerCommand),
    /// Print or merge the labnet guest kernel config fragment (VM devices, PVH, CephFS).
    #[command(after_help = cmd_kernel::KCONFIG_EXAMPLES)]
    KernelConfig(cmd_kernel::KernelConfigArgs),
    /// Build a kernel tree into a bootable bzImage + vmlinux with that fragment.
    #[command(subcommand)]
    Kernel(cmd_kernel::KernelCommand),
    /// Run a file of kernel test targets, each as its own VM in the lab: PASS/FAIL/TIMEOUT/PANIC
    /// per target, JUnit XML (exit 1 when one did not pass).
    #[command(after_help = cmd_test::EXAMPLES)]
    Test(cmd_test::TestArgs),
    /// Print, install or remove the generated systemd units.
    #[command(subcommand)]
    Units(cmd_units::UnitsCommand),
    /// Print a shell completion script.
    #[command(after_help = cmd_help::COMPLETIONS_EXAMPLES)]
    Completions(cmd_help::CompletionsArgs),
    /// Print the man page (roff), or write one page per command into a directory.
    #[command(after_help = cmd_help::MAN_EXAMPLES)]
    Man(cmd_help::ManArgs),
}

impl Command {
    /// Commands that supervise something (a daemon, a VM) and must always clean up, so a
    /// closed stdout must not kill them (see report::die_quietly_on_closed_stdout).
    fn supervises(&self) -> bool {
        match self {
            Command::Dhcpd(_) | Command::Dns(_) | Command::Test(_) => true,
            Command::Vm(v) => v.supervises(),
            _ => false,
        }
    }

    /// What to call the command in "needs root" messages, for commands that change the
    /// system's network; None for the others.
    fn needs_root(&self) -> Option<&'static str> {
        match self {
            Command::Up(_) => Some("up"),
            Command::Down(_) => Some("down"),
            // Not the daemons: under systemd (labnet-dhcpd@/labnet-dns@) they run as a
            // DynamicUser= with only CAP_NET_BIND_SERVICE (+ CAP_NET_RAW), already placed in
            // the lab by NetworkNamespacePath=; they fail on their own, naming what, when
            // they cannot enter the namespace or bind.
            Command::Vm(v) => v.needs_root(),
            Command::Peer(p) => p.needs_root(),
            Command::Test(_) => Some("test"),
            _ => None,
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx::new(&cli.global);
    if let Some(what) = cli.command.needs_root() {
        report::require_root(what)?;
    }
    match cli.command {
        Command::Up(a) => cmd_lab::up(&ctx, a),
        Command::Down(a) => cmd_lab::down(&ctx, a),
        Command::Status(a) => cmd_lab::status(&ctx, a),
        Command::Doctor(a) => cmd_lab::doctor(&ctx, a),
        Command::List(a) => cmd_lab::list(&ctx, a),
        Command::Logs(a) => cmd_logs::logs(&ctx, a),
        Command::Dhcpd(a) => cmd_dhcpd::dhcpd(&ctx, a),
        Command::Leases(a) => cmd_dhcpd::leases(&ctx, a),
        Command::Dns(a) => cmd_dns::dns(&ctx, a),
        Command::Resolve(a) => cmd_dns::resolve(&ctx, a),
        Command::Image(c) => cmd_image::run(c),
        Command::Vm(c) => cmd_vm::run(&ctx, c),
        Command::Mount(a) => cmd_mount::mount(a),
        Command::Peer(c) => cmd_peer::run(&ctx, c),
        Command::KernelConfig(a) => cmd_kernel::kernel_config(a),
        Command::Kernel(c) => cmd_kernel::run(c),
        Command::Test(a) => cmd_test::test(&ctx, a),
        Command::Units(c) => cmd_units::run(&ctx, c),
        Command::Completions(a) => cmd_help::completions(Cli::command(), a),
        Command::Man(a) => cmd_help::man(Cli::command(), a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.command.supervises() {
        report::die_quietly_on_closed_stdout();
    }
    if cli.global.debug && std::env::var_os("RUST_BACKTRACE").is_none() {
        // SAFETY: single-threaded still; anyhow reads it when the first error is made.
        unsafe { std::env::set_var("RUST_BACKTRACE", "1") };
    }
    let debug = cli.global.debug;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report::report(&e, debug),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every argument says what it is for (`--help`, the man page and
    /// the completions all show it).
    #[test]
    fn every_argument_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                if a.get_help().is_none() && !["help", "version"].contains(&a.get_id().as_str()) {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for s in cmd.get_subcommands() {
                if s.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = vec![];
        let mut cmd = Cli::command();
        cmd.build();
        walk(&cmd, "labnet", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:#?}");
    }
}
