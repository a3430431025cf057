//! The repair plan `labnet up` would run on a drifted lab, printed without touching the system:
//! the embedded default lab as just built, then with its bridge down and its address gone.
//! `cargo run -p netns --example repair_plan`
use netns::converge::{plan, LinkObs, Observed};

fn main() {
    let lab = netns::Lab::embedded_default();
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
