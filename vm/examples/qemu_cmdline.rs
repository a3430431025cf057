//! What `labnet vm run` derives for VM `k1` in lab `lab0` before it starts anything: the
//! stable MAC and tap name, the guest's `/init`, and the QEMU command line (as pure data; no
//! QEMU, tap or namespace is touched).
//! `cargo run -p vm --example qemu_cmdline [LAB] [NAME]`
use vm::qemu::{Accel, Machine, Spec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let lab = args.next().unwrap_or_else(|| "lab0".into());
    let name = args.next().unwrap_or_else(|| "k1".into());
    vm::naming::check_name(&name)?;
    let init = vm::initramfs::init_script(&vm::initramfs::InitSpec {
        hostname: name.clone(),
        modules: vec!["kernel/net/ceph/libceph.ko".into()],
        shares: vec![],
        run: Some(vm::initramfs::RunCmd::Argv(vec![
            "uname".into(),
            "-r".into(),
        ])),
    });
    let (machine, accel) = (Machine::Microvm, Accel::Tcg);
    let spec = Spec {
        qemu: "qemu-system-x86_64".into(),
        name: name.clone(),
        machine,
        accel,
        mem: "512M".into(),
        cpus: 2,
        kernel: "/boot/vmlinuz".into(),
        initrd: Some(format!("/run/labnet/{lab}/vms/{name}/initrd").into()),
        append: vm::qemu::cmdline(machine, accel, Some("ceph.debug=1")),
        dir: format!("/run/labnet/{lab}/vms/{name}").into(),
        tap: vm::naming::tap_for(&lab, &name),
        mac: vm::naming::mac_for(&lab, &name),
        vhost: false,
        drive: None,
        shares: vec![vm::qemu::Share::parse("/tmp:src")?],
        multipath: None,
        extra: vec![],
        pvh: false,
        allow_reboot: false,
        gdb: false,
        kgdb: false,
    };
    println!("mac {}\ntap {}", spec.mac, spec.tap);
    println!("--- /init\n{init}");
    println!("--- qemu\n{}", spec.command_line());
    Ok(())
}
