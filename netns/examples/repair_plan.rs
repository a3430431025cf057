//! The plans `labnet up` would run, printed without touching the system: the embedded default
//! lab built from scratch, then as just built with its bridge down and its address gone; then
//! what `labnet peer add` runs on a lab that is up with a peering link and no peers yet.
//! `cargo run -p netns --example repair_plan`
use netns::plan::{plan, LinkObs, Observed};

fn main() {
    let lab = netns::Lab::embedded_default();
    let fresh = plan(&lab, &Observed::default());
    println!("from scratch: {} step(s)", fresh.steps.len());
    for s in &fresh.steps {
        let undo = s
            .undo
            .as_ref()
            .map(|u| format!("  (undo: {})", serde_json::to_string(u).unwrap_or_default()))
            .unwrap_or_default();
        println!("  {}{undo}", s.describe());
    }
    let mut obs = Observed {
        netns: true,
        ip_forward: true,
        ..Default::default()
    };
    obs.links.insert(
        "lo".into(),
        LinkObs {
            up: true,
            addrs: vec![],
        },
    );
    obs.links.insert(
        lab.bridge.name.clone(),
        LinkObs {
            up: true,
            addrs: vec![lab.bridge.address],
        },
    );
    println!("as built: {} step(s)", plan(&lab, &obs).steps.len());
    if let Some(br) = obs.links.get_mut(&lab.bridge.name) {
        br.up = false;
        br.addrs.clear();
    }
    let p = plan(&lab, &obs);
    println!("drifted: {} step(s)", p.steps.len());
    for s in &p.steps {
        println!("  {}", s.describe());
    }

    let peered = netns::config::parse(
        "name = \"ex\"\n[bridge]\nname = \"br-ex\"\naddress = \"10.9.0.1/24\"\n\
         [peering]\nlisten_port = 51820\n\
         [[peers]]\nname = \"exb\"\npublic_key = \"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=\"\n\
         endpoint = \"10.1.2.4:51820\"\nsubnet = \"10.9.1.0/24\"\n",
        "ex.toml",
        None,
    )
    .expect("the example config parses");
    let up = Observed {
        netns: true,
        peering: Some(netns::plan::PeeringObs {
            up: true,
            mtu: Some(1420),
            listen_port: Some(51820),
            nft: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    let add = netns::plan::peers_plan(&peered, &up);
    println!("peer add exb: {} step(s)", add.steps.len());
    for s in &add.steps {
        println!("  {}", s.describe());
    }
}
