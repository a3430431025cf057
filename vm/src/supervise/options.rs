//! What `vm start`/`vm run` were asked for ([`Options`]) and what [`super::prepare`] decided
//! from it ([`Prepared`]).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::accel;
use crate::initramfs::RunCmd;
use crate::qemu::{Machine, Share, Spec};

#[derive(Debug, Clone)]
pub struct Options {
    pub lab: String,
    /// The lab's config file, used only when the lab's state does not name the bridge.
    pub config: Option<PathBuf>,
    pub name: String,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub drive: Option<PathBuf>,
    pub append: Option<String>,
    pub mem: String,
    pub cpus: u32,
    pub machine: Machine,
    pub accel: accel::Choice,
    pub overlay: bool,
    pub shares: Vec<Share>,
    pub multipath: Option<PathBuf>,
    pub modules: Option<PathBuf>,
    pub extra_modules: Vec<String>,
    pub add: Vec<(PathBuf, String)>,
    pub run: Option<RunCmd>,
    pub extra_qemu: Vec<String>,
    pub qemu: Option<PathBuf>,
    /// microvm: boot an uncompressed vmlinux through PVH (see kernel.rs). The machine then
    /// runs without ACPI (see qemu.rs), so virtio-mmio devices need
    /// CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y in the guest kernel.
    pub pvh: crate::kernel::PvhMode,
    /// Record [`Timings`] (and let the kernel print its notices to mark its start).
    pub timings: bool,
    /// Kill the VM after this long (run mode: a hung guest must not hang the caller).
    pub timeout: Option<Duration>,
    /// A throwaway VM (`vm run` without --name): its directory is removed when it ended
    /// with the command's status read (kept for a look at serial.log otherwise).
    pub ephemeral: bool,
    /// Booted from a `labnet image` (see image_boot): the overlay lives only as long as
    /// QEMU, the guest may reboot, and its ssh host key is pinned.
    pub image: Option<crate::image_boot::ImageBoot>,
    /// `--gdb`: QEMU's gdbstub on a unix socket in the VM's dir, and `nokaslr`.
    pub gdb: bool,
    /// `--kgdb`: a second serial line for the kernel's KGDB (`kgdboc=ttyS1`) on a unix
    /// socket in the VM's dir, and `nokaslr`.
    pub kgdb: bool,
    /// Run mode: write the command's output to this file instead of stdout (`labnet test`
    /// runs several VMs at once, each with its own output).
    pub run_output: Option<PathBuf>,
    /// The caller handles SIGINT/SIGTERM/SIGHUP and stops the VM itself (`labnet test` runs
    /// VMs on threads of one process): the supervisor then leaves the signal mask alone and
    /// does not wait for them, so no supervising thread takes the caller's Ctrl-C.
    pub caller_handles_signals: bool,
}

impl Options {
    pub fn new(lab: &str, name: &str, kernel: &Path) -> Options {
        Options {
            lab: lab.into(),
            config: None,
            name: name.into(),
            kernel: kernel.into(),
            initrd: None,
            drive: None,
            append: None,
            mem: "1G".into(),
            cpus: 2,
            machine: Machine::Microvm,
            accel: accel::Choice::Auto,
            overlay: false,
            shares: vec![],
            multipath: None,
            modules: None,
            extra_modules: vec![],
            add: vec![],
            run: None,
            extra_qemu: vec![],
            qemu: None,
            pvh: crate::kernel::PvhMode::Auto,
            timings: false,
            timeout: None,
            ephemeral: false,
            image: None,
            gdb: false,
            kgdb: false,
            run_output: None,
            caller_handles_signals: false,
        }
    }
}

/// What [`prepare`] decided, ready to launch.
#[derive(Debug)]
pub struct Prepared {
    pub spec: Spec,
    pub lab: String,
    pub bridge: String,
    pub accel_reason: String,
    /// Notes for the user (modules dir guessed, overlay reused, ...).
    pub notes: Vec<String>,
    /// One line: which kernel image boots and how (PVH or bzImage, and why).
    pub boot: String,
    /// When [`prepare`] began: the origin of [`Timings`].
    pub started: Instant,
    pub generated_initramfs: bool,
    pub timeout: Option<Duration>,
    pub ephemeral: bool,
    /// The VM's lock, held until this is dropped (after the supervisor's cleanup).
    pub lock: std::fs::File,
    pub image: Option<crate::image_boot::ImageBoot>,
    /// One line: which transport the shares use (virtiofs or 9p, and why); also in `notes`.
    pub shares_line: Option<String>,
    pub run_output: Option<PathBuf>,
    pub caller_handles_signals: bool,
}
