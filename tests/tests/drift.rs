//! `labnet up` on a lab that is up but drifted from its config (issue 16 item 7): the real
//! faults are injected (bridge down, its address removed, the nft table flushed, a daemon
//! killed), `status` says so (exit 3), `up` repairs each and says what it repaired, and
//! `status` is clean again. What cannot be repaired in place (the bridge deleted) makes `up`
//! fail naming it, never "already up; nothing changed".
use labnet_tests::*;
use std::time::Duration;

fn cmdline_has(pid: u32, arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|b| b.split(|c| *c == 0).any(|a| a == arg.as_bytes()))
}

fn daemon_pids(kind: &str, lab: &str) -> Vec<u32> {
    pids_with_arg("labnet", kind)
        .into_iter()
        .filter(|p| cmdline_has(*p, lab))
        .collect()
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn up_repairs_a_drifted_lab_and_says_what_it_repaired() {
    require_root();
    let mut c = Cleanup::default();
    let h = HostUplinkLab::up(&mut c, "la", "drift", "");
    let (id, lab, cfgs) = (h.id.clone(), h.lab.clone(), h.cfg.clone());
    let in_host = |args: &[&str]| h.labnet(args);
    let status = in_host(&["status", &lab, "--config", &cfgs]);
    assert!(status.status.success(), "{}", text(&status));

    // The faults, on the real system.
    sh(&format!(
        "ip -n {lab} link set {id}br down && ip -n {lab} addr del 192.168.0.1/24 dev {id}br && \
         ip netns exec {lab} nft flush table ip labnet"
    ));
    let dns = daemon_pids("dns", &lab);
    assert_eq!(dns.len(), 1, "one dns daemon for the lab");
    assert!(signal(dns[0] as i32, libc::SIGKILL));
    wait_for("the killed dns to go", Duration::from_secs(5), || {
        daemon_pids("dns", &lab).is_empty()
    });

    let status = in_host(&["status", &lab, "--config", &cfgs]);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));

    let up = in_host(&["up", &lab, "--config", &cfgs]);
    assert!(up.status.success(), "{}", text(&up));
    let out = String::from_utf8_lossy(&up.stdout);
    assert!(!out.contains("nothing changed"), "{out}");
    for what in [
        format!("{id}br was down: set up"),
        format!("{id}br had lost 192.168.0.1/24: added"),
        "nft table ip labnet lacked the masquerade out of uplink0: rebuilt".to_string(),
        "dns was not running: restarted".to_string(),
    ] {
        assert!(out.contains(&what), "`up` does not say {what:?}:\n{out}");
    }
    // Repaired for real, not just reported.
    let status = in_host(&["status", &lab, "--config", &cfgs]);
    assert!(status.status.success(), "{}", text(&status));
    let link = sh(&format!("ip -n {lab} -o addr show dev {id}br"));
    assert!(link.contains("inet 192.168.0.1/24"), "{link}");
    let flags = sh(&format!("ip -n {lab} -o link show dev {id}br"));
    assert!(flags.contains(",UP"), "{flags}");
    let table = sh(&format!("ip netns exec {lab} nft list table ip labnet"));
    assert!(table.contains("oifname \"uplink0\" masquerade"), "{table}");
    assert_eq!(daemon_pids("dns", &lab).len(), 1, "dns restarted once");
    // A second `up` has nothing left to do.
    let again = in_host(&["up", &lab, "--config", &cfgs]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already up; nothing changed"),
        "{}",
        text(&again)
    );

    // Not repairable in place: `up` fails naming the component, and status agrees.
    sh(&format!("ip -n {lab} link del {id}br"));
    let up = in_host(&["up", &lab, "--config", &cfgs]);
    assert!(!up.status.success(), "{}", text(&up));
    let err = String::from_utf8_lossy(&up.stderr);
    assert!(
        err.contains(&format!("{id}br is missing from the lab's namespace"))
            && err.contains(&format!("labnet down {lab}")),
        "{err}"
    );
    let status = in_host(&["status", &lab, "--config", &cfgs]);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));

    let down = in_host(&["down", &lab]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(daemon_pids("dns", &lab).is_empty() && daemon_pids("dhcpd", &lab).is_empty());
    assert!(!netns_list().contains(&lab));
}
