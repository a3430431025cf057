//! The lab zone dns serves, from a hosts file as dhcpd writes it: the forward and reverse
//! names, without a socket. `cargo run -p dns --example lab_zone`
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hosts_file = model::hosts::format([
        ("192.168.0.100".parse()?, "vm1"),
        ("192.168.0.101".parse()?, "vm2"),
    ]);
    let (hosts, bad) = dns::hosts::parse(&hosts_file, "lab");
    assert!(bad.is_empty());
    let zones = dns::zone::LocalZones::new("lab", "192.168.0.1".parse()?, 24)?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let n = rt.block_on(zones.replace(&hosts));
    println!("zone lab.: {n} names");
    for h in &hosts {
        println!(
            "  {}.lab. A {}  <-  {}",
            h.name,
            h.ip,
            dns::zone::ptr_name(h.ip)
        );
    }
    for r in zones.reverse_names() {
        println!("  reverse zone {r}");
    }
    Ok(())
}
