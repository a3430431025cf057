//! `labnet doctor`'s "peer dns" check (issue 20 item 5) against real peers: two hosts' labs
//! joined over WireGuard (wireguard-go, see `twohosts`), each lab's dns forwarding the other's
//! zone. With both up, doctor on host A finds lab B's zone answering through its own dns;
//! with lab B's dns killed, it names lab B and says its dns does not answer (whether or not
//! A's dns still has the zone's SOA cached), and exits 3.
use labnet_tests::twohosts::{Host, TwoHosts};
use labnet_tests::*;

/// doctor --json on a host: (exit code, the "peer dns" findings as (ok, words)).
fn peer_dns(h: &Host) -> (Option<i32>, Vec<(bool, String)>) {
    let out = h.labnet(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", text(&out)));
    let f = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == "peer dns")
        .map(|f| {
            (
                f["ok"].as_bool().unwrap(),
                f["words"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.code(), f)
}

fn cmdline_has(pid: u32, arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|b| b.split(|c| *c == 0).any(|a| a == arg.as_bytes()))
}

#[test]
#[ignore = "needs root (network namespaces, wireguard-go)"]
fn doctor_checks_each_peer_dns() {
    require_root();
    let mut c = Cleanup::default();
    let th = TwoHosts::new(&mut c, "ld", 63, "");
    let (a, b) = (&th.a, &th.b);
    th.up(&mut c);
    th.join();
    let b_zone = format!("{}.lab", b.lab);

    // Both up: B's zone answers through A's dns (the handshake may still be under way:
    // WireGuard sends the first packet once the tunnel is made, doctor's 1 s may not do).
    let mut last = (None, vec![]);
    wait_for(
        "doctor on A: peer dns ok",
        std::time::Duration::from_secs(20),
        || {
            last = peer_dns(a);
            last.1.len() == 1 && last.1[0].0
        },
    );
    let words = &last.1[0].1;
    assert!(
        words.contains(&format!(
            "peer {}: {b_zone} answers through labnet dns",
            b.lab
        )),
        "{words}"
    );

    // B's dns killed: A's doctor names B, and its dns not answering.
    let pids: Vec<u32> = pids_with_arg("labnet", "dns")
        .into_iter()
        .filter(|p| cmdline_has(*p, &b.lab))
        .collect();
    assert_eq!(pids.len(), 1, "one dns for lab {}: {pids:?}", b.lab);
    signal(pids[0] as i32, libc::SIGKILL);
    wait_for("B's dns gone", std::time::Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/proc/{}", pids[0])).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
                .is_ok_and(|s| s.contains(") Z "))
    });
    let (code, f) = peer_dns(a);
    assert_eq!(code, Some(3), "doctor must exit 3: {f:?}");
    assert_eq!(f.len(), 1, "{f:?}");
    let (ok, words) = &f[0];
    assert!(!ok, "{words}");
    assert!(
        words.starts_with(&format!("peer {}: ", b.lab))
            && words.contains(&format!("its dns {}:53 does not answer", b.bridge_ip()))
            && words.contains(&format!("labnet dns is not running in lab {}", b.lab)),
        "{words}"
    );
}
