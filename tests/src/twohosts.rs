//! Two "hosts" for multi-host lab tests: namespaces `{id}ha` and `{id}hb` joined by a veth
//! underlay (10.OCTET.0.1/30 and .2/30), each running labnet with its own state dirs (run,
//! state, config), like two machines. Lab `{id}a` (192.168.10.1/24) on host A and `{id}b`
//! (192.168.11.1/24) on host B, each with a `[peering]` link listening on 51820.
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::{labnet_bin, labnet_env, run, sh, temp_dir, text, unique, wait_for, Cleanup};

/// One simulated host and its lab.
pub struct Host {
    /// The host's namespace (its "real" network).
    pub ns: String,
    /// The host's address on the underlay.
    pub ip: String,
    pub lab: String,
    pub bridge: String,
    /// The lab's bridge address (x.x.x.1) and /24 prefix, e.g. "192.168.10".
    pub net: String,
    pub peering: String,
    pub env: Vec<(String, String)>,
    pub dir: PathBuf,
    /// The lab's config file.
    pub cfg: PathBuf,
}

impl Host {
    /// `labnet ARGS` run on this host (its namespace, its state dirs, `--lab LAB`).
    pub fn labnet(&self, args: &[&str]) -> Output {
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg(labnet_bin())
            .args(args)
            .args(["--lab", &self.lab])
            .envs(self.env.iter().cloned()))
    }

    /// Like [`labnet`](Self::labnet), and it must succeed; returns stdout.
    pub fn must(&self, args: &[&str]) -> String {
        let o = self.labnet(args);
        assert!(
            o.status.success(),
            "labnet {args:?} on {}: {}",
            self.ns,
            text(&o)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn bridge_ip(&self) -> String {
        format!("{}.1", self.net)
    }
}

pub struct TwoHosts {
    pub id: String,
    pub a: Host,
    pub b: Host,
}

impl TwoHosts {
    /// Makes both hosts and writes both labs' configs (`extra_a`: more TOML for lab A, e.g.
    /// an uplink); nothing is up yet. Everything goes into `c` for removal.
    pub fn new(c: &mut Cleanup, prefix: &str, octet: u8, extra_a: &str) -> TwoHosts {
        let id = unique(prefix);
        let (ha, hb) = (format!("{id}ha"), format!("{id}hb"));
        let (va, vb) = (format!("{id}va"), format!("{id}vb"));
        // The underlay /30 from the pid, so parallel test binaries do not collide.
        let p = std::process::id() % 16000;
        let (x, y) = (p / 64, (p % 64) * 4);
        let (ipa, ipb) = (
            format!("10.{octet}.{x}.{}", y + 1),
            format!("10.{octet}.{x}.{}", y + 2),
        );
        c.netns(&ha);
        c.netns(&hb);
        sh(&format!(
            "ip netns add {ha} && ip netns add {hb} && ip -n {ha} link set lo up && ip -n {hb} link set lo up && \
             ip -n {ha} link add {va} type veth peer name {vb} netns {hb} && \
             ip -n {ha} addr add {ipa}/30 dev {va} && ip -n {hb} addr add {ipb}/30 dev {vb} && \
             ip -n {ha} link set {va} up && ip -n {hb} link set {vb} up"
        ));
        let host = |c: &mut Cleanup, side: &str, ns: &str, ip: &str, net: &str, extra: &str| {
            let dir = temp_dir(c, &format!("{id}{side}"));
            let env = labnet_env(&dir);
            let lab = format!("{id}{side}");
            let (bridge, peering) = (format!("{id}b{side}"), format!("{id}p{side}"));
            let cfg = dir.join("etc").join(format!("{lab}.toml"));
            std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
            std::fs::write(
                &cfg,
                format!(
                    "name = \"{lab}\"\n\n[bridge]\nname = \"{bridge}\"\naddress = \"{net}.1/24\"\n\n\
                     [dhcp]\nrange_start = \"{net}.100\"\nrange_end = \"{net}.150\"\n\n\
                     [peering]\ninterface = \"{peering}\"\nlisten_port = 51820\nendpoint = \"{ip}:51820\"\n{extra}"
                ),
            )
            .unwrap();
            c.path(format!("/etc/netns/{lab}"));
            c.netns(&lab);
            c.path(format!("/var/run/wireguard/{peering}.sock"));
            Host {
                ns: ns.to_string(),
                ip: ip.to_string(),
                lab,
                bridge,
                net: net.to_string(),
                peering,
                env,
                dir,
                cfg,
            }
        };
        let a = host(c, "a", &ha, &ipa, "192.168.10", extra_a);
        let b = host(c, "b", &hb, &ipb, "192.168.11", "");
        TwoHosts { id, a, b }
    }

    /// `up` of both labs; `down` of both is registered for cleanup (before the namespaces go).
    pub fn up(&self, c: &mut Cleanup) {
        for h in [&self.a, &self.b] {
            c.labnet_in(&h.ns, &["down", &h.lab], &h.env);
            h.must(&["up"]);
        }
    }

    /// Each lab invites, the other adds the invitation: peers both ways.
    pub fn join(&self) {
        for (from, to) in [(&self.b, &self.a), (&self.a, &self.b)] {
            let inv = from.dir.join(format!("{}.invite", from.lab));
            from.must(&["peer", "invite", "--out", inv.to_str().unwrap()]);
            let out = to.must(&["peer", "add", inv.to_str().unwrap()]);
            eprintln!("peer add on {}: {out}", to.lab);
        }
    }
}

/// A DHCP client of a lab: namespace `ns` with a veth `{ns}c` whose other end is on the
/// lab's bridge, running busybox udhcpc whose hook applies the lease and the default route.
pub struct Client {
    pub ns: String,
    pub iface: String,
    events: PathBuf,
    _child: u32,
}

impl Client {
    pub fn new(c: &mut Cleanup, h: &Host, tag: &str) -> Client {
        Client::named(c, h, tag, tag)
    }

    /// A client whose namespace is `{lab}{tag}` and whose DHCP host name is `hostname`.
    pub fn named(c: &mut Cleanup, h: &Host, tag: &str, hostname: &str) -> Client {
        let ns = format!("{}{tag}", h.lab);
        let (iface, br_end) = (format!("{ns}c"), format!("{ns}p"));
        c.netns(&ns);
        sh(&format!(
            "ip netns add {ns} && ip -n {ns} link set lo up && \
             ip -n {ns} link add {iface} type veth peer name {br_end} netns {lab} && \
             ip -n {lab} link set {br_end} master {br} && ip -n {lab} link set {br_end} up && \
             ip -n {ns} link set {iface} up",
            lab = h.lab,
            br = h.bridge
        ));
        let events = h.dir.join(format!("{tag}.events"));
        let script = h.dir.join(format!("{tag}.sh"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1 ip=$ip router=$router dns=$dns\" >> {log}\n\
                 case \"$1\" in\n\
                 bound|renew) ip addr replace $ip/24 dev $interface; ip route replace default via $router ;;\n\
                 deconfig) ip addr flush dev $interface ;;\n\
                 esac\n",
                log = events.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let child: Child = Command::new("ip")
            .args([
                "netns", "exec", &ns, "busybox", "udhcpc", "-f", "-i", &iface,
            ])
            .args([
                "-s",
                script.to_str().unwrap(),
                "-x",
                &format!("hostname:{hostname}"),
            ])
            .args(["-t", "10", "-T", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        c.pid(child.id());
        let me = Client {
            ns,
            iface,
            events,
            _child: child.id(),
        };
        wait_for("the client's lease", Duration::from_secs(30), || {
            me.ip().is_some()
        });
        me
    }

    /// The address of the latest `bound` event.
    pub fn ip(&self) -> Option<String> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.starts_with("bound") || l.starts_with("renew"))
            .and_then(|l| l.split_whitespace().find_map(|kv| kv.strip_prefix("ip=")))
            .map(String::from)
    }

    /// Every udhcpc event so far (bound, renew, deconfig...), one per line.
    pub fn events(&self) -> String {
        std::fs::read_to_string(&self.events).unwrap_or_default()
    }

    /// `CMD` in the client's namespace.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(cmd))
    }

    /// One ping that must be answered within 2 s (several tries: the first packet may wait
    /// for a handshake).
    pub fn pings(&self, to: &str) -> bool {
        (0..5).any(|_| {
            self.exec(&["ping", "-c", "1", "-W", "2", to])
                .status
                .success()
        })
    }
}
