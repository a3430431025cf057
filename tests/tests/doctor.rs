//! `labnet doctor` against real faults (issue 16 item 8): each diagnosis with its fault
//! injected into a real lab: a dead upstream is blamed on the upstream, not on labnet's dns;
//! labnet dns killed; dhcpd killed; dhcpd stopped (alive but not answering a DISCOVER).
//! Doctor exits 3 when something is wrong, 0 when all is well.
use labnet_tests::*;
use serde_json::Value;
use std::net::UdpSocket;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn cmdline_has(pid: u32, arg: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|b| b.split(|c| *c == 0).any(|a| a == arg.as_bytes()))
}

fn daemon_pid(kind: &str, lab: &str) -> u32 {
    let v: Vec<u32> = pids_with_arg("labnet", kind)
        .into_iter()
        .filter(|p| cmdline_has(*p, lab))
        .collect();
    assert_eq!(v.len(), 1, "one {kind} for lab {lab}: {v:?}");
    v[0]
}

/// doctor --json: (exit code, check -> (ok, words)).
fn doctor(
    lab: &str,
    env: &[(String, String)],
) -> (Option<i32>, Vec<(String, bool, String)>, Output) {
    let out = labnet(&["doctor", lab, "--json"], env);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}\n{}", text(&out)));
    let findings = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["ok"].as_bool().unwrap(),
                f["words"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.code(), findings, out)
}

fn find<'a>(f: &'a [(String, bool, String)], check: &str) -> &'a (String, bool, String) {
    f.iter()
        .find(|x| x.0 == check)
        .unwrap_or_else(|| panic!("no {check:?} finding in {f:?}"))
}

/// A stand-in upstream resolver inside the lab on 127.0.0.1:5353: answers every query with an
/// empty NOERROR response (the query echoed with QR set).
fn upstream(lab: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let lab = lab.to_string();
    std::thread::spawn(move || {
        in_netns(&lab, move || {
            let s = UdpSocket::bind("127.0.0.1:5353").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if n >= 12 {
                        buf[2] |= 0x80; // QR: a response
                        buf[3] = 0x80; // RA, NOERROR
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
            }
        })
    })
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn doctor_names_each_fault_it_finds() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("la");
    let lab = id.clone();
    let root = temp_dir(&mut c, "doctor");
    let env = labnet_env(&root);
    let cfg = root.join("etc").join(format!("{lab}.toml"));
    std::fs::create_dir_all(cfg.parent().unwrap()).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "name = \"{lab}\"\n[bridge]\nname = \"{id}br\"\naddress = \"192.168.0.1/24\"\n\
             [dns]\nzone = \"lab\"\nupstreams = [\"127.0.0.1:5353\"]\n"
        ),
    )
    .unwrap();
    c.labnet(&["down", &lab], &env);
    c.path(format!("/etc/netns/{lab}"));
    c.netns(&lab);
    let up = labnet(&["up", &lab], &env);
    assert!(up.status.success(), "{}", text(&up));

    // The upstream is dead (nothing on 127.0.0.1:5353): blamed on the upstream only.
    let (code, f, out) = doctor(&lab, &env);
    assert_eq!(code, Some(3), "{}", text(&out));
    let dhcp = find(&f, "dhcp");
    assert!(dhcp.1 && dhcp.2.contains("offered 192.168.0.1"), "{dhcp:?}");
    let local = find(&f, "lab dns");
    assert!(local.1 && local.2.contains("answers for lab."), "{local:?}");
    let up5353 = find(&f, "dns upstream");
    assert!(
        !up5353.1
            && up5353.2.contains("127.0.0.1:5353")
            && up5353.2.contains("labnet dns itself is fine"),
        "{up5353:?}"
    );

    // With a live upstream everything is fine: exit 0, and forwarding is checked too.
    let stop = Arc::new(AtomicBool::new(false));
    let t = upstream(&lab, stop.clone());
    std::thread::sleep(Duration::from_millis(200));
    let (code, f, out) = doctor(&lab, &env);
    assert_eq!(code, Some(0), "{}", text(&out));
    assert!(find(&f, "dns forwarding").1, "{f:?}");

    // labnet dns killed: named as labnet's daemon, with the fix.
    let dns = daemon_pid("dns", &lab);
    assert!(signal(dns as i32, libc::SIGKILL));
    wait_for("the killed dns to go", Duration::from_secs(5), || {
        !signal(dns as i32, 0)
    });
    let (code, f, _) = doctor(&lab, &env);
    assert_eq!(code, Some(3));
    let local = find(&f, "lab dns");
    assert!(
        !local.1
            && local.2.contains("labnet dns is not running")
            && local.2.contains(&format!("labnet up {lab}")),
        "{local:?}"
    );
    assert!(
        find(&f, "dns upstream").1,
        "the upstream itself still answers: {f:?}"
    );

    // dhcpd stopped: alive, but no answer to a DISCOVER on the bridge.
    let dh = daemon_pid("dhcpd", &lab);
    assert!(signal(dh as i32, libc::SIGSTOP));
    let (code, f, _) = doctor(&lab, &env);
    assert!(signal(dh as i32, libc::SIGCONT));
    assert_eq!(code, Some(3));
    let dhcp = find(&f, "dhcp");
    assert!(
        !dhcp.1
            && dhcp.2.contains(&format!(
                "runs (pid {dh}) but did not answer a DISCOVER on {id}br"
            )),
        "{dhcp:?}"
    );

    // dhcpd killed.
    assert!(signal(dh as i32, libc::SIGKILL));
    wait_for("the killed dhcpd to go", Duration::from_secs(5), || {
        !signal(dh as i32, 0)
    });
    let (code, f, _) = doctor(&lab, &env);
    assert_eq!(code, Some(3));
    let dhcp = find(&f, "dhcp");
    assert!(
        !dhcp.1 && dhcp.2.contains("labnet dhcpd is not running"),
        "{dhcp:?}"
    );

    // `up` restarts both; doctor is clean again.
    let up = labnet(&["up", &lab], &env);
    assert!(up.status.success(), "{}", text(&up));
    let (code, f, out) = doctor(&lab, &env);
    assert_eq!(code, Some(0), "{f:?}\n{}", text(&out));
    stop.store(true, Ordering::SeqCst);
    t.join().unwrap();

    let down = labnet(&["down", &lab], &env);
    assert!(down.status.success(), "{}", text(&down));
}
