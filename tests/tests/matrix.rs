//! `labnet test FILE.toml` end to end, as root, under TCG: a lab of the test's own, the
//! source-built kernel, and a file with a passing, a failing, a hanging and a panicking
//! target (plus one the filter leaves out), run two at a time.
use labnet_tests::*;
use std::process::Command;

/// A lab of its own (the tests' `VmLab`: unique name and bridge, temp LABNET_* dirs), downed
/// by the Cleanup; `labnet test` stops its targets' VMs itself.
fn lab(c: &mut Cleanup) -> (String, Vec<(String, String)>, std::path::PathBuf) {
    let l = VmLab::up(c, "lm", &[]);
    (l.id, l.env, l.root)
}

/// The image test's hanging target's timeout, seconds.
const HANG_SECS: u64 = 480;

fn verdict_of<'a>(summary: &'a str, name: &str) -> &'a str {
    summary
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no line for {name} in:\n{summary}"))
}

#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn matrix_gives_pass_fail_timeout_panic_and_junit() {
    require_root();
    let mut c = Cleanup::default();
    let kernel = source_kernel().bzimage;
    let (id, env, root) = lab(&mut c);
    let file = root.join("matrix.toml");
    std::fs::write(
        &file,
        format!(
            r#"[defaults]
kernel = "{}"
timeout = 300

[[target]]
name = "pass"
command = "echo matrix-ok from $(hostname)"

[[target]]
name = "fail"
command = "echo about to fail; exit 3"

[[target]]
name = "hang"
command = "echo hanging; sleep 1000"
timeout = 45

[[target]]
name = "panic"
command = "echo c > /proc/sysrq-trigger; sleep 60"

[[target]]
name = "left-out"
command = "true"
"#,
            kernel.display()
        ),
    )
    .unwrap();
    let logs = root.join("logs");
    let junit = root.join("out.xml");
    let out = run(Command::new("timeout")
        .arg("900")
        .arg(labnet_bin())
        .args(["test", file.to_str().unwrap(), "--lab", &id, "--jobs", "2"])
        .args(["--filter", "^(pass|fail|hang|panic)$"])
        .arg("--junit")
        .arg(&junit)
        .arg("--logs")
        .arg(&logs)
        .envs(env.iter().cloned()));
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{}", text(&out));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    for (name, verdict) in [
        ("pass", "PASS"),
        ("fail", "FAIL"),
        ("hang", "TIMEOUT"),
        ("panic", "PANIC"),
    ] {
        assert_eq!(verdict_of(&summary, name), verdict, "{summary}");
    }
    assert!(!summary.contains("left-out"), "{summary}");
    assert!(
        summary.contains("4 targets: 1 passed, 1 failed, 1 timed out, 1 panicked in "),
        "{summary}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error: 3 of 4 targets did not pass"),
        "{}",
        text(&out)
    );

    // The JUnit file, read back by quick-junit's parser.
    let xml = std::fs::read_to_string(&junit).unwrap();
    let rep = quick_junit::Report::deserialize_from_str(&xml)
        .unwrap_or_else(|e| panic!("JUnit does not parse: {e}\n{xml}"));
    assert_eq!(
        (rep.tests, rep.failures, rep.errors, rep.skipped),
        (4, 2, 1, 0),
        "{xml}"
    );
    let cases = &rep.test_suites[0].test_cases;
    let case = |n: &str| {
        cases
            .iter()
            .find(|c| c.name.as_str() == n)
            .unwrap_or_else(|| panic!("no case {n}: {xml}"))
    };
    // The command really ran in its own VM: its output names the VM's hostname.
    let pass_out = case("pass")
        .system_out
        .as_ref()
        .map(|s| s.as_str().to_string());
    assert_eq!(pass_out.as_deref(), Some("matrix-ok from pass"), "{xml}");
    match &case("panic").status {
        quick_junit::TestCaseStatus::NonSuccess { message, ty, .. } => {
            assert_eq!(ty.as_ref().map(|t| t.as_str()), Some("PANIC"));
            let m = message.as_ref().map(|m| m.as_str()).unwrap_or_default();
            assert!(
                m.contains("Kernel panic - not syncing: sysrq triggered crash"),
                "{m}"
            );
        }
        s => panic!("panic case: {s:?}"),
    }
    match &case("fail").status {
        quick_junit::TestCaseStatus::NonSuccess { message, ty, .. } => {
            assert_eq!(ty.as_ref().map(|t| t.as_str()), Some("FAIL"));
            assert_eq!(message.as_ref().map(|m| m.as_str()), Some("exit status 3"));
        }
        s => panic!("fail case: {s:?}"),
    }

    // Consoles kept for the targets that did not pass, not for the one that did.
    let console = |n: &str| logs.join(format!("{n}.console.log"));
    assert!(!console("pass").exists());
    for n in ["fail", "hang", "panic"] {
        assert!(console(n).is_file(), "no console kept for {n}");
    }
    let panic_console = std::fs::read_to_string(console("panic")).unwrap();
    assert!(
        panic_console.contains("sysrq triggered crash"),
        "{panic_console}"
    );
    assert!(std::fs::read_to_string(console("hang"))
        .unwrap()
        .contains("hanging"));
    assert_eq!(
        std::fs::read_to_string(logs.join("fail.out"))
            .unwrap()
            .trim_end(),
        "about to fail"
    );

    // Every target's VM is gone: no VM state, no tap.
    let list = labnet(&["vm", "list", &id, "--json"], &env);
    assert!(list.status.success(), "{}", text(&list));
    let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(vms.as_array().map(|a| a.len()), Some(0), "{vms}");
    let links = sh(&format!("ip -n {id} -o link show"));
    assert!(!links.contains("tap-"), "tap left behind: {links}");

    // A bad file stops before any VM: exit 2, the target and key named.
    std::fs::write(&file, "[[target]]\nname = \"x\"\ncommand = \"true\"\n").unwrap();
    let out = labnet(&["test", file.to_str().unwrap(), "--lab", &id], &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("target[0] (x).kernel: missing"),
        "{}",
        text(&out)
    );
}

/// SIGINT to `labnet test`: the running target's VM is stopped (FAIL, interrupted), the
/// targets not started are SKIPPED, nothing of either is left, and the exit status is 1.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn interrupt_stops_the_running_vm_and_skips_the_rest() {
    require_root();
    let mut c = Cleanup::default();
    let kernel = source_kernel().bzimage;
    let (id, env, root) = lab(&mut c);
    let file = root.join("m.toml");
    std::fs::write(
        &file,
        format!(
            "[defaults]\nkernel = \"{}\"\ntimeout = 300\n\n\
             [[target]]\nname = \"long\"\ncommand = \"echo long-running; sleep 1000\"\n\n\
             [[target]]\nname = \"never\"\ncommand = \"true\"\n",
            kernel.display()
        ),
    )
    .unwrap();
    let logs = root.join("logs");
    let child = Command::new(labnet_bin())
        .args(["test", file.to_str().unwrap(), "--lab", &id, "--jobs", "1"])
        .arg("--logs")
        .arg(&logs)
        .envs(env.iter().cloned())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.pid(child.id());
    let serial = root.join("run").join(&id).join("vms/long/serial.log");
    wait_for(
        "the long target's command to run",
        std::time::Duration::from_secs(180),
        || std::fs::read_to_string(&serial).is_ok_and(|s| s.contains("long-running")),
    );
    assert!(signal(child.id() as i32, libc::SIGINT));
    let out = child.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(verdict_of(&summary, "long"), "FAIL", "{summary}");
    assert!(
        summary.contains("interrupted: its VM was stopped"),
        "{summary}"
    );
    assert_eq!(verdict_of(&summary, "never"), "SKIPPED", "{summary}");
    assert!(logs.join("long.console.log").is_file());
    let list = labnet(&["vm", "list", &id, "--json"], &env);
    let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(vms.as_array().map(|a| a.len()), Some(0), "{vms}");
    let links = sh(&format!("ip -n {id} -o link show"));
    assert!(!links.contains("tap-"), "tap left behind: {links}");
}

/// Image targets: each boots an overlay of the tests' image (see `test_image`) as a VM of the
/// lab, waits for its sshd and runs the command over ssh; the verdict is its exit status, a
/// TIMEOUT when the command outlives the target's timeout, a PANIC when the guest kernel
/// panics. Every target that did not pass keeps its console; nothing of any VM is left (no
/// state, no tap, no overlay, no process). A missing image stops the file before any VM starts.
#[test]
#[ignore = "needs root (netns, tap, qemu in the lab)"]
fn image_targets_run_over_ssh() {
    require_root();
    let mut c = Cleanup::default();
    let targets = ["img-pass", "img-fail", "img-hang", "img-panic"];
    let l = ImageLab::with_vms(&mut c, "g", 93, None, &targets);
    let (_, image) = test_image();
    let (id, env, root) = (&l.id, &l.env, &l.root);
    let file = root.join("img.toml");
    // img-hang's timeout has room for the boot of four TCG guests at once; its command
    // outlives it.
    std::fs::write(
        &file,
        format!(
            "[defaults]\nimage = \"{image}\"\ntimeout = 600\n\n\
             [[target]]\nname = \"img-pass\"\ncommand = \"test -d /etc && echo on $(hostname) $(uname -r)\"\n\n\
             [[target]]\nname = \"img-fail\"\ncommand = \"echo failing; exit 3\"\n\n\
             [[target]]\nname = \"img-hang\"\ncommand = \"echo hanging; sleep 3600\"\ntimeout = {HANG_SECS}\n\n\
             [[target]]\nname = \"img-panic\"\ncommand = \"echo crashing; sleep 1; echo c > /proc/sysrq-trigger; sleep 3600\"\n"
        ),
    )
    .unwrap();
    let logs = root.join("logs");
    let out = run(Command::new("timeout")
        .arg("1200")
        .arg(labnet_bin())
        .args(["test", file.to_str().unwrap(), "--lab", id, "--jobs", "4"])
        .arg("--logs")
        .arg(&logs)
        .envs(env.iter().cloned()));
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{}", text(&out));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(verdict_of(&summary, "img-pass"), "PASS", "{summary}");
    assert_eq!(verdict_of(&summary, "img-fail"), "FAIL", "{summary}");
    assert_eq!(verdict_of(&summary, "img-hang"), "TIMEOUT", "{summary}");
    assert_eq!(verdict_of(&summary, "img-panic"), "PANIC", "{summary}");
    assert!(summary.contains("exit status 3"), "{summary}");
    assert!(
        summary.contains(&format!(
            "timed out after {HANG_SECS} s while the command ran"
        )),
        "{summary}"
    );
    assert!(
        summary.contains("Kernel panic - not syncing: sysrq triggered crash"),
        "{summary}"
    );
    // The commands ran in the image's VMs, over ssh.
    let read = |f: &str| std::fs::read_to_string(logs.join(f)).unwrap_or_default();
    let pass_out = read("img-pass.out");
    assert!(pass_out.starts_with("on img-pass "), "{pass_out}");
    assert_eq!(read("img-fail.out").trim_end(), "failing");
    assert_eq!(read("img-hang.out").trim_end(), "hanging");
    assert_eq!(read("img-panic.out").trim_end(), "crashing");
    // The consoles of those that did not pass are kept (a quiet boot may have written
    // little to a console but the panic).
    assert!(!logs.join("img-pass.console.log").exists());
    for t in ["img-fail", "img-hang", "img-panic"] {
        assert!(logs.join(format!("{t}.console.log")).is_file(), "{t}");
    }
    let con = read("img-panic.console.log");
    assert!(
        con.contains("Kernel panic - not syncing: sysrq triggered crash"),
        "{con}"
    );

    // Nothing left: no VM, no VM state, no tap, no overlay, no process of a VM (QEMU, ssh).
    let list = l.labnet(&["vm", "list", id, "--json"]);
    assert!(list.status.success(), "{}", text(&list));
    let vms: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(vms.as_array().map(|a| a.len()), Some(0), "{vms}");
    for t in targets {
        assert!(!l.vm_dir(t).exists(), "{} left", l.vm_dir(t).display());
    }
    assert_eq!(l.taps(), Vec::<String>::new(), "tap left behind");
    let left = sh(&format!(
        "find {} -name '*.qcow2' 2>/dev/null",
        root.display()
    ));
    assert!(left.trim().is_empty(), "overlay left behind: {left}");
    let vms_dir = root.join("run").join(id).join("vms").display().to_string();
    let procs = pids_mentioning(&vms_dir);
    assert!(procs.is_empty(), "processes of the VMs left: {procs:?}");

    // A missing image: exit 2 before any VM, the target and key named.
    std::fs::write(
        &file,
        "[[target]]\nname = \"noimg\"\nimage = \"no-such-image\"\ncommand = \"true\"\n",
    )
    .unwrap();
    let out = l.labnet(&["test", file.to_str().unwrap(), "--lab", id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("target noimg: image"),
        "{}",
        text(&out)
    );
}
