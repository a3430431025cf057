//! The plan `up` runs, without root: for each uplink kind (isolated, host, WireGuard with the
//! kernel module and with wireguard-go) the steps, what the executor does with them over a
//! recording [`Net`], what it records before each step, and the order `down` undoes that
//! record in; and the drift repairs of a lab that is up. Golden files in tests/golden/.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use netns::config::{Ipv4Cidr, Lab, Peer, Peering, Uplink, Wireguard};
use netns::exec::{self, Net};
use netns::plan::{
    self, plan, undo_order, DaemonSpec, DnsObs, LinkObs, Observed, PeeringObs, Plan, WgPeerObs,
};
use netns::state::{LabState, Resource};
use netns::Error;

/// Every call, in order; fails the call whose text starts with `fail_on`.
#[derive(Default)]
struct RecordingNet {
    calls: Vec<String>,
    fail_on: Option<&'static str>,
    next_pid: u32,
}

impl RecordingNet {
    fn call(&mut self, c: String) -> Result<(), Error> {
        let fail = self.fail_on.is_some_and(|f| c.starts_with(f));
        self.calls.push(c);
        if fail {
            return Err(Error::Unsupported {
                what: "the fake was told to fail here".into(),
            });
        }
        Ok(())
    }
    fn pid(&mut self) -> u32 {
        self.next_pid += 1;
        1000 + self.next_pid
    }
}

impl Net for RecordingNet {
    fn create_netns(&mut self, name: &str) -> Result<(), Error> {
        self.call(format!("create_netns {name}"))
    }
    fn create_wireguard_link(&mut self, iface: &str) -> Result<(), Error> {
        self.call(format!("create_wireguard_link {iface}"))
    }
    fn create_tun(&mut self, iface: &str) -> Result<(), Error> {
        self.call(format!("create_tun {iface}"))
    }
    fn start_wireguard_go(&mut self, iface: &str, log: &Path) -> Result<u32, Error> {
        self.call(format!("start_wireguard_go {iface} log {}", log.display()))?;
        Ok(self.pid())
    }
    fn wait_wireguard_go(&mut self, iface: &str) -> Result<(), Error> {
        self.call(format!("wait_wireguard_go {iface}"))
    }
    fn configure_wireguard(&mut self, wg: &Wireguard, userspace: bool) -> Result<(), Error> {
        self.call(format!(
            "configure_wireguard {} userspace={userspace} key_file={} peer={}",
            wg.interface,
            wg.private_key_file.display(),
            wg.peer_public_key
        ))
    }
    fn configure_peering_link(
        &mut self,
        p: &Peering,
        userspace: bool,
        netns: Option<&str>,
    ) -> Result<(), Error> {
        self.call(format!(
            "configure_peering_link {} userspace={userspace} in {netns:?} key_file={} port={:?}",
            p.interface,
            p.private_key_file.display(),
            p.listen_port
        ))
    }
    fn add_wg_peer(&mut self, n: &str, iface: &str, peer: &Peer, u: bool) -> Result<(), Error> {
        self.call(format!(
            "add_wg_peer {n} {iface} userspace={u} {} key={} allowed={} endpoint={:?} keepalive={:?}",
            peer.name, peer.public_key, peer.subnet, peer.endpoint, peer.persistent_keepalive
        ))
    }
    fn remove_wg_peer(&mut self, n: &str, iface: &str, key: &str, u: bool) -> Result<(), Error> {
        self.call(format!(
            "remove_wg_peer {n} {iface} userspace={u} key={key}"
        ))
    }
    fn add_bridge(&mut self, netns: &str, name: &str) -> Result<(), Error> {
        self.call(format!("add_bridge {netns} {name}"))
    }
    fn add_veth(&mut self, name: &str, peer: &str) -> Result<(), Error> {
        self.call(format!("add_veth {name} {peer}"))
    }
    fn move_link(&mut self, link: &str, netns: &str) -> Result<(), Error> {
        self.call(format!("move_link {link} -> {netns}"))
    }
    fn link_up(&mut self, netns: Option<&str>, link: &str) -> Result<(), Error> {
        self.call(format!("link_up {netns:?} {link}"))
    }
    fn add_address(&mut self, n: Option<&str>, link: &str, a: Ipv4Cidr) -> Result<(), Error> {
        self.call(format!("add_address {n:?} {link} {a}"))
    }
    fn add_default_route(&mut self, n: &str, link: &str, via: Ipv4Addr) -> Result<(), Error> {
        self.call(format!("add_default_route {n} {link} via {via}"))
    }
    fn set_mtu(&mut self, n: &str, link: &str, mtu: u32) -> Result<(), Error> {
        self.call(format!("set_mtu {n} {link} {mtu}"))
    }
    fn add_route(&mut self, n: &str, link: &str, d: Ipv4Cidr, src: Ipv4Addr) -> Result<(), Error> {
        self.call(format!("add_route {n} {d} dev {link} src {src}"))
    }
    fn del_route(&mut self, n: &str, link: &str, d: Ipv4Cidr) -> Result<(), Error> {
        self.call(format!("del_route {n} {d} dev {link}"))
    }
    fn sysctl(&mut self, n: Option<&str>, path: &str, value: &str) -> Result<(), Error> {
        self.call(format!("sysctl {n:?} {path}={value}"))
    }
    fn nft_table(
        &mut self,
        n: Option<&str>,
        table: &str,
        ruleset: nftables::schema::Nftables<'static>,
        replace: bool,
    ) -> Result<(), Error> {
        let objects = ruleset.objects.len();
        self.call(format!(
            "nft_table {n:?} {table} ({objects} objects) replace={replace}"
        ))
    }
    fn make_dir(&mut self, path: &Path) -> Result<(), Error> {
        self.call(format!("make_dir {}", path.display()))
    }
    fn write_file(&mut self, path: &Path, text: &str, save_to: Option<&Path>) -> Result<(), Error> {
        self.call(format!(
            "write_file {} ({} bytes) save_to={:?}",
            path.display(),
            text.len(),
            save_to
        ))
    }
    fn start_daemon(&mut self, lab: &str, d: &DaemonSpec) -> Result<u32, Error> {
        self.call(format!("start_daemon {lab} {} {:?}", d.name, d.argv))?;
        Ok(self.pid())
    }
    fn reload_daemon(&mut self, lab: &str, d: &DaemonSpec, pid: Option<u32>) -> Result<u32, Error> {
        self.call(format!("reload_daemon {lab} {} pid {pid:?}", d.name))?;
        Ok(pid.unwrap_or(0))
    }
    fn remove(&mut self, r: &Resource) -> Result<(), Error> {
        self.call(format!("remove {}", serde_json::to_string(r).unwrap()))
    }
}

/// Run and state dirs of this test binary (the plan names the wireguard-go log in the run dir).
fn dirs() -> &'static Path {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        // Cargo's scratch dir for integration tests (under target/), not /tmp.
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("netns-plan");
        std::fs::create_dir_all(&d).unwrap();
        std::env::set_var("LABNET_RUN_DIR", &d);
        std::env::set_var("LABNET_STATE_DIR", &d);
        std::env::set_var("LABNET_ETC_NETNS_DIR", "/etc/netns");
        d
    })
}

fn lab(uplink: &str) -> Lab {
    dirs();
    let toml =
        format!("name = \"pl\"\n[bridge]\nname = \"br-pl\"\naddress = \"10.9.0.1/24\"\n{uplink}");
    netns::config::parse(&toml, "pl.toml", None).expect("test config parses")
}

const HOST: &str = "[uplink]\nkind = \"host\"\n";
fn wireguard(backend: &str) -> String {
    format!(
        "[uplink]\nkind = \"wireguard\"\ninterface = \"wg-pl\"\n\
        address = \"192.168.20.1/24\"\nprivate_key_file = \"/etc/labnet/pl.key\"\n\
        peer_public_key = \"yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\"\n\
        endpoint = \"10.1.2.3:51820\"\nallowed_ips = [\"0.0.0.0/0\"]\nbackend = \"{backend}\"\n"
    )
}

fn daemons() -> Vec<DaemonSpec> {
    ["dhcpd", "dns"]
        .iter()
        .map(|d| DaemonSpec {
            name: d.to_string(),
            argv: vec!["labnet".into(), d.to_string(), "pl".into()],
        })
        .collect()
}

/// The plan, the executor's calls and record, and `down`'s undo of that record, as text.
fn render(p: &Plan) -> String {
    let mut t = String::new();
    t += &format!(
        "wg_backend: {:?}\nblocked: {:?}\n--- plan\n",
        p.wg_backend, p.blocked
    );
    for (i, s) in p.steps.iter().enumerate() {
        t += &format!(
            "{:2}. {}\n    {}\n",
            i + 1,
            s.describe(),
            serde_json::to_string(s).unwrap()
        );
    }
    let mut net = RecordingNet::default();
    let mut journal: Vec<Resource> = vec![];
    exec::run(&mut net, &p.steps, &mut journal).unwrap();
    t += "--- executed\n";
    for c in &net.calls {
        t += &format!("{c}\n");
    }
    t += "--- recorded (before each step)\n";
    for r in &journal {
        t += &format!("{}\n", serde_json::to_string(r).unwrap());
    }
    t += "--- down undoes\n";
    for r in undo_order(&journal) {
        t += &format!("{}\n", serde_json::to_string(&r).unwrap());
    }
    t.replace(&dirs().display().to_string(), "$RUN")
}

fn fresh() -> Observed {
    Observed {
        wireguard_module: true,
        host_ip_forward: Some("1".into()),
        ..Default::default()
    }
}

fn up_plan(l: &Lab, obs: &Observed) -> Plan {
    let mut p = plan(l, obs);
    plan::start_daemons(&mut p, l, &daemons());
    p
}

#[test]
fn up_plan_per_uplink_kind() {
    let isolated = lab("");
    testkit::golden!("plan-isolated.txt", &render(&up_plan(&isolated, &fresh())));

    // The host's ip_forward was 0 (saved, restored by down) and /etc/netns/pl had a
    // resolv.conf of someone else's (saved aside, put back).
    let host = lab(HOST);
    let mut obs = fresh();
    obs.host_ip_forward = Some("0".into());
    obs.etc_dir_exists = true;
    obs.etc_files_existing = vec![PathBuf::from("/etc/netns/pl/resolv.conf")];
    testkit::golden!("plan-host.txt", &render(&up_plan(&host, &obs)));

    let auto = lab(&wireguard("auto"));
    testkit::golden!(
        "plan-wireguard-kernel.txt",
        &render(&up_plan(&auto, &fresh()))
    );
    let mut no_module = fresh();
    no_module.wireguard_module = false;
    testkit::golden!(
        "plan-wireguard-userspace.txt",
        &render(&up_plan(&auto, &no_module))
    );
    assert_eq!(
        plan(&lab(&wireguard("userspace")), &fresh())
            .wg_backend
            .as_deref(),
        Some("userspace"),
        "backend = userspace uses wireguard-go even with the module"
    );
}

#[test]
fn what_is_in_the_way_blocks_the_plan() {
    let l = lab(&wireguard("kernel"));
    let mut obs = fresh();
    obs.wireguard_module = false;
    obs.host_links_taken = vec!["wg-pl".into()];
    let p = plan(&l, &obs);
    assert_eq!(p.blocked.len(), 2, "{:?}", p.blocked);
    assert!(
        p.blocked[0].contains("interface wg-pl already exists"),
        "{:?}",
        p.blocked
    );
    assert!(
        p.blocked[1].contains("uplink.backend = \"kernel\""),
        "{:?}",
        p.blocked
    );
}

/// A step that fails stops the run naming it, and everything recorded before it (its own
/// undo included) is what `down` removes: wireguard-go that never opened its socket leaves
/// the TUN, wireguard-go itself (with its pid), the netns and the lab table.
#[test]
fn a_failed_step_is_named_and_what_it_made_is_undone() {
    let l = lab(&wireguard("auto"));
    let mut obs = fresh();
    obs.wireguard_module = false;
    let p = plan(&l, &obs);
    let mut net = RecordingNet {
        fail_on: Some("wait_wireguard_go"),
        ..Default::default()
    };
    let mut st = LabState {
        lab: "pl".into(),
        ..Default::default()
    };
    let err = exec::run(&mut net, &p.steps, &mut st).unwrap_err();
    assert!(
        matches!(&err, Error::Step { step, .. } if step == "wait for wireguard-go wg-pl"),
        "{err}"
    );
    assert!(
        netns::paths::lab_state_file("pl").exists(),
        "the record is on disk"
    );
    let mut down = RecordingNet::default();
    exec::undo(&mut down, &mut st).unwrap();
    assert_eq!(
        down.calls,
        [
            r#"remove {"kind":"wg_userspace","iface":"wg-pl","pid":1001}"#,
            r#"remove {"kind":"nft_table","netns":"pl","family":"ip","name":"labnet"}"#,
            r#"remove {"kind":"root_link","name":"wg-pl"}"#,
            r#"remove {"kind":"netns","name":"pl"}"#,
        ]
    );
    assert!(
        !netns::paths::lab_state_file("pl").exists(),
        "all undone: record gone"
    );
}

/// What cannot be undone stays recorded for the next `down`, and the error says so.
#[test]
fn an_undo_that_fails_stays_recorded() {
    dirs();
    let mut st = LabState {
        lab: "pl-undo".into(),
        resources: vec![
            Resource::Netns {
                name: "pl-undo".into(),
            },
            Resource::RootLink {
                name: "lnh-pl".into(),
            },
        ],
        ..Default::default()
    };
    let mut net = RecordingNet {
        fail_on: Some("remove {\"kind\":\"root_link\""),
        ..Default::default()
    };
    let err = exec::undo(&mut net, &mut st).unwrap_err();
    assert!(matches!(err, Error::Undo { .. }), "{err}");
    assert_eq!(
        st.resources,
        [Resource::RootLink {
            name: "lnh-pl".into()
        }]
    );
    let saved = LabState::load("pl-undo").unwrap().expect("still recorded");
    assert_eq!(saved.resources, st.resources);
}

/// What a freshly built lab shows: nothing to repair.
fn healthy(lab: &Lab) -> Observed {
    let mut links = BTreeMap::new();
    links.insert(
        "lo".to_string(),
        LinkObs {
            up: true,
            addrs: vec![],
        },
    );
    links.insert(
        lab.bridge.name.clone(),
        LinkObs {
            up: true,
            addrs: vec![lab.bridge.address],
        },
    );
    let mut o = Observed {
        netns: true,
        ip_forward: true,
        lab_nft: true,
        host_nft: true,
        ..Default::default()
    };
    if let Some((name, addr, via)) = plan::uplink_of(lab) {
        links.insert(
            name.clone(),
            LinkObs {
                up: true,
                addrs: vec![addr],
            },
        );
        o.default_route = Some((Some(via), Some(name)));
    }
    if let Uplink::Host(h) = &lab.uplink {
        o.host_link = Some(LinkObs {
            up: true,
            addrs: vec![h.host_address],
        });
    }
    o.links = links;
    o
}

/// The issue's drift: bridge down and its address removed, the nft table flushed, the
/// uplink down (which takes the default route with it), ip_forward off, resolv.conf edited,
/// the dns daemon killed.
fn drifted(lab: &Lab) -> Observed {
    let mut o = healthy(lab);
    let br = o.links.get_mut(&lab.bridge.name).expect("bridge observed");
    br.up = false;
    br.addrs.clear();
    o.lab_nft = false;
    o.host_nft = false;
    o.ip_forward = false;
    if let Some((name, _, _)) = plan::uplink_of(lab) {
        if let Some(l) = o.links.get_mut(&name) {
            l.up = false;
        }
        o.default_route = None;
    }
    o.files_changed = vec![PathBuf::from("/etc/netns/pl/resolv.conf")];
    o.dead_daemons = vec![(
        "dns".into(),
        vec!["labnet".into(), "dns".into(), "pl".into()],
    )];
    o
}

#[test]
fn a_healthy_lab_needs_nothing() {
    for u in ["".to_string(), HOST.to_string(), wireguard("auto")] {
        let l = lab(&u);
        assert_eq!(plan(&l, &healthy(&l)), Plan::default(), "uplink {u:?}");
    }
}

#[test]
fn drift_repair_per_uplink_kind() {
    for (name, u) in [
        ("isolated", "".to_string()),
        ("host", HOST.to_string()),
        ("wireguard", wireguard("auto")),
    ] {
        let l = lab(&u);
        let p = plan(&l, &drifted(&l));
        assert!(
            p.steps.iter().all(|s| s.undo.is_none()),
            "repairs record nothing new"
        );
        testkit::golden!(format!("repair-{name}.txt"), &render(&p));
    }
}

#[test]
fn what_cannot_be_repaired_is_named() {
    let l = lab(HOST);
    let mut o = healthy(&l);
    o.links.remove(&l.bridge.name);
    o.host_link = None;
    assert_eq!(
        plan(&l, &o).blocked,
        [
            "br-pl is missing from the lab's namespace",
            "lnh-pl is missing from labnet's namespace"
        ]
    );
}

/// A system that does what each step says, as `status` would read it back: a perfect `up`.
#[derive(Default)]
struct SimNet(netns::compare::Snapshot);

fn listed(t: nftables::schema::Nftables<'static>) -> nftables::schema::Nftables<'static> {
    use nftables::schema::{NfCmd, NfObject};
    let objects: Vec<_> = t
        .objects
        .iter()
        .filter_map(|o| match o {
            NfObject::CmdObject(NfCmd::Add(x)) => Some(NfObject::ListObject(x.clone())),
            _ => None,
        })
        .collect();
    nftables::schema::Nftables {
        objects: objects.into(),
    }
}

impl SimNet {
    fn link(&mut self, ns: Option<&str>, name: &str) -> &mut netns::compare::LinkSnap {
        self.0
            .links
            .entry((ns.map(String::from), name.to_string()))
            .or_default()
    }
    fn new_link(&mut self, ns: Option<&str>, name: &str, kind: &str) -> Result<(), Error> {
        self.link(ns, name).kind = Some(kind.into());
        Ok(())
    }
}

impl Net for SimNet {
    fn create_netns(&mut self, name: &str) -> Result<(), Error> {
        self.0.netns = true;
        self.0.default_routes.insert(name.into(), None);
        self.new_link(Some(name), "lo", "loopback")
    }
    fn create_wireguard_link(&mut self, iface: &str) -> Result<(), Error> {
        self.new_link(None, iface, "wireguard")
    }
    fn create_tun(&mut self, iface: &str) -> Result<(), Error> {
        self.new_link(None, iface, "tun")
    }
    fn start_wireguard_go(&mut self, iface: &str, _: &Path) -> Result<u32, Error> {
        self.0
            .processes
            .insert(format!("wireguard-go {iface}"), Some(7));
        Ok(7)
    }
    fn wait_wireguard_go(&mut self, iface: &str) -> Result<(), Error> {
        self.0.uapi.push(iface.into());
        Ok(())
    }
    fn configure_wireguard(&mut self, wg: &Wireguard, _: bool) -> Result<(), Error> {
        let peer = WgPeerObs {
            public_key: wg.peer_public_key.clone(),
            ..Default::default()
        };
        self.0.wg_peers.insert(wg.interface.clone(), Ok(vec![peer]));
        Ok(())
    }
    fn configure_peering_link(
        &mut self,
        p: &Peering,
        _: bool,
        _: Option<&str>,
    ) -> Result<(), Error> {
        self.0.wg_peers.insert(p.interface.clone(), Ok(vec![]));
        self.0
            .wg_listen_ports
            .insert(p.interface.clone(), p.listen_port);
        Ok(())
    }
    fn add_wg_peer(&mut self, _: &str, iface: &str, peer: &Peer, _: bool) -> Result<(), Error> {
        let ps = self
            .0
            .wg_peers
            .get_mut(iface)
            .and_then(|r| r.as_mut().ok())
            .expect("the peering link is configured first");
        ps.retain(|p| p.public_key != peer.public_key);
        ps.push(WgPeerObs {
            public_key: peer.public_key.clone(),
            allowed_ips: vec![peer.subnet],
            endpoint: peer.endpoint,
            persistent_keepalive: peer.persistent_keepalive,
        });
        Ok(())
    }
    fn remove_wg_peer(&mut self, _: &str, iface: &str, key: &str, _: bool) -> Result<(), Error> {
        if let Some(Ok(ps)) = self.0.wg_peers.get_mut(iface) {
            ps.retain(|p| p.public_key != key);
        }
        Ok(())
    }
    fn add_bridge(&mut self, netns: &str, name: &str) -> Result<(), Error> {
        self.new_link(Some(netns), name, "bridge")
    }
    fn add_veth(&mut self, name: &str, peer: &str) -> Result<(), Error> {
        self.new_link(None, name, "veth")?;
        self.new_link(None, peer, "veth")
    }
    fn move_link(&mut self, link: &str, netns: &str) -> Result<(), Error> {
        let l = self
            .0
            .links
            .remove(&(None, link.into()))
            .unwrap_or_default();
        self.0.links.insert((Some(netns.into()), link.into()), l);
        Ok(())
    }
    fn link_up(&mut self, netns: Option<&str>, link: &str) -> Result<(), Error> {
        self.link(netns, link).up = true;
        Ok(())
    }
    fn add_address(&mut self, n: Option<&str>, link: &str, a: Ipv4Cidr) -> Result<(), Error> {
        self.link(n, link).addrs.push(a);
        Ok(())
    }
    fn add_default_route(&mut self, n: &str, link: &str, via: Ipv4Addr) -> Result<(), Error> {
        self.0
            .default_routes
            .insert(n.into(), Some((Some(via), Some(link.into()))));
        Ok(())
    }
    fn set_mtu(&mut self, n: &str, link: &str, mtu: u32) -> Result<(), Error> {
        self.link(Some(n), link).mtu = Some(mtu);
        Ok(())
    }
    fn add_route(&mut self, n: &str, link: &str, d: Ipv4Cidr, _: Ipv4Addr) -> Result<(), Error> {
        self.0
            .routes
            .entry(n.into())
            .or_default()
            .push((d, Some(link.into())));
        Ok(())
    }
    fn del_route(&mut self, n: &str, link: &str, d: Ipv4Cidr) -> Result<(), Error> {
        if let Some(rs) = self.0.routes.get_mut(n) {
            rs.retain(|(r, l)| !(*r == d && l.as_deref() == Some(link)));
        }
        Ok(())
    }
    fn sysctl(&mut self, n: Option<&str>, path: &str, value: &str) -> Result<(), Error> {
        self.0
            .sysctls
            .insert((n.map(String::from), path.into()), value.into());
        Ok(())
    }
    fn nft_table(
        &mut self,
        n: Option<&str>,
        table: &str,
        ruleset: nftables::schema::Nftables<'static>,
        _: bool,
    ) -> Result<(), Error> {
        self.0
            .nft_tables
            .insert((n.map(String::from), table.into()), Some(listed(ruleset)));
        Ok(())
    }
    fn make_dir(&mut self, path: &Path) -> Result<(), Error> {
        self.0.dirs.push(path.into());
        Ok(())
    }
    fn write_file(&mut self, path: &Path, text: &str, _: Option<&Path>) -> Result<(), Error> {
        self.0.files.insert(path.into(), Some(text.into()));
        Ok(())
    }
    fn start_daemon(&mut self, _: &str, d: &DaemonSpec) -> Result<u32, Error> {
        self.0.processes.insert(d.name.clone(), Some(8));
        Ok(8)
    }
    fn reload_daemon(&mut self, _: &str, _: &DaemonSpec, pid: Option<u32>) -> Result<u32, Error> {
        Ok(pid.unwrap_or(8))
    }
    fn remove(&mut self, _: &Resource) -> Result<(), Error> {
        Ok(())
    }
}

/// `status` against the plan: a lab as a perfect `up` made it checks out step by step; then
/// with the bridge down, its address swapped for another, the lab table flushed, resolv.conf
/// edited, dns dead and the uplink's route gone, each shows as missing, different or extra.
#[test]
fn status_compares_the_plan_with_the_system() {
    use netns::compare::{compare, expected_plan, Found};
    for (name, u) in [
        ("isolated", "".to_string()),
        ("host", HOST.to_string()),
        ("wireguard", wireguard("auto")),
    ] {
        let l = lab(&u);
        let st = LabState {
            lab: "pl".into(),
            wg_backend: Some("userspace".into()),
            resources: daemons()
                .iter()
                .map(|d| Resource::Daemon {
                    name: d.name.clone(),
                    pid: Some(1),
                    exe: d.argv.join("\0"),
                })
                .collect(),
            ..Default::default()
        };
        let p = expected_plan(&l, Some(&st));
        let mut sim = SimNet::default();
        exec::run(&mut sim, &p.steps, &mut vec![]).unwrap();
        let healthy = compare(&p, &sim.0);
        assert!(
            healthy.iter().all(|c| c.found == Found::Ok),
            "{name}: {healthy:#?}"
        );
        assert_eq!(healthy.len(), p.steps.len());

        let mut snap = sim.0.clone();
        let br = snap
            .links
            .get_mut(&(Some("pl".into()), "br-pl".into()))
            .unwrap();
        br.up = false;
        br.addrs = vec![Ipv4Cidr {
            addr: Ipv4Addr::new(10, 9, 9, 1),
            prefix: 24,
        }];
        if let Some(Some(t)) = snap
            .nft_tables
            .get_mut(&(Some("pl".into()), "labnet".into()))
        {
            t.objects.to_mut().retain(|o| {
                !matches!(
                    o,
                    nftables::schema::NfObject::ListObject(nftables::schema::NfListObject::Rule(_))
                )
            });
        }
        snap.files.insert(
            "/etc/netns/pl/resolv.conf".into(),
            Some("nameserver 8.8.8.8\n".into()),
        );
        snap.processes.insert("dns".into(), None);
        let route = if name == "isolated" {
            Some((
                Some("10.9.0.254".parse().unwrap()),
                Some("br-pl".to_string()),
            ))
        } else {
            None
        };
        snap.default_routes.insert("pl".into(), route);
        let mut text = String::new();
        for c in compare(&p, &snap).iter().filter(|c| c.found != Found::Ok) {
            text += &format!("{:?}: {}: {}\n", c.found, c.step, c.detail);
        }
        testkit::golden!(format!("status-{name}.txt"), &text);
    }
}

// ---- Peering (issue 20) as plan steps: the link, each peer, its route, the MSS clamp.

const KEY_B: &str = "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=";
const KEY_C: &str = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=";

fn peering(backend: &str) -> String {
    format!(
        "[peering]\ninterface = \"wgp-pl\"\nlisten_port = 51820\n\
         private_key_file = \"/etc/labnet/pl-peering.key\"\nbackend = \"{backend}\"\n"
    )
}

fn peer_b() -> String {
    format!(
        "[[peers]]\nname = \"plb\"\npublic_key = \"{KEY_B}\"\nendpoint = \"10.1.2.4:51820\"\nsubnet = \"10.9.1.0/24\"\n"
    )
}

fn peer_c() -> String {
    format!("[[peers]]\nname = \"plc\"\npublic_key = \"{KEY_C}\"\nsubnet = \"10.9.2.0/24\"\n")
}

/// The lab with its uplink, `[peering]` and the peers given.
fn peered(uplink: &str, backend: &str, peers: &[String]) -> Lab {
    lab(&format!("{uplink}{}{}", peering(backend), peers.concat()))
}

#[test]
fn up_plan_with_peers_per_uplink_kind() {
    let peers = [peer_b(), peer_c()];
    for (name, uplink, backend, module) in [
        ("isolated", "".to_string(), "auto", true),
        ("host", HOST.to_string(), "auto", true),
        ("wireguard-kernel", wireguard("auto"), "auto", true),
        // No module: both the uplink's and the peering link's wireguard-go start first.
        ("wireguard-userspace", wireguard("auto"), "auto", false),
    ] {
        let l = peered(&uplink, backend, &peers);
        let mut obs = fresh();
        obs.wireguard_module = module;
        let p = up_plan(&l, &obs);
        assert!(p.blocked.is_empty(), "{name}: {:?}", p.blocked);
        testkit::golden!(format!("plan-peers-{name}.txt"), &render(&p));
    }
    // Explicit backends win over the module check.
    let l = peered("", "userspace", &peers);
    assert!(plan(&l, &fresh())
        .steps
        .iter()
        .any(|s| matches!(s.action, plan::Action::StartWireguardGo { .. })));
    let mut no_module = fresh();
    no_module.wireguard_module = false;
    let blocked = plan(&peered("", "kernel", &peers), &no_module).blocked;
    assert!(
        blocked.len() == 1 && blocked[0].contains("peering.backend = \"kernel\""),
        "{blocked:?}"
    );
}

/// What `observe` would read from a system in the state `snap` (as [`SimNet`] keeps it).
fn observed_from(l: &Lab, snap: &netns::compare::Snapshot, st: &[Resource]) -> Observed {
    let mut o = healthy(l);
    let p = l.peering.as_ref().expect("a peered lab");
    let ns = Some(l.name.clone());
    o.peering = snap
        .links
        .get(&(ns.clone(), p.interface.clone()))
        .map(|link| PeeringObs {
            up: link.up,
            mtu: link.mtu,
            userspace: snap.uapi.contains(&p.interface),
            listen_port: snap.wg_listen_ports.get(&p.interface).copied().flatten(),
            peers: match snap.wg_peers.get(&p.interface) {
                Some(Ok(ps)) => ps.clone(),
                _ => vec![],
            },
            routes: snap
                .routes
                .get(&l.name)
                .into_iter()
                .flatten()
                .filter(|(_, dev)| dev.as_deref() == Some(p.interface.as_str()))
                .map(|(r, _)| *r)
                .collect(),
            nft: snap
                .nft_tables
                .contains_key(&(ns.clone(), "labnet-peering".to_string())),
            device_error: None,
        });
    o.dns = st.iter().find_map(|r| match r {
        Resource::Daemon { name, pid, exe } if name == "dns" => Some(DnsObs {
            pid: *pid,
            argv: exe.split('\0').map(String::from).collect(),
            // The dns was started with the config the lab was built from.
            peer_zones: plan::peer_zones(l),
        }),
        _ => None,
    });
    o
}

/// A lab built as `up` would (the plan run on [`SimNet`]), its record, and what it shows.
fn built(l: &Lab) -> (SimNet, Vec<Resource>) {
    let mut sim = SimNet::default();
    let mut journal = vec![];
    let mut obs = fresh();
    obs.host_ip_forward = Some("0".into());
    exec::run(&mut sim, &up_plan(l, &obs).steps, &mut journal).unwrap();
    (sim, journal)
}

/// Every step of the plan for `l` checks out against `sim` (what `status` says).
fn as_planned(l: &Lab, sim: &SimNet, journal: &[Resource]) -> Vec<String> {
    use netns::compare::{compare, expected_plan, Found};
    let st = LabState {
        lab: l.name.clone(),
        resources: journal.to_vec(),
        ..Default::default()
    };
    compare(&expected_plan(l, Some(&st)), &sim.0)
        .into_iter()
        .filter(|c| c.found != Found::Ok)
        .map(|c| format!("{:?}: {}: {}", c.found, c.step, c.detail))
        .collect()
}

/// `peer add` and `peer remove` on a lab that is up: the plan difference holds the peer's own
/// steps (its device entry and route; the dns reload for its zone) and nothing of the rest
/// of the lab or of the other peer; run, the lab is as a fresh `up` of the new config plans it.
#[test]
fn peer_add_and_remove_are_plan_diffs() {
    let one = peered(HOST, "auto", &[peer_b()]);
    let two = peered(HOST, "auto", &[peer_b(), peer_c()]);
    let (mut sim, mut journal) = built(&one);
    assert_eq!(as_planned(&one, &sim, &journal), Vec::<String>::new());
    let obs = observed_from(&one, &sim.0, &journal);
    assert_eq!(
        plan::peers_plan(&one, &obs),
        Plan::default(),
        "nothing to do"
    );

    // Add plc.
    let add = plan::peers_plan(&two, &obs);
    for s in &add.steps {
        let text = s.describe();
        assert!(
            text.contains("peer plc")
                || text.contains("10.9.2.0/24")
                || text == "dns forwards other peer zones than the config's: reloaded",
            "a step not of the added peer: {text}"
        );
    }
    testkit::golden!("peers-diff-add.txt", &render(&add));
    exec::run(&mut sim, &add.steps, &mut journal).unwrap();
    assert_eq!(as_planned(&two, &sim, &journal), Vec::<String>::new());

    // Remove plb.
    let obs = observed_from(&two, &sim.0, &journal);
    let only_c = peered(HOST, "auto", &[peer_c()]);
    let remove = plan::peers_plan(&only_c, &obs);
    for s in &remove.steps {
        let text = s.describe();
        assert!(
            text.contains(&KEY_B[..8])
                || text.contains("10.9.1.0/24")
                || text == "dns forwards other peer zones than the config's: reloaded",
            "a step not of the removed peer: {text}"
        );
    }
    testkit::golden!("peers-diff-remove.txt", &render(&remove));
    exec::run(&mut sim, &remove.steps, &mut journal).unwrap();
    assert_eq!(as_planned(&only_c, &sim, &journal), Vec::<String>::new());

    // A peer removed by hand from the config but left on the device is extra to `status`.
    let stale = as_planned(&peered(HOST, "auto", &[]), &sim, &journal);
    assert_eq!(
        stale,
        [
            "Extra: peers of wgp-pl: peer QUJDREVG (labnet did not add it)",
            "Extra: routes out of wgp-pl in netns pl: 10.9.2.0/24 (labnet did not add it)"
        ]
    );
}

/// A lab that was up without a peering link gets one live, each part recorded before it is
/// made (as `up` records), so `down` removes it.
#[test]
fn a_missing_peering_link_is_made_with_its_undo() {
    let l = peered(&wireguard("auto"), "auto", &[peer_b()]);
    let mut obs = healthy(&l);
    obs.wireguard_module = false;
    let p = plan::peers_plan(&l, &obs);
    assert_eq!(
        p.steps
            .iter()
            .filter_map(|s| s.undo.clone())
            .collect::<Vec<_>>(),
        [
            Resource::RootLink {
                name: "wgp-pl".into()
            },
            Resource::WgUserspace {
                iface: "wgp-pl".into(),
                pid: None
            },
            Resource::NftTable {
                netns: Some("pl".into()),
                family: "ip".into(),
                name: "labnet-peering".into()
            }
        ]
    );
    testkit::golden!("peers-diff-link.txt", &render(&p));
}

/// Drift of a peered lab that is up: a peer's route deleted, the link set down and its MTU
/// changed; `up` puts back exactly those (no other peer, no record).
#[test]
fn drift_repair_of_a_missing_peer_route() {
    let l = peered(&wireguard("auto"), "auto", &[peer_b(), peer_c()]);
    let (mut sim, journal) = built(&l);
    sim.0
        .routes
        .get_mut("pl")
        .unwrap()
        .retain(|(r, _)| r.to_string() != "10.9.1.0/24");
    let link = sim.link(Some("pl"), "wgp-pl");
    link.up = false;
    link.mtu = Some(1500);
    let drift = as_planned(&l, &sim, &journal);
    assert_eq!(
        drift,
        [
            "Different: mtu 1420 on wgp-pl in pl: wgp-pl has mtu 1500",
            "Different: set wgp-pl up in pl: wgp-pl is down",
            "Missing: route 10.9.1.0/24 dev wgp-pl in pl: no route to 10.9.1.0/24"
        ]
    );
    // `labnet status` as it prints that (the probes as a lab with one handshake shows them).
    let st = LabState {
        lab: "pl".into(),
        resources: journal.clone(),
        ..Default::default()
    };
    let checks = netns::compare::compare(&netns::compare::expected_plan(&l, Some(&st)), &sim.0);
    let probes = vec![
        netns::status::probe("state", true, "$RUN/pl.json"),
        netns::status::probe("dns answers", true, "pl.lab. SOA answered on 10.9.0.1:53"),
        netns::status::info(
            "peer plb",
            "10.9.1.0/24 endpoint 10.1.2.4:51820 latest handshake 12 s ago",
        ),
        netns::status::info("peer plc", "10.9.2.0/24 endpoint - latest handshake never"),
    ];
    let report = netns::status::StatusReport::new("pl", "$RUN/pl.json".into(), checks, probes);
    assert!(!report.ok);
    testkit::golden!(
        "status-peers-drift.txt",
        &format!(
            "{}--- json\n{}\n",
            report.to_text(),
            serde_json::to_string_pretty(&report).unwrap()
        )
    );

    let obs = observed_from(&l, &sim.0, &journal);
    let p = plan(&l, &obs);
    assert!(p.steps.iter().all(|s| s.undo.is_none()), "nothing new");
    testkit::golden!("repair-peer-route.txt", &render(&p));
    exec::run(&mut sim, &p.steps, &mut vec![]).unwrap();
    assert_eq!(as_planned(&l, &sim, &journal), Vec::<String>::new());
}

/// A peering link whose device cannot be read (its wireguard-go died: its socket belongs in
/// labnet's namespace, its TUN is in the lab's) cannot be repaired in place: `up` says so.
#[test]
fn a_dead_peering_device_is_named_not_repaired() {
    let l = peered(&wireguard("auto"), "auto", &[peer_b()]);
    let (sim, journal) = built(&l);
    let mut obs = observed_from(&l, &sim.0, &journal);
    obs.peering.as_mut().unwrap().device_error = Some("no such device".into());
    let p = plan(&l, &obs);
    assert_eq!(
        p.blocked,
        ["the peering link wgp-pl is there but its WireGuard device cannot be read (no such device)"]
    );
    assert!(p.steps.is_empty(), "{:?}", p.steps);
}
