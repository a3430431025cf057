//! `vm start --gdb`, `vm gdb` and `vm dump` end to end, as root, under TCG, on the
//! source-built kernel: batch gdb on the gdbstub's unix socket reads a kernel address from
//! rip and the guest runs on after the detach; no TCP port is open for it; the vmcore of the
//! PVH-booted guest has PT_LOAD segments covering the guest's memory and the guest's
//! VMCOREINFO note (read from guest memory by labnet: QEMU gets none on a PVH boot), and drgn
//! opens it as a kernel core; so does the vmcore of a bzImage boot, whose note QEMU writes.
use labnet_tests::*;
use object::elf;
use object::read::elf::{FileHeader, ProgramHeader};
use object::Endianness;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const MEM: u64 = 256 << 20;

/// The highest TICK-N the guest printed so far.
fn last_tick(serial: &Path) -> u64 {
    let s = std::fs::read(serial).unwrap_or_default();
    String::from_utf8_lossy(&s)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("TICK-")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// Waits until the guest prints two more ticks: it runs (and is not stopped in the stub).
fn runs_on(serial: &Path, what: &str) {
    let n = last_tick(serial);
    wait_for(
        &format!("the guest to run on after {what} (tick {n} + 2)"),
        Duration::from_secs(120),
        || last_tick(serial) >= n + 2,
    );
}

/// The value of rip in gdb's `info registers rip` output.
fn rip(out: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with("rip"))
        .unwrap_or_else(|| panic!("no rip line in {out}"));
    let hex = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.strip_prefix("0x"))
        .unwrap_or_else(|| panic!("{line}"));
    u64::from_str_radix(hex, 16).unwrap()
}

#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn gdb_reads_a_kernel_rip_and_dump_writes_a_vmcore() {
    require_root();
    let gdb = which("gdb").expect("gdb not in PATH (.ci/install-deps.sh)");
    let mut c = Cleanup::default();
    let name = "lvdbg";
    let bz = "lkbzdump";
    let l = VmLab::up(&mut c, "lv", &[name, bz]);
    let k = source_kernel().bzimage.display().to_string();
    let o = l.vm(&[
        "start",
        "--name",
        name,
        "--kernel",
        &k,
        "--mem",
        "256M",
        "--gdb",
        // The default boot of a build dir's bzImage: its vmlinux through PVH, where QEMU
        // gets no VMCOREINFO from the guest (no ACPI: see qemu.rs), so labnet must add it.
        "--daemonize",
        "--run",
        "cat /proc/cmdline; echo UNAME-$(uname -r); \
         i=0; while true; do i=$((i+1)); echo TICK-$i; sleep 1; done",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = l.vm_dir(name);
    let serial = dir.join("serial.log");
    wait_for("the guest's first tick", Duration::from_secs(240), || {
        last_tick(&serial) >= 1
    });
    let console = String::from_utf8_lossy(&std::fs::read(&serial).unwrap()).into_owned();
    assert!(console.contains(" nokaslr"), "no nokaslr: {console}");
    let uname = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("UNAME-"))
        .unwrap_or_else(|| panic!("no uname -r: {console}"))
        .to_string();
    // A PVH boot: QEMU was given the vmlinux beside the bzImage.
    let booted = l.vm_state(name)["kernel"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::canonicalize(&booted).unwrap(),
        std::fs::canonicalize(source_kernel().vmlinux).unwrap(),
        "not a PVH boot"
    );
    let qemu_pid = l.vm_state(name)["qemu_pid"].as_u64().unwrap();

    // The stub is a unix socket in the VM's dir, and QEMU listens on no TCP port anywhere.
    let sock = dir.join("gdb.sock");
    assert!(sock.exists(), "{} missing", sock.display());
    let mine = format!("pid={qemu_pid},");
    for ss in [
        sh("ss -Htlnp"),
        sh(&format!("ip netns exec {} ss -Htlnp", l.id)),
    ] {
        assert!(!ss.contains(&mine), "qemu listens on TCP: {ss}");
    }

    // Plain batch gdb on the socket: rip is in the kernel's half of the address space.
    let out = run(Command::new("timeout").args(["120"]).arg(&gdb).args([
        "-nx",
        "-batch",
        "-ex",
        &format!("target remote {}", sock.display()),
        "-ex",
        "info registers rip",
        "-ex",
        "detach",
    ]));
    assert!(out.status.success(), "{}", text(&out));
    let r = rip(&String::from_utf8_lossy(&out.stdout));
    assert!(
        r >= 0xffff_ffff_8000_0000,
        "rip {r:#x} is not a kernel address"
    );
    runs_on(&serial, "gdb detached");

    // `labnet vm gdb`: the same, with the kernel's vmlinux loaded, so rip has a symbol.
    let out = run(l
        .vm_command(&[
            "gdb",
            name,
            "--",
            "-nx",
            "-batch",
            "-ex",
            "info registers rip",
            "-ex",
            "detach",
        ])
        .env("PATH", std::env::var("PATH").unwrap()));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(rip(&stdout) >= 0xffff_ffff_8000_0000, "{stdout}");
    let rip_line = stdout.lines().find(|l| l.starts_with("rip")).unwrap();
    assert!(rip_line.contains(" <"), "no symbol for rip: {rip_line}");
    runs_on(&serial, "vm gdb detached");

    // The vmcore: labnet adds the note QEMU could not have on this PVH boot.
    check_vmcore(&l, name, &uname, "VMCOREINFO read from guest memory");
    runs_on(&serial, "the dump");

    let stop = l.vm(&["stop", name, "--timeout", "5"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(!sock.exists(), "gdb socket left after stop");

    // The bzImage boot (ACPI): the guest's fw_cfg driver hands QEMU's vmcoreinfo device the
    // note, and QEMU writes it itself.
    let o = l.vm(&[
        "start",
        "--name",
        bz,
        "--kernel",
        &k,
        "--mem",
        "256M",
        "--no-pvh",
        "--daemonize",
        "--run",
        "echo UNAME-$(uname -r); i=0; while true; do i=$((i+1)); echo TICK-$i; sleep 1; done",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let serial = l.vm_dir(bz).join("serial.log");
    wait_for(
        "the bzImage guest's first tick",
        Duration::from_secs(240),
        || last_tick(&serial) >= 1,
    );
    check_vmcore(&l, bz, &uname, "VMCOREINFO from QEMU's vmcoreinfo device");
    runs_on(&serial, "the dump");
    let stop = l.vm(&["stop", bz, "--timeout", "5"]);
    assert!(stop.status.success(), "{}", text(&stop));
}

/// `vm dump NAME`: the path printed, `source` (where the VMCOREINFO came from) on stderr,
/// PT_LOADs covering all guest RAM, the VMCOREINFO note of the guest's `uname -r`, and drgn
/// reading the vmcore as a kernel core.
fn check_vmcore(l: &VmLab, name: &str, uname: &str, source: &str) {
    let core = l.root.join(format!("{name}.vmcore"));
    let out = l.vm(&["dump", name, &core.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(source), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        std::fs::canonicalize(&core).unwrap().display().to_string()
    );
    let data = std::fs::read(&core).unwrap();
    let h = elf::FileHeader64::<Endianness>::parse(&*data).unwrap();
    let e = h.endian().unwrap();
    assert_eq!(h.e_type(e), elf::ET_CORE);
    let mut loads: Vec<(u64, u64)> = vec![];
    let mut vmcoreinfo = None;
    for ph in h.program_headers(e, &*data).unwrap() {
        match ph.p_type(e) {
            elf::PT_LOAD => {
                assert_eq!(ph.p_filesz(e), ph.p_memsz(e), "a PT_LOAD without its data");
                loads.push((ph.p_paddr(e), ph.p_paddr(e) + ph.p_memsz(e)));
            }
            elf::PT_NOTE => {
                let mut notes = ph.notes(e, &*data).unwrap().unwrap();
                while let Some(n) = notes.next().unwrap() {
                    if n.name() == b"VMCOREINFO" {
                        vmcoreinfo = Some(String::from_utf8_lossy(n.desc()).into_owned());
                    }
                }
            }
            _ => {}
        }
    }
    // The guest's RAM, 0..MEM on microvm, is covered without a gap (the firmware's ROM at
    // the top of 4 GiB comes as a segment of its own).
    loads.sort();
    let mut covered = 0;
    for (start, end) in loads.iter().filter(|(start, _)| *start < MEM) {
        assert!(
            *start <= covered,
            "guest memory {covered:#x}..{start:#x} not in the vmcore: {loads:x?}"
        );
        covered = covered.max(*end);
    }
    assert!(
        covered >= MEM,
        "the PT_LOADs cover guest memory up to {covered:#x} only, not {MEM:#x}: {loads:x?}"
    );
    let info = vmcoreinfo.expect("no VMCOREINFO note in the vmcore");
    assert!(
        info.starts_with(&format!("OSRELEASE={uname}\n")),
        "not the guest's {uname}: {info}"
    );
    assert!(info.contains("PAGESIZE=4096"), "{info}");
    assert!(info.contains("SYMBOL(swapper_pg_dir)="), "{info}");
    drop(data);
    // drgn takes it for a kernel core (it needs the note for that) and, through the guest's
    // page tables, reads the release at init_uts_ns (the note's SYMBOL: the vmlinux has no
    // DWARF, so drgn has no symbols of its own; this checks its reading of the memory).
    let drgn = which("drgn").expect("drgn not in PATH (.ci/install-deps.sh)");
    let vmlinux = source_kernel().vmlinux;
    let uts = info
        .lines()
        .find_map(|l| l.strip_prefix("SYMBOL(init_uts_ns)="))
        .unwrap_or_else(|| panic!("no SYMBOL(init_uts_ns): {info}"));
    let script = format!(
        "from drgn import ProgramFlags\n\
         assert prog.flags & ProgramFlags.IS_LINUX_KERNEL\n\
         r = prog.read(0x{uts} + 130, 65)\n\
         print('RELEASE=' + r.split(b'\\0')[0].decode())"
    );
    let out = run(Command::new("timeout")
        .arg("300")
        .arg(&drgn)
        .arg("-q")
        .arg("-c")
        .arg(&core)
        .arg("-s")
        .arg(&vmlinux)
        .args(["-e", &script]));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l == format!("RELEASE={uname}")),
        "drgn: {}",
        text(&out)
    );
    std::fs::remove_file(&core).unwrap();
}

/// `labnet vm gdb NAME --kgdb -- -nx -batch -ex 'info registers rip' -ex detach` (under a
/// timeout); rip, which must be a kernel address with a symbol.
fn kgdb_rip(l: &VmLab, name: &str) -> u64 {
    let out = run(Command::new("timeout")
        .arg("120")
        .arg(labnet_bin())
        .args(["vm", "gdb", "--lab", &l.id, name, "--kgdb", "--"])
        .args([
            "-nx",
            "-batch",
            "-ex",
            "info registers rip",
            "-ex",
            "detach",
        ])
        .envs(l.env.iter().cloned()));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r = rip(&stdout);
    assert!(r >= 0xffff_ffff_8000_0000, "not a kernel rip: {stdout}");
    let rip_line = stdout.lines().find(|l| l.starts_with("rip")).unwrap();
    assert!(rip_line.contains(" <"), "no symbol for rip: {rip_line}");
    r
}

/// `vm start --kgdb`: the guest kernel's own KGDB on the VM's second serial line (ttyS1,
/// a unix socket in the VM's dir). With `kgdbwait` the kernel stops in its boot until gdb
/// comes; `vm gdb --kgdb` reads rip there and its detach lets the boot go on to the command.
/// SysRq-G from the guest enters KGDB again, and gdb again lets the guest run on.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn kgdb_on_the_second_serial_line() {
    require_root();
    which("gdb").expect("gdb not in PATH (.ci/install-deps.sh)");
    let mut c = Cleanup::default();
    let name = "lvkgdb";
    let l = VmLab::up(&mut c, "lk", &[name]);
    let k = source_kernel().bzimage.display().to_string();
    let o = l.vm(&[
        "start",
        "--name",
        name,
        "--kernel",
        &k,
        "--kgdb",
        "--append",
        "kgdbwait",
        "--daemonize",
        "--run",
        "cat /proc/cmdline; i=0; while true; do i=$((i+1)); echo TICK-$i; \
         [ $i = 3 ] && echo g > /proc/sysrq-trigger; sleep 1; done",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = l.vm_dir(name);
    let serial = dir.join("serial.log");
    let console =
        || String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).into_owned();
    wait_for("KGDB waiting at boot", Duration::from_secs(240), || {
        console().contains("Waiting for connection from remote gdb")
    });
    let sock = dir.join("kgdb.sock");
    assert!(sock.exists(), "{} missing", sock.display());
    assert_eq!(last_tick(&serial), 0, "the boot went on before gdb came");
    kgdb_rip(&l, name);
    // Detached: the boot goes on to the command (its cmdline has what --kgdb adds), whose
    // third tick enters KGDB (SysRq-G; the tick itself may still sit in the UART then).
    wait_for(
        "the guest to enter KGDB on SysRq-G",
        Duration::from_secs(240),
        || console().contains("KGDB: Entering KGDB"),
    );
    let con = console();
    assert!(
        con.contains("kgdboc=ttyS1") && con.contains("nokaslr"),
        "{con}"
    );
    assert!(last_tick(&serial) < 4, "ran on in KGDB: {con}");
    // gdb finds the kernel there, and lets it go on.
    kgdb_rip(&l, name);
    runs_on(&serial, "the KGDB detach");

    let stop = l.vm(&["stop", name, "--timeout", "5"]);
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(!sock.exists(), "kgdb socket left after stop");
}
