//! `labnet vm path` end to end, as root, under TCG: a VM of the source-built kernel with the
//! `--multipath` pair; `fail` pulls path1 (its disk leaves the guest's /sys/block while the
//! other disk still reads the image's data), `restore` plugs it back (the guest sees two
//! disks again, both reading the data). The guest's own script reports on its console.
use labnet_tests::*;
use std::process::Command;
use std::time::Duration;

const MARKER: &str = "LABNET-MPATH-MARKER";

/// The guest side: waits for each change in the number of SCSI disks and reads the first
/// sector of every disk it has then (caches dropped, so the read goes to the device).
const GUEST: &str = r#"disks() { ls /sys/block | grep '^sd' | tr '\n' ' '; }
count() { ls /sys/block | grep -c '^sd'; }
readall() {
	echo 3 > /proc/sys/vm/drop_caches
	for d in $(ls /sys/block | grep '^sd'); do
		echo "MP-READ $d $(dd if=/dev/$d bs=512 count=1 2>/dev/null | head -c 19)"
	done
}
i=0; until [ "$(count)" = 2 ] || [ $i -ge 300 ]; do i=$((i+1)); sleep 0.2; done
for d in $(ls /sys/block | grep '^sd'); do echo "MP-WWID $d $(cat /sys/block/$d/device/wwid)"; done
readall
echo "MP-START $(count) $(disks)"
until [ "$(count)" = 1 ]; do sleep 0.2; done
readall
echo "MP-ONE $(disks)"
until [ "$(count)" = 2 ]; do sleep 0.2; done
readall
echo "MP-TWO $(disks)"
sleep 600
"#;

fn path_list(l: &Lab, name: &str) -> Vec<(String, String)> {
    let o = l.labnet(&["vm", "path", name, "list", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

struct Lab {
    id: String,
    env: Vec<(String, String)>,
    root: std::path::PathBuf,
}

impl Lab {
    /// `labnet --lab LAB ARGS` (before ARGS: a `vm ssh` command follows its `--`).
    fn labnet(&self, args: &[&str]) -> std::process::Output {
        run(Command::new("timeout")
            .arg("120")
            .arg(labnet_bin())
            .args(["--lab", &self.id])
            .args(args)
            .envs(self.env.iter().cloned()))
    }
}

/// The console lines between `from` (its line included) and the next `MP-` stage line.
fn stage(console: &str, from: &str) -> Vec<String> {
    let lines: Vec<&str> = console.lines().collect();
    let end = lines
        .iter()
        .position(|l| l.starts_with(from))
        .unwrap_or_else(|| panic!("no {from} in:\n{console}"));
    let start = lines[..end]
        .iter()
        .rposition(|l| l.starts_with("MP-START") || l.starts_with("MP-ONE"))
        .map_or(0, |i| i + 1);
    lines[start..=end].iter().map(|s| s.to_string()).collect()
}

#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn path_fail_and_restore_in_the_guest() {
    require_root();
    let mut c = Cleanup::default();
    let kernel = source_kernel().bzimage.display().to_string();
    let id = unique("lm");
    let root = temp_dir(&mut c, "mpath");
    let env = labnet_env(&root);
    let cfg = root.join("lab.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"{id}\"\n[bridge]\nname = \"{id}br\"\naddress = \"10.80.0.1/24\"\n\
             [dhcp]\nrange_start = \"10.80.0.100\"\nrange_end = \"10.80.0.150\"\n"
        ),
    )
    .unwrap();
    c.labnet(&["down", &id], &env);
    c.labnet(&["vm", "stop", "m", "--lab", &id, "--timeout", "2"], &env);
    let l = Lab { id, env, root };
    let up = l.labnet(&["up", &l.id, "--config", cfg.to_str().unwrap()]);
    assert!(up.status.success(), "{}", text(&up));

    let disk = l.root.join("mp.raw");
    let mut data = MARKER.as_bytes().to_vec();
    data.resize(1 << 20, 0);
    std::fs::write(&disk, &data).unwrap();
    let script = l.root.join("mp.sh");
    std::fs::write(&script, GUEST).unwrap();
    let start = l.labnet(&[
        "vm",
        "start",
        "--name",
        "m",
        "--kernel",
        &kernel,
        "--multipath",
        disk.to_str().unwrap(),
        "--add",
        &format!("{}:/etc/mp.sh", script.display()),
        "--run",
        "sh /etc/mp.sh",
        "--daemonize",
    ]);
    assert!(start.status.success(), "{}", text(&start));
    let serial = l.root.join("run").join(&l.id).join("vms/m/serial.log");
    let console = || {
        std::fs::read(&serial)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    };
    let wait_line = |prefix: &str| {
        wait_for(prefix, Duration::from_secs(180), || {
            console().lines().any(|l| l.starts_with(prefix))
        })
    };

    // Both paths: two disks, one WWID, the data on each.
    wait_line("MP-START");
    let con = console();
    let s = stage(&con, "MP-START");
    assert!(
        s.iter().any(|l| l.starts_with("MP-START 2 sda sdb")),
        "{s:?}"
    );
    let wwids: Vec<&str> = s
        .iter()
        .filter(|l| l.starts_with("MP-WWID "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(wwids.len() == 2 && wwids[0] == wwids[1], "{s:?}");
    assert_eq!(s.iter().filter(|l| l.ends_with(MARKER)).count(), 2, "{s:?}");
    assert_eq!(
        path_list(&l, "m"),
        [
            ("path1".to_string(), "active".to_string()),
            ("path2".to_string(), "active".to_string())
        ]
    );

    // fail: path1 (SCSI target 0, the guest's sda) goes; sdb still reads the data.
    let f = l.labnet(&["vm", "path", "m", "fail"]);
    assert!(f.status.success(), "{}", text(&f));
    assert!(
        String::from_utf8_lossy(&f.stdout).contains("path1 failed"),
        "{}",
        text(&f)
    );
    assert_eq!(
        path_list(&l, "m"),
        [
            ("path1".to_string(), "failed".to_string()),
            ("path2".to_string(), "active".to_string())
        ]
    );
    wait_line("MP-ONE");
    let con = console();
    let s = stage(&con, "MP-ONE");
    assert!(s.iter().any(|l| l == "MP-ONE sdb "), "{s:?}");
    assert!(
        s.iter().any(|l| l == &format!("MP-READ sdb {MARKER}")),
        "{s:?}"
    );
    // Failing it twice is a state conflict (exit 7, like `labnet --help` says), not a bad
    // argument: the message names the state and what to do.
    let fails_with = |args: &[&str], code: i32, words: &str| {
        let out = l.labnet(args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(words), "{args:?}: {}", text(&out));
    };
    fails_with(
        &["vm", "path", "m", "fail", "path1"],
        7,
        "VM \"m\": path1 has already failed; `labnet vm path m restore path1` plugs it back",
    );
    // A PATH that names no path is a bad argument (exit 2, naming PATH).
    fails_with(
        &["vm", "path", "m", "fail", "path3"],
        2,
        "PATH: \"path3\": expected path1 or path2",
    );

    // restore: two disks again, both reading the data.
    let r = l.labnet(&["vm", "path", "m", "restore"]);
    assert!(r.status.success(), "{}", text(&r));
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("path1 restored"),
        "{}",
        text(&r)
    );
    wait_line("MP-TWO");
    let con = console();
    let s = stage(&con, "MP-TWO");
    assert!(
        s.iter()
            .any(|l| l.starts_with("MP-TWO ") && l.split_whitespace().count() == 3),
        "{s:?}"
    );
    assert_eq!(s.iter().filter(|l| l.ends_with(MARKER)).count(), 2, "{s:?}");
    assert_eq!(
        path_list(&l, "m"),
        [
            ("path1".to_string(), "active".to_string()),
            ("path2".to_string(), "active".to_string())
        ]
    );

    // Restoring an active path, debugging a VM started without --gdb, forgetting the running
    // VM: conflicts too.
    fails_with(
        &["vm", "path", "m", "restore", "path2"],
        7,
        "VM \"m\": path2 is active",
    );
    fails_with(
        &["vm", "gdb", "m"],
        7,
        "VM \"m\": it was started without --gdb",
    );
    fails_with(
        &["vm", "rm", "m"],
        7,
        "VM \"m\": it is running; stop it first: `labnet vm stop m`",
    );

    let stop = l.labnet(&["vm", "stop", "m", "--timeout", "5"]);
    assert!(stop.status.success(), "{}", text(&stop));
    let links = sh(&format!("ip -n {} -o link show", l.id));
    assert!(!links.contains("tap-"), "tap left behind: {links}");
}

/// The distro side (seed 002): in the tests' Debian image with multipath-tools, dm-multipath
/// maps the pair as one device with two active paths; after `vm path fail` the map goes on
/// with the other path alone, after `restore` both are active again.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn multipath_ll_follows_fail_and_restore_in_the_distro_image() {
    require_root();
    let mut c = Cleanup::default();
    let l = ImageLab::with_vms(&mut c, "mp", 81, None, &["mi"]);
    let disk = l.root.join("mp.raw");
    let mut data = MARKER.as_bytes().to_vec();
    data.resize(8 << 20, 0);
    std::fs::write(&disk, &data).unwrap();
    l.boot_with("mi", 900, &["--multipath", disk.to_str().unwrap()]);
    let ssh = |script: &str| l.ssh("mi", script);
    // Multipath every disk (Debian's default waits for a second path *and* a known WWID).
    ssh("printf 'defaults {\\n  find_multipaths no\\n  user_friendly_names yes\\n}\\n' > /etc/multipath.conf && \
         systemctl restart multipathd && sleep 2 && multipath -r >/dev/null");
    // The active paths of the map, as SCSI targets: `H:C:T:L sdX ... active ready running`
    // lines. path1 is target 0, path2 target 1; which of them the guest names sda depends on
    // probe order, so the paths are told apart by target, never by sd name.
    let active = |ll: &str| -> Vec<u32> {
        let mut targets: Vec<u32> = ll
            .lines()
            .filter(|l| l.contains("active ready"))
            .filter_map(|l| {
                let hctl = l.split_whitespace().find(|w| w.matches(':').count() == 3)?;
                hctl.split(':').nth(2)?.parse().ok()
            })
            .collect();
        targets.sort();
        targets
    };
    let wait_paths = |want: &[u32]| {
        let mut last = String::new();
        for _ in 0..60 {
            last = ssh("multipath -ll");
            if active(&last) == want {
                return last;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("multipath -ll never showed active paths on SCSI targets {want:?}:\n{last}");
    };
    let ll = wait_paths(&[0, 1]);
    assert!(ll.contains("QEMU HARDDISK"), "{ll}");
    // path1's device, to check it leaves the map rather than only going inactive.
    let path1_dev = ll
        .lines()
        .find(|l| l.contains(":0:0:0 sd"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("sd")))
        .unwrap_or_else(|| panic!("no device on target 0: {ll}"))
        .to_string();

    let f = l.vm(&["path", "mi", "fail", "path1"]);
    assert!(f.status.success(), "{}", text(&f));
    let ll = wait_paths(&[1]);
    assert!(!ll.contains(&format!(" {path1_dev} ")), "{ll}");
    // The map reads on through the remaining path.
    let dm = ssh("multipath -l -v1 | head -1").trim().to_string();
    let read = ssh(&format!(
        "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/mapper/{dm} bs=512 count=1 2>/dev/null | head -c 19"
    ));
    assert_eq!(read, MARKER, "read through {dm}");

    let r = l.vm(&["path", "mi", "restore", "path1"]);
    assert!(r.status.success(), "{}", text(&r));
    wait_paths(&[0, 1]);
    let stop = l.vm(&["stop", "mi", "--timeout", "30"]);
    assert!(stop.status.success(), "{}", text(&stop));
}
