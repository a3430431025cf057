//! `labnet dhcpd` against real DHCP clients (busybox udhcpc, ISC dhclient, dhcpcd), each in
//! its own network namespace on a veth into the lab bridge. The server runs as the built
//! `labnet` binary with `--enter-netns`, so readiness (sd_notify), the socket bound to the
//! bridge, durability and `labnet leases` are all exercised as in production.
//!
//! Root only. Every namespace is created here (prefix `dh`) and removed by a Drop guard.
// Children are registered by pid with Cleanup, which kills and reaps them.
#![allow(clippy::zombie_processes)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use labnet_tests::{
    in_netns, labnet_bin, must, notify_socket, require_root, run, signal, unique, wait_for,
    wait_ready, Cleanup,
};
use serde_json::Value;

const BR_ADDR: &str = "10.77.0.1";
const LEASE_SECS: u64 = 120;

struct Lab {
    name: String,
    dir: PathBuf,
    env: Vec<(String, String)>,
    server: Option<u32>,
}

fn ip(args: &[&str]) -> String {
    must(Command::new("ip").args(args))
}

/// A lab namespace with bridge `dhbr` 10.77.0.1/24 and its config; no server yet.
fn lab(c: &mut Cleanup, extra_toml: &str) -> Lab {
    let name = unique("dh");
    let dir = std::env::temp_dir().join(format!("labnet-{name}"));
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    c.path(&dir);
    ip(&["netns", "add", &name]);
    c.netns(&name);
    ip(&["-n", &name, "link", "set", "lo", "up"]);
    ip(&["-n", &name, "link", "add", "dhbr", "type", "bridge"]);
    ip(&[
        "-n",
        &name,
        "addr",
        "add",
        &format!("{BR_ADDR}/24"),
        "dev",
        "dhbr",
    ]);
    ip(&["-n", &name, "link", "set", "dhbr", "up"]);
    // A default route via another device, as wg0 is in a real lab: replies must still leave
    // through the bridge (SO_BINDTODEVICE). A veth pair kept inside the lab stands in for it.
    ip(&[
        "-n", &name, "link", "add", "dhup", "type", "veth", "peer", "name", "dhup2",
    ]);
    ip(&["-n", &name, "link", "set", "dhup", "up"]);
    ip(&["-n", &name, "link", "set", "dhup2", "up"]);
    ip(&["-n", &name, "addr", "add", "10.78.0.1/30", "dev", "dhup"]);
    ip(&[
        "-n",
        &name,
        "route",
        "add",
        "default",
        "via",
        "10.78.0.2",
        "dev",
        "dhup",
    ]);
    std::fs::write(
        dir.join("etc").join(format!("{name}.toml")),
        format!(
            "name = \"{name}\"\n[bridge]\nname = \"dhbr\"\naddress = \"{BR_ADDR}/24\"\n[dns]\nzone = \"lab\"\n\
             [dhcp]\nrange_start = \"10.77.0.100\"\nrange_end = \"10.77.0.150\"\nlease_secs = {LEASE_SECS}\n{extra_toml}"
        ),
    )
    .unwrap();
    let env = vec![
        (
            "LABNET_RUN_DIR".to_string(),
            dir.join("run").display().to_string(),
        ),
        (
            "LABNET_STATE_DIR".to_string(),
            dir.join("state").display().to_string(),
        ),
        (
            "LABNET_CONFIG_DIR".to_string(),
            dir.join("etc").display().to_string(),
        ),
    ];
    Lab {
        name,
        dir,
        env,
        server: None,
    }
}

impl Lab {
    fn state(&self) -> PathBuf {
        self.dir.join("state").join(&self.name)
    }

    /// A client namespace with interface IFACE on a veth into the bridge; returns (ns, iface).
    fn client(&self, c: &mut Cleanup, mac: Option<&str>) -> (String, String) {
        let ns = unique("dh");
        ip(&["netns", "add", &ns]);
        c.netns(&ns);
        // Globally unique: dhcpcd keeps per-interface files under /var/lib/dhcpcd and /run.
        let iface = format!("{ns}c");
        let port = format!("{ns}p");
        ip(&[
            "-n", &self.name, "link", "add", &port, "type", "veth", "peer", "name", &iface,
            "netns", &ns,
        ]);
        ip(&[
            "-n", &self.name, "link", "set", &port, "master", "dhbr", "up",
        ]);
        if let Some(m) = mac {
            ip(&["-n", &ns, "link", "set", &iface, "address", m]);
        }
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", &iface, "up"]);
        c.path(format!("/var/lib/dhcpcd/{iface}.lease"));
        (ns, iface)
    }

    /// Starts `labnet dhcpd LAB --enter-netns` and waits for its READY=1.
    fn start(&mut self, c: &mut Cleanup) {
        let sock_path = self.dir.join(format!("notify-{}", unique("n")));
        let sock = notify_socket(&sock_path);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dhcpd.log"))
            .unwrap();
        let mut child = Command::new(labnet_bin())
            .args(["dhcpd", &self.name, "--enter-netns"])
            .envs(self.env.iter().cloned())
            .env("NOTIFY_SOCKET", &sock_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        c.pid(child.id());
        if let Err(st) = wait_ready(
            &mut child,
            &sock,
            Duration::from_secs(10),
            &self.dir.join("dhcpd.log"),
        ) {
            panic!("labnet dhcpd exited before READY=1 ({st}):\n{}", self.log());
        }
        self.server = Some(child.id());
        std::mem::forget(child); // reaped by the Cleanup (kill + waitpid) or stop()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dhcpd.log")).unwrap_or_default()
    }

    /// SIGTERM; the server must exit 0 promptly.
    fn stop(&mut self) {
        let pid = self.server.take().expect("running") as i32;
        signal(pid, libc::SIGTERM);
        let status = wait_pid(pid, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("no exit within 5s of SIGTERM:\n{}", self.log()));
        assert_eq!(status, 0, "exit status after SIGTERM:\n{}", self.log());
    }

    fn kill9(&mut self) {
        let pid = self.server.take().expect("running") as i32;
        signal(pid, libc::SIGKILL);
        wait_pid(pid, Duration::from_secs(5)).expect("reaped");
    }

    fn leases(&self) -> Vec<Value> {
        let out = run(Command::new(labnet_bin())
            .args(["leases", &self.name, "--json"])
            .envs(self.env.iter().cloned()));
        assert!(
            out.status.success(),
            "labnet leases: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn lease_of(&self, addr: &str) -> Value {
        self.leases()
            .into_iter()
            .find(|l| l["ip"] == addr)
            .unwrap_or_else(|| panic!("no lease for {addr} in {:?}", self.leases()))
    }

    fn hosts(&self) -> String {
        std::fs::read_to_string(self.state().join("hosts")).unwrap_or_default()
    }
}

/// waitpid with a timeout; Some(exit code) (128+signal when killed).
fn wait_pid(pid: i32, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut st = 0;
        // SAFETY: `st` is a live local the call writes the status into; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Some(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            });
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client hook script that applies the address (so unicast renew works) and records
/// what it was given, one line per event: `EVENT key=value ...`.
fn udhcpc_script(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let log = dir.join(format!("{tag}.events"));
    let script = dir.join(format!("{tag}.sh"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"$1 ip=$ip router=$router dns=$dns lease=$lease subnet=$subnet domain=$domain hostname=$hostname\" >> {log}\n\
             case \"$1\" in\n\
             bound|renew) ip addr replace $ip/24 dev $interface ;;\n\
             deconfig) ip addr flush dev $interface ;;\n\
             esac\n",
            log = log.display()
        ),
    )
    .unwrap();
    make_exec(&script);
    (script, log)
}

fn make_exec(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn events(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
        .unwrap_or("")
}

fn in_pool(addr: &str) -> bool {
    let last: u32 = addr
        .strip_prefix("10.77.0.")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (100..=150).contains(&last)
}

fn addr_on(ns: &str, iface: &str) -> String {
    ip(&["-n", ns, "-4", "-o", "addr", "show", "dev", iface])
}

fn spawn_in(ns: &str, args: &[&str]) -> Child {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Broadcasts junk at the server from inside `ns`: short, truncated and absurd packets, a
/// BOOTREPLY, options with lengths running past the end, and a flood from one MAC.
fn send_garbage(ns: &str, iface: &str) {
    let iface = iface.to_string();
    in_netns(ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_broadcast(true).unwrap();
        nix::sys::socket::setsockopt(
            &s,
            nix::sys::socket::sockopt::BindToDevice,
            &std::ffi::OsString::from(&iface),
        )
        .unwrap_or_else(|e| panic!("SO_BINDTODEVICE {iface}: {e}"));
        let mut discover = vec![0u8; 236];
        discover[..4].copy_from_slice(&[1, 1, 6, 0]);
        discover[28..34].copy_from_slice(&[0x52, 0x54, 0, 0xee, 0, 1]);
        discover.extend_from_slice(&[99, 130, 83, 99, 53, 1, 1, 255]);
        let mut packets: Vec<Vec<u8>> =
            vec![vec![], vec![1], vec![0xff; 240], discover[..200].to_vec()];
        let mut reply = discover.clone();
        reply[0] = 2;
        packets.push(reply);
        let mut hlen = discover.clone();
        hlen[2] = 255;
        packets.push(hlen);
        for opt in [50u8, 51, 54, 55, 57, 61, 12, 1, 3] {
            let mut p = discover[..240].to_vec();
            p.extend_from_slice(&[53, 1, 3, opt, 200, 1, 2]);
            packets.push(p);
            let mut p = discover[..240].to_vec();
            p.extend_from_slice(&[53, 1, 1, opt, 3, 1, 2, 3, 255]);
            packets.push(p);
        }
        for _ in 0..500 {
            packets.push(discover.clone());
        }
        for p in packets {
            let _ = s.send_to(&p, "255.255.255.255:67");
        }
    });
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn dhcpd_udhcpc_bound_renew_release() {
    require_root();
    let mut c = Cleanup::default();
    let mut lab = lab(&mut c, "");
    lab.start(&mut c);
    let (ns, iface) = lab.client(&mut c, None);
    // Junk first: the server must shrug it off and go on serving. Sent again until the server
    // reports it: a veth just set up may drop the first burst before it has carrier.
    wait_for("junk reported", Duration::from_secs(10), || {
        send_garbage(&ns, &iface);
        std::thread::sleep(Duration::from_millis(200));
        lab.log().contains("ignored packets")
    });
    let (script, log) = udhcpc_script(&lab.dir, "u1");
    let child = spawn_in(
        &ns,
        &[
            "busybox",
            "udhcpc",
            "-f",
            "-R",
            "-i",
            &iface,
            "-s",
            script.to_str().unwrap(),
            "-x",
            "hostname:Box-One",
            "-t",
            "5",
            "-T",
            "1",
        ],
    );
    c.pid(child.id());
    wait_for("udhcpc bound", Duration::from_secs(10), || {
        events(&log).iter().any(|l| l.starts_with("bound"))
    });
    let bound = events(&log)
        .into_iter()
        .find(|l| l.starts_with("bound"))
        .unwrap();
    let addr = field(&bound, "ip").to_string();
    assert!(in_pool(&addr), "{bound}");
    assert_eq!(field(&bound, "router"), BR_ADDR, "{bound}");
    assert_eq!(field(&bound, "dns"), BR_ADDR, "{bound}");
    assert_eq!(field(&bound, "lease"), LEASE_SECS.to_string(), "{bound}");
    assert_eq!(field(&bound, "subnet"), "255.255.255.0", "{bound}");
    assert_eq!(field(&bound, "domain"), "lab", "{bound}");
    assert!(addr_on(&ns, &iface).contains(&format!("{addr}/24")));
    // Durable and visible: `labnet leases` while the daemon runs, and the hosts file.
    let l = lab.lease_of(&addr);
    assert_eq!(l["state"], "active");
    assert_eq!(l["hostname"], "box-one");
    assert_eq!(
        l["expires"].as_u64().unwrap() - l["start"].as_u64().unwrap(),
        LEASE_SECS
    );
    wait_for("hosts file", Duration::from_secs(3), || {
        lab.hosts() == format!("{addr} box-one\n")
    });

    // RENEWING: SIGUSR1 makes udhcpc unicast a REQUEST with ciaddr; the ACK comes back to it.
    let start0 = l["start"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    signal(child.id() as i32, libc::SIGUSR1);
    wait_for("udhcpc renew", Duration::from_secs(10), || {
        events(&log).iter().any(|l| l.starts_with("renew"))
    });
    let renew = events(&log)
        .into_iter()
        .find(|l| l.starts_with("renew"))
        .unwrap();
    assert_eq!(field(&renew, "ip"), addr, "{renew}");
    assert!(
        lab.lease_of(&addr)["start"].as_u64().unwrap() > start0,
        "renewal extended the lease"
    );

    // RELEASE (udhcpc -R on SIGTERM): the address is free in the lease list and hosts file.
    signal(child.id() as i32, libc::SIGTERM);
    wait_pid(child.id() as i32, Duration::from_secs(5)).expect("udhcpc exits");
    wait_for("released", Duration::from_secs(5), || {
        lab.lease_of(&addr)["state"] == "released"
    });
    wait_for("hosts emptied", Duration::from_secs(3), || {
        lab.hosts().is_empty()
    });
    lab.stop();
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn dhcpd_dhclient_and_dhcpcd_get_distinct_addresses() {
    require_root();
    let mut c = Cleanup::default();
    let mut lab = lab(&mut c, "");
    lab.start(&mut c);

    // ISC dhclient, foreground, with a hook script that records what it applied.
    let (ns1, if1) = lab.client(&mut c, None);
    let ev1 = lab.dir.join("dhclient.events");
    let sf = lab.dir.join("dhclient.sh");
    std::fs::write(
        &sf,
        format!(
            "#!/bin/sh\necho \"$reason ip=$new_ip_address router=$new_routers dns=$new_domain_name_servers lease=$new_dhcp_lease_time mask=$new_subnet_mask domain=$new_domain_name\" >> {}\n\
             case $reason in BOUND|REBOOT|RENEW) ip addr replace $new_ip_address/24 dev $interface ;; esac\n",
            ev1.display()
        ),
    )
    .unwrap();
    make_exec(&sf);
    let lf = lab.dir.join("dhclient.leases");
    let pf = lab.dir.join("dhclient.pid");
    let dhclient = |c: &mut Cleanup| {
        let ch = spawn_in(
            &ns1,
            &[
                "dhclient",
                "-4",
                "-d",
                "-sf",
                sf.to_str().unwrap(),
                "-lf",
                lf.to_str().unwrap(),
                "-pf",
                pf.to_str().unwrap(),
                &if1,
            ],
        );
        c.pid(ch.id());
        ch
    };
    let d1 = dhclient(&mut c);

    // dhcpcd: one shot, IPv4 only, no ARP probing (speed), asks for DNS and domain too.
    let (ns2, if2) = lab.client(&mut c, None);
    let ev2 = lab.dir.join("dhcpcd.events");
    let hook = lab.dir.join("dhcpcd.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$reason ip=$new_ip_address router=$new_routers dns=$new_domain_name_servers lease=$new_dhcp_lease_time mask=$new_subnet_mask domain=$new_domain_name\" >> {}\n",
            ev2.display()
        ),
    )
    .unwrap();
    make_exec(&hook);
    let dhcpcd = || {
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            &ns2,
            "dhcpcd",
            "-4",
            "-1",
            "-B",
            "-A",
            "--noipv4ll",
            "-f",
            "/dev/null",
            "-c",
            hook.to_str().unwrap(),
            "-o",
            "domain_name_servers",
            "-o",
            "domain_name",
            "-t",
            "10",
            &if2,
        ]));
        assert!(
            out.status.success(),
            "dhcpcd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    dhcpcd();

    wait_for("dhclient BOUND", Duration::from_secs(15), || {
        events(&ev1).iter().any(|l| l.starts_with("BOUND"))
    });
    let b1 = events(&ev1)
        .into_iter()
        .find(|l| l.starts_with("BOUND"))
        .unwrap();
    let b2 = events(&ev2)
        .into_iter()
        .find(|l| l.starts_with("BOUND"))
        .unwrap_or_else(|| panic!("{:?}", events(&ev2)));
    for b in [&b1, &b2] {
        assert!(in_pool(field(b, "ip")), "{b}");
        assert_eq!(field(b, "router"), BR_ADDR, "{b}");
        assert_eq!(field(b, "dns"), BR_ADDR, "{b}");
        assert_eq!(field(b, "lease"), LEASE_SECS.to_string(), "{b}");
        assert_eq!(field(b, "mask"), "255.255.255.0", "{b}");
        assert_eq!(field(b, "domain"), "lab", "{b}");
    }
    let (a1, a2) = (field(&b1, "ip").to_string(), field(&b2, "ip").to_string());
    assert_ne!(a1, a2, "two clients, one address");
    assert!(addr_on(&ns1, &if1).contains(&format!("{a1}/24")));
    // dhcpcd configures the interface and the default route itself.
    assert!(
        addr_on(&ns2, &if2).contains(&format!("{a2}/24")),
        "{}",
        addr_on(&ns2, &if2)
    );
    assert!(ip(&["-n", &ns2, "route"]).contains(&format!("default via {BR_ADDR}")));
    assert_eq!(lab.lease_of(&a1)["state"], "active");
    assert_eq!(lab.lease_of(&a2)["state"], "active");

    // Both come back (INIT-REBOOT from their lease files) and get the same addresses.
    signal(d1.id() as i32, libc::SIGKILL);
    wait_pid(d1.id() as i32, Duration::from_secs(5));
    let _d1b = dhclient(&mut c);
    let bound_or_reboot = |l: &String| l.starts_with("REBOOT") || l.starts_with("BOUND");
    wait_for("dhclient REBOOT", Duration::from_secs(15), || {
        events(&ev1).iter().filter(|l| bound_or_reboot(l)).count() >= 2
    });
    let again = events(&ev1)
        .into_iter()
        .rev()
        .find(|l| l.starts_with("REBOOT") || l.starts_with("BOUND"))
        .unwrap();
    assert_eq!(field(&again, "ip"), a1, "{again}");
    ip(&["-n", &ns2, "addr", "flush", "dev", &if2]);
    dhcpcd();
    let again = events(&ev2)
        .into_iter()
        .rev()
        .find(|l| l.starts_with("REBOOT") || l.starts_with("BOUND"))
        .unwrap();
    assert_eq!(field(&again, "ip"), a2, "{again}");
    lab.stop();
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn dhcpd_reservations_from_config_and_vm_dir() {
    require_root();
    let mut c = Cleanup::default();
    let mut lab = lab(&mut c, "[[dhcp.reservations]]\nmac = \"52:54:00:dd:00:01\"\nip = \"10.77.0.42\"\nhostname = \"fixedhost\"\n");
    lab.start(&mut c);
    let (ns, iface) = lab.client(&mut c, Some("52:54:00:dd:00:01"));
    let (script, log) = udhcpc_script(&lab.dir, "r1");
    must(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "busybox",
        "udhcpc",
        "-q",
        "-f",
        "-i",
        &iface,
        "-s",
        script.to_str().unwrap(),
        "-t",
        "5",
        "-T",
        "1",
        "-n",
    ]));
    let bound = events(&log)
        .into_iter()
        .find(|l| l.starts_with("bound"))
        .expect("bound");
    assert_eq!(field(&bound, "ip"), "10.77.0.42", "{bound}");
    assert_eq!(field(&bound, "hostname"), "fixedhost", "{bound}");

    // `labnet vm` registers a VM while the server runs: no restart needed.
    let rdir = lab.dir.join("run").join(&lab.name).join("reservations");
    std::fs::create_dir_all(&rdir).unwrap();
    std::fs::write(
        rdir.join("kvm1.json"),
        r#"{"vm":"kvm1","mac":"52:54:00:dd:00:02","hostname":"kvm1","ip":"10.77.0.43"}"#,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let (ns2, if2) = lab.client(&mut c, Some("52:54:00:dd:00:02"));
    let (script2, log2) = udhcpc_script(&lab.dir, "r2");
    must(Command::new("ip").args([
        "netns",
        "exec",
        &ns2,
        "busybox",
        "udhcpc",
        "-q",
        "-f",
        "-i",
        &if2,
        "-s",
        script2.to_str().unwrap(),
        "-t",
        "5",
        "-T",
        "1",
        "-n",
    ]));
    let bound = events(&log2)
        .into_iter()
        .find(|l| l.starts_with("bound"))
        .expect("bound");
    assert_eq!(field(&bound, "ip"), "10.77.0.43", "{bound}");
    let l = lab.lease_of("10.77.0.43");
    assert_eq!(l["vm"], "kvm1");
    assert_eq!(l["hostname"], "kvm1");
    assert_eq!(l["mac"], "52:54:00:dd:00:02");
    wait_for("hosts file", Duration::from_secs(3), || {
        lab.hosts() == "10.77.0.42 fixedhost\n10.77.0.43 kvm1\n"
    });
    // The table form names the VM too.
    let table = String::from_utf8(
        run(Command::new(labnet_bin())
            .args(["leases", &lab.name])
            .envs(lab.env.iter().cloned()))
        .stdout,
    )
    .unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("10.77.0.43 ") && l.contains(" kvm1 ") && l.contains("active")),
        "{table}"
    );
    lab.stop();
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn dhcpd_kill9_after_acks_loses_no_lease() {
    require_root();
    const N: usize = 12;
    let mut c = Cleanup::default();
    let mut lab = lab(&mut c, "");
    lab.start(&mut c);
    let (ns, iface) = lab.client(&mut c, None);
    // N clients at once (distinct client identifiers), so ACKs share group commits.
    let log = lab.dir.join("many.events");
    let script = lab.dir.join("many.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" >> {}\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    make_exec(&script);
    let kids: Vec<Child> = (0..N)
        .map(|i| {
            let id = format!("0x3d:ff00dd{i:04x}");
            let ch = spawn_in(
                &ns,
                &[
                    "busybox",
                    "udhcpc",
                    "-q",
                    "-f",
                    "-n",
                    "-i",
                    &iface,
                    "-s",
                    script.to_str().unwrap(),
                    "-x",
                    &id,
                    "-t",
                    "8",
                    "-T",
                    "1",
                ],
            );
            c.pid(ch.id());
            ch
        })
        .collect();
    for k in kids {
        let out = k.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "udhcpc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every client has its ACK: kill the server without a chance to flush anything.
    lab.kill9();
    let mut acked = events(&log);
    acked.sort();
    acked.dedup();
    assert_eq!(acked.len(), N, "{acked:?}");
    // A torn write at the tail (as a crash mid-append leaves) must not cost the rest. The
    // log is preallocated with NULs; its data ends at the first NUL.
    let path = lab.state().join("leases.log");
    let end = std::fs::read(&path)
        .unwrap()
        .iter()
        .position(|&b| b == 0)
        .expect("preallocated tail");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_all_at(
        &f,
        b"{\"ip\":\"10.77.0.149\",\"mac\":\"52:54",
        end as u64,
    )
    .unwrap();
    drop(f);

    let leases = lab.leases();
    for a in &acked {
        let l = leases
            .iter()
            .find(|l| l["ip"] == a.as_str())
            .unwrap_or_else(|| panic!("ACKed {a} missing from {leases:?}"));
        assert_eq!(l["state"], "active");
    }
    lab.start(&mut c);
    assert!(
        lab.log().contains("skipped 1 torn or corrupt record"),
        "{}",
        lab.log()
    );
    assert!(lab.state().join("leases.log.corrupt").exists());
    let after = lab.leases();
    assert_eq!(
        after.iter().filter(|l| l["state"] == "active").count(),
        N,
        "{after:?}"
    );
    // And the server still knows them: the first client asks again and keeps its address.
    let (script1, log1) = udhcpc_script(&lab.dir, "again");
    must(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "busybox",
        "udhcpc",
        "-q",
        "-f",
        "-n",
        "-i",
        &iface,
        "-s",
        script1.to_str().unwrap(),
        "-x",
        "0x3d:ff00dd0000",
        "-t",
        "5",
        "-T",
        "1",
    ]));
    let bound = events(&log1)
        .into_iter()
        .find(|l| l.starts_with("bound"))
        .expect("bound");
    let first = leases
        .iter()
        .find(|l| l["client_id"] == "ff:00:dd:00:00")
        .expect("client 0")["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(field(&bound, "ip"), first);
    lab.stop();
}
