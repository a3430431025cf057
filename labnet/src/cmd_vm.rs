//! `labnet vm start|run|list|ip|ssh|console|stop`: parse, call the `vm` crate, print.
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;
use vm::initramfs::RunCmd;
use vm::qemu::{Machine, Share};

use crate::ctx::Ctx;
use crate::report::Usage;

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
    /// ssh to a VM from inside the lab namespace (the lab's key, the pinned host key); the
    /// exit status is the remote command's.
    Ssh(SshArgs),
    /// Copy files to or from a VM (scp): `vm cp SRC NAME:DST` or `vm cp NAME:SRC DST`.
    Cp(CpArgs),
    /// Print an ssh_config block per VM, so plain `ssh NAME.ZONE` works from the host.
    SshConfig(SshConfigArgs),
    /// ssh's ProxyCommand (from `vm ssh-config`): connects stdin/stdout to the VM's PORT
    /// from inside the lab's namespace.
    #[command(hide = true)]
    Proxy(ProxyArgs),
    /// Attach this terminal to a VM's serial console (Ctrl-] detaches).
    Console(NameArgs),
    /// Stop a VM (ACPI power-down, then kill after --timeout).
    Stop(StopArgs),
    /// Run gdb on the kernel's vmlinux, connected to the gdbstub of a VM started with --gdb
    /// (the tree's vmlinux-gdb.py loads when it is beside vmlinux).
    #[command(after_help = GDB_HELP)]
    Gdb(GdbArgs),
    /// Write the guest's memory as an ELF vmcore (QMP dump-guest-memory, paging off), for
    /// drgn or crash; prints its path.
    Dump(DumpArgs),
    /// Pull one SCSI path of a running VM's --multipath pair, plug it back, or show both.
    #[command(after_help = PATH_HELP)]
    Path(PathArgs),
}

const PATH_HELP: &str = "\
fail removes the path's disk from the guest (QMP device_del, then blockdev-del of its node):
the guest sees it go, like a pulled cable; restore adds node and disk back on the same SCSI
target (blockdev-add, device_add) and the guest rescans. Without PATH, fail takes the first
active path and restore the first failed one.

Examples:
  labnet vm start --name m1 --kernel arch/x86/boot/bzImage --multipath disk.raw --daemonize
  labnet vm path m1 fail            # path1 gone: one of sda/sdb leaves the guest
  labnet vm path m1 list --json
  labnet vm path m1 restore path1";

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PathAction {
    /// Pull the path out.
    Fail,
    /// Plug it back in.
    Restore,
    /// Show each path's state.
    List,
}

#[derive(Args)]
pub struct PathArgs {
    /// The VM's name.
    pub name: String,
    /// What to do.
    #[arg(value_enum)]
    pub action: PathAction,
    /// path1 or path2 (or 1, 2).
    pub path: Option<String>,
    /// list: print JSON.
    #[arg(long)]
    pub json: bool,
}

const GDB_HELP: &str = "\
Examples:
  labnet vm start --name k1 --kernel arch/x86/boot/bzImage --gdb --daemonize
  labnet vm gdb k1
  labnet vm gdb k1 -- -batch -ex 'info registers rip' -ex detach
  labnet vm start --name k2 --kernel arch/x86/boot/bzImage --kgdb --append kgdbwait --daemonize
  labnet vm gdb k2 --kgdb      # the guest's KGDB; SysRq-G in the guest enters it again";

const RUN_HELP: &str = "\
Exit status:
  N     the guest command's own exit status (0-255)
  124   --timeout expired (like timeout(1))
  125   the guest never reached the command, or died while it ran: a kernel panic (named in
        the message), an init failure, no /init; the message gives the serial log's path
  126   QEMU could not start (bad QEMU arguments, missing binary, ...)
  1-7   labnet itself failed before booting, with the status of `labnet --help`: 2 a bad
        argument or config (no such --kernel, --cpus 0, a --module the kernel lacks), 4 needs
        root, 5 a host tool missing (virtiofsd, qemu-img, ...), 6 a daemon it started died (a
        share's virtiofsd), 7 the --name is already running; 1 anything else (lab not up, ...)
A throwaway VM (no --name) leaves nothing behind, except the serial log of a failed run
(under /run/labnet/LAB/failed-runs/); `labnet vm rm NAME` forgets a named one.

On a terminal, progress (booting, the accelerator and why, the lease, the command starting)
goes to stderr; --quiet or a non-terminal stderr silences it (except one line saying why a
bzImage boots instead of PVH). stdout is the command's output.

Examples:
  labnet vm run --kernel arch/x86/boot/bzImage -- uname -r
  labnet vm run --kernel ~/linux/arch/x86/boot/bzImage --module ceph --timeout 300 -- sh -c 'modprobe ceph && echo ok'
  labnet vm run --kernel /boot/vmlinuz-$(uname -r) --append rdinit=/bin/sh -- true   # exit 125 on a panic";

const START_HELP: &str = "\
Examples:
  labnet vm start --name k1 --image bookworm --daemonize && labnet vm ssh k1 --wait -- uname -r
  labnet vm start --name k1 --kernel arch/x86/boot/bzImage --drive arch.qcow2 --overlay --daemonize
  labnet vm start --kernel arch/x86/boot/bzImage --share ~/src:src   # console on this terminal
  labnet vm ip k1 --wait 60 && labnet vm ssh k1 -- uname -r";

impl VmCommand {
    /// Stays with a VM (or a terminal) until it ends; see main.rs.
    pub fn supervises(&self) -> bool {
        matches!(
            self,
            VmCommand::Start(_)
                | VmCommand::Run(_)
                | VmCommand::Console(_)
                | VmCommand::Ssh(_)
                | VmCommand::Cp(_)
                | VmCommand::Proxy(_)
                | VmCommand::Gdb(_)
        )
    }

    pub fn needs_root(&self) -> Option<&'static str> {
        match self {
            VmCommand::Start(_) => Some("vm start"),
            VmCommand::Run(_) => Some("vm run"),
            VmCommand::Stop(_) => Some("vm stop"),
            VmCommand::Path(_) => Some("vm path"),
            VmCommand::Rm(_) => Some("vm rm"),
            VmCommand::Console(_) => Some("vm console"),
            VmCommand::Ssh(_) => Some("vm ssh"),
            VmCommand::Cp(_) => Some("vm cp"),
            VmCommand::Proxy(_) => Some("vm proxy"),
            VmCommand::Gdb(_) => Some("vm gdb"),
            VmCommand::Dump(_) => Some("vm dump"),
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
    /// Kernel image (bzImage); with --image, default: the image's own kernel.
    #[arg(long, required_unless_present = "image")]
    pub kernel: Option<PathBuf>,
    /// Boot a per-VM overlay of this `labnet image` (root=/dev/vda; the base is never written).
    #[arg(long, conflicts_with_all = ["drive", "overlay"])]
    pub image: Option<String>,
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
    /// Share a host directory: DIR[:TAG], mounted at /mnt/TAG by the generated init and by an
    /// image's guest; over virtiofs when virtiofsd is in PATH, else over 9p.
    #[arg(long = "share", value_name = "DIR[:TAG]")]
    pub shares: Vec<String>,
    /// As --share, read-only (the host side refuses writes).
    #[arg(long = "share-ro", value_name = "DIR[:TAG]")]
    pub shares_ro: Vec<String>,
    /// QEMU's gdbstub on a unix socket in the VM's dir (`labnet vm gdb NAME`), and nokaslr.
    #[arg(long)]
    pub gdb: bool,
    /// A second serial line (the guest's ttyS1) on a unix socket in the VM's dir for the
    /// kernel's KGDB: `kgdboc=ttyS1` and nokaslr (`labnet vm gdb NAME --kgdb`; the guest
    /// enters KGDB on SysRq-G, or at boot with `--append kgdbwait`).
    #[arg(long)]
    pub kgdb: bool,
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
    /// microvm: boot through PVH even a bzImage with no vmlinux beside it (unpacked from
    /// it). Without this flag PVH is still the default for a build tree's bzImage whose
    /// vmlinux has the PVH note (~2.5 s faster under TCG). Devices are then found only through
    /// virtio_mmio.device= on the command line: CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y.
    #[arg(long, conflicts_with = "no_pvh")]
    pub pvh: bool,
    /// Always boot the bzImage (ACPI on, devices found by the kernel itself).
    #[arg(long)]
    pub no_pvh: bool,
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
    /// Also show the guest's boot console on stderr (and the --timings line).
    #[arg(long, short)]
    pub verbose: bool,
    /// Print host-side times of QEMU start, kernel start, /init, link up, lease, command
    /// start and end (the kernel then prints its notices: loglevel=6).
    #[arg(long)]
    pub timings: bool,
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
    /// First wait (up to SECS, default 300) for the lease and for sshd to answer.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "300")]
    pub wait: Option<u64>,
    /// Command to run (default: a login shell).
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

#[derive(Args)]
pub struct CpArgs {
    /// A local path or NAME:PATH.
    pub src: String,
    /// A local path or NAME:PATH.
    pub dst: String,
    /// Copy directories recursively.
    #[arg(short = 'r', long)]
    pub recursive: bool,
}

#[derive(Args)]
pub struct SshConfigArgs {
    /// Only this VM (default: every VM of the lab).
    pub name: Option<String>,
}

#[derive(Args)]
pub struct ProxyArgs {
    /// The VM's name.
    pub name: String,
    /// The VM's TCP port.
    #[arg(default_value_t = 22)]
    pub port: u16,
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
pub struct GdbArgs {
    /// The VM's name.
    pub name: String,
    /// Connect to the guest kernel's KGDB (a VM started with --kgdb) instead of QEMU's
    /// gdbstub.
    #[arg(long)]
    pub kgdb: bool,
    /// Arguments for gdb, after its own (e.g. -batch -ex 'bt').
    #[arg(last = true)]
    pub gdb_args: Vec<String>,
}

#[derive(Args)]
pub struct DumpArgs {
    /// The VM's name.
    pub name: String,
    /// The vmcore to write.
    pub file: PathBuf,
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
        VmCommand::Cp(a) => cp(ctx, a),
        VmCommand::SshConfig(a) => ssh_config(ctx, a),
        VmCommand::Proxy(a) => proxy(ctx, a),
        VmCommand::Console(a) => Ok(vm::manage::console(&ctx.lab_name(None)?, &a.name)?),
        VmCommand::Rm(a) => rm(ctx, a),
        VmCommand::Gdb(a) => gdb(ctx, a),
        VmCommand::Dump(a) => {
            let st = vm::manage::load(&ctx.lab_name(None)?, &a.name)?;
            let d = vm::dump::dump(&st, &a.file)?;
            println!("{}", d.path.display());
            match &d.vmcoreinfo {
                vm::dump::Vmcoreinfo::Qemu => {
                    eprintln!("{}: VMCOREINFO from QEMU's vmcoreinfo device", a.name)
                }
                vm::dump::Vmcoreinfo::GuestMemory { vmlinux } => eprintln!(
                    "{}: VMCOREINFO read from guest memory (vmcoreinfo_note of {}) and added",
                    a.name,
                    vmlinux.display()
                ),
                vm::dump::Vmcoreinfo::Missing(why) => eprintln!(
                    "{}: the vmcore has no VMCOREINFO note: the guest kernel did not hand it to \
                     QEMU (it needs FW_CFG_SYSFS and KEXEC, and ACPI: not a PVH boot), and \
                     labnet could not read it from guest memory: {why}",
                    a.name
                ),
            }
            Ok(())
        }
        VmCommand::Path(a) => path(ctx, a),
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
    let img = b.image.as_deref().map(image::store::load).transpose()?;
    let kernel = match (&b.kernel, &img) {
        (Some(k), _) => k.clone(),
        (None, Some(i)) => vm::image_boot::default_kernel(i),
        (None, None) => return Err(Usage("--kernel: required (or --image)".into()).into()),
    };
    let mut o = vm::supervise::Options::new(&lab, &name, &kernel);
    o.config = ctx.config.clone();
    o.initrd = b.initrd.clone();
    o.drive = b.drive.clone();
    o.append = b.append.clone();
    o.mem = b.mem.clone();
    o.cpus = b.cpus;
    o.machine = match &b.machine {
        Some(m) => Machine::parse(m)?,
        None if b.drive.is_some() || b.initrd.is_some() || b.image.is_some() => Machine::Q35,
        None => Machine::Microvm,
    };
    o.accel = vm::accel::Choice::parse(&b.accel)?;
    o.overlay = b.overlay;
    o.shares = b
        .shares
        .iter()
        .map(|s| Share::parse(s))
        .chain(b.shares_ro.iter().map(|s| Share::parse_readonly(s)))
        .collect::<Result<_, _>>()?;
    o.gdb = b.gdb;
    o.kgdb = b.kgdb;
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
    o.pvh = match (b.pvh, b.no_pvh) {
        (true, _) => vm::kernel::PvhMode::Force,
        (_, true) => vm::kernel::PvhMode::Off,
        _ => vm::kernel::PvhMode::Auto,
    };
    if let Some(i) = &img {
        vm::image_boot::apply(&mut o, i, b.kernel.is_none(), b.machine.is_some())?;
    }
    Ok(o)
}

fn banner(p: &vm::supervise::Prepared, st: &vm::state::VmState) {
    eprintln!("{}: {}", st.name, p.boot);
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
        .unwrap_or_else(|| vm::naming::free_name(&lab, "vm"));
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
        // A supervisor that exited says why in its log and its status, which this command
        // passes on (report::exit_code), so --daemonize fails like a foreground start.
        let st = vm::supervise::daemonize(&args, &lab, &name)?;
        if let Some(l) = vm::virtiofs::choose(&mut o.shares.clone()) {
            println!("{}: {l}", st.name);
        }
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
        Some(x) => return Err(Usage(format!("--serial {x:?}: expected console or file")).into()),
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

/// The exit status a failed `vm run`/`vm start` carries (the contract in RUN_HELP): how
/// the guest ended, else labnet's own status for the kind of failure (`labnet --help`).
fn vm_failure(e: vm::Error) -> anyhow::Error {
    let code = match &e {
        vm::Error::TimedOut(_) => 124,
        vm::Error::GuestFailed(_) => 125,
        vm::Error::QemuStart { .. } => 126,
        vm::Error::MissingProgram { program, .. } if program.starts_with("qemu") => 126,
        _ => return e.into(),
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
        None => vm::naming::free_name(&ctx.lab_name(None)?, "run"),
    };
    let mut o = options(ctx, &a.boot, name)?;
    o.run = Some(RunCmd::Argv(a.cmd.clone()));
    o.ephemeral = a.boot.name.is_none();
    o.timings = a.timings || a.verbose;
    let p = vm::supervise::prepare(&o).map_err(vm_failure)?;
    let verbose = a.verbose;
    let progress = a.boot.progress();
    // One line on which image boots: a bzImage boot says why the fast PVH path was not taken
    // even off a terminal (a warning worth a log line); a PVH boot only to a person watching,
    // or with --timings.
    if !verbose && !a.boot.quiet && (progress || a.timings || !p.spec.pvh) {
        eprintln!("{}: {}", p.spec.name, p.boot);
    }
    if progress && !verbose {
        booting(&p);
    } else if let Some(l) = p.shares_line.as_ref().filter(|_| !a.boot.quiet) {
        eprintln!("{}: {l}", p.spec.name);
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
    if o.timings {
        eprintln!("{}: timings: {}", p.spec.name, out.timings.render());
    }
    // launch() returns Ok only with the command's status.
    std::process::exit(out.rc.unwrap_or(125));
}

fn gdb(ctx: &Ctx, a: GdbArgs) -> Result<()> {
    let st = vm::manage::load(&ctx.lab_name(None)?, &a.name)?;
    let t = vm::gdb::target(&st, a.kgdb)?;
    let gdb = vm::which("gdb").ok_or_else(|| vm::Error::MissingProgram {
        program: "gdb".into(),
        hint: " in PATH (apt-get install gdb)".into(),
    })?;
    if t.vmlinux.is_none() {
        eprintln!(
            "{}: no vmlinux for {} (not a build tree's bzImage): no symbols",
            a.name, st.kernel
        );
    }
    // gdb owns the terminal's Ctrl-C (it interrupts the guest); this process only waits.
    // SAFETY: setting SIGINT to SIG_IGN installs no handler code.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let status = vm::gdb::command(&gdb, &t, &a.gdb_args)
        .status()
        .with_context(|| format!("running {}", gdb.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

fn rm(ctx: &Ctx, a: RmArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    // Its leases, looked up before its reservation goes: the lab's dhcpd may release them
    // the moment it sees the reservation gone.
    let mac = vm::naming::mac_for(&lab, &a.name);
    let active = crate::cmd_dhcpd::active_leases_of(&lab, &[mac.to_ascii_lowercase()])?;
    for what in vm::manage::remove(&lab, &a.name, a.disk)? {
        println!("{}: removed {what}", a.name);
    }
    // Its reservation is gone, so its leases go too (the name leaves the lab's DNS).
    for l in crate::cmd_dhcpd::release_leases(&lab, active)? {
        println!("{}: released its lease {}", a.name, l.ip);
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

pub use vm::manage::lease_ip;

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
    Ok(vm::ssh::wait_lease(
        lab,
        &st,
        Duration::from_secs(wait),
        &|mac, since| lease_ip(lab, mac, since),
    )?)
}

fn ip(ctx: &Ctx, a: IpArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    println!("{}", vm_ip(&lab, &a.name, a.wait)?);
    Ok(())
}

fn ssh(ctx: &Ctx, a: SshArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    let st = vm::manage::load(&lab, &a.name)?;
    let opts = vm::ssh::options(&lab, &st)?;
    let ip = match a.wait {
        None => vm_ip(&lab, &a.name, 0)?,
        Some(secs) => {
            let t0 = std::time::Instant::now();
            let ip = vm_ip(&lab, &a.name, secs)?;
            if let Err(e) = vm::ssh::wait_sshd(
                &lab,
                &st,
                ip,
                &a.user,
                Duration::from_secs(secs).saturating_sub(t0.elapsed()),
            ) {
                refuse_changed_host_key(&lab, &st, ip)?;
                return Err(e.into());
            }
            if a.cmd.is_empty() {
                eprintln!(
                    "{}: sshd answering at {ip} after {:.1} s",
                    a.name,
                    t0.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            ip
        }
    };
    let mut args = opts;
    args.push(format!("{}@{ip}", a.user));
    if !a.cmd.is_empty() {
        args.push("--".into());
        args.extend(a.cmd);
    }
    let rc = vm::manage::exec_in_lab(&lab, "ssh", &args).context("ssh")?;
    if rc == 255 {
        refuse_changed_host_key(&lab, &st, ip)?;
    }
    std::process::exit(rc);
}

/// ssh exits 255 for its own failures: when the VM presents another host key than its
/// image recorded, say so plainly (ssh's own words are a wall of @ signs).
fn refuse_changed_host_key(lab: &str, st: &vm::state::VmState, ip: Ipv4Addr) -> Result<()> {
    if let Some(msg) = vm::ssh::host_key_mismatch(lab, st, ip) {
        eprintln!("labnet: {msg}");
        std::process::exit(255);
    }
    Ok(())
}

/// `NAME:PATH` → Some((NAME, PATH)); a local path (no colon before the first slash) → None.
fn remote(spec: &str) -> Option<(&str, &str)> {
    let (n, p) = spec.split_once(':')?;
    (!n.is_empty() && !n.contains('/')).then_some((n, p))
}

fn cp(ctx: &Ctx, a: CpArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    let (name, path, to_vm) = match (remote(&a.src), remote(&a.dst)) {
        (None, Some((n, p))) => (n.to_string(), p.to_string(), true),
        (Some((n, p)), None) => (n.to_string(), p.to_string(), false),
        _ => {
            return Err(Usage(format!(
                "vm cp: exactly one of SRC and DST must be NAME:PATH (got {:?} {:?})",
                a.src, a.dst
            ))
            .into())
        }
    };
    let st = vm::manage::load(&lab, &name)?;
    let ip = vm_ip(&lab, &name, 0)?;
    let mut args = vm::ssh::options(&lab, &st)?;
    if a.recursive {
        args.push("-r".into());
    }
    let at = format!("root@{ip}:{path}");
    if to_vm {
        args.extend([a.src.clone(), at]);
    } else {
        args.extend([at, a.dst.clone()]);
    }
    let rc = vm::manage::exec_in_lab(&lab, "scp", &args).context("scp")?;
    if rc == 255 || rc == 1 {
        refuse_changed_host_key(&lab, &st, ip)?;
    }
    std::process::exit(rc);
}

fn ssh_config(ctx: &Ctx, a: SshConfigArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    // The running lab's record says which zone its dns serves; else the config.
    let zone = match model::state::LabState::load(&lab)
        .ok()
        .flatten()
        .and_then(|s| s.config)
    {
        Some(c) => c.dns.zone,
        None => ctx.load(Some(&lab))?.dns.zone,
    };
    let exe = std::env::current_exe()?;
    let vms = match &a.name {
        Some(n) => vec![vm::manage::load(&lab, n)?],
        None => vm::state::list(&lab)?,
    };
    for st in vms {
        print!("{}", vm::ssh::config_block(&lab, &st, &zone, &exe)?);
    }
    Ok(())
}

fn proxy(ctx: &Ctx, a: ProxyArgs) -> Result<()> {
    use std::io::{Read, Write};
    let lab = ctx.lab_name(None)?;
    let ip = vm_ip(&lab, &a.name, 30)?;
    // This thread enters the lab; the socket it opens lives there.
    model::netns::enter(&lab).with_context(|| format!("lab {lab} is not up"))?;
    let sock =
        std::net::TcpStream::connect((ip, a.port)).with_context(|| format!("{ip}:{}", a.port))?;
    let mut up = sock.try_clone()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || up.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = up.shutdown(std::net::Shutdown::Write);
    });
    let mut down = sock;
    let mut out = std::io::stdout();
    let mut buf = [0u8; 16384];
    loop {
        match down.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = out.flush();
            }
        }
    }
    Ok(())
}

fn path(ctx: &Ctx, a: PathArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    let which = a
        .path
        .as_deref()
        .map(vm::path::ScsiPath::parse)
        .transpose()?;
    match a.action {
        PathAction::List => {
            if which.is_some() {
                return Err(Usage(format!("vm path {} list: takes no PATH", a.name)).into());
            }
            let rows = vm::path::list(&lab, &a.name)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print!("{}", vm::path::render(&rows));
            }
        }
        PathAction::Fail => {
            let p = vm::path::fail(&lab, &a.name, which)?;
            println!(
                "{}: {} failed (device and block node removed)",
                a.name,
                p.device()
            );
        }
        PathAction::Restore => {
            let p = vm::path::restore(&lab, &a.name, which)?;
            println!("{}: {} restored", a.name, p.device());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    /// Every way QEMU fails to start ends `vm run`/`vm start` with 126 (RUN_HELP), and the
    /// message names the binary and the reason.
    #[test]
    fn every_qemu_start_failure_exits_126_and_names_the_binary() {
        use vm::QemuStartReason as R;
        let reasons = [
            R::Spawn(std::io::Error::from(std::io::ErrorKind::NotFound)),
            R::ExitedAtStartup {
                status: std::process::ExitStatus::from_raw(1 << 8),
                log_tail: "cannot set up guest memory 'pc.ram'".into(),
            },
            R::NoQmpAnswer {
                secs: 30,
                log_tail: String::new(),
            },
        ];
        for reason in reasons {
            let e = vm_failure(vm::Error::QemuStart {
                program: "/opt/qemu/bin/qemu-system-x86_64".into(),
                reason,
            });
            assert_eq!(crate::report::exit_code(&e), 126, "{e:#}");
            let text = e.to_string();
            assert!(
                text.starts_with("QEMU did not start: /opt/qemu/bin/qemu-system-x86_64 "),
                "{text}"
            );
        }
    }
}
