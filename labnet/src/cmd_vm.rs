//! `labnet vm start|run|list|ip|ssh|console|stop`: parse, call the `vm` crate, print.
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use vm::initramfs::RunCmd;
use vm::qemu::{Machine, Share};

use crate::ctx::Ctx;

#[derive(Subcommand)]
pub enum VmCommand {
    /// Boot a VM in the lab (tap on the lab bridge, stable MAC + DHCP reservation).
    #[command(after_help = START_HELP)]
    Start(StartArgs),
    /// Boot a throwaway VM with the generated initramfs, run CMD in it, print its output and
    /// exit with its exit status.
    #[command(after_help = RUN_HELP)]
    Run(RunArgs),
    /// Forget a stopped VM: its state and logs, its DHCP reservation and leases (--disk: its
    /// overlay too).
    Rm(RmArgs),
    /// List the lab's VMs (name, state, pid, MAC, tap, IP, uptime).
    List(ListArgs),
    /// Print a VM's leased address.
    Ip(IpArgs),
    /// ssh to a VM from inside the lab namespace.
    Ssh(SshArgs),
    /// Attach this terminal to a VM's serial console (Ctrl-] detaches).
    Console(NameArgs),
    /// Stop a VM (ACPI power-down, then kill after --timeout).
    Stop(StopArgs),
}

const RUN_HELP: &str = "\
Exit status:
  N     the guest command's own exit status (0-255)
  124   --timeout expired (like timeout(1))
  125   the guest never reached the command, or died while it ran: a kernel panic (named in
        the message), an init failure, no /init; the message gives the serial log's path
  126   QEMU could not start (bad QEMU arguments, missing binary, ...)
  1     labnet itself failed before booting (bad arguments, lab not up, ...)
A throwaway VM (no --name) leaves nothing behind, except the serial log of a failed run
(under /run/labnet/LAB/failed-runs/); `labnet vm rm NAME` forgets a named one.

On a terminal, progress (booting, the accelerator and why, the lease, the command starting)
goes to stderr; --quiet or a non-terminal stderr silences it. stdout is the command's output.

Examples:
  labnet vm run --kernel arch/x86/boot/bzImage -- uname -r
  labnet vm run --kernel ~/linux/arch/x86/boot/bzImage --module ceph --timeout 300 -- sh -c 'modprobe ceph && echo ok'
  labnet vm run --kernel /boot/vmlinuz-$(uname -r) --append rdinit=/bin/sh -- true   # exit 125 on a panic";

const START_HELP: &str = "\
Examples:
  labnet vm start --name k1 --kernel arch/x86/boot/bzImage --drive arch.qcow2 --overlay --daemonize
  labnet vm start --kernel arch/x86/boot/bzImage --share ~/src:src   # console on this terminal
  labnet vm ip k1 --wait 60 && labnet vm ssh k1 -- uname -r";

impl VmCommand {
    /// Stays with a VM (or a terminal) until it ends; see main.rs.
    pub fn supervises(&self) -> bool {
        matches!(
            self,
            VmCommand::Start(_) | VmCommand::Run(_) | VmCommand::Console(_) | VmCommand::Ssh(_)
        )
    }

    pub fn needs_root(&self) -> Option<&'static str> {
        match self {
            VmCommand::Start(_) => Some("vm start"),
            VmCommand::Run(_) => Some("vm run"),
            VmCommand::Stop(_) => Some("vm stop"),
            VmCommand::Rm(_) => Some("vm rm"),
            VmCommand::Console(_) => Some("vm console"),
            VmCommand::Ssh(_) => Some("vm ssh"),
            _ => None,
        }
    }
}

#[derive(Args, Clone)]
pub struct BootArgs {
    /// VM name: hostname, DNS name, and what its stable MAC is derived from (default: vm1, vm2, ... for
    /// start; run1, run2, ... for run).
    #[arg(long)]
    pub name: Option<String>,
    /// Kernel image (bzImage).
    #[arg(long)]
    pub kernel: PathBuf,
    /// Use this initrd instead of the generated initramfs.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Disk image or block device (virtio-blk) instead of the generated initramfs.
    #[arg(long)]
    pub drive: Option<PathBuf>,
    /// Extra kernel command line (after labnet's console=ttyS0 ...).
    #[arg(long)]
    pub append: Option<String>,
    /// Guest memory (QEMU -m syntax: 512M, 1G, ...).
    #[arg(long, default_value = "1G")]
    pub mem: String,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// q35 or microvm (default: microvm for the generated initramfs, q35 with --drive/--initrd).
    #[arg(long)]
    pub machine: Option<String>,
    /// auto (KVM only when /dev/kvm really works), kvm or tcg.
    #[arg(long, default_value = "auto")]
    pub accel: String,
    /// Boot a per-VM qcow2 overlay over --drive (the base is never written).
    #[arg(long)]
    pub overlay: bool,
    /// Share a host directory over 9p: DIR[:TAG] (mounted at /mnt/TAG by the generated init).
    #[arg(long = "share", value_name = "DIR[:TAG]")]
    pub shares: Vec<String>,
    /// One image seen through two SCSI paths (same serial/wwn), for dm-multipath tests.
    #[arg(long)]
    pub multipath: Option<PathBuf>,
    /// The guest kernel's modules dir (lib/modules/VERSION): virtio/9p/scsi modules are
    /// loaded from it (guessed for .../boot/vmlinuz-VERSION).
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// Extra module to load (with its dependencies), e.g. --module ceph.
    #[arg(long = "module", value_name = "NAME")]
    pub extra_modules: Vec<String>,
    /// Add a host file or directory to the generated initramfs: HOST_PATH:/GUEST/PATH.
    #[arg(long = "add", value_name = "HOST:GUEST")]
    pub add: Vec<String>,
    /// The QEMU binary (default: qemu-system-x86_64 in PATH).
    #[arg(long)]
    pub qemu: Option<PathBuf>,
    /// Kill the VM after this many seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// microvm: boot an uncompressed vmlinux through PVH (the build tree's, or one unpacked
    /// from the bzImage), without ACPI: ~2.5 s faster under TCG. Devices are then found only
    /// through virtio_mmio.device= on the command line, which needs
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y (Debian's kernel lacks it: no eth0).
    #[arg(long)]
    pub pvh: bool,
    /// No progress messages on stderr (they are shown only on a terminal anyway).
    #[arg(long, short)]
    pub quiet: bool,
}

impl BootArgs {
    /// Progress on stderr: only for a person watching.
    fn progress(&self) -> bool {
        !self.quiet && nix::unistd::isatty(std::io::stderr()).unwrap_or(false)
    }
}

#[derive(Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub boot: BootArgs,
    /// Shell command line to run in the guest (generated initramfs), then power off.
    #[arg(long)]
    pub run: Option<String>,
    /// console: attach the serial console to this terminal; file: only log it
    /// (default: console on a terminal, else file). Always logged to the VM dir.
    #[arg(long)]
    pub serial: Option<String>,
    /// Return once the VM runs; a detached supervisor stays with it.
    #[arg(long)]
    pub daemonize: bool,
    /// Extra QEMU arguments.
    #[arg(last = true)]
    pub qemu_args: Vec<String>,
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub boot: BootArgs,
    /// Also show the guest's boot console on stderr.
    #[arg(long, short)]
    pub verbose: bool,
    /// The command (argv) to run in the guest.
    #[arg(last = true, required = true)]
    pub cmd: Vec<String>,
}

#[derive(Args)]
pub struct ListArgs {
    /// Lab name [default: see `labnet --help`].
    pub lab: Option<String>,
    /// Print JSON (one array of VMs) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct NameArgs {
    /// The VM's name.
    pub name: String,
}

#[derive(Args)]
pub struct IpArgs {
    /// The VM's name.
    pub name: String,
    /// Wait up to this many seconds for the lease.
    #[arg(long, default_value_t = 0)]
    pub wait: u64,
}

#[derive(Args)]
pub struct SshArgs {
    /// The VM's name.
    pub name: String,
    /// Remote user.
    #[arg(long, short = 'l', default_value = "root")]
    pub user: String,
    /// Command to run (default: a login shell).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

#[derive(Args)]
pub struct RmArgs {
    /// The VM's name.
    pub name: String,
    /// Also delete its disk overlay (state dir vms/NAME/overlay.qcow2).
    #[arg(long)]
    pub disk: bool,
}

#[derive(Args)]
pub struct StopArgs {
    /// The VM's name.
    pub name: String,
    /// Seconds to wait for the power-down before killing QEMU.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

pub fn run(ctx: &Ctx, c: VmCommand) -> Result<()> {
    match c {
        VmCommand::Start(a) => start(ctx, a),
        VmCommand::Run(a) => run_cmd(ctx, a),
        VmCommand::List(a) => list(ctx, a),
        VmCommand::Ip(a) => ip(ctx, a),
        VmCommand::Ssh(a) => ssh(ctx, a),
        VmCommand::Console(a) => Ok(vm::manage::console(&ctx.lab_name(None)?, &a.name)?),
        VmCommand::Rm(a) => rm(ctx, a),
        VmCommand::Stop(a) => {
            let lab = ctx.lab_name(None)?;
            let how = vm::manage::stop(&lab, &a.name, Duration::from_secs(a.timeout))?;
            println!("{}: stopped ({how})", a.name);
            Ok(())
        }
    }
}

fn options(ctx: &Ctx, b: &BootArgs, name: String) -> Result<vm::supervise::Options> {
    let lab = ctx.lab_name(None)?;
    let mut o = vm::supervise::Options::new(&lab, &name, &b.kernel);
    o.config = ctx.config.clone();
    o.initrd = b.initrd.clone();
    o.drive = b.drive.clone();
    o.append = b.append.clone();
    o.mem = b.mem.clone();
    o.cpus = b.cpus;
    o.machine = match &b.machine {
        Some(m) => Machine::parse(m)?,
        None if b.drive.is_some() || b.initrd.is_some() => Machine::Q35,
        None => Machine::Microvm,
    };
    o.accel = vm::accel::Choice::parse(&b.accel)?;
    o.overlay = b.overlay;
    o.shares = b
        .shares
        .iter()
        .map(|s| Share::parse(s))
        .collect::<Result<_, _>>()?;
    o.multipath = b.multipath.clone();
    o.modules = b.modules.clone();
    o.extra_modules = b.extra_modules.clone();
    o.add = b
        .add
        .iter()
        .map(|s| vm::initramfs::parse_add(s))
        .collect::<Result<_, _>>()?;
    o.qemu = b.qemu.clone();
    o.timeout = b.timeout.map(Duration::from_secs);
    o.pvh = b.pvh;
    Ok(o)
}

/// The first PREFIX<N> without a running VM. Names (and so MACs and leases) are reused, so
/// repeated anonymous runs do not use up the DHCP range.
fn default_name(lab: &str, prefix: &str) -> String {
    (1..)
        .map(|i| format!("{prefix}{i}"))
        .find(|n| {
            // Free: nobody holds its lock (a VM being prepared holds it before it has state).
            matches!(vm::state::try_lock(lab, n), Ok(Some(_)))
        })
        .expect("an endless range of names")
}

fn banner(p: &vm::supervise::Prepared, st: &vm::state::VmState) {
    for n in &p.notes {
        eprintln!("{}: {n}", st.name);
    }
    eprintln!(
        "{}: running in lab {} (qemu pid {}, {} {}); tap {} on {}, mac {}",
        st.name,
        st.lab,
        st.qemu_pid.unwrap_or(0),
        st.machine,
        p.accel_reason,
        st.tap,
        p.bridge,
        st.mac
    );
    eprintln!(
        "{}: serial log {}; console: labnet vm console {} --lab {}",
        st.name,
        p.spec.serial_log().display(),
        st.name,
        st.lab
    );
}

fn start(ctx: &Ctx, a: StartArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    let name = a
        .boot
        .name
        .clone()
        .unwrap_or_else(|| default_name(&lab, "vm"));
    let mut o = options(ctx, &a.boot, name.clone())?;
    o.run = a.run.clone().map(RunCmd::Shell);
    o.extra_qemu = a.qemu_args.clone();
    if a.daemonize {
        vm::supervise::precheck(&o)?;
        // Re-run this command, minus --daemonize and with the name fixed, as the supervisor.
        let mut args: Vec<std::ffi::OsString> = vec![];
        let mut after_dashdash = false;
        for arg in std::env::args_os().skip(1) {
            if arg == "--" {
                after_dashdash = true;
            }
            if !after_dashdash && arg == "--daemonize" {
                continue;
            }
            args.push(arg.clone());
            if !after_dashdash && arg == "start" && a.boot.name.is_none() {
                args.extend(["--name".into(), name.clone().into()]);
            }
        }
        if a.serial.is_none() {
            let pos = args.iter().position(|x| x == "--").unwrap_or(args.len());
            args.splice(pos..pos, ["--serial".into(), "file".into()]);
        }
        let st = vm::supervise::daemonize(&args, &lab, &name)?;
        println!(
            "{}: running in lab {} (qemu pid {}, supervisor pid {}); tap {}, mac {}; serial log {}",
            st.name,
            st.lab,
            st.qemu_pid.unwrap_or(0),
            st.supervisor_pid,
            st.tap,
            st.mac,
            st.dir.join("serial.log").display()
        );
        return Ok(());
    }
    let attach = match a.serial.as_deref() {
        Some("console") => true,
        Some("file") => false,
        Some(x) => bail!("--serial {x:?}: expected console or file"),
        None => nix::unistd::isatty(std::io::stdin()).unwrap_or(false),
    };
    let progress = a.boot.progress();
    let p = vm::supervise::prepare(&o).map_err(vm_failure)?;
    if progress {
        booting(&p);
    }
    let out = vm::supervise::launch(
        &p,
        vm::supervise::Mode::Start {
            attach_console: attach,
        },
        &mut |st| {
            if progress || attach {
                banner(&p, st)
            }
        },
    )
    .map_err(vm_failure)?;
    if progress || attach {
        eprintln!("{name}: {}", out.exit);
    }
    Ok(())
}

/// The exit status a failed `vm run`/`vm start` carries (the contract in RUN_HELP).
fn vm_failure(e: vm::Error) -> anyhow::Error {
    let code = match &e {
        vm::Error::TimedOut(_) => 124,
        vm::Error::GuestFailed(_) => 125,
        vm::Error::QemuStart(_) => 126,
        vm::Error::MissingProgram { program, .. } if program.starts_with("qemu") => 126,
        _ => 1,
    };
    crate::report::with_code(code, e)
}

/// Progress: what is booted, how, and why that accelerator.
fn booting(p: &vm::supervise::Prepared) {
    let name = &p.spec.name;
    for n in &p.notes {
        eprintln!("{name}: {n}");
    }
    eprintln!(
        "{name}: booting {} on {} in lab {}; accelerator {}",
        p.spec.kernel.display(),
        p.spec.machine.as_str(),
        p.lab,
        p.accel_reason
    );
}

fn run_cmd(ctx: &Ctx, a: RunArgs) -> Result<()> {
    let name = match &a.boot.name {
        Some(n) => n.clone(),
        None => default_name(&ctx.lab_name(None)?, "run"),
    };
    let mut o = options(ctx, &a.boot, name)?;
    o.run = Some(RunCmd::Argv(a.cmd.clone()));
    o.ephemeral = a.boot.name.is_none();
    let p = vm::supervise::prepare(&o).map_err(vm_failure)?;
    let verbose = a.verbose;
    let progress = a.boot.progress();
    if progress && !verbose {
        booting(&p);
    }
    let out = vm::supervise::launch(
        &p,
        vm::supervise::Mode::Run { verbose, progress },
        &mut |st| {
            if verbose {
                banner(&p, st)
            }
        },
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let out = out.map_err(vm_failure)?;
    // launch() returns Ok only with the command's status.
    std::process::exit(out.rc.unwrap_or(125));
}

fn rm(ctx: &Ctx, a: RmArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    for what in vm::manage::remove(&lab, &a.name, a.disk)? {
        println!("{}: removed {what}", a.name);
    }
    let overlay = netns::paths::state_dir(&lab)
        .join("vms")
        .join(&a.name)
        .join("overlay.qcow2");
    if !a.disk && overlay.exists() {
        println!(
            "{}: kept its disk {} (--disk removes it)",
            a.name,
            overlay.display()
        );
    }
    Ok(())
}

/// The active lease of `mac` granted (or renewed) since `since` (unix secs): a lease left
/// from the VM's previous boot does not count.
fn lease_ip(lab: &str, mac: &str, since: u64) -> Option<Ipv4Addr> {
    let leases = dhcpd::leases::load(&netns::paths::state_dir(lab)).ok()?;
    let now = vm::state::now();
    leases
        .into_iter()
        .filter(|l| {
            l.mac.eq_ignore_ascii_case(mac)
                && l.start >= since
                && l.state_at(now) == dhcpd::leases::LeaseState::Active
        })
        .max_by_key(|l| l.start)
        .map(|l| l.ip)
}

fn list(ctx: &Ctx, a: ListArgs) -> Result<()> {
    let lab = ctx.lab_name(a.lab.as_deref())?;
    let vms = vm::manage::list(&lab, &|mac, since| lease_ip(&lab, mac, since))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&vms)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<8} {:>8} {:<17} {:<15} {:<15} {:>7}",
        "NAME", "STATE", "PID", "MAC", "TAP", "IP", "UPTIME"
    );
    for v in vms {
        println!(
            "{:<16} {:<8} {:>8} {:<17} {:<15} {:<15} {:>7}",
            v.name,
            v.state,
            v.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            v.mac,
            v.tap,
            v.ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            v.uptime_secs
                .map(|s| format!("{s}s"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

/// The address of VM `name` in this boot, if it runs and has its lease.
pub fn running_vm_ip(lab: &str, name: &str) -> Option<Ipv4Addr> {
    let st = vm::manage::load(lab, name).ok()?;
    (st.status != vm::state::Status::Stopped && st.qemu_alive())
        .then(|| vm::manage::lease_of(&st, &|mac, since| lease_ip(lab, mac, since)))
        .flatten()
}

fn vm_ip(lab: &str, name: &str, wait: u64) -> Result<Ipv4Addr> {
    let st = vm::manage::load(lab, name)?;
    let t0 = std::time::Instant::now();
    loop {
        if let Some(ip) = vm::manage::lease_of(&st, &|mac, since| lease_ip(lab, mac, since)) {
            return Ok(ip);
        }
        if t0.elapsed() >= Duration::from_secs(wait) {
            bail!("{name} ({}) has no active lease in lab {lab}", st.mac);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ip(ctx: &Ctx, a: IpArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    println!("{}", vm_ip(&lab, &a.name, a.wait)?);
    Ok(())
}

fn ssh(ctx: &Ctx, a: SshArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    let ip = vm_ip(&lab, &a.name, 0)?;
    let mut args: Vec<String> = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
    .map(String::from)
    .into();
    args.push(format!("{}@{ip}", a.user));
    args.extend(a.cmd);
    let rc = vm::manage::exec_in_lab(&lab, "ssh", &args).context("ssh")?;
    std::process::exit(rc);
}
