//! Starting a VM and staying with it. [`prepare`] checks the input and decides everything
//! (pure except for building the initramfs / overlay); [`launch`] registers the DHCP
//! reservation, makes the tap, spawns QEMU *inside* the lab namespace and supervises it:
//! `run` output is streamed from the serial log, signals turn into a clean stop, and the tap
//! is removed when QEMU ends, however it ends. QEMU gets PR_SET_PDEATHSIG, so it does not
//! outlive a killed supervisor; a tap left by a SIGKILLed supervisor is removed by the next
//! `vm start`/`stop`/`list` of that VM.
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::initramfs::{self, InitSpec, RunCmd};
use crate::qemu::{self, Disk, Machine, Share, Spec};
use crate::state::{self, Status, VmState};
use crate::{accel, naming, tap, Error};

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
}

/// The bridge VMs plug into: from the record `labnet up` wrote (the bridge that really
/// exists), else from the lab's config.
pub fn resolve_bridge(lab: &str, config: Option<&Path>) -> Result<String, Error> {
    if let Ok(Some(model::state::LabState {
        config: Some(built),
        ..
    })) = model::state::LabState::load(lab)
    {
        return Ok(built.bridge.name);
    }
    Ok(model::Lab::load(Some(lab), config)?.bridge.name)
}

/// Input checks that need no side effects (also run by a daemonizing parent, so bad input
/// fails in the foreground): qemu present, kernel readable, lab up, name free.
pub fn precheck(o: &Options) -> Result<PathBuf, Error> {
    naming::check_name(&o.name)?;
    let qemu = match &o.qemu {
        Some(q) => q.clone(),
        None => crate::which("qemu-system-x86_64").ok_or_else(|| Error::MissingProgram {
            program: "qemu-system-x86_64".into(),
            hint: " in PATH (apt-get install qemu-system-x86)".into(),
        })?,
    };
    let kerr = |m: String| Error::Kernel {
        path: o.kernel.display().to_string(),
        message: m,
    };
    let md = std::fs::metadata(&o.kernel).map_err(|e| kerr(e.to_string()))?;
    if !md.is_file() {
        return Err(kerr("not a regular file".into()));
    }
    std::fs::File::open(&o.kernel).map_err(|e| kerr(e.to_string()))?;
    if md.len() < 4096 {
        return Err(kerr(format!("only {} bytes: not a kernel image", md.len())));
    }
    let nsp = model::paths::netns_path(&o.lab);
    if !nsp.exists() {
        return Err(Error::LabNotUp {
            lab: o.lab.clone(),
            path: nsp.display().to_string(),
        });
    }
    let busy = state::try_lock(&o.lab, &o.name)?.is_none();
    if let Some(st) = VmState::load(&o.lab, &o.name)? {
        if busy || st.qemu_alive() {
            return Err(Error::AlreadyRunning {
                lab: o.lab.clone(),
                name: o.name.clone(),
                pid: st.qemu_pid.unwrap_or(0),
            });
        }
    }
    if o.cpus == 0 {
        return Err(Error::invalid("--cpus", "must be at least 1"));
    }
    if o.run.is_some() && (o.drive.is_some() || o.initrd.is_some()) {
        return Err(Error::invalid(
            "--run",
            "runs a command through the generated initramfs; not with --drive or --initrd",
        ));
    }
    if !o.add.is_empty() && (o.drive.is_some() || o.initrd.is_some()) {
        return Err(Error::invalid(
            "--add",
            "adds files to the generated initramfs; not with --drive or --initrd",
        ));
    }
    if o.overlay && o.drive.is_none() {
        return Err(Error::invalid(
            "--overlay",
            "needs --drive (the base image)",
        ));
    }
    Ok(qemu)
}

/// Guesses the modules dir for a distro kernel `.../boot/vmlinuz-VER`:
/// `.../lib/modules/VER` (an unpacked package) or `/lib/modules/VER`.
pub fn guess_modules_dir(kernel: &Path) -> Option<PathBuf> {
    let fname = kernel.file_name()?.to_str()?;
    let ver = fname
        .strip_prefix("vmlinuz-")
        .or_else(|| fname.strip_prefix("bzImage-"))?;
    let parent = std::fs::canonicalize(kernel)
        .ok()?
        .parent()?
        .parent()?
        .to_path_buf();
    [
        parent.join("lib/modules").join(ver),
        PathBuf::from("/lib/modules").join(ver),
    ]
    .into_iter()
    .find(|d| d.join("modules.dep").exists())
}

/// Validates the options and decides the QEMU command line; builds the initramfs (or the
/// overlay) in the VM's directory.
pub fn prepare(o: &Options) -> Result<Prepared, Error> {
    let started = Instant::now();
    let qemu_bin = precheck(o)?;
    let lock = state::try_lock(&o.lab, &o.name)?.ok_or_else(|| Error::AlreadyRunning {
        lab: o.lab.clone(),
        name: o.name.clone(),
        pid: 0,
    })?;
    let bridge = resolve_bridge(&o.lab, o.config.as_deref())?;
    let dir = state::vm_dir(&o.lab, &o.name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    for f in [
        "console.sock",
        "qmp.sock",
        "serial.log",
        "qemu.pid",
        "qemu.log",
        "state.json",
    ] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let mut notes = vec![];
    let (accel, accel_reason) = accel::choose(o.accel);
    let choice = crate::kernel::choose(
        &o.kernel,
        o.machine == Machine::Microvm,
        o.pvh,
        &model::paths::run_dir().join("kernels"),
    );
    let pvh = choice.pvh;
    let kernel = choice.kernel.clone();
    // --timings: the kernel's notices mark its start on the console (see Timings).
    let append = match (o.timings, &o.append) {
        (false, a) => a.clone(),
        (true, None) => Some("loglevel=6".to_string()),
        (true, Some(a)) => Some(format!("loglevel=6 {a}")),
    };
    let kernel = std::fs::canonicalize(&kernel).unwrap_or(kernel);

    let drive = match &o.drive {
        None => None,
        Some(base) => {
            let base_abs = std::fs::canonicalize(base)
                .map_err(|e| Error::invalid("--drive", format!("{}: {e}", base.display())))?;
            let disk = Disk::probe(&base_abs)
                .map_err(|e| Error::invalid("--drive", format!("{}: {e}", base.display())))?;
            if o.image.is_some() {
                Some(boot_overlay(&dir, &disk)?)
            } else if o.overlay {
                Some(make_overlay(&o.lab, &o.name, &disk, &mut notes)?)
            } else {
                Some(disk)
            }
        }
    };
    let multipath = match &o.multipath {
        None => None,
        Some(f) => {
            let abs = std::fs::canonicalize(f)
                .map_err(|e| Error::invalid("--multipath", format!("{}: {e}", f.display())))?;
            let disk = Disk::probe(&abs)
                .map_err(|e| Error::invalid("--multipath", format!("{}: {e}", f.display())))?;
            let (serial, wwn) = naming::multipath_ids(&o.lab, &o.name);
            Some((disk, serial, wwn))
        }
    };

    let generated = o.drive.is_none() && o.initrd.is_none();
    let initrd = if generated {
        let out = dir.join("initramfs.cpio");
        build_initramfs(o, &out, &mut notes)?;
        Some(out)
    } else {
        o.initrd.clone()
    };
    let spec = Spec {
        qemu: qemu_bin,
        name: o.name.clone(),
        machine: o.machine,
        accel,
        mem: o.mem.clone(),
        cpus: o.cpus,
        kernel,
        initrd,
        append: qemu::cmdline_for(o.machine, accel, pvh, append.as_deref()),
        dir,
        tap: naming::tap_for(&o.lab, &o.name),
        mac: naming::mac_for(&o.lab, &o.name),
        vhost: Path::new("/dev/vhost-net").exists(),
        drive,
        shares: o.shares.clone(),
        multipath,
        extra: o.extra_qemu.clone(),
        pvh,
        // An image's guest is a real machine: `reboot` in it restarts it.
        allow_reboot: o.image.is_some(),
    };
    Ok(Prepared {
        spec,
        lab: o.lab.clone(),
        bridge,
        accel_reason,
        notes,
        boot: choice.line,
        started,
        generated_initramfs: generated,
        timeout: o.timeout,
        ephemeral: o.ephemeral,
        lock,
        image: o.image.clone(),
    })
}

/// The overlay of an image's disk for this boot only: vm_dir/overlay.qcow2, made fresh at
/// start and removed when QEMU ends.
fn boot_overlay(dir: &Path, base: &Disk) -> Result<Disk, Error> {
    let ov = dir.join("overlay.qcow2");
    let _ = std::fs::remove_file(&ov);
    qemu_img_overlay(base, &ov, "--image")?;
    Ok(Disk {
        path: ov,
        format: "qcow2".into(),
    })
}

fn qemu_img_overlay(base: &Disk, ov: &Path, flag: &str) -> Result<(), Error> {
    let qemu_img = crate::which("qemu-img").ok_or_else(|| Error::MissingProgram {
        program: "qemu-img".into(),
        hint: format!(" (needed for {flag}; apt-get install qemu-utils)"),
    })?;
    let out = Command::new(qemu_img)
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(&base.path)
        .args(["-F", &base.format])
        .arg(ov)
        .output()
        .map_err(|e| Error::io("qemu-img", e))?;
    if !out.status.success() {
        return Err(Error::invalid(
            flag,
            format!(
                "qemu-img create: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// The per-VM qcow2 overlay (durable: state_dir(LAB)/vms/NAME/overlay.qcow2), created once
/// over the base and reused by later starts, so the VM keeps its disk; the base is only read.
fn make_overlay(
    lab: &str,
    name: &str,
    base: &Disk,
    notes: &mut Vec<String>,
) -> Result<Disk, Error> {
    let dir = model::paths::state_dir(lab).join("vms").join(name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let ov = dir.join("overlay.qcow2");
    if ov.exists() {
        notes.push(format!(
            "reusing overlay {} (delete it to start over from the base)",
            ov.display()
        ));
    } else {
        qemu_img_overlay(base, &ov, "--overlay")?;
        notes.push(format!(
            "overlay {} over {}",
            ov.display(),
            base.path.display()
        ));
    }
    Ok(Disk {
        path: ov,
        format: "qcow2".into(),
    })
}

fn build_initramfs(o: &Options, out: &Path, notes: &mut Vec<String>) -> Result<(), Error> {
    let busybox = initramfs::find_busybox()?;
    let mdir = match &o.modules {
        Some(m) => Some(m.clone()),
        None => {
            let g = guess_modules_dir(&o.kernel);
            if let Some(d) = &g {
                notes.push(format!(
                    "using modules from {} (pass --modules to choose)",
                    d.display()
                ));
            }
            g
        }
    };
    let mut modules = vec![];
    if let Some(d) = &mdir {
        let db = crate::modules::ModuleDb::load(d)?;
        let mut wanted: Vec<String> = vec![];
        wanted.push(match o.machine {
            Machine::Microvm => "virtio_mmio".into(),
            Machine::Q35 => "virtio_pci".into(),
        });
        wanted.push("virtio_net".into());
        if !o.shares.is_empty() {
            wanted.extend(["9pnet_virtio".into(), "9p".into()]);
        }
        if o.multipath.is_some() {
            wanted.extend(["virtio_scsi".into(), "sd_mod".into()]);
        }
        wanted.extend(o.extra_modules.iter().cloned());
        modules = db.resolve(&wanted)?;
    } else if !o.extra_modules.is_empty() {
        return Err(Error::invalid(
            "--module",
            "needs --modules DIR (the guest kernel's lib/modules/VERSION)",
        ));
    }
    let spec = InitSpec {
        hostname: o.name.clone(),
        modules,
        shares: o
            .shares
            .iter()
            .map(|s| (s.tag.clone(), format!("/mnt/{}", s.tag)))
            .collect(),
        run: o.run.clone(),
    };
    initramfs::build(
        out,
        &initramfs::Contents {
            busybox: &busybox,
            spec: &spec,
            modules_dir: mdir.as_deref(),
            add: &o.add,
        },
    )
}

/// How the supervisor treats the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `vm run`: stream the command's output to stdout, return its exit status.
    /// `progress`: say on stderr what the guest is doing (lease, command started).
    Run { verbose: bool, progress: bool },
    /// `vm start`: wait for QEMU to end; optionally attach the console to this terminal.
    Start { attach_console: bool },
}

#[derive(Debug)]
pub struct Outcome {
    /// The guest command's exit status (run mode, when the end marker was seen).
    pub rc: Option<i32>,
    /// How QEMU ended.
    pub exit: String,
    pub timed_out: bool,
    /// Host-side times of the boot's milestones (run mode).
    pub timings: Timings,
    /// Run mode: the guest started the command (its begin marker was seen).
    pub reached_command: bool,
    /// The guest kernel's "Kernel panic - ..." line, if it panicked.
    pub panic: Option<String>,
}

/// When the host saw each milestone of a run, measured from [`prepare`]'s start (serial log
/// polled every 20 ms). `kernel` is the first console byte: with `timings` the kernel prints
/// its notices (loglevel=6), so that is its first line, "Linux version ...".
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub qemu_spawned: Option<Duration>,
    pub qemu_ready: Option<Duration>,
    pub kernel: Option<Duration>,
    pub init: Option<Duration>,
    pub link_up: Option<Duration>,
    pub lease: Option<Duration>,
    pub command_start: Option<Duration>,
    pub command_end: Option<Duration>,
    pub qemu_exit: Option<Duration>,
}

impl Timings {
    /// One line: `qemu start 0.05 s, ... qemu exit 2.10 s` (missing milestones left out).
    pub fn render(&self) -> String {
        let items = [
            ("qemu start", self.qemu_spawned),
            ("qmp up", self.qemu_ready),
            ("kernel start", self.kernel),
            ("/init", self.init),
            ("link up", self.link_up),
            ("lease", self.lease),
            ("command start", self.command_start),
            ("command end", self.command_end),
            ("qemu exit", self.qemu_exit),
        ];
        items
            .iter()
            .filter_map(|(n, t)| t.map(|t| format!("{n} {:.2} s", t.as_secs_f64())))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn sigset(sigs: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid value to hand sigemptyset, which initialises it;
    // sigaddset only writes into that local set.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut s);
        for &g in sigs {
            libc::sigaddset(&mut s, g);
        }
        s
    }
}

/// Spawns QEMU and supervises it until it ends. `on_started` runs once QEMU is up (the
/// state file says running): the CLI prints its banner there.
pub fn launch(
    p: &Prepared,
    mode: Mode,
    on_started: &mut dyn FnMut(&VmState),
) -> Result<Outcome, Error> {
    let spec = &p.spec;
    // Stop signals become events of the loop below (sigtimedwait), not process death: the tap
    // must be removed whatever happens. Blocked before any thread starts so all inherit it.
    let set = sigset(&STOP_SIGNALS);
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };

    state::write_reservation(&p.lab, &spec.name, &spec.mac)?;
    if let Some(img) = &p.image {
        crate::ssh::pin(&p.lab, &spec.name, Some(&img.host_key))?;
    }
    tap::create(&p.lab, &p.bridge, &spec.tap, tap::invoking_uid())?;
    let mut st = VmState {
        name: spec.name.clone(),
        lab: p.lab.clone(),
        mac: spec.mac.clone(),
        tap: spec.tap.clone(),
        machine: spec.machine.as_str().into(),
        accel: spec.accel.as_str().into(),
        kernel: spec.kernel.display().to_string(),
        generated_initramfs: p.generated_initramfs,
        status: Status::Starting,
        supervisor_pid: std::process::id(),
        qemu_pid: None,
        started: state::now(),
        exit: None,
        dir: spec.dir.clone(),
        command_line: spec.command_line(),
        image: p.image.as_ref().map(|i| i.name.clone()),
        host_key: p.image.as_ref().map(|i| i.host_key.clone()),
        ephemeral: p.ephemeral,
    };
    let spawned = p.started.elapsed();
    let res = st.save().and_then(|_| spawn_qemu(p));
    let mut child = match res {
        Ok(c) => c,
        Err(e) => {
            let _ = tap::delete(&p.lab, &spec.tap);
            st.status = Status::Stopped;
            st.exit = Some(format!("failed to start: {e}"));
            let _ = st.save();
            if p.ephemeral {
                // The error carries QEMU's own words; nothing else of this run is worth keeping.
                let _ = std::fs::remove_dir_all(&spec.dir);
            }
            return Err(e);
        }
    };
    st.qemu_pid = Some(child.id());
    st.status = Status::Running;
    let saved = st.save();
    let outcome = match saved {
        Ok(()) => {
            let ready = p.started.elapsed();
            on_started(&st);
            supervise(p, &mut child, mode).map(|mut o| {
                o.timings.qemu_spawned = Some(spawned);
                o.timings.qemu_ready = Some(ready);
                o
            })
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    };
    // Cleanup, whatever happened above.
    let _ = child.kill();
    let status = child.wait().ok();
    let _ = tap::delete(&p.lab, &spec.tap);
    crate::ssh::close_master(&p.lab, &st);
    for f in ["console.sock", "qmp.sock", "qemu.pid"] {
        let _ = std::fs::remove_file(spec.dir.join(f));
    }
    if p.image.is_some() {
        let _ = std::fs::remove_file(spec.dir.join("overlay.qcow2"));
    }
    st.status = Status::Stopped;
    st.exit = Some(match (&outcome, status) {
        (Ok(o), _) => o.exit.clone(),
        (Err(e), Some(s)) => format!("{s}; supervisor error: {e}"),
        (Err(e), None) => format!("supervisor error: {e}"),
    });
    let _ = st.save();
    // SAFETY: `set` is an initialised sigset_t; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
    // QEMU that quit with an error before the guest printed a thing did not really start
    // (e.g. guest memory it cannot allocate): its own log says why.
    let serial_empty = std::fs::metadata(spec.serial_log()).map_or(true, |m| m.len() == 0);
    let qemu_failed = status.is_some_and(|s| !s.success());
    let start_error = (qemu_failed && serial_empty && !matches!(&outcome, Ok(o) if o.timed_out))
        .then(|| {
            Error::QemuStart(format!(
                "exited at startup ({}):\n{}",
                status.map_or("?".into(), |s| s.to_string()),
                tail_lines(&spec.dir.join("qemu.log"), 20)
            ))
        });
    // A run that gave no exit status keeps its console log for a look, out of the VM dir
    // (a throwaway VM's dir goes, so `vm list` keeps no stale runs).
    let failed = !matches!(&outcome, Ok(o) if o.rc.is_some());
    let mut serial_log = spec.serial_log();
    if p.ephemeral {
        if failed && !serial_empty {
            let kept = failed_run_log(&p.lab, &spec.name);
            if let Some(d) = kept.parent() {
                let _ = std::fs::create_dir_all(d);
            }
            if std::fs::rename(&serial_log, &kept).is_ok() {
                serial_log = kept;
            }
        }
        let _ = std::fs::remove_dir_all(&spec.dir);
        // Nothing of a throwaway VM stays: without its reservation the lab's dhcpd releases
        // its lease, and its name leaves the lab's DNS.
        let _ = std::fs::remove_file(model::reservation::file(&p.lab, &spec.name));
    }
    let outcome = outcome?;
    if outcome.rc.is_none() {
        if let Some(e) = start_error {
            return Err(e);
        }
    }
    if let Mode::Run { .. } = mode {
        if outcome.rc.is_none() {
            let serial = serial_log.display().to_string();
            if outcome.timed_out {
                return Err(Error::TimedOut(Box::new(crate::TimedOut {
                    name: spec.name.clone(),
                    secs: p.timeout.map_or(0, |t| t.as_secs()),
                    reached_command: outcome.reached_command,
                    serial_log: serial,
                })));
            }
            return Err(Error::GuestFailed(Box::new(crate::GuestFailed {
                name: spec.name.clone(),
                reached_command: outcome.reached_command,
                panic: outcome.panic.clone(),
                exit: outcome.exit.clone(),
                serial_log: serial,
                tail: lines_up_to(&serial_log, "Kernel panic - ", 12),
            })));
        }
    }
    Ok(outcome)
}

/// The last `n` lines of the file up to and including the first line containing `mark`
/// (the lines that led to a panic, not its call trace), or its last `n` lines.
fn lines_up_to(p: &Path, mark: &str, n: usize) -> String {
    let s = std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.contains(mark))
        .map_or(lines.len(), |i| i + 1);
    lines[end.saturating_sub(n)..end].join("\n")
}

/// Where a failed throwaway run's serial log is kept (the last one per name).
pub fn failed_run_log(lab: &str, name: &str) -> PathBuf {
    netns::paths::lab_run_dir(lab)
        .join("failed-runs")
        .join(format!("{name}.serial.log"))
}

fn spawn_qemu(p: &Prepared) -> Result<Child, Error> {
    let spec = &p.spec;
    let nsp = model::paths::netns_path(&p.lab);
    let ns = std::fs::File::open(&nsp).map_err(|e| Error::io(&nsp, e))?;
    let log = spec.dir.join("qemu.log");
    let logf = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
    let mut cmd = Command::new(&spec.qemu);
    cmd.args(spec.args())
        .stdin(Stdio::null())
        .stdout(logf.try_clone().map_err(|e| Error::io(&log, e))?)
        .stderr(logf);
    let ns_fd = ns.as_raw_fd();
    // SAFETY: the hook runs between fork and exec and makes only async-signal-safe calls on
    // fds that stay open until the spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            // Only async-signal-safe calls here (we are between fork and exec).
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Own process group: a terminal's Ctrl-C reaches the supervisor, which stops
            // the VM properly, not QEMU directly.
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            let empty = sigset(&[]);
            libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::QemuStart(format!("{}: {e}", spec.qemu.display())))?;
    drop(ns);
    // QEMU is up once its QMP socket exists; an early exit is a configuration error.
    let t0 = Instant::now();
    while !spec.qmp_sock().exists() {
        if let Ok(Some(s)) = child.try_wait() {
            return Err(Error::QemuStart(format!(
                "exited at startup ({s}):\n{}",
                tail_lines(&log, 20)
            )));
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::QemuStart(format!(
                "no QMP socket after 30 s:\n{}",
                tail_lines(&log, 20)
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

pub fn tail_lines(p: &Path, n: usize) -> String {
    let s = std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
        .unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Follows the serial log and picks the command's output and status out of it.
struct RunTail {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    in_output: bool,
    pending_newline: bool,
    rc: Option<i32>,
    verbose: bool,
    /// Say on stderr when the guest got its lease and started the command, as NAME: ….
    progress: Option<String>,
    begun: bool,
    panic: Option<String>,
    origin: Instant,
    timings: Timings,
}

impl RunTail {
    fn new(verbose: bool, progress: Option<String>) -> RunTail {
        RunTail {
            file: None,
            buf: vec![],
            in_output: false,
            pending_newline: false,
            rc: None,
            verbose,
            progress,
            begun: false,
            panic: None,
            origin: Instant::now(),
            timings: Timings::default(),
        }
    }

    fn poll(&mut self, path: &Path, out: &mut dyn Write) {
        if self.file.is_none() {
            self.file = std::fs::File::open(path).ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match f.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.timings
                        .kernel
                        .get_or_insert_with(|| self.origin.elapsed());
                    self.buf.extend_from_slice(&chunk[..n])
                }
            }
        }
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(&line, out);
        }
        let _ = out.flush();
    }

    fn line(&mut self, line: &[u8], out: &mut dyn Write) {
        let s = String::from_utf8_lossy(line);
        let now = self.origin.elapsed();
        let t = &mut self.timings;
        for (marker, slot) in [
            (initramfs::INIT_MARK, &mut t.init),
            (initramfs::LINK_MARK, &mut t.link_up),
            (initramfs::LEASE_MARK, &mut t.lease),
            (initramfs::RUN_BEGIN, &mut t.command_start),
            (initramfs::RUN_END_PREFIX, &mut t.command_end),
        ] {
            if slot.is_none() && s.contains(marker) {
                *slot = Some(now);
            }
        }
        if self.panic.is_none() {
            if let Some(i) = s.find("Kernel panic - ") {
                self.panic = Some(s[i..].trim_end().to_string());
            }
        }
        if !self.in_output {
            if s.contains(initramfs::RUN_BEGIN) {
                self.in_output = true;
                self.begun = true;
                if let Some(name) = &self.progress {
                    eprintln!("{name}: running the command");
                }
            } else if self.verbose {
                eprintln!("{s}");
            } else if let Some(name) = &self.progress {
                if let Some(i) = s.find("labnet-init: ") {
                    // The init's own news: its lease, or what went wrong on the way.
                    eprintln!("{name}: {}", s[i + "labnet-init: ".len()..].trim_end());
                }
            }
            return;
        }
        if let Some(i) = s.find(initramfs::RUN_END_PREFIX) {
            let rest = &s[i + initramfs::RUN_END_PREFIX.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            self.rc = digits.parse().ok();
            self.in_output = false;
            // The marker follows a newline the init added itself; drop it.
            self.pending_newline = false;
            return;
        }
        if self.pending_newline {
            let _ = out.write_all(b"\n");
        }
        let _ = out.write_all(line);
        self.pending_newline = true;
    }
}

fn supervise(p: &Prepared, child: &mut Child, mode: Mode) -> Result<Outcome, Error> {
    let spec = &p.spec;
    let set = sigset(&STOP_SIGNALS);
    let t0 = Instant::now();
    let mut tail = match mode {
        Mode::Run { verbose, progress } => {
            RunTail::new(verbose, progress.then(|| spec.name.clone()))
        }
        Mode::Start { .. } => RunTail::new(false, None),
    };
    tail.origin = p.started;
    let mut console = None;
    if let Mode::Start {
        attach_console: true,
    } = mode
    {
        let sock = spec.console_sock();
        console = Some(std::thread::spawn(move || {
            crate::manage::attach_console_path(&sock)
        }));
    }
    let mut stop_started: Option<Instant> = None;
    let mut marker_seen_at: Option<Instant> = None;
    let mut last_lab_check = Instant::now();
    let mut timed_out = false;
    let mut stdout = std::io::stdout();
    loop {
        if let Some(s) = child
            .try_wait()
            .map_err(|e| Error::Qemu(format!("wait: {e}")))?
        {
            if let Mode::Run { .. } = mode {
                tail.poll(&spec.serial_log(), &mut stdout);
            }
            if let Some(c) = console {
                // QEMU closed the socket; the console thread restores the terminal and ends.
                let _ = c.join();
            }
            let mut timings = std::mem::take(&mut tail.timings);
            timings.qemu_exit = Some(p.started.elapsed());
            return Ok(Outcome {
                rc: tail.rc,
                exit: format!("qemu {s}"),
                timed_out,
                timings,
                reached_command: tail.begun,
                panic: tail.panic.clone(),
            });
        }
        let ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 20_000_000,
        };
        // SAFETY: `set` and `ts` are initialised locals; a null siginfo pointer is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
        if sig > 0 && stop_started.is_none() {
            stop_started = Some(Instant::now());
            request_stop(spec, p.generated_initramfs);
        }
        // `labnet down` removed the lab under the VM: its network is gone for good, so the
        // VM goes too (instead of running on, unreachable, in an orphaned namespace).
        if stop_started.is_none() && last_lab_check.elapsed() > Duration::from_millis(500) {
            last_lab_check = Instant::now();
            if !model::paths::netns_path(&p.lab).exists() {
                eprintln!("{}: lab {} is gone; stopping the VM", spec.name, p.lab);
                stop_started = Some(Instant::now());
                request_stop(spec, p.generated_initramfs);
            }
        }
        if let Mode::Run { .. } = mode {
            tail.poll(&spec.serial_log(), &mut stdout);
            if tail.rc.is_some() && marker_seen_at.is_none() {
                marker_seen_at = Some(Instant::now());
            }
        }
        if let Some(t) = p.timeout {
            if !timed_out && t0.elapsed() > t {
                timed_out = true;
                let _ = child.kill();
            }
        }
        // The guest powers off right after the marker; if it does not, stop waiting.
        if marker_seen_at.is_some_and(|m| m.elapsed() > Duration::from_secs(10)) {
            let _ = child.kill();
        }
        if stop_started.is_some_and(|s| s.elapsed() > Duration::from_secs(30)) {
            let _ = child.kill();
        }
    }
}

/// A graceful stop: an initramfs guest has nothing to flush, so QEMU may quit at once;
/// a disk guest gets an ACPI power button press.
pub fn request_stop(spec: &Spec, generated_initramfs: bool) {
    if let Ok(mut q) = crate::qmp::Qmp::connect(&spec.qmp_sock(), Duration::from_secs(2)) {
        let _ = q.execute(if generated_initramfs {
            "quit"
        } else {
            "system_powerdown"
        });
    }
}

/// `--daemonize`: re-runs this program with `args` (the same command minus --daemonize) as
/// a detached supervisor (own session, output in the VM dir), and waits until its VM runs.
pub fn daemonize(args: &[std::ffi::OsString], lab: &str, name: &str) -> Result<VmState, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let dir = state::vm_dir(lab, name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let log = dir.join("supervisor.log");
    let f = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().map_err(|e| Error::io(&log, e))?)
        .stderr(f);
    // SAFETY: the hook runs between fork and exec and only calls setsid(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Other(format!("spawn supervisor: {e}")))?;
    let pid = child.id();
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = VmState::load_dir(&dir) {
            if st.supervisor_pid == pid && st.status == Status::Running {
                return Ok(st);
            }
        }
        if let Ok(Some(s)) = child.try_wait() {
            let mut msg = String::new();
            let _ = std::fs::File::open(&log).and_then(|mut f| {
                f.seek(SeekFrom::Start(0))?;
                f.read_to_string(&mut msg)
            });
            return Err(Error::Other(format!(
                "the VM supervisor exited ({s}): {}",
                msg.trim()
            )));
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(Error::Other(format!(
                "the VM did not start within 120 s; see {}",
                log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(log: &[u8], verbose: bool) -> (String, Option<i32>) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("serial.log");
        std::fs::write(&p, b"").unwrap();
        let mut t = RunTail::new(verbose, None);
        let mut out = vec![];
        // Written in pieces, as QEMU does, with polls in between.
        for chunk in log.chunks(7) {
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(chunk).unwrap();
            t.poll(&p, &mut out);
        }
        (String::from_utf8(out).unwrap(), t.rc)
    }

    #[test]
    fn timings_pick_up_each_milestone_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("serial.log");
        std::fs::write(&p, b"[0.1] Linux version 6.1\r\nlabnet-init: /init running\r\nlabnet-init: eth0 up\r\nlabnet-init: lease 192.168.0.100 on eth0\r\n@@LABNET-RUN-BEGIN@@\r\nlabnet-init: /init running\r\n@@LABNET-RUN-END rc=0@@\r\n").unwrap();
        let mut t = RunTail::new(false, None);
        let mut out = vec![];
        t.poll(&p, &mut out);
        let tm = &t.timings;
        for (n, v) in [
            ("kernel", tm.kernel),
            ("init", tm.init),
            ("link", tm.link_up),
            ("lease", tm.lease),
            ("start", tm.command_start),
            ("end", tm.command_end),
        ] {
            assert!(v.is_some(), "{n} missing");
        }
        assert!(tm.init <= tm.command_start && tm.command_start <= tm.command_end);
        let r = tm.render();
        assert!(
            r.starts_with("kernel start ")
                && r.contains(", /init ")
                && r.contains(", command end "),
            "{r}"
        );
        // The command's own output mentioning a marker does not move the milestone.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "labnet-init: /init running"
        );
    }

    #[test]
    fn run_output_between_markers() {
        let log = b"\x1bc\x1b[?7l[    1.0] boot noise\r\n@@LABNET-RUN-BEGIN@@\r\nhi\r\nthere\r\n\r\n@@LABNET-RUN-END rc=3@@\r\n[    2.5] reboot: Power down\r\n";
        assert_eq!(tail_of(log, false), ("hi\nthere\n".into(), Some(3)));
    }

    #[test]
    fn output_without_final_newline_and_empty_output() {
        let log = b"@@LABNET-RUN-BEGIN@@\r\nno-newline\r\n@@LABNET-RUN-END rc=0@@\r\n";
        assert_eq!(tail_of(log, false), ("no-newline".into(), Some(0)));
        let log = b"@@LABNET-RUN-BEGIN@@\r\n\r\n@@LABNET-RUN-END rc=127@@\r\n";
        assert_eq!(tail_of(log, false), ("".into(), Some(127)));
    }

    #[test]
    fn no_end_marker_means_no_status() {
        let log = b"@@LABNET-RUN-BEGIN@@\r\nhalf\r\nKernel panic\r\n";
        let (out, rc) = tail_of(log, false);
        assert_eq!(rc, None);
        assert!(out.starts_with("half"), "{out}");
    }

    #[test]
    fn modules_dir_guess() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        std::fs::create_dir_all(d.path().join("lib/modules/6.1.0-x")).unwrap();
        std::fs::write(d.path().join("lib/modules/6.1.0-x/modules.dep"), "").unwrap();
        let k = d.path().join("boot/vmlinuz-6.1.0-x");
        std::fs::write(&k, b"k").unwrap();
        assert_eq!(
            guess_modules_dir(&k).unwrap(),
            std::fs::canonicalize(d.path())
                .unwrap()
                .join("lib/modules/6.1.0-x")
        );
        assert!(guess_modules_dir(&d.path().join("bzImage")).is_none());
    }
}
