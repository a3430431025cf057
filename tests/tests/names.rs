//! Lease names in the lab's DNS (issue 17, item 3), with real DHCP clients (busybox udhcpc,
//! ISC dhclient) against `labnet up`'s dhcpd and dns, checked with dig: one address per name
//! (the newest lease wins a dynamic name), a reserved name is its reservation's only, a
//! non-ASCII name becomes punycode, two names cut at 63 characters stay apart. As root.
use labnet_tests::*;
use std::process::Command;
use std::time::Duration;

const RESERVED_MAC: &str = "52:54:00:5e:00:10";

/// A client namespace `{id}n{n}` on the lab's bridge whose interface `{id}v{n}` has `mac`.
fn client(c: &mut Cleanup, lab: &str, id: &str, n: u8) -> (String, String, String) {
    let (ns, ifc) = (format!("{id}n{n}"), format!("{id}v{n}"));
    let mac = format!("52:54:00:5e:01:{n:02x}");
    c.netns(&ns);
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link set lo up && \
         ip link add {ifc} netns {ns} address {mac} type veth peer name {id}b{n} netns {lab} && \
         ip -n {lab} link set {id}b{n} master {id}br up && ip -n {ns} link set {ifc} up"
    ));
    (ns, ifc, mac)
}

/// busybox udhcpc with host name `name` (raw bytes as given); the address it was offered.
fn udhcpc(ns: &str, ifc: &str, name: &str) -> String {
    let o = run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "busybox",
        "udhcpc",
        "-i",
        ifc,
        "-x",
        &format!("hostname:{name}"),
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        "/bin/true",
    ]));
    let err = String::from_utf8_lossy(&o.stderr);
    err.split("lease of ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("udhcpc got no lease: {}", text(&o)))
        .to_string()
}

/// ISC dhclient sending `send host-name NAME`; the address it was bound to. It stays
/// running (its pid goes to the Cleanup).
fn dhclient(c: &mut Cleanup, dir: &std::path::Path, ns: &str, ifc: &str, name: &str) -> String {
    let conf = dir.join(format!("{ifc}.conf"));
    std::fs::write(&conf, format!("send host-name \"{name}\";\n")).unwrap();
    let pidfile = dir.join(format!("{ifc}.pid"));
    let o = run(Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "dhclient",
            "-1",
            "-v",
            "-sf",
            "/bin/true",
        ])
        .arg("-cf")
        .arg(&conf)
        .arg("-lf")
        .arg(dir.join(format!("{ifc}.leases")))
        .arg("-pf")
        .arg(&pidfile)
        .arg(ifc));
    if let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        c.pid(pid);
    }
    let err = String::from_utf8_lossy(&o.stderr);
    err.split("bound to ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("dhclient got no lease: {}", text(&o)))
        .to_string()
}

/// `dig +short NAME.lab` at the lab's DNS from inside the lab: the addresses, sorted.
fn resolve(lab: &str, name: &str) -> Vec<String> {
    let o = run(Command::new("ip").args([
        "netns",
        "exec",
        lab,
        "dig",
        "@10.83.0.1",
        "+short",
        "+time=1",
        "+tries=2",
        &format!("{name}.lab"),
    ]));
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

fn wait_resolves(lab: &str, name: &str, want: &[&str]) {
    let mut last = vec![];
    let ok = (0..100).any(|_| {
        last = resolve(lab, name);
        let hit = last == want;
        if !hit {
            std::thread::sleep(Duration::from_millis(100));
        }
        hit
    });
    assert!(ok, "{name}.lab resolves to {last:?}, want {want:?}");
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn lease_names_one_address_reserved_names_punycode_and_cut_names() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("ls");
    let lab = id.clone();
    let root = temp_dir(&mut c, "names");
    let env = labnet_env(&root);
    let cfg = root.join("lab.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"10.83.0.1/24\"\n\
             [dhcp]\nrange_start = \"10.83.0.100\"\nrange_end = \"10.83.0.199\"\n\
             [[dhcp.reservations]]\nmac = \"{RESERVED_MAC}\"\nip = \"10.83.0.10\"\nhostname = \"vmres\"\n\
             [dns]\nzone = \"lab\"\n"
        ),
    )
    .unwrap();
    let cfgs = cfg.display().to_string();
    c.path(format!("/etc/netns/{lab}"));
    c.labnet(&["down", &lab], &env);
    let up = labnet(&["up", &lab, "--config", &cfgs], &env);
    assert!(up.status.success(), "{}", text(&up));

    // Two clients (other MACs, two DHCP clients) claim "box": one address, the newest lease's.
    let (n1, i1, _) = client(&mut c, &lab, &id, 1);
    let ip1 = udhcpc(&n1, &i1, "box");
    wait_resolves(&lab, "box", &[&ip1]);
    let (n2, i2, _) = client(&mut c, &lab, &id, 2);
    let ip2 = dhclient(&mut c, &root, &n2, &i2, "box");
    assert_ne!(ip1, ip2);
    wait_resolves(&lab, "box", &[&ip2]);

    // A client that is not the reservation's MAC asks for the reserved name.
    let (n3, i3, _) = client(&mut c, &lab, &id, 3);
    let ip3 = udhcpc(&n3, &i3, "vmres");

    // A non-ASCII name: punycode, not dropped letters.
    let (n4, i4, _) = client(&mut c, &lab, &id, 4);
    let ip4 = udhcpc(&n4, &i4, "über-box");
    wait_resolves(&lab, "xn--ber-box-m2a", &[&ip4]);
    // Written after the squatter's lease: the reserved name has no record.
    assert_eq!(
        resolve(&lab, "vmres"),
        Vec::<String>::new(),
        "a non-reserved client ({ip3}) took the reserved name"
    );

    // Two names that agree in their first 63 characters.
    let stem = "k".repeat(63);
    let (n5, i5, m5) = client(&mut c, &lab, &id, 5);
    let ip5 = udhcpc(&n5, &i5, &format!("{stem}alpha"));
    let (n6, i6, m6) = client(&mut c, &lab, &id, 6);
    let ip6 = udhcpc(&n6, &i6, &format!("{stem}omega"));
    let leases = labnet(&["leases", &lab, "--json"], &env);
    let rows: serde_json::Value = serde_json::from_slice(&leases.stdout).unwrap();
    let name_of = |mac: &str| -> String {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["mac"].as_str() == Some(mac))
            .and_then(|r| r["hostname"].as_str())
            .unwrap_or_else(|| panic!("no lease name for {mac}: {rows}"))
            .to_string()
    };
    let (h5, h6) = (name_of(&m5), name_of(&m6));
    assert_ne!(h5, h6, "two cut names collide");
    for h in [&h5, &h6] {
        assert!(h.len() <= 63 && h.starts_with(&stem[..50]), "{h}");
    }
    wait_resolves(&lab, &h5, &[&ip5]);
    wait_resolves(&lab, &h6, &[&ip6]);
    wait_resolves(&lab, "box", &[&ip2]);

    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
}
