//! The QEMU command line, as pure data: everything `labnet vm` decides about a VM ends up
//! in a [`Spec`], and [`Spec::args`] turns it into argv (golden-tested, no root needed).
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Machine {
    Q35,
    Microvm,
}

impl Machine {
    pub fn parse(s: &str) -> Result<Machine, crate::Error> {
        match s {
            "q35" => Ok(Machine::Q35),
            "microvm" => Ok(Machine::Microvm),
            _ => Err(crate::Error::invalid(
                "--machine",
                format!("{s:?}: expected q35 or microvm"),
            )),
        }
    }
    /// virtio devices sit on virtio-mmio on microvm, on PCI on q35.
    fn virtio(self, dev: &str) -> String {
        match self {
            Machine::Q35 => format!("{dev}-pci"),
            Machine::Microvm => format!("{dev}-device"),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Machine::Q35 => "q35",
            Machine::Microvm => "microvm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disk {
    pub path: PathBuf,
    /// "raw" or "qcow2"
    pub format: String,
}

impl Disk {
    /// Reads the first bytes to tell qcow2 from raw (block devices are raw).
    pub fn probe(path: &Path) -> std::io::Result<Disk> {
        use std::io::Read;
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path)?;
        let n = f.read(&mut magic)?;
        let format = if n == 4 && &magic == b"QFI\xfb" {
            "qcow2"
        } else {
            "raw"
        };
        Ok(Disk {
            path: path.to_path_buf(),
            format: format.into(),
        })
    }
}

/// How a share reaches the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// QEMU's own 9p server (virtio-9p).
    #[default]
    #[serde(rename = "9p")]
    NineP,
    /// A virtiofsd per share, reached through vhost-user-fs (needs shared guest memory).
    Virtiofs,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::NineP => "9p",
            Transport::Virtiofs => "virtiofs",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub path: PathBuf,
    pub tag: String,
    /// `--share-ro`: the host side refuses writes (virtiofsd --readonly, 9p readonly=on).
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub transport: Transport,
}

impl Share {
    /// `DIR[:TAG]`; the tag defaults to the directory's base name.
    pub fn parse(s: &str) -> Result<Share, crate::Error> {
        let (dir, tag) = match s.rsplit_once(':') {
            Some((d, t)) if !t.contains('/') => (d, Some(t)),
            _ => (s, None),
        };
        let path = std::fs::canonicalize(dir)
            .map_err(|e| crate::Error::invalid("--share", format!("{dir}: {e}")))?;
        if !path.is_dir() {
            return Err(crate::Error::invalid(
                "--share",
                format!("{dir}: not a directory"),
            ));
        }
        let tag = tag.map(str::to_string).unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "share".into())
        });
        if tag.is_empty()
            || tag.len() > 31
            || !tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(crate::Error::invalid(
                "--share",
                format!("tag {tag:?}: 1-31 of [A-Za-z0-9._-]"),
            ));
        }
        Ok(Share {
            path,
            tag,
            readonly: false,
            transport: Transport::NineP,
        })
    }

    /// `--share-ro DIR[:TAG]`.
    pub fn parse_readonly(s: &str) -> Result<Share, crate::Error> {
        Ok(Share {
            readonly: true,
            ..Share::parse(s).map_err(|e| match e {
                crate::Error::Invalid { message, .. } => {
                    crate::Error::invalid("--share-ro", message)
                }
                e => e,
            })?
        })
    }
}

/// Everything that decides the QEMU command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub qemu: PathBuf,
    pub name: String,
    pub machine: Machine,
    pub accel: Accel,
    pub mem: String,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The full kernel command line (see [`cmdline`]).
    pub append: String,
    /// The VM's runtime dir: console socket, serial log, QMP socket, pid file.
    pub dir: PathBuf,
    pub tap: String,
    pub mac: String,
    pub vhost: bool,
    pub drive: Option<Disk>,
    pub shares: Vec<Share>,
    /// (disk, serial, wwn): one file seen through two SCSI paths.
    pub multipath: Option<(Disk, String, String)>,
    pub extra: Vec<String>,
    /// The kernel is an uncompressed vmlinux booted through PVH (microvm only).
    #[serde(default)]
    pub pvh: bool,
    /// A guest reboot restarts the guest (no -no-reboot): for long-lived disk VMs.
    #[serde(default)]
    pub allow_reboot: bool,
    /// `--gdb`: QEMU's gdbstub on [`Spec::gdb_sock`].
    #[serde(default)]
    pub gdb: bool,
    /// `--kgdb`: a second serial port (the guest's ttyS1, for `kgdboc`) on
    /// [`kgdb_sock`].
    #[serde(default)]
    pub kgdb: bool,
}

/// The kernel command line: serial console, quiet boot, reboot = exit (with -no-reboot),
/// and for microvm under TCG a fixed TSC frequency (PIT calibration there can hang the boot,
/// see machine.md); the user's `--append` comes last so it wins.
pub fn cmdline(machine: Machine, accel: Accel, user: Option<&str>) -> String {
    cmdline_for(machine, accel, false, None, user)
}

/// As [`cmdline`]; `pvh`: no ACPI, so no ACPI power-off: the guest ends with a reset
/// (`reboot=t`: triple fault, immediate), which -no-reboot turns into QEMU's exit.
/// `kernel_hz`: the guest kernel's CONFIG_HZ, when known (see below).
pub fn cmdline_for(
    machine: Machine,
    accel: Accel,
    pvh: bool,
    kernel_hz: Option<u32>,
    user: Option<&str>,
) -> String {
    let mut a: Vec<String> = ["console=ttyS0", "panic=-1", "quiet", "loglevel=3"]
        .map(String::from)
        .into();
    if machine == Machine::Microvm && accel == Accel::Tcg {
        a.push(format!("tsc_early_khz={TCG_TSC_KHZ}"));
    }
    // q35 under TCG on a loaded host: the kernel's IO-APIC timer check can fail and panic
    // ("IO-APIC + timer doesn't work!", seen with the Debian 6.1 kernel); the check only
    // guards against broken hardware timers, which QEMU's are not.
    if machine == Machine::Q35 && accel == Accel::Tcg {
        a.push("no_timer_check".into());
    }
    if pvh {
        a.push("reboot=t".into());
    }
    // PVH under TCG: two calibrations that only cost time (measured, bench/RESULTS.md
    // "Boot time over the floor"). The local APIC timer's check against the PIT fails
    // under TCG after ~0.3 s and the kernel runs on the PIT anyway ("APIC timer disabled
    // due to verification failure"): `noapictimer` goes there at once (PVH keeps the PIT;
    // the non-PVH microvm has pit=off and needs the APIC timer). The second CPU calibrates
    // its delay loop (no constant_tsc under TCG: ~0.3 s, failing too): `lpj=` presets the
    // value the boot CPU takes from the TSC, TSC kHz * 1000 / HZ (udelay counts TSC cycles).
    // PVH on microvm has no PCI bus (no ACPI, so no PCIe either): `pci=off` skips probing
    // for one.
    if pvh && machine == Machine::Microvm {
        a.push("pci=off".into());
    }
    // The IO-APIC timer check fails under TCG here too ("8254 timer not connected to
    // IO-APIC"), and two more routings are tried before the timer runs; yet the first one
    // works (the PIT's interrupts arrive through IO-APIC pin 2 with the check skipped): the
    // check costs ~0.1 s and changes nothing but the routing.
    // Expedited RCU grace periods after boot too (the kernel expedites them only until /init):
    // udhcpc opens, binds and closes packet sockets for each DHCP message, and each close
    // waits for a grace period (synchronize_net), ticks away under TCG; the guest's DHCP
    // exchange took 110-150 ms with normal grace periods, 20-30 ms expedited (bench/RESULTS.md).
    if pvh && machine == Machine::Microvm && accel == Accel::Tcg {
        a.push("no_timer_check".into());
        a.push("rcupdate.rcu_expedited=1".into());
        a.push("noapictimer".into());
        if let Some(hz) = kernel_hz.filter(|&hz| hz > 0) {
            a.push(format!(
                "lpj={}",
                u64::from(TCG_TSC_KHZ) * 1000 / u64::from(hz)
            ));
        }
    }
    let mut s = a.join(" ");
    if let Some(u) = user.filter(|u| !u.trim().is_empty()) {
        s.push(' ');
        s.push_str(u.trim());
    }
    s
}

/// The TSC frequency a microvm guest under TCG is told (`tsc_early_khz`): PIT calibration
/// there can hang the boot (machine.md).
const TCG_TSC_KHZ: u32 = 2_000_000;

impl Spec {
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn console_sock(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
    pub fn qmp_sock(&self) -> PathBuf {
        qmp_sock(&self.dir)
    }
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("qemu.pid")
    }
    /// The gdbstub's socket (`--gdb`): a unix socket, so no TCP port is open anywhere.
    pub fn gdb_sock(&self) -> PathBuf {
        gdb_sock(&self.dir)
    }
    /// The vhost-user socket of virtiofsd for share `i`.
    pub fn virtiofs_sock(&self, i: usize) -> PathBuf {
        self.dir.join(format!("virtiofs{i}.sock"))
    }
    fn has_virtiofs(&self) -> bool {
        self.shares
            .iter()
            .any(|s| s.transport == Transport::Virtiofs)
    }

    pub fn args(&self) -> Vec<String> {
        let d = |p: &Path| p.display().to_string();
        let mut a: Vec<String> = vec![];
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        let mut machine = String::new();
        push(&[
            "-name",
            &format!("{},process=qemu-{}", self.name, self.name),
        ]);
        match self.machine {
            // PVH: without ACPI and the second IOAPIC; with either, the Debian 6.1 kernel's
            // timer interrupts never arrive once a virtio-mmio device exists (boot hangs).
            // Devices are then found through virtio_mmio.device= on the command line
            // (needs CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y; the init passes it to the module).
            Machine::Microvm if self.pvh => machine.push_str("microvm,ioapic2=off,acpi=off"),
            // No legacy PIT/PIC: the fastest measured microvm boot (machine.md).
            Machine::Microvm => machine.push_str("microvm,pit=off,pic=off"),
            Machine::Q35 => machine.push_str("q35"),
        }
        // virtiofsd maps the guest's memory: it must be a shareable file (memfd).
        if self.has_virtiofs() {
            machine.push_str(",memory-backend=mem");
        }
        push(&["-M", &machine]);
        if self.has_virtiofs() {
            push(&[
                "-object",
                &format!("memory-backend-memfd,id=mem,size={},share=on", self.mem),
            ]);
        }
        push(&["-accel", self.accel.as_str()]);
        if self.accel == Accel::Kvm {
            push(&["-cpu", "host"]);
        }
        push(&["-m", &self.mem, "-smp", &self.cpus.to_string()]);
        push(&["-nodefaults", "-no-user-config", "-display", "none"]);
        if !self.allow_reboot {
            push(&["-no-reboot"]);
        }
        push(&["-kernel", &d(&self.kernel)]);
        if let Some(i) = &self.initrd {
            push(&["-initrd", &d(i)]);
        }
        push(&["-append", &self.append]);
        // The serial console: a socket for `labnet vm console`, logged to a file always.
        push(&[
            "-chardev",
            &format!(
                "socket,id=ser0,path={},server=on,wait=off,logfile={}",
                d(&self.console_sock()),
                d(&self.serial_log())
            ),
            "-serial",
            "chardev:ser0",
        ]);
        push(&[
            "-qmp",
            &format!("unix:{},server=on,wait=off", d(&self.qmp_sock())),
        ]);
        push(&["-pidfile", &d(&self.pid_file())]);
        // `labnet vm dump`: the guest's fw_cfg driver (found through ACPI) tells QEMU where
        // its VMCOREINFO note is, so dump-guest-memory can write it into the vmcore. Not on
        // a PVH boot: without ACPI tables a 6.1 kernel's fw_cfg driver fails (it cannot take
        // the ACPI global lock it wants when ACPI is built in); there `vm dump` reads the note
        // from the guest's memory itself (dump/guest_note.rs).
        push(&["-device", "vmcoreinfo"]);
        if self.gdb {
            push(&[
                "-chardev",
                &format!(
                    "socket,id=gdb0,path={},server=on,wait=off",
                    d(&self.gdb_sock())
                ),
                "-gdb",
                "chardev:gdb0",
            ]);
        }
        // An ISA port at index 1 (0x2f8, the guest's ttyS1) on microvm and q35 alike
        // (microvm's `-serial` makes one port only).
        if self.kgdb {
            push(&[
                "-chardev",
                &format!(
                    "socket,id=kgdb0,path={},server=on,wait=off",
                    d(&kgdb_sock(&self.dir))
                ),
                "-device",
                "isa-serial,chardev=kgdb0,index=1",
            ]);
        }
        let vhost = if self.vhost { ",vhost=on" } else { "" };
        push(&[
            "-netdev",
            &format!(
                "tap,id=net0,ifname={},script=no,downscript=no{vhost}",
                self.tap
            ),
        ]);
        let rom = if self.machine == Machine::Q35 {
            ",romfile="
        } else {
            ""
        };
        push(&[
            "-device",
            &format!(
                "{},netdev=net0,mac={}{rom}",
                self.machine.virtio("virtio-net"),
                self.mac
            ),
        ]);
        // An entropy source: without one the guest kernel's random pool becomes ready only
        // ~1-2 s into a TCG boot, and whatever waits for it waits that long (the CephFS
        // mount did: bench/RESULTS.md "CephFS mount time"). PVH boots only (a labnet-built
        // kernel, virtio-rng built in): the Debian 6.1 kernel on microvm with ACPI printed
        // nothing and never reached /init with this device added.
        if self.pvh {
            push(&[
                "-object",
                "rng-random,id=rng0,filename=/dev/urandom",
                "-device",
                &format!("{},rng=rng0", self.machine.virtio("virtio-rng")),
            ]);
        }
        if let Some(disk) = &self.drive {
            push(&[
                "-drive",
                &format!(
                    "file={},format={},if=none,id=disk0",
                    d(&disk.path),
                    disk.format
                ),
            ]);
            push(&[
                "-device",
                &format!("{},drive=disk0", self.machine.virtio("virtio-blk")),
            ]);
        }
        for (i, s) in self.shares.iter().enumerate() {
            match s.transport {
                Transport::NineP => {
                    let ro = if s.readonly { ",readonly=on" } else { "" };
                    push(&[
                        "-fsdev",
                        &format!("local,id=fs{i},path={},security_model=none{ro}", d(&s.path)),
                    ]);
                    push(&[
                        "-device",
                        &format!(
                            "{},fsdev=fs{i},mount_tag={}",
                            self.machine.virtio("virtio-9p"),
                            s.tag
                        ),
                    ]);
                }
                Transport::Virtiofs => {
                    push(&[
                        "-chardev",
                        &format!("socket,id=fs{i},path={}", d(&self.virtiofs_sock(i))),
                    ]);
                    push(&[
                        "-device",
                        &format!(
                            "{},chardev=fs{i},tag={},queue-size=1024",
                            self.machine.virtio("vhost-user-fs"),
                            s.tag
                        ),
                    ]);
                }
            }
        }
        if let Some((disk, serial, wwn)) = &self.multipath {
            push(&[
                "-device",
                &format!("{},id=scsi0", self.machine.virtio("virtio-scsi")),
            ]);
            // Same serial and wwn on both paths, and share-rw so the second path may open the
            // file for writing too (machine.md §5). Block nodes and device ids are named so
            // `vm path` can pull a path and plug it back (crate::path).
            for p in crate::path::PATHS {
                push(&[
                    "-blockdev",
                    &format!(
                        "driver={},node-name={},file.driver=file,file.filename={}",
                        disk.format,
                        p.node(),
                        d(&disk.path).replace(',', ",,")
                    ),
                ]);
                push(&[
                    "-device",
                    &format!(
                        "scsi-hd,id={},drive={},bus={},scsi-id={},lun=0,serial={serial},wwn={wwn},share-rw=on",
                        p.device(),
                        p.node(),
                        crate::path::SCSI_BUS,
                        p.scsi_id()
                    ),
                ]);
            }
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// The command line as one shell-pasteable string (for logs and `--dry-run`).
    pub fn command_line(&self) -> String {
        std::iter::once(self.qemu.display().to_string())
            .chain(self.args())
            .map(|w| crate::initramfs::shell_quote(&w))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The QMP socket of the VM whose runtime dir is `dir`.
pub fn qmp_sock(dir: &Path) -> PathBuf {
    dir.join("qmp.sock")
}

/// The gdbstub socket of the VM whose runtime dir is `dir`.
pub fn gdb_sock(dir: &Path) -> PathBuf {
    dir.join("gdb.sock")
}

/// The KGDB serial line (the guest's ttyS1) of the VM whose runtime dir is `dir`.
pub fn kgdb_sock(dir: &Path) -> PathBuf {
    dir.join("kgdb.sock")
}

/// Golden-file helper shared by the crate's tests: vm/tests/golden/NAME (LABNET_BLESS=1
/// regenerates).
#[cfg(test)]
pub(crate) mod golden {
    pub fn check(name: &str, actual: &str) {
        testkit::golden!(name, actual);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(machine: Machine) -> Spec {
        Spec {
            qemu: "qemu-system-x86_64".into(),
            name: "vm1".into(),
            machine,
            accel: Accel::Tcg,
            mem: "1G".into(),
            cpus: 2,
            kernel: "/k/bzImage".into(),
            initrd: Some("/run/labnet/lab/vms/vm1/initramfs.cpio".into()),
            append: cmdline(machine, Accel::Tcg, Some("ceph.debug=1")),
            dir: "/run/labnet/lab/vms/vm1".into(),
            tap: "tap-vm1".into(),
            mac: crate::naming::mac_for("lab", "vm1"),
            vhost: false,
            drive: None,
            shares: vec![],
            multipath: None,
            extra: vec![],
            pvh: false,
            allow_reboot: false,
            kgdb: false,
            gdb: false,
        }
    }

    fn lines(s: &Spec) -> String {
        // One "-flag value" pair per line keeps the golden diffs readable.
        let mut out = String::new();
        for w in s.args() {
            if w.starts_with('-') && !out.is_empty() {
                out.push('\n');
            } else if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&w);
        }
        out.push('\n');
        out
    }

    #[test]
    fn golden_microvm_initramfs() {
        golden::check("microvm-initramfs.args", &lines(&base(Machine::Microvm)));
    }

    #[test]
    fn golden_q35_full() {
        let mut s = base(Machine::Q35);
        s.initrd = None;
        s.append = cmdline(Machine::Q35, Accel::Kvm, Some("root=/dev/vda1 rw"));
        s.accel = Accel::Kvm;
        s.vhost = true;
        s.drive = Some(Disk {
            path: "/run/labnet/lab/vms/vm1/overlay.qcow2".into(),
            format: "qcow2".into(),
        });
        s.shares = vec![
            Share {
                path: "/home/dev/linux".into(),
                tag: "linux".into(),
                readonly: false,
                transport: Transport::Virtiofs,
            },
            Share {
                path: "/home/dev/ro".into(),
                tag: "ro".into(),
                readonly: true,
                transport: Transport::Virtiofs,
            },
        ];
        s.gdb = true;
        let (serial, wwn) = crate::naming::multipath_ids("lab", "vm1");
        s.multipath = Some((
            Disk {
                path: "/images/mp.raw".into(),
                format: "raw".into(),
            },
            serial,
            wwn,
        ));
        s.extra = vec!["-s".into()];
        golden::check("q35-overlay-share-multipath.args", &lines(&s));
    }

    #[test]
    fn golden_microvm_share_multipath() {
        let mut s = base(Machine::Microvm);
        s.shares = vec![
            Share {
                path: "/srv/share".into(),
                tag: "src".into(),
                readonly: false,
                transport: Transport::NineP,
            },
            Share {
                path: "/srv/ro".into(),
                tag: "ro".into(),
                readonly: true,
                transport: Transport::NineP,
            },
        ];
        let (serial, wwn) = crate::naming::multipath_ids("lab", "vm1");
        s.multipath = Some((
            Disk {
                path: "/images/mp.qcow2".into(),
                format: "qcow2".into(),
            },
            serial,
            wwn,
        ));
        golden::check("microvm-share-multipath.args", &lines(&s));
    }

    #[test]
    fn golden_microvm_pvh() {
        let mut s = base(Machine::Microvm);
        s.pvh = true;
        s.kernel = "/run/labnet/kernels/vmlinux-0123456789abcdef".into();
        s.append = cmdline_for(Machine::Microvm, Accel::Tcg, true, Some(250), None);
        golden::check("microvm-pvh.args", &lines(&s));
    }

    #[test]
    fn golden_microvm_virtiofs_gdb() {
        let mut s = base(Machine::Microvm);
        s.shares = vec![Share {
            path: "/srv/share".into(),
            tag: "src".into(),
            readonly: false,
            transport: Transport::Virtiofs,
        }];
        s.gdb = true;
        golden::check("microvm-virtiofs-gdb.args", &lines(&s));
    }

    #[test]
    fn golden_microvm_pvh_kgdb() {
        let mut s = base(Machine::Microvm);
        s.pvh = true;
        s.kgdb = true;
        s.append = cmdline_for(
            Machine::Microvm,
            Accel::Tcg,
            true,
            Some(250),
            Some("nokaslr kgdboc=ttyS1"),
        );
        golden::check("microvm-pvh-kgdb.args", &lines(&s));
    }

    #[test]
    fn cmdline_rules() {
        assert!(cmdline(Machine::Microvm, Accel::Tcg, None).contains("tsc_early_khz=2000000"));
        assert!(!cmdline(Machine::Microvm, Accel::Kvm, None).contains("tsc_early_khz"));
        assert!(!cmdline(Machine::Q35, Accel::Tcg, None).contains("tsc_early_khz"));
        assert!(cmdline(Machine::Q35, Accel::Tcg, Some("x=1")).ends_with(" x=1"));
        // PVH under TCG skips the APIC timer check and presets the delay loop from HZ.
        let pvh = cmdline_for(Machine::Microvm, Accel::Tcg, true, Some(250), Some("x=1"));
        assert!(pvh.contains(" noapictimer lpj=8000000 x=1"), "{pvh}");
        let no_hz = cmdline_for(Machine::Microvm, Accel::Tcg, true, None, None);
        assert!(no_hz.ends_with(" noapictimer"), "{no_hz}");
        assert!(
            pvh.contains(" pci=off no_timer_check rcupdate.rcu_expedited=1 noapictimer"),
            "{pvh}"
        );
        let kvm = cmdline_for(Machine::Microvm, Accel::Kvm, true, Some(250), None);
        assert!(
            kvm.contains(" pci=off")
                && !kvm.contains("no_timer_check")
                && !kvm.contains("rcu_expedited"),
            "{kvm}"
        );
        for other in [
            kvm,
            cmdline_for(Machine::Microvm, Accel::Tcg, false, Some(250), None),
        ] {
            assert!(
                !other.contains("noapictimer") && !other.contains("lpj="),
                "{other}"
            );
        }
        // No PCI bus only on a PVH microvm.
        assert!(!cmdline_for(Machine::Microvm, Accel::Tcg, false, None, None).contains("pci=off"));
        assert!(!cmdline(Machine::Q35, Accel::Tcg, None).contains("pci=off"));
    }

    #[test]
    fn share_parsing() {
        let d = tempfile::tempdir().unwrap();
        let s = Share::parse(&format!("{}:src", d.path().display())).unwrap();
        assert_eq!(s.tag, "src");
        let s = Share::parse(&d.path().display().to_string()).unwrap();
        assert_eq!(s.tag, d.path().file_name().unwrap().to_string_lossy());
        assert!(Share::parse("/nonexistent:x")
            .unwrap_err()
            .to_string()
            .starts_with("--share: /nonexistent"));
        assert!(Share::parse(&format!("{}:bad tag", d.path().display())).is_err());
    }

    #[test]
    fn disk_probe() {
        let d = tempfile::tempdir().unwrap();
        let raw = d.path().join("a.raw");
        std::fs::write(&raw, [0u8; 512]).unwrap();
        assert_eq!(Disk::probe(&raw).unwrap().format, "raw");
        let q = d.path().join("a.qcow2");
        std::fs::write(&q, b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(Disk::probe(&q).unwrap().format, "qcow2");
    }
}
