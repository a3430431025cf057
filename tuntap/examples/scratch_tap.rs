//! A persistent TAP device (what a VM's NIC plugs into), made with the tun ioctls on a
//! thread in a network namespace of its own: the device and the namespace vanish when the
//! thread ends. Needs root (CAP_NET_ADMIN).
//! `cargo run -p labnet-tuntap --example scratch_tap [NAME]`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let name = std::env::args().nth(1).unwrap_or_else(|| "lrtap0".into());
    std::thread::spawn(
        move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("unshare(CLONE_NEWNET) (needs root): {e}"))?;
            let owner = nix::unistd::getuid().as_raw();
            tuntap::tun::create_persistent(&name, tuntap::tun::Kind::Tap, Some(owner))?;
            // A second call re-opens the same device.
            tuntap::tun::create_persistent(&name, tuntap::tun::Kind::Tap, Some(owner))?;
            let index = nix::net::if_::if_nametoindex(name.as_str())?;
            println!("tap {name}: ifindex {index}, owner uid {owner}, in a scratch namespace");
            Ok(())
        },
    )
    .join()
    .map_err(|_| "the namespace thread panicked")?
    .map_err(|e| e.to_string())?;
    Ok(())
}
