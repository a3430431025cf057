//! Shared helpers for the end-to-end tests: the built `labnet` binary, unique names, and guards
//! that remove namespaces, links and processes a test made, even when it fails.
// Children are registered by pid with Cleanup, which kills and reaps them.
#![allow(clippy::zombie_processes)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod ceph;
pub mod dnstest;
pub mod twohosts;

pub use testkit::{
    in_netns, is_root, notify_socket, require_root, signal, static_kmount, unique, wait_for,
    wait_ready, wait_until,
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
    LabnetIn(String, Vec<String>, Vec<(String, String)>),
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

impl Cleanup {
    /// Runs `labnet ARGS` with ENV inside namespace `ns` (a simulated host) at cleanup time.
    pub fn labnet_in(&mut self, ns: &str, args: &[&str], env: &[(String, String)]) {
        self.actions.push(Action::LabnetIn(
            ns.into(),
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
                Action::LabnetIn(ns, args, env) => {
                    let _ = Command::new("nsenter")
                        .arg(format!("--net=/run/netns/{ns}"))
                        .arg(labnet_bin())
                        .args(&args)
                        .envs(env)
                        .output();
                }
            }
        }
    }
}

/// `ip netns add NAME` with its `lo` up, deleted by the Cleanup.
pub fn add_netns(c: &mut Cleanup, name: &str) {
    must(Command::new("ip").args(["netns", "add", name]));
    c.netns(name);
    must(Command::new("ip").args(["-n", name, "link", "set", "lo", "up"]));
}

/// Starts a long-running helper `argv` inside netns `ns` (output in `log`), killed by pid on
/// cleanup; returns its pid (`ip netns exec` execs the program: the pid is the helper's own).
pub fn spawn_in(c: &mut Cleanup, ns: &str, log: &Path, argv: &[&str]) -> u32 {
    let f = std::fs::File::create(log).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    c.pid(child.id());
    child.id()
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

/// Every process's pid and argv (procfs; processes that end meanwhile are skipped).
fn processes() -> impl Iterator<Item = (u32, Vec<String>)> {
    procfs::process::all_processes()
        .expect("list /proc")
        .flatten()
        .filter_map(|p| Some((p.pid as u32, p.cmdline().ok()?)))
}

/// Pids whose command line has `needle` as one of its arguments.
pub fn pids_with_arg(prog: &str, needle: &str) -> Vec<u32> {
    processes()
        .filter(|(_, args)| {
            args.first().is_some_and(|a| a.ends_with(prog)) && args.iter().any(|a| a == needle)
        })
        .map(|(pid, _)| pid)
        .collect()
}

/// Pids (other than this process) whose command line holds `needle` anywhere, e.g. a path
/// under a VM's directory.
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    processes()
        .filter(|(pid, args)| *pid != std::process::id() && args.iter().any(|a| a.contains(needle)))
        .map(|(pid, _)| pid)
        .collect()
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
/// Where tests keep expensive artefacts, outside the clone (`LABNET_CACHE_DIR` overrides).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("LABNET_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/labnet"))
}

/// Holds an exclusive flock(2) on a file until dropped: parallel tests (threads or processes)
/// wait for the one that builds rather than race it.
pub struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    pub fn exclusive(path: &Path) -> FileLock {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // SAFETY: flock on a file descriptor this function owns (open until FileLock drops).
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock { _file: f }
    }
}

/// Debian's kernel source package (installed by .ci/install-deps.sh).
pub const LINUX_SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The linux-source package's version (e.g. 6.1.172-1), else the tarball's size and mtime.
pub fn linux_source_version() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "linux-source-6.1"])
        .output();
    if let Ok(o) = out {
        let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && !v.is_empty() {
            return v;
        }
    }
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(LINUX_SOURCE_TARBALL).unwrap_or_else(|e| {
        panic!("{LINUX_SOURCE_TARBALL}: {e} (apt-get install linux-source-6.1)")
    });
    format!("{}-{}", md.size(), md.mtime())
}

/// The kernel source tree unpacked from [`LINUX_SOURCE_TARBALL`] into
/// `cache_dir()/src/linux-source-6.1`, once per package version (a marker file holds it).
/// Kept pristine: builds and config tests use `make O=DIR`.
pub fn linux_source_tree() -> PathBuf {
    let root = cache_dir().join("src");
    let _lock = FileLock::exclusive(&root.join(".lock"));
    let tree = root.join("linux-source-6.1");
    let marker = root.join("linux-source-6.1.version");
    let version = linux_source_version();
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(version.as_str())
        && tree.join("Kconfig").is_file()
    {
        return tree;
    }
    let _ = std::fs::remove_file(&marker);
    let _ = std::fs::remove_dir_all(&tree);
    eprintln!(
        "unpacking {LINUX_SOURCE_TARBALL} ({version}) into {}",
        root.display()
    );
    must(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-xf", LINUX_SOURCE_TARBALL]),
    );
    assert!(
        tree.join("Kconfig").is_file(),
        "{} not in the tarball",
        tree.display()
    );
    std::fs::write(&marker, &version).unwrap();
    tree
}

/// The source-built guest kernel: `labnet kernel build --base tinyconfig` of Debian's 6.1
/// source with labnet's fragment (ceph, virtio, PVH built in; no modules).
#[derive(Clone, Debug)]
pub struct SourceKernel {
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    pub vmlinux: PathBuf,
    pub config: PathBuf,
    pub tree: PathBuf,
    pub key: String,
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache key of the source kernel: source version + a hash of the fragment (what
/// `labnet kernel-config` prints), the base config and the compiler.
pub fn source_kernel_key() -> String {
    let fragment = must(Command::new(labnet_bin()).arg("kernel-config"));
    let gcc = Command::new("gcc")
        .arg("--version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let gcc = gcc
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default()
        .to_vec();
    let h = sha256_hex(&[fragment.as_bytes(), b"tinyconfig", &gcc]);
    format!("{}-{}", linux_source_version(), &h[..16])
}

/// Returns the cached source-built kernel, building it on first use (about 10-20 min on 2
/// cores) into `cache_dir()/kernel/KEY/`, under a lock so parallel tests wait for one build.
pub fn source_kernel() -> SourceKernel {
    static K: std::sync::OnceLock<SourceKernel> = std::sync::OnceLock::new();
    K.get_or_init(|| {
        let tree = linux_source_tree();
        let key = source_kernel_key();
        let root = cache_dir().join("kernel");
        let dir = root.join(&key);
        let k = SourceKernel {
            bzimage: dir.join("bzImage"),
            vmlinux: dir.join("vmlinux"),
            config: dir.join("config"),
            dir: dir.clone(),
            tree: tree.clone(),
            key: key.clone(),
        };
        // A finished build is renamed into place whole: no need to wait for the lock (held
        // by another key's build, maybe for minutes) to use it.
        if k.bzimage.is_file() && k.vmlinux.is_file() {
            return k;
        }
        let _lock = FileLock::exclusive(&root.join(".lock"));
        if k.bzimage.is_file() && k.vmlinux.is_file() {
            return k;
        }
        let partial = root.join(format!("{key}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        // One object dir per source version: the unpacked tree keeps the tarball's old mtimes,
        // so make would take another version's objects for up to date (and link both).
        let objdir = root.join(format!("obj-{}", linux_source_version()));
        prune_other_objdirs(&root, &objdir);
        eprintln!(
            "building the source kernel {key} (labnet kernel build --base tinyconfig; cold: 10-20 min)"
        );
        let t = Instant::now();
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        let out = run(Command::new(labnet_bin())
            .args(["kernel", "build", "--base", "tinyconfig", "--jobs", &jobs.to_string()])
            .arg("--tree")
            .arg(&tree)
            .arg("--objdir")
            .arg(&objdir)
            .arg("--out")
            .arg(&partial));
        assert!(out.status.success(), "labnet kernel build failed:\n{}", text(&out));
        std::fs::rename(&partial, &dir).unwrap();
        eprintln!("source kernel built in {:.0} s: {}", t.elapsed().as_secs_f64(), dir.display());
        k
    })
    .clone()
}

/// Removes the kernel object dirs of other source versions (about 1 GB each); the caller holds
/// the kernel cache's lock.
fn prune_other_objdirs(root: &Path, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if (name == "obj" || name.starts_with("obj-")) && e.path() != keep {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// `prog` in PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// Removes the tests' images of other keys (older kmount or guest files), ~700 MB each,
/// except any another test process holds the lock of.
fn prune_test_images(base: &Path, keep: &str) {
    let Ok(rd) = std::fs::read_dir(base) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name == keep || name.ends_with(".lock") || !e.path().is_dir() {
            continue;
        }
        let lock = base.join(format!("{name}.lock"));
        let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
        else {
            continue;
        };
        if let Ok(_held) = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            let _ = std::fs::remove_dir_all(e.path());
            let _ = std::fs::remove_file(&lock);
        }
    }
}

/// The packages the tests' image has on top of labnet's base set: what a lab inside the
/// guest needs (issue 15: nft, wireguard-go, wg for a bounce box), and dm-multipath's tools
/// for `vm path` (issue 19: `multipath -ll` through a failover).
pub const TEST_IMAGE_PACKAGES: &[&str] = &[
    "nftables",
    "wireguard-go",
    "wireguard-tools",
    "multipath-tools",
];

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
        prune_test_images(base, &key);
        eprintln!(
            "test image built in {:.0} s: {}",
            t0.elapsed().as_secs_f64(),
            store.display()
        );
    }
    (store, name)
}

/// Every `vm ssh` / `vm cp` runs under this many seconds of timeout(1).
pub const SSH_TIMEOUT: &str = "120";

/// A lab of a test's own for VMs of the tests' image (see [`test_image`]).
pub struct ImageLab {
    pub id: String,
    pub env: Vec<(String, String)>,
    pub root: PathBuf,
    pub cfg: String,
    /// The bridge's address (the lab's dns and dhcpd).
    pub gw: String,
}

impl ImageLab {
    /// A lab of its own (bridge 10.OCTET.0.1/24) whose dns forwards to `upstream`; VMs `k1`
    /// and `k2` are stopped on cleanup.
    pub fn up(c: &mut Cleanup, tag: &str, octet: u8, upstream: Option<&str>) -> ImageLab {
        ImageLab::with_vms(c, tag, octet, upstream, &["k1", "k2"])
    }

    /// [`ImageLab::up`] whose VMs (stopped on cleanup, before the lab goes) are `vms`.
    pub fn with_vms(
        c: &mut Cleanup,
        tag: &str,
        octet: u8,
        upstream: Option<&str>,
        vms: &[&str],
    ) -> ImageLab {
        let id = unique(&format!("li{tag}"));
        let root = temp_dir(c, tag);
        let mut env = labnet_env(&root);
        let (store, _) = test_image();
        env.push(("LABNET_IMAGE_DIR".into(), store.display().to_string()));
        let gw = format!("10.{octet}.0.1");
        let ups = upstream
            .map(|u| format!("upstreams = [\"{u}:53\"]\n"))
            .unwrap_or_default();
        let cfg = root.join("lab.toml");
        std::fs::write(
            &cfg,
            format!(
                "name = \"{id}\"\n[bridge]\nname = \"{id}b\"\naddress = \"{gw}/24\"\n\
                 [dhcp]\nrange_start = \"10.{octet}.0.100\"\nrange_end = \"10.{octet}.0.150\"\n\
                 [dns]\nzone = \"lab\"\n{ups}"
            ),
        )
        .unwrap();
        let cfg = cfg.display().to_string();
        c.labnet(&["down", &id], &env);
        // LIFO: the VMs go before the lab.
        for vm in vms {
            c.labnet(&["vm", "stop", vm, "--lab", &id, "--timeout", "20"], &env);
        }
        let up = labnet(&["up", &id, "--config", &cfg], &env);
        assert!(up.status.success(), "labnet up: {}", text(&up));
        ImageLab {
            id,
            env,
            root,
            cfg,
            gw,
        }
    }

    pub fn labnet(&self, args: &[&str]) -> Output {
        labnet(args, &self.env)
    }

    /// `labnet vm ARGS --lab LAB` under a timeout.
    pub fn vm(&self, args: &[&str]) -> Output {
        run(Command::new("timeout")
            .args([SSH_TIMEOUT, labnet_bin().to_str().unwrap(), "vm", args[0]])
            .args(["--lab", &self.id])
            .args(&args[1..])
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null()))
    }

    /// `vm ssh NAME -- SCRIPT`, which must succeed; its stdout.
    pub fn ssh(&self, name: &str, script: &str) -> String {
        let o = self.vm(&["ssh", name, "--", script]);
        assert!(
            o.status.success(),
            "vm ssh {name} -- {script}: {}",
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `vm start --image test --daemonize` (q35, TCG; QEMU killed after `secs`), then
    /// `vm ssh --wait` until sshd answers.
    pub fn boot(&self, name: &str, secs: u64) -> Duration {
        self.boot_with(name, secs, &[])
    }

    /// [`ImageLab::boot`] with more `vm start` arguments (e.g. `--share DIR:TAG`).
    pub fn boot_with(&self, name: &str, secs: u64, more: &[&str]) -> Duration {
        let t0 = Instant::now();
        let (_, image) = test_image();
        let secs = secs.to_string();
        let mut args = vec![
            "vm",
            "start",
            "--lab",
            &self.id,
            "--image",
            &image,
            "--name",
            name,
            "--timeout",
            &secs,
            "--daemonize",
        ];
        args.extend_from_slice(more);
        let st = self.labnet(&args);
        assert!(st.status.success(), "vm start {name}: {}", text(&st));
        // Its own timeout(1): a loaded 2-core host can take minutes to boot a TCG guest.
        let w = run(Command::new("timeout")
            .args([
                "330",
                labnet_bin().to_str().unwrap(),
                "vm",
                "ssh",
                "--lab",
                &self.id,
            ])
            .args([name, "--wait", "300"])
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null()));
        assert!(
            w.status.success(),
            "vm ssh --wait {name}: {}\nserial log:\n{}",
            text(&w),
            std::fs::read_to_string(self.vm_dir(name).join("serial.log")).unwrap_or_default()
        );
        t0.elapsed()
    }

    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.root.join("run").join(&self.id).join("vms").join(name)
    }

    pub fn taps(&self) -> Vec<String> {
        sh(&format!("ip -n {} -o link show", self.id))
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap().to_string())
            .filter(|n| n.starts_with("tap-"))
            .collect()
    }

    pub fn lease_of(&self, name: &str) -> serde_json::Value {
        let o = self.labnet(&["leases", &self.id, "--config", &self.cfg, "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|l| l["hostname"].as_str() == Some(name))
            .cloned()
            .unwrap_or_else(|| panic!("no lease with hostname {name}: {v}"))
    }

    /// `vm stop NAME`, then nothing of the VM is left: no tap, no overlay, no ssh control
    /// socket (and no ssh master process for it).
    pub fn stop_and_check_clean(&self, name: &str) {
        let o = self.vm(&["stop", name, "--timeout", "30"]);
        assert!(o.status.success(), "vm stop {name}: {}", text(&o));
        let dir = self.vm_dir(name);
        let tap = format!("tap-{name}");
        assert!(!self.taps().contains(&tap), "{tap} left: {:?}", self.taps());
        assert!(
            !dir.join("overlay.qcow2").exists(),
            "overlay left in {}",
            dir.display()
        );
        assert!(!dir.join("ssh.ctl").exists(), "ssh control socket left");
        let ctl = dir.join("ssh.ctl").display().to_string();
        let masters: Vec<u32> = pids_with_arg("ssh", &format!("ControlPath={ctl}"));
        assert!(masters.is_empty(), "ssh master(s) left: {masters:?}");
    }
}

/// A lab with a host uplink whose "host" is a stand-in namespace `{id}ho`: the uplink's veth,
/// NAT and sysctl go there, not on this machine. Brought up from that namespace with its own
/// state dirs; bridge `{id}br` 192.168.0.1/24; `extra` is more TOML for the lab file.
pub struct HostUplinkLab {
    pub id: String,
    pub host: String,
    pub lab: String,
    pub env: Vec<(String, String)>,
    /// The lab file's path, for `--config`.
    pub cfg: String,
}

impl HostUplinkLab {
    pub fn up(c: &mut Cleanup, prefix: &str, tag: &str, extra: &str) -> Self {
        let id = unique(prefix);
        let (host, lab) = (format!("{id}ho"), id.clone());
        let root = temp_dir(c, tag);
        let env = labnet_env(&root);
        c.netns(&host);
        sh(&format!(
            "ip netns add {host} && ip -n {host} link set lo up"
        ));
        let cfg = root.join("lab.toml");
        std::fs::write(
            &cfg,
            format!(
                "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"192.168.0.1/24\"\n\
                 [uplink]\nkind = \"host\"\nhost_interface = \"{id}hv\"\n{extra}"
            ),
        )
        .unwrap();
        c.path(format!("/etc/netns/{lab}"));
        c.netns(&lab);
        let l = HostUplinkLab {
            id,
            host,
            lab,
            env,
            cfg: cfg.display().to_string(),
        };
        let up = l.labnet(&["up", &l.lab, "--config", &l.cfg]);
        assert!(up.status.success(), "{}", text(&up));
        l
    }

    /// `labnet ARGS` run in the stand-in host namespace with the lab's state dirs.
    pub fn labnet(&self, args: &[&str]) -> Output {
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg(labnet_bin())
            .args(args)
            .envs(self.env.iter().cloned()))
    }
}

/// A lab of its own for VM tests (unique name from `prefix`, its bridge, temp LABNET_* dirs,
/// labnet's dhcpd and dns), downed on cleanup after the VMs named in `vms` are stopped.
pub struct VmLab {
    pub id: String,
    pub env: Vec<(String, String)>,
    pub root: PathBuf,
}

impl VmLab {
    pub fn up(c: &mut Cleanup, prefix: &str, vms: &[&str]) -> VmLab {
        let id = unique(prefix);
        let root = temp_dir(c, &id);
        let env = labnet_env(&root);
        let cfg = root.join("lab.toml");
        std::fs::write(
            &cfg,
            format!(
                "name = \"{id}\"\n[bridge]\nname = \"{id}br\"\naddress = \"10.79.0.1/24\"\n\
                 [dhcp]\nrange_start = \"10.79.0.100\"\nrange_end = \"10.79.0.150\"\n"
            ),
        )
        .unwrap();
        c.labnet(&["down", &id], &env);
        // Runs before the down above (LIFO): a daemonized VM would outlive its lab otherwise.
        for vm in vms {
            c.labnet(&["vm", "stop", vm, "--lab", &id, "--timeout", "2"], &env);
        }
        let up = labnet(&["up", &id, "--config", &cfg.display().to_string()], &env);
        assert!(up.status.success(), "{}", text(&up));
        VmLab { id, env, root }
    }

    /// `labnet vm SUBCOMMAND --lab ID REST...` (`args` = SUBCOMMAND REST...).
    pub fn vm_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(labnet_bin());
        c.arg("vm")
            .args(&args[..1])
            .args(["--lab", &self.id])
            .args(&args[1..])
            .envs(self.env.iter().cloned());
        c
    }

    /// Runs [`VmLab::vm_command`].
    pub fn vm(&self, args: &[&str]) -> Output {
        run(&mut self.vm_command(args))
    }

    /// A VM's state file (state.json in its runtime dir).
    pub fn vm_state(&self, name: &str) -> serde_json::Value {
        let p = self
            .root
            .join("run")
            .join(&self.id)
            .join("vms")
            .join(name)
            .join("state.json");
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    /// A VM's runtime dir.
    pub fn vm_dir(&self, name: &str) -> PathBuf {
        self.root.join("run").join(&self.id).join("vms").join(name)
    }
}
