//! `labnet up / down / status` end to end, as root, against a real WireGuard peer: a "bounce"
//! namespace with wireguard-go at 192.168.20.2, joined to the test's namespace by a veth
//! underlay, like seed 000's sepia-bounce VM.
use labnet_tests::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// (masqueraded, unmasqueraded) echo requests counted on the bounce box.
fn bounce_counters(ns: &str) -> (u64, u64) {
    let out = sh(&format!("ip netns exec {ns} nft list table ip probe"));
    let counts: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split("packets ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    (counts[0], counts[1])
}

fn wg_lab_config(lab: &str, id: &str, b: &Bounce) -> String {
    format!(
        "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"192.168.0.1/24\"\n\
         [uplink]\nkind = \"wireguard\"\ninterface = \"{id}wl\"\naddress = \"192.168.20.1/24\"\n\
         private_key_file = \"{}\"\npeer_public_key = \"{}\"\nendpoint = \"{}\"\nallowed_ips = [\"0.0.0.0/0\"]\n",
        b.lab_key.display(),
        b.bounce_pub,
        b.endpoint
    )
}

/// An isolated lab named `id` whose bridge `{id}br` has `address` (TOML), plus `extra` sections.
fn isolated_config(id: &str, address: &str, extra: &str) -> String {
    format!("name = \"{id}\"\n[bridge]\nname = \"{id}br\"\naddress = \"{address}\"\n{extra}")
}

/// A client "VM" namespace on the lab bridge with a static address.
fn client(c: &mut Cleanup, lab: &str, id: &str, bridge: &str) -> String {
    let ns = format!("{id}cl");
    c.netns(&ns);
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link set lo up && ip link add {id}c0 netns {ns} type veth peer name {id}cb netns {lab} && \
         ip -n {lab} link set {id}cb master {bridge} up && ip -n {ns} addr add 192.168.0.50/24 dev {id}c0 && \
         ip -n {ns} link set {id}c0 up && ip -n {ns} route add default via 192.168.0.1"
    ));
    ns
}

/// Asserts nothing of the lab is left: namespace, links, wireguard-go, socket, files.
fn assert_no_trace(lab: &str, id: &str, env: &[(String, String)], root: &Path) {
    assert!(
        !netns_list().contains(&lab.to_string()),
        "netns {lab} left behind"
    );
    let links: Vec<String> = root_links()
        .into_iter()
        .filter(|l| l.starts_with(id) && !l.starts_with(&format!("{id}u")))
        .collect();
    assert!(links.is_empty(), "links left behind: {links:?}");
    assert!(
        pids_with_arg("wireguard-go", &format!("{id}wl")).is_empty(),
        "wireguard-go left running"
    );
    let sock = format!("/var/run/wireguard/{id}wl.sock");
    assert!(
        !Path::new(&sock).exists(),
        "UAPI socket left behind: {}",
        sh(&format!(
            "ls -la {sock}; ps -eo pid,ppid,stat,args | grep -v grep | grep {id}wl || true"
        ))
    );
    assert!(
        !Path::new(&format!("/etc/netns/{lab}")).exists(),
        "/etc/netns/{lab} left behind"
    );
    assert!(
        !root.join("run").join(format!("{lab}.json")).exists(),
        "state file left behind"
    );
    // A failed `up` keeps only its logs (its error points at them); `down` removes them too.
    let run = root.join("run").join(lab);
    let kept: Vec<String> = std::fs::read_dir(&run)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        kept.iter().all(|f| f.ends_with(".log")),
        "runtime files left behind in {}: {kept:?}",
        run.display()
    );
    let _ = env;
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn wireguard_lab_up_ping_masquerade_down() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("lw");
    let lab = id.clone();
    let root = temp_dir(&mut c, "lab");
    let env = labnet_env(&root);
    let b = bounce(&mut c, &root, &id, 231);
    let cfg = root.join("lab.toml");
    std::fs::write(&cfg, wg_lab_config(&lab, &id, &b)).unwrap();
    let cfgs = cfg.display().to_string();
    c.labnet(&["down", &lab], &env);

    let out = labnet(&["up", &lab, "--config", &cfgs, "--no-daemons"], &env);
    assert!(out.status.success(), "up failed: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("lab {lab} is up")),
        "{}",
        text(&out)
    );

    // The uplink as the seed builds it, checked with ip/wg.
    let addr = sh(&format!("ip -n {lab} -4 -o addr show"));
    assert!(
        addr.contains(&format!("{id}wl")) && addr.contains("192.168.20.1/24"),
        "{addr}"
    );
    assert!(
        addr.contains(&format!("{id}br")) && addr.contains("192.168.0.1/24"),
        "{addr}"
    );
    let route = sh(&format!("ip -n {lab} route show default"));
    assert!(
        route.contains(&format!("default via 192.168.20.2 dev {id}wl")),
        "{route}"
    );
    assert_eq!(
        sh(&format!(
            "ip netns exec {lab} cat /proc/sys/net/ipv4/ip_forward"
        ))
        .trim(),
        "1"
    );
    let nft = sh(&format!("ip netns exec {lab} nft list table ip labnet"));
    assert!(
        nft.contains(&format!("oifname \"{id}wl\" masquerade")),
        "{nft}"
    );
    let resolv = std::fs::read_to_string(format!("/etc/netns/{lab}/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 192.168.0.1"), "{resolv}");
    let nss = std::fs::read_to_string(format!("/etc/netns/{lab}/nsswitch.conf")).unwrap();
    assert!(
        nss.contains("hosts: files dns") && !nss.contains("resolve"),
        "{nss}"
    );
    assert_eq!(
        pids_with_arg("wireguard-go", &format!("{id}wl")).len(),
        1,
        "one wireguard-go for the lab"
    );

    // A VM-like client on the bridge reaches the bounce box, masqueraded to 192.168.20.1.
    let cl = client(&mut c, &lab, &id, &format!("{id}br"));
    let ping = run(Command::new("ip").args([
        "netns",
        "exec",
        &cl,
        "ping",
        "-c",
        "2",
        "-W",
        "3",
        "192.168.20.2",
    ]));
    assert!(
        ping.status.success(),
        "client ping through the tunnel failed: {}",
        text(&ping)
    );
    let (masq, raw) = bounce_counters(&b.ns);
    assert!(
        masq >= 1,
        "bounce box saw no echo from 192.168.20.1 (masq={masq}, raw={raw})"
    );
    assert_eq!(raw, 0, "bounce box saw unmasqueraded lab sources");

    // status: everything matches, the peer has handshaken.
    // No --config: the running lab's record leads to its file.
    let st = labnet(&["status", &lab, "--json"], &env);
    assert!(st.status.success(), "status: {}", text(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v:#}");
    let peer = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wg peer")
        .unwrap();
    assert!(
        peer["detail"].as_str().unwrap().contains(" s ago"),
        "{peer}"
    );

    // doctor: the path, the firewall check (bridge-sourced traffic) pass.
    let dr = labnet(&["doctor", &lab, "--config", &cfgs, "--json"], &env);
    let v: serde_json::Value =
        serde_json::from_slice(&dr.stdout).unwrap_or_else(|_| panic!("{}", text(&dr)));
    let f = |n: &str| {
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["check"] == n)
            .cloned()
    };
    assert_eq!(f("bounce box").unwrap()["ok"], true, "{v:#}");
    assert_eq!(f("firewall").unwrap()["ok"], true, "{v:#}");

    // With the bounce box's tunnel down, doctor says so in words (and fails).
    sh(&format!("ip -n {} link set {id}wb down", b.ns));
    let dr = labnet(&["doctor", &lab, "--config", &cfgs], &env);
    assert!(!dr.status.success(), "{}", text(&dr));
    let words = String::from_utf8_lossy(&dr.stdout).to_string();
    assert!(
        words.contains("[FAIL] bounce box:") && words.contains("does not answer ping"),
        "{words}"
    );
    assert!(
        words.contains("[FAIL] dns upstream: upstream DNS 192.168.20.2:53 gave no reply"),
        "{words}"
    );
    sh(&format!("ip -n {} link set {id}wb up", b.ns));

    // up again: nothing changes.
    let before = sh(&format!(
        "ip -n {lab} -o link show; ip -n {lab} -4 -o addr show"
    ));
    let again = labnet(&["up", &lab, "--config", &cfgs, "--no-daemons"], &env);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already up"),
        "{}",
        text(&again)
    );
    assert_eq!(
        before,
        sh(&format!(
            "ip -n {lab} -o link show; ip -n {lab} -4 -o addr show"
        ))
    );

    // down removes everything of the lab, and only that: the client's namespace stays.
    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
    assert_no_trace(&lab, &id, &env, &root);
    assert!(
        netns_list().contains(&cl),
        "down removed a namespace it did not create"
    );
    assert!(
        !root.join("run").join(&lab).exists(),
        "down left /run/labnet/{lab}"
    );
    let down2 = labnet(&["down", &lab], &env);
    assert!(
        down2.status.success() && String::from_utf8_lossy(&down2.stdout).contains("not up"),
        "{}",
        text(&down2)
    );
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn sigkill_during_up_then_down_leaves_nothing() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("lk");
    let lab = id.clone();
    let root = temp_dir(&mut c, "kill");
    let env = labnet_env(&root);
    let b = bounce(&mut c, &root, &id, 231);
    let cfg = root.join("lab.toml");
    std::fs::write(&cfg, wg_lab_config(&lab, &id, &b)).unwrap();
    let cfgs = cfg.display().to_string();
    c.labnet(&["down", &lab], &env);
    // Kill at several points of the build; each time `down` must clear whatever was made.
    for delay_ms in [2u64, 10, 25, 60] {
        let mut child = Command::new(labnet_bin())
            .args(["up", &lab, "--config", &cfgs, "--no-daemons"])
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        let down = labnet(&["down", &lab], &env);
        assert!(
            down.status.success(),
            "down after SIGKILL at {delay_ms} ms: {}",
            text(&down)
        );
        assert_no_trace(&lab, &id, &env, &root);
    }
    // And the lab still comes up cleanly afterwards.
    let up = labnet(&["up", &lab, "--config", &cfgs, "--no-daemons"], &env);
    assert!(up.status.success(), "{}", text(&up));
    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
    assert_no_trace(&lab, &id, &env, &root);
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn isolated_lab_and_bad_config() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("li");
    let root = temp_dir(&mut c, "iso");
    let env = labnet_env(&root);
    // A broken config: the error names file and field, and nothing is created.
    let bad = root.join("bad.toml");
    std::fs::write(&bad, isolated_config(&id, "192.168.0.1", "")).unwrap();
    let out = labnet(&["up", &id, "--config", &bad.display().to_string()], &env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: bridge.address: expected an IPv4 address with prefix",
            bad.display()
        )),
        "{err}"
    );
    assert!(!netns_list().contains(&id));

    // A config in LABNET_CONFIG_DIR/LAB.toml, isolated uplink.
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc").join(format!("{id}.toml")),
        isolated_config(&id, "10.77.0.1/24", ""),
    )
    .unwrap();
    c.labnet(&["down", &id], &env);
    let up = labnet(&["up", &id, "--no-daemons"], &env);
    assert!(up.status.success(), "{}", text(&up));
    // The same lab with another bridge address: up refuses and says what changed.
    let changed = root.join("changed.toml");
    std::fs::write(&changed, isolated_config(&id, "10.77.1.1/24", "")).unwrap();
    let again = labnet(
        &[
            "up",
            &id,
            "--no-daemons",
            "--config",
            &changed.display().to_string(),
        ],
        &env,
    );
    assert!(!again.status.success(), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is up, but [bridge]"),
        "{}",
        text(&again)
    );
    let st = labnet(&["status", &id], &env);
    assert!(st.status.success(), "{}", text(&st));
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("steps as planned"),
        "{}",
        text(&st)
    );
    assert!(
        sh(&format!("ip -n {id} route show default"))
            .trim()
            .is_empty(),
        "isolated lab has a default route"
    );
    let down = labnet(&["down", &id], &env);
    assert!(down.status.success(), "{}", text(&down));
    assert!(!netns_list().contains(&id));
    let st = labnet(&["status", &id], &env);
    assert_eq!(
        st.status.code(),
        Some(3),
        "status of a down lab is not ok: {}",
        text(&st)
    );
}

/// `uplink.kind = "host"`: labnet itself runs inside a test namespace playing "the host"
/// (`nsenter --net`), whose only "real network" is another test namespace with 10.99.99.99.
/// A client on the lab bridge reaches it through both NATs; down restores the host's sysctl.
#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn host_uplink_nat_inside_a_test_host() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("lh");
    let (host, inet, lab) = (format!("{id}ho"), format!("{id}in"), id.clone());
    let root = temp_dir(&mut c, "host");
    let env = labnet_env(&root);
    c.netns(&host);
    c.netns(&inet);
    sh(&format!(
        "ip netns add {host} && ip netns add {inet} && ip -n {host} link set lo up && ip -n {inet} link set lo up && \
         ip link add {id}h0 netns {host} type veth peer name {id}i0 netns {inet} && \
         ip -n {host} addr add 10.66.0.1/30 dev {id}h0 && ip -n {host} link set {id}h0 up && \
         ip -n {inet} addr add 10.66.0.2/30 dev {id}i0 && ip -n {inet} link set {id}i0 up && \
         ip -n {inet} addr add 10.99.99.99/32 dev lo && ip -n {host} route add default via 10.66.0.2 && \
         ip netns exec {inet} nft -f - <<'EOF'\n\
         table ip probe {{\n chain input {{\n type filter hook input priority 0; policy accept;\n\
           ip saddr 10.66.0.1 icmp type echo-request counter\n\
           ip saddr != 10.66.0.1 icmp type echo-request counter\n }}\n }}\nEOF"
    ));
    let cfg = root.join("lab.toml");
    std::fs::write(
        &cfg,
        isolated_config(
            &lab,
            "192.168.0.1/24",
            &format!("[uplink]\nkind = \"host\"\nhost_interface = \"{id}hv\"\n"),
        ),
    )
    .unwrap();
    let in_host = |args: &[&str]| {
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{host}"))
            .arg(labnet_bin())
            .args(args)
            .envs(env.iter().cloned()))
    };
    let cfgs = cfg.display().to_string();
    let up = in_host(&["up", &lab, "--config", &cfgs, "--no-daemons"]);
    assert!(up.status.success(), "{}", text(&up));
    c.path(format!("/etc/netns/{lab}"));
    c.netns(&lab);
    assert_eq!(
        sh(&format!(
            "ip netns exec {host} cat /proc/sys/net/ipv4/ip_forward"
        ))
        .trim(),
        "1"
    );
    let nft = sh(&format!(
        "ip netns exec {host} nft list table ip labnet-{lab}"
    ));
    assert!(
        nft.contains(&format!(
            "iifname \"{id}hv\" oifname != \"{id}hv\" masquerade"
        )),
        "{nft}"
    );

    let cl = client(&mut c, &lab, &id, &format!("{id}br"));
    let ping = run(Command::new("ip").args([
        "netns",
        "exec",
        &cl,
        "ping",
        "-c",
        "1",
        "-W",
        "3",
        "10.99.99.99",
    ]));
    assert!(
        ping.status.success(),
        "client could not reach the host's network: {}",
        text(&ping)
    );
    let out = sh(&format!("ip netns exec {inet} nft list table ip probe"));
    let counts: Vec<u64> = out
        .lines()
        .filter_map(|l| l.split("packets ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        (counts[0] >= 1, counts[1]),
        (true, 0),
        "expected only host-masqueraded sources: {out}"
    );
    let st = in_host(&["status", &lab, "--config", &cfgs]);
    assert!(st.status.success(), "{}", text(&st));

    let down = in_host(&["down", &lab]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(
        sh(&format!(
            "ip netns exec {host} cat /proc/sys/net/ipv4/ip_forward"
        ))
        .trim(),
        "0",
        "down must restore ip_forward"
    );
    assert!(
        run(Command::new("ip").args([
            "netns",
            "exec",
            &host,
            "nft",
            "list",
            "table",
            "ip",
            &format!("labnet-{lab}")
        ]))
        .status
        .code()
            != Some(0)
    );
    assert!(!netns_list().contains(&lab));
    assert!(
        sh(&format!("ip -n {host} -o link show"))
            .lines()
            .all(|l| !l.contains(&format!("{id}hv"))),
        "host veth left behind"
    );
}

/// Run by hand, `up` leaves a lab that serves DHCP and DNS: a client on the bridge gets a lease
/// with its hostname, and `ip netns exec LAB` resolves that name through the lab's DNS
/// (resolv.conf + nsswitch.conf from /etc/netns). `down` stops both daemons.
#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn up_serves_dhcp_and_dns_down_stops_them() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("ld");
    let lab = id.clone();
    let root = temp_dir(&mut c, "daemons");
    let env = labnet_env(&root);
    let cfg = root.join("lab.toml");
    std::fs::write(
        &cfg,
        isolated_config(&lab, "192.168.0.1/24", "[dns]\nzone = \"lab\"\n"),
    )
    .unwrap();
    let cfgs = cfg.display().to_string();
    c.labnet(&["down", &lab], &env);
    let up = labnet(&["up", &lab, "--config", &cfgs], &env);
    assert!(up.status.success(), "{}", text(&up));
    assert_eq!(
        pids_with_arg("labnet", "dhcpd")
            .iter()
            .filter(|p| cmdline_has(**p, &lab))
            .count(),
        1
    );
    assert_eq!(
        pids_with_arg("labnet", "dns")
            .iter()
            .filter(|p| cmdline_has(**p, &lab))
            .count(),
        1
    );

    let cl = format!("{id}cl");
    c.netns(&cl);
    sh(&format!(
        "ip netns add {cl} && ip link add {id}c0 netns {cl} type veth peer name {id}cb netns {lab} && \
         ip -n {lab} link set {id}cb master {id}br up && ip -n {cl} link set {id}c0 up"
    ));
    let dh = run(Command::new("ip").args([
        "netns",
        "exec",
        &cl,
        "busybox",
        "udhcpc",
        "-i",
        &format!("{id}c0"),
        "-x",
        "hostname:vmone",
        "-q",
        "-n",
        "-t",
        "5",
        "-T",
        "1",
        "-s",
        "/bin/true",
    ]));
    assert!(
        String::from_utf8_lossy(&dh.stderr)
            .contains("lease of 192.168.0.100 obtained from 192.168.0.1"),
        "{}",
        text(&dh)
    );
    // The name appears once dhcpd rewrote its hosts file and dns reloaded it.
    let t = Instant::now();
    loop {
        let o =
            run(Command::new("ip").args(["netns", "exec", &lab, "getent", "hosts", "vmone.lab"]));
        if String::from_utf8_lossy(&o.stdout).starts_with("192.168.0.100 ") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "vmone.lab never resolved inside the lab: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let leases = labnet(&["leases", &lab, "--json"], &env);
    assert!(
        String::from_utf8_lossy(&leases.stdout).contains("vmone"),
        "{}",
        text(&leases)
    );

    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        pids_with_arg("labnet", &lab).is_empty(),
        "lab daemons left running"
    );
    assert!(!netns_list().contains(&lab));
}

fn cmdline_has(pid: u32, arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|b| b.split(|c| *c == 0).any(|a| a == arg.as_bytes()))
}

/// Two `up`s of one lab at the same time: the lock makes one build it and the other find it up.
#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn concurrent_ups_are_serialized_by_the_lock() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("lc");
    let root = temp_dir(&mut c, "lock");
    let env = labnet_env(&root);
    let cfg = root.join("lab.toml");
    std::fs::write(&cfg, isolated_config(&id, "10.78.0.1/24", "")).unwrap();
    let cfgs = cfg.display().to_string();
    c.labnet(&["down", &id], &env);
    let spawn = || {
        Command::new(labnet_bin())
            .args(["up", &id, "--config", &cfgs])
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        text(&a),
        text(&b)
    );
    let outs = [
        String::from_utf8_lossy(&a.stdout).to_string(),
        String::from_utf8_lossy(&b.stdout).to_string(),
    ];
    assert_eq!(
        outs.iter()
            .filter(|o| o.contains(&format!("lab {id} is up")))
            .count(),
        1,
        "{outs:?}"
    );
    assert_eq!(
        outs.iter().filter(|o| o.contains("already up")).count(),
        1,
        "{outs:?}"
    );
    assert_eq!(
        pids_with_arg("labnet", "dhcpd")
            .iter()
            .filter(|p| cmdline_has(**p, &id))
            .count(),
        1,
        "one dhcpd"
    );
    let down = labnet(&["down", &id], &env);
    assert!(down.status.success(), "{}", text(&down));
    assert!(!netns_list().contains(&id));
}

/// An `up` that fails half-way (here: the WireGuard program dies at once, after the namespace
/// and bridge exist) undoes what it made and says why.
#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn failed_up_undoes_its_steps() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("lf");
    let lab = id.clone();
    let root = temp_dir(&mut c, "fail");
    let mut env = labnet_env(&root);
    let b = bounce(&mut c, &root, &id, 233);
    let cfg = root.join("lab.toml");
    std::fs::write(&cfg, wg_lab_config(&lab, &id, &b)).unwrap();
    c.labnet(&["down", &lab], &env);
    env.push(("LABNET_WIREGUARD_GO".into(), "/bin/false".into()));
    let up = labnet(
        &[
            "up",
            &lab,
            "--config",
            &cfg.display().to_string(),
            "--no-daemons",
        ],
        &env,
    );
    assert!(!up.status.success(), "{}", text(&up));
    let err = String::from_utf8_lossy(&up.stderr);
    assert!(
        err.contains(&format!("wireguard-go for {id}wl exited before its socket")),
        "{err}"
    );
    assert_no_trace(&lab, &id, &env, &root);
    assert!(
        err.contains("wireguard-go.log"),
        "the error points at the log: {err}"
    );
    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
}
