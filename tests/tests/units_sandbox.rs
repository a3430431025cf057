//! The privileges the generated daemon units grant are enough, and needed. There is no
//! systemd as PID 1 here, so the test does what systemd would do with the unit text that
//! `labnet units print` emits: take ExecStart (the drop-in's override), replace %i and %d,
//! copy the config into a credentials directory, join NetworkNamespacePath, switch to a
//! non-root uid keeping exactly AmbientCapabilities within CapabilityBoundingSet, set
//! no-new-privs, and listen on NOTIFY_SOCKET for READY=1. The lab is built by
//! `labnet up --no-daemons`, as the lab unit's ExecStart does.
use labnet_tests::*;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A uid in systemd's DynamicUser range that no account uses.
const UID: u32 = 64123;

/// `# ==> /etc/systemd/system/PATH <==` sections of `labnet units print`.
fn sections(printed: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![];
    for line in printed.lines() {
        if let Some(p) = line
            .strip_prefix("# ==> /etc/systemd/system/")
            .and_then(|l| l.strip_suffix(" <=="))
        {
            out.push((p.to_string(), String::new()));
        } else if let Some((_, t)) = out.last_mut() {
            t.push_str(line);
            t.push('\n');
        }
    }
    out
}

/// The effective value of KEY across the unit and its drop-ins, in systemd's order: an
/// empty assignment resets, list settings accumulate, ExecStart takes the last.
fn setting(texts: &[String], key: &str) -> Vec<String> {
    let mut vals = vec![];
    for t in texts {
        for l in t.lines() {
            if let Some(v) = l.strip_prefix(&format!("{key}=")) {
                if v.is_empty() {
                    vals.clear();
                } else {
                    vals.push(v.to_string());
                }
            }
        }
    }
    vals
}

/// Splits an Exec line (our generator only quotes with "..." and escapes \" \\ %% $$).
fn exec_words(line: &str, subst: &[(&str, &str)]) -> Vec<String> {
    let mut words = vec![];
    let mut cur = String::new();
    let (mut inq, mut any) = (false, false);
    let mut it = line.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '"' => {
                inq = !inq;
                any = true;
            }
            '\\' if inq => cur.push(it.next().unwrap()),
            c if c.is_whitespace() && !inq => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            c => cur.push(c),
        }
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    words
        .into_iter()
        .map(|w| {
            let mut w = w.replace("$$", "$");
            for (k, v) in subst {
                w = w.replace(k, v);
            }
            w.replace("%%", "%")
        })
        .collect()
}

fn setpriv_caps(caps: &[String]) -> String {
    let mut s = "-all".to_string();
    for c in caps.iter().flat_map(|c| c.split_whitespace()) {
        s.push_str(&format!(
            ",+{}",
            c.trim_start_matches("CAP_").to_ascii_lowercase()
        ));
    }
    s
}

const READ_ONLY_BUT_STATE: &str = r#"set -e
STATE=$1; shift
mount --bind "$STATE" "$STATE"
awk '{print $5}' /proc/self/mountinfo | while read -r m; do
  case "$m" in
    /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$STATE") ;;
    *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;;
  esac
done
exec "$@"
"#;

/// True when the process sees `/` mounted read-only (the emulated ProtectSystem=strict).
fn root_is_read_only(pid: u32) -> bool {
    let mi = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    mi.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 5 && f[4] == "/" && f[5].split(',').any(|o| o == "ro")
    })
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts the unit's ExecStart like systemd would. `caps`: None = the unit's own.
fn start_like_systemd(
    c: &mut Cleanup,
    dir: &Path,
    env: &[(String, String)],
    lab: &str,
    unit: &[String],
    caps: Option<Vec<String>>,
    tag: &str,
) -> (Daemon, UnixDatagram) {
    let creds = dir.join(format!("creds-{tag}"));
    std::fs::create_dir_all(&creds).unwrap();
    let cred = setting(unit, "LoadCredential");
    assert_eq!(cred.len(), 1, "one credential: {cred:?}");
    let (id, src) = cred[0].split_once(':').unwrap();
    let dst = creds.join(id);
    std::fs::copy(src.replace("%%", "%"), &dst).unwrap();
    // As systemd: readable by the service user only.
    std::os::unix::fs::chown(&dst, Some(UID), Some(UID)).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o400)).unwrap();

    let exec = setting(unit, "ExecStart");
    let argv = exec_words(
        exec.last().unwrap(),
        &[("%i", lab), ("%d", creds.to_str().unwrap())],
    );
    let ns = setting(unit, "NetworkNamespacePath");
    assert_eq!(ns, ["/run/netns/%i"]);
    let ns = ns[0].replace("%i", lab);
    let bounding = setting(unit, "CapabilityBoundingSet");
    let ambient = caps.unwrap_or_else(|| setting(unit, "AmbientCapabilities"));
    assert_eq!(setting(unit, "NoNewPrivileges"), ["yes"]);

    let sock_path = dir.join(format!("notify-{tag}"));
    let sock = notify_socket(&sock_path);
    // The daemon runs as an unprivileged user and must be able to send to it.
    std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o777)).unwrap();

    let log = dir.join(format!("{tag}.log"));
    let f = std::fs::File::create(&log).unwrap();
    // ProtectSystem=strict + StateDirectory=: in a private mount namespace every mount is
    // read-only except the state directory (and the API file systems). /var/lib/labnet/LAB
    // is LABNET_STATE_DIR/LAB here.
    assert_eq!(setting(unit, "ProtectSystem"), ["strict"]);
    assert_eq!(setting(unit, "StateDirectory"), ["labnet/%i"]);
    let state = env
        .iter()
        .find(|(k, _)| k == "LABNET_STATE_DIR")
        .map(|(_, v)| Path::new(v).join(lab))
        .unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        READ_ONLY_BUT_STATE,
        "sh",
    ])
    .arg(&state)
    .arg("nsenter")
    .arg(format!("--net={ns}"))
    .arg("--")
    .arg("setpriv")
    .arg(format!("--reuid={UID}"))
    .arg(format!("--regid={UID}"))
    .args(["--clear-groups", "--nnp"])
    .arg(format!("--bounding-set={}", setpriv_caps(&bounding)))
    .arg(format!("--inh-caps={}", setpriv_caps(&ambient)))
    .arg(format!("--ambient-caps={}", setpriv_caps(&ambient)))
    .arg("--")
    .args(&argv)
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("NOTIFY_SOCKET", &sock_path)
    .envs(env.iter().cloned())
    .stdin(Stdio::null())
    .stdout(f.try_clone().unwrap())
    .stderr(f);
    let child = cmd.spawn().unwrap();
    c.pid(child.id());
    (Daemon { child, log }, sock)
}

/// Waits for READY=1, or for the daemon to exit (returns its status).
fn wait_ready(d: &mut Daemon, sock: &UnixDatagram) -> Result<(), std::process::ExitStatus> {
    labnet_tests::wait_ready(&mut d.child, sock, Duration::from_secs(20), &d.log)
}

fn proc_status(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn stop(d: &mut Daemon) -> std::process::ExitStatus {
    signal(d.child.id() as i32, libc::SIGTERM);
    let t = Instant::now();
    loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            return st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit within 10 s of SIGTERM; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Lab {
    c: Cleanup,
    dir: PathBuf,
    lab: String,
    env: Vec<(String, String)>,
    cfg: String,
    printed: Vec<(String, String)>,
}

impl Lab {
    fn up() -> Lab {
        let mut c = Cleanup::default();
        let id = unique("ut");
        let lab = id.clone();
        let dir = temp_dir(&mut c, "units");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = labnet_env(&dir);
        // The config lives where the sandboxed user could not read it itself (0600 root):
        // the credential is what makes it readable.
        let cfg = dir.join("lab.toml");
        std::fs::write(
            &cfg,
            format!(
                "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"192.168.0.1/24\"\n[dns]\nzone = \"lab\"\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfgs = cfg.display().to_string();
        c.netns(&lab);
        c.labnet(&["down", &lab], &env);
        let out = labnet(&["up", &lab, "--config", &cfgs, "--no-daemons"], &env);
        assert!(out.status.success(), "up failed: {}", text(&out));
        // StateDirectory=labnet/%i: created by systemd, owned by the service user.
        let state = dir.join("state").join(&lab);
        std::fs::create_dir_all(&state).unwrap();
        std::os::unix::fs::chown(&state, Some(UID), Some(UID)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = labnet_bin().display().to_string();
        let out = labnet(
            &[
                "units",
                "print",
                &lab,
                "--config",
                &cfgs,
                "--labnet-bin",
                &bin,
            ],
            &env,
        );
        assert!(out.status.success(), "units print: {}", text(&out));
        let printed = sections(&String::from_utf8_lossy(&out.stdout));
        Lab {
            c,
            dir,
            lab,
            env,
            cfg: cfgs,
            printed,
        }
    }

    fn unit(&self, template: &str) -> Vec<String> {
        let dropin = format!(
            "{}.d/labnet.conf",
            template.replace("@.", &format!("@{}.", self.lab))
        );
        [template.to_string(), dropin]
            .iter()
            .map(|p| {
                self.printed
                    .iter()
                    .find(|(q, _)| q == p)
                    .map(|(_, t)| t.clone())
                    .unwrap_or_else(|| panic!("units print has no {p}"))
            })
            .collect()
    }
}

#[test]
#[ignore = "needs root (network namespaces, setpriv to another uid)"]
fn dns_unit_privileges_are_enough_and_needed() {
    require_root();
    let mut l = Lab::up();
    let unit = l.unit("labnet-dns@.service");
    assert_eq!(
        setting(&unit, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE"]
    );
    // A name the dhcpd would have written; root-written 0644 like dhcpd's atomic rename.
    std::fs::write(
        l.dir.join("state").join(&l.lab).join("hosts"),
        "192.168.0.77 vmx\n",
    )
    .unwrap();

    let (dir, env, lab) = (l.dir.clone(), l.env.clone(), l.lab.clone());
    let (mut d, sock) = start_like_systemd(&mut l.c, &dir, &env, &lab, &unit, None, "dns");
    if let Err(st) = wait_ready(&mut d, &sock) {
        panic!(
            "dns exited ({st}) before READY=1 under the unit's privileges; log:\n{}",
            d.log()
        );
    }
    let pid = d.child.id();
    assert!(
        proc_status(pid, "Uid").starts_with(&UID.to_string()),
        "not running as {UID}"
    );
    assert_eq!(
        proc_status(pid, "CapEff"),
        "0000000000000400",
        "only CAP_NET_BIND_SERVICE"
    );
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert!(
        root_is_read_only(pid),
        "the emulated ProtectSystem=strict did not apply"
    );
    let ans = sh(&format!(
        "ip netns exec {lab} dig +short +time=2 +tries=3 @192.168.0.1 vmx.lab A"
    ));
    assert_eq!(ans.trim(), "192.168.0.77", "log:\n{}", d.log());
    let ptr = sh(&format!(
        "ip netns exec {lab} dig +short +time=2 +tries=3 @192.168.0.1 -x 192.168.0.77"
    ));
    assert_eq!(ptr.trim(), "vmx.lab.", "log:\n{}", d.log());
    let st = stop(&mut d);
    assert!(
        st.success(),
        "dns did not exit 0 on SIGTERM ({st}); log:\n{}",
        d.log()
    );

    // Without the capability the same command cannot bind port 53: the grant is needed,
    // and the uid switch above was real.
    let (mut d, sock) =
        start_like_systemd(&mut l.c, &dir, &env, &lab, &unit, Some(vec![]), "dns-nocap");
    match wait_ready(&mut d, &sock) {
        Ok(()) => panic!(
            "dns got ready on port 53 without CAP_NET_BIND_SERVICE; log:\n{}",
            d.log()
        ),
        Err(st) => assert!(!st.success(), "{st}"),
    }
    let log = d.log();
    assert!(
        log.to_lowercase().contains("permission denied") || log.contains("EACCES"),
        "{log}"
    );
}

#[test]
#[ignore = "needs root (network namespaces, setpriv to another uid)"]
fn dhcpd_unit_privileges_are_enough_and_needed() {
    require_root();
    let mut l = Lab::up();
    let unit = l.unit("labnet-dhcpd@.service");
    assert_eq!(
        setting(&unit, "AmbientCapabilities"),
        ["CAP_NET_BIND_SERVICE CAP_NET_RAW"]
    );
    let (dir, env, lab) = (l.dir.clone(), l.env.clone(), l.lab.clone());

    // A DHCP client behind the lab's bridge, like a VM's NIC on its tap.
    let cl = format!("{lab}c");
    must(Command::new("ip").args(["netns", "add", &cl]));
    l.c.netns(&cl);
    sh(&format!(
        "set -e; ip -n {lab} link add {lab}v type veth peer name eth0 netns {cl}
         ip -n {lab} link set {lab}v master {lab}br up; ip -n {cl} link set lo up; ip -n {cl} link set eth0 address 52:54:00:aa:bb:07 up"
    ));

    let (mut d, sock) = start_like_systemd(&mut l.c, &dir, &env, &lab, &unit, None, "dhcpd");
    if let Err(st) = wait_ready(&mut d, &sock) {
        panic!(
            "dhcpd exited ({st}) before READY=1 under the unit's privileges; log:\n{}",
            d.log()
        );
    }
    let pid = d.child.id();
    assert!(
        proc_status(pid, "Uid").starts_with(&UID.to_string()),
        "not running as {UID}"
    );
    assert_eq!(
        proc_status(pid, "CapEff"),
        "0000000000002400",
        "only CAP_NET_BIND_SERVICE + CAP_NET_RAW"
    );

    // udhcpc's script records the address it was given.
    let script = dir.join("udhcpc.sh");
    let got = dir.join("udhcpc.ip");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = bound ] && echo \"$ip\" > {}\nexit 0\n",
            got.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(Command::new("timeout")
        .args([
            "20", "ip", "netns", "exec", &cl, "busybox", "udhcpc", "-f", "-q", "-n",
        ])
        .args([
            "-t",
            "5",
            "-T",
            "1",
            "-i",
            "eth0",
            "-x",
            "hostname:vm7",
            "-s",
            script.to_str().unwrap(),
        ]));
    assert!(
        out.status.success(),
        "no lease: {}\ndhcpd log:\n{}",
        text(&out),
        d.log()
    );
    let ip: std::net::Ipv4Addr = std::fs::read_to_string(&got)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (std::net::Ipv4Addr::new(192, 168, 0, 100)..=std::net::Ipv4Addr::new(192, 168, 0, 199))
            .contains(&ip),
        "{ip} outside the pool"
    );
    // The lease landed in the StateDirectory, written by the unprivileged daemon.
    let leases = labnet(&["leases", &lab, "--config", &l.cfg, "--json"], &env);
    assert!(leases.status.success(), "{}", text(&leases));
    let v: serde_json::Value = serde_json::from_slice(&leases.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|x| x["mac"] == "52:54:00:aa:bb:07" && x["ip"] == ip.to_string()),
        "{v:#}"
    );
    let st = stop(&mut d);
    assert!(
        st.success(),
        "dhcpd did not exit 0 on SIGTERM ({st}); log:\n{}",
        d.log()
    );

    // Without capabilities the same command cannot bind port 67.
    let (mut d, sock) = start_like_systemd(
        &mut l.c,
        &dir,
        &env,
        &lab,
        &unit,
        Some(vec![]),
        "dhcpd-nocap",
    );
    match wait_ready(&mut d, &sock) {
        Ok(()) => panic!(
            "dhcpd got ready on port 67 without capabilities; log:\n{}",
            d.log()
        ),
        Err(st) => assert!(!st.success(), "{st}"),
    }
    let log = d.log();
    assert!(
        log.to_lowercase().contains("permission denied") || log.contains("EACCES"),
        "{log}"
    );
}

/// Runs one Exec line of the lab unit as systemd would: root, but only the unit's
/// CapabilityBoundingSet, with no-new-privs; `bounding` overrides the unit's set.
fn run_lab_exec(
    unit: &[String],
    key: &str,
    lab: &str,
    env: &[(String, String)],
    bounding: Option<Vec<String>>,
) -> std::process::Output {
    let line = setting(unit, key);
    let argv = exec_words(
        line.last().unwrap_or_else(|| panic!("no {key}")),
        &[("%i", lab)],
    );
    assert_eq!(setting(unit, "NoNewPrivileges"), ["yes"]);
    let bounding = bounding.unwrap_or_else(|| setting(unit, "CapabilityBoundingSet"));
    run(Command::new("setpriv")
        .arg("--nnp")
        .arg(format!("--bounding-set={}", setpriv_caps(&bounding)))
        .arg("--")
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().cloned()))
}

#[test]
#[ignore = "needs root (network namespaces)"]
fn lab_unit_privileges_are_enough_and_needed() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("ut");
    let lab = id.clone();
    let dir = temp_dir(&mut c, "unitlab");
    let env = labnet_env(&dir);
    // The key belongs to another user (0600): reading it takes CAP_DAC_READ_SEARCH.
    let key = dir.join("lab.key");
    sh(&format!(
        "umask 077; wg genkey > {k}; chown {UID} {k}",
        k = key.display()
    ));
    let peer = sh("wg genkey | wg pubkey");
    // Userspace WireGuard (wireguard-go, started by `up` inside the unit); the peer is a
    // dead loopback port, so nothing leaves the machine.
    let cfg = dir.join("lab.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"192.168.0.1/24\"\n\
             [uplink]\nkind = \"wireguard\"\ninterface = \"{id}wg\"\naddress = \"192.168.20.1/24\"\n\
             private_key_file = \"{}\"\npeer_public_key = \"{}\"\nendpoint = \"127.0.0.1:9\"\nbackend = \"userspace\"\n",
            key.display(),
            peer.trim()
        ),
    )
    .unwrap();
    let cfgs = cfg.display().to_string();
    c.netns(&lab);
    c.labnet(&["down", &lab], &env);
    let bin = labnet_bin().display().to_string();
    let out = labnet(
        &[
            "units",
            "print",
            &lab,
            "--config",
            &cfgs,
            "--labnet-bin",
            &bin,
        ],
        &env,
    );
    assert!(out.status.success(), "units print: {}", text(&out));
    let printed = sections(&String::from_utf8_lossy(&out.stdout));
    let get = |p: &str| {
        printed
            .iter()
            .find(|(q, _)| q == p)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no {p}"))
    };
    let unit = vec![
        get("labnet@.service"),
        get(&format!("labnet@{lab}.service.d/labnet.conf")),
    ];

    // Without CAP_SYS_ADMIN there is no namespace: the bounding set really bounds.
    let no_admin = vec!["CAP_NET_ADMIN CAP_DAC_READ_SEARCH".to_string()];
    let out = run_lab_exec(&unit, "ExecStart", &lab, &env, Some(no_admin));
    assert!(
        !out.status.success(),
        "up worked without CAP_SYS_ADMIN: {}",
        text(&out)
    );
    assert!(!netns_list().contains(&lab));
    // Without CAP_DAC_READ_SEARCH the key is unreadable.
    let no_dac = vec!["CAP_NET_ADMIN CAP_SYS_ADMIN".to_string()];
    let out = run_lab_exec(&unit, "ExecStart", &lab, &env, Some(no_dac));
    assert!(
        !out.status.success() && text(&out).contains("private_key_file"),
        "{}",
        text(&out)
    );

    // With the unit's own set: the lab comes up, wireguard-go included, and goes away again.
    let out = run_lab_exec(&unit, "ExecStart", &lab, &env, None);
    assert!(
        out.status.success(),
        "ExecStart under the unit's privileges: {}",
        text(&out)
    );
    assert!(netns_list().contains(&lab));
    let addr = sh(&format!("ip -n {lab} -4 -o addr show"));
    assert!(
        addr.contains(&format!("{id}wg")) && addr.contains("192.168.20.1/24"),
        "{addr}"
    );
    assert_eq!(
        pids_with_arg("wireguard-go", &format!("{id}wg")).len(),
        1,
        "one wireguard-go for the lab"
    );
    let out = run_lab_exec(&unit, "ExecStop", &lab, &env, None);
    assert!(out.status.success(), "ExecStop: {}", text(&out));
    assert!(
        !netns_list().contains(&lab),
        "namespace left after ExecStop"
    );
    assert!(
        pids_with_arg("wireguard-go", &format!("{id}wg")).is_empty(),
        "wireguard-go left after ExecStop"
    );
    assert!(!Path::new(&format!("/var/run/wireguard/{id}wg.sock")).exists());
    // ExecStopPost after a clean stop: nothing recorded, nothing to do, success.
    let out = run_lab_exec(&unit, "ExecStopPost", &lab, &env, None);
    assert!(out.status.success(), "ExecStopPost: {}", text(&out));
}
