//! The plans `labnet up` would run, printed without touching the system: the embedded default
//! lab built from scratch, then as just built with its bridge down and its address gone.
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
}
