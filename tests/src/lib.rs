//! Shared helpers for the end-to-end tests: the built `labnet` binary, unique names, and guards
//! that remove namespaces, links and processes a test made, even when it fails.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use testkit::{
    in_netns, is_root, notify_socket, require_root, signal, static_kmount, unique, wait_for,
    wait_ready,
};

/// target/debug/labnet (the test binary lives in target/debug/deps).
pub fn labnet_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("labnet");
    assert!(
        bin.exists(),
        "{} not built; run the tests with `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// Runs a command, returning its output; panics with the command line if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns stdout.
pub fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sh -c SCRIPT` that must succeed.
pub fn sh(script: &str) -> String {
    must(Command::new("sh").arg("-c").arg(script))
}

/// Everything a test made, removed in reverse order on drop: namespaces (`ip netns del`),
/// root-namespace links, processes by pid (only ones the test started), and paths.
#[derive(Default)]
pub struct Cleanup {
    actions: Vec<Action>,
}

enum Action {
    Netns(String),
    Link(String),
    Pid(u32),
    Path(PathBuf),
    Labnet(Vec<String>, Vec<(String, String)>),
}

impl Cleanup {
    pub fn netns(&mut self, name: &str) {
        self.actions.push(Action::Netns(name.into()));
    }
    pub fn link(&mut self, name: &str) {
        self.actions.push(Action::Link(name.into()));
    }
    pub fn pid(&mut self, pid: u32) {
        self.actions.push(Action::Pid(pid));
    }
    pub fn path(&mut self, p: impl Into<PathBuf>) {
        self.actions.push(Action::Path(p.into()));
    }
    /// Runs `labnet ARGS` (e.g. `down LAB`) with ENV at cleanup time.
    pub fn labnet(&mut self, args: &[&str], env: &[(String, String)]) {
        self.actions.push(Action::Labnet(
            args.iter().map(|s| s.to_string()).collect(),
            env.to_vec(),
        ));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some(a) = self.actions.pop() {
            match a {
                Action::Netns(n) => {
                    let _ = Command::new("ip").args(["netns", "del", &n]).output();
                }
                Action::Link(n) => {
                    let _ = Command::new("ip").args(["link", "del", &n]).output();
                }
                Action::Pid(p) => {
                    signal(p as i32, libc::SIGKILL);
                    // Reap it when it is our child (an error otherwise, which is fine).
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(p as i32), None);
                }
                Action::Path(p) => {
                    let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
                }
                Action::Labnet(args, env) => {
                    let _ = Command::new(labnet_bin()).args(&args).envs(env).output();
                }
            }
        }
    }
}

/// A private temp directory removed by the Cleanup.
pub fn temp_dir(c: &mut Cleanup, tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("labnet-test-{tag}-{}", unique("t")));
    std::fs::create_dir_all(&d).unwrap();
    c.path(&d);
    d
}

/// Environment that keeps a test's labnet state out of /run/labnet and /var/lib/labnet.
pub fn labnet_env(root: &Path) -> Vec<(String, String)> {
    vec![
        (
            "LABNET_RUN_DIR".into(),
            root.join("run").display().to_string(),
        ),
        (
            "LABNET_STATE_DIR".into(),
            root.join("state").display().to_string(),
        ),
        (
            "LABNET_CONFIG_DIR".into(),
            root.join("etc").display().to_string(),
        ),
    ]
}

/// `labnet ARGS` with ENV.
pub fn labnet(args: &[&str], env: &[(String, String)]) -> Output {
    run(Command::new(labnet_bin())
        .args(args)
        .envs(env.iter().cloned()))
}

pub fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Names of links in labnet's (the test's) namespace.
pub fn root_links() -> Vec<String> {
    let out = must(Command::new("ip").args(["-o", "link", "show"]));
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

pub fn netns_list() -> Vec<String> {
    let out = must(Command::new("ip").args(["netns", "list"]));
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Pids whose command line has `needle` as one of its arguments.
pub fn pids_with_arg(prog: &str, needle: &str) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|c| *c == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with(prog)) && args.iter().any(|a| a == needle) {
            out.push(pid);
        }
    }
    out
}

/// A test "bounce box" (seed 000's sepia-bounce VM): its own namespace behind a veth underlay
/// from the test's namespace, running wireguard-go at 192.168.20.2/24 whose peer is the lab
/// (192.168.20.1/32), with nft counters of the echo requests it receives by source.
pub struct Bounce {
    pub ns: String,
    /// The bounce box's WireGuard endpoint on the underlay (IP:51820).
    pub endpoint: String,
    pub bounce_pub: String,
    /// The lab's private key file (0600) for `uplink.private_key_file`.
    pub lab_key: PathBuf,
    /// wireguard-go's interface in the bounce namespace.
    pub wg: String,
}

/// Builds the bounce box named after `id`; everything goes into `c` for removal. `octet` keeps
/// the underlay 10.OCTET.x.y/30 of different test files apart.
pub fn bounce(c: &mut Cleanup, dir: &Path, id: &str, octet: u8) -> Bounce {
    let ns = format!("{id}bx");
    let (u0, u1, wgb) = (format!("{id}u0"), format!("{id}u1"), format!("{id}wb"));
    // An underlay /30 derived from the pid, so parallel test binaries do not collide.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let p = std::process::id() * 4 + NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (a, b) = ((p >> 6) & 0xff, (p & 0x3f) * 4);
    let (host_ip, bounce_ip) = (
        format!("10.{octet}.{a}.{}", b + 1),
        format!("10.{octet}.{a}.{}", b + 2),
    );
    let lab_key = dir.join("lab.key");
    sh(&format!(
        "umask 077; wg genkey > {d}/lab.key; wg pubkey < {d}/lab.key > {d}/lab.pub; wg genkey > {d}/bounce.key; wg pubkey < {d}/bounce.key > {d}/bounce.pub",
        d = dir.display()
    ));
    c.netns(&ns);
    c.link(&u0);
    sh(&format!(
        "ip netns add {ns} && ip -n {ns} link set lo up && ip link add {u0} type veth peer name {u1} netns {ns} && \
         ip addr add {host_ip}/30 dev {u0} && ip link set {u0} up && ip -n {ns} addr add {bounce_ip}/30 dev {u1} && ip -n {ns} link set {u1} up"
    ));
    let log = std::fs::File::create(dir.join("wgb.log")).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns, "wireguard-go", &wgb])
        .env("WG_PROCESS_FOREGROUND", "1")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    c.pid(child.id());
    let sock = format!("/var/run/wireguard/{wgb}.sock");
    c.path(&sock);
    wait_for(
        "the bounce box's wireguard-go socket",
        Duration::from_secs(5),
        || Path::new(&sock).exists(),
    );
    sh(&format!(
        "ip netns exec {ns} wg set {wgb} listen-port 51820 private-key {d}/bounce.key peer $(cat {d}/lab.pub) allowed-ips 192.168.20.1/32 && \
         ip -n {ns} addr add 192.168.20.2/24 dev {wgb} && ip -n {ns} link set {wgb} up",
        d = dir.display()
    ));
    // Counters that show which source address reaches the bounce box.
    sh(&format!(
        "ip netns exec {ns} nft -f - <<'EOF'\n\
         table ip probe {{\n chain input {{\n type filter hook input priority 0; policy accept;\n\
           ip saddr 192.168.20.1 icmp type echo-request counter\n\
           ip saddr 192.168.0.0/24 icmp type echo-request counter\n }}\n }}\nEOF"
    ));
    Bounce {
        ns,
        endpoint: format!("{bounce_ip}:51820"),
        bounce_pub: std::fs::read_to_string(dir.join("bounce.pub"))
            .unwrap()
            .trim()
            .to_string(),
        lab_key,
        wg: wgb,
    }
}

/// The packages the tests' image has on top of labnet's base set: what a lab inside the
/// guest needs (issue 15: nft, wireguard-go, wg for a bounce box).
pub const TEST_IMAGE_PACKAGES: &[&str] = &["nftables", "wireguard-go", "wireguard-tools"];

/// The tests' Debian image, built once with `labnet image build` and cached outside the clone
/// in /var/cache/labnet/images/KEY (KEY: a hash of the recipe, labnet's guest files and the
/// kmount binary), under a file lock so parallel tests wait instead of racing. Returns the
/// image store dir (for LABNET_IMAGE_DIR) and the image's name.
pub fn test_image() -> (PathBuf, String) {
    let kmount = static_kmount();
    let packages: Vec<String> = TEST_IMAGE_PACKAGES.iter().map(|s| s.to_string()).collect();
    let mirror = image::recipe::host_mirror().expect("a Debian mirror in the host's apt sources");
    let recipe = image::recipe::Recipe::new("bookworm", &mirror, &packages).unwrap();
    let mut inputs = recipe.key().into_bytes();
    inputs.extend(image::guest::render(&image::guest::entries()).into_bytes());
    inputs.extend(std::fs::read(&kmount).unwrap());
    let key = format!("{:016x}", image::fnv1a(&inputs));
    let base = Path::new("/var/cache/labnet/images");
    std::fs::create_dir_all(base).unwrap();
    let _lock = image::build::lock(&base.join(format!("{key}.lock"))).unwrap();
    let store = base.join(&key);
    let name = "test".to_string();
    if !store.join(&name).join("manifest.json").exists() {
        let t0 = Instant::now();
        let mut args = vec![
            "image".to_string(),
            "build".into(),
            name.clone(),
            "--kmount".into(),
            kmount.display().to_string(),
        ];
        for p in &packages {
            args.extend(["--package".into(), p.clone()]);
        }
        let out = run(Command::new(labnet_bin())
            .args(&args)
            .env("LABNET_IMAGE_DIR", &store));
        assert!(out.status.success(), "test image build: {}", text(&out));
        eprintln!(
            "test image built in {:.0} s: {}",
            t0.elapsed().as_secs_f64(),
            store.display()
        );
    }
    (store, name)
}
