//! What `up` and `down` leave in the run dir (issue 17, item 6): `down` removes the lab's lock,
//! a state save killed before its rename leaves no `.LAB.json.tmp` behind the next command,
//! and `down` of a lab that never ran creates nothing. Isolated labs, as root.
use labnet_tests::*;
use std::path::Path;

/// Names in `dir` (empty when it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn isolated(id: &str) -> String {
    format!("name = \"{id}\"\n[bridge]\nname = \"{id}br\"\naddress = \"10.78.0.1/24\"\n")
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn down_of_an_unknown_lab_creates_nothing() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("ls");
    let root = temp_dir(&mut c, "dbr-unknown");
    let env = labnet_env(&root);
    let out = labnet(&["down", &id], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("not up"),
        "{}",
        text(&out)
    );
    assert!(
        !root.join("run").exists(),
        "down of an unknown lab made {}: {:?}",
        root.join("run").display(),
        entries(&root.join("run"))
    );
}

#[test]
#[ignore = "needs root (CAP_NET_ADMIN, netns)"]
fn down_removes_the_lock_and_a_killed_saves_temp_file() {
    require_root();
    let mut c = Cleanup::default();
    let id = unique("ls");
    let root = temp_dir(&mut c, "dbr-lock");
    let env = labnet_env(&root);
    let cfg = root.join("lab.toml");
    std::fs::write(&cfg, isolated(&id)).unwrap();
    let cfgs = cfg.display().to_string();
    c.labnet(&["down", &id], &env);
    let run = root.join("run");
    let tmp = run.join(format!(".{id}.json.tmp"));

    let up = labnet(&["up", &id, "--config", &cfgs, "--no-daemons"], &env);
    assert!(up.status.success(), "{}", text(&up));
    assert!(run.join(format!("{id}.lock")).exists());
    // What a SIGKILL between the temp file's write and its rename leaves.
    std::fs::write(&tmp, "{\"lab\": \"half").unwrap();
    let down = labnet(&["down", &id], &env);
    assert!(down.status.success(), "{}", text(&down));
    let left = entries(&run);
    assert!(
        left.is_empty(),
        "down left {left:?} in {} (lock, temp state, runtime dir)",
        run.display()
    );

    // A temp file with no lab state (the kill hit the first save): the next `up` clears it,
    // and `down` of a lab that only left debris clears that too.
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(&tmp, "{").unwrap();
    let up = labnet(&["up", &id, "--config", &cfgs, "--no-daemons"], &env);
    assert!(up.status.success(), "{}", text(&up));
    assert!(!tmp.exists(), "up kept the killed save's {}", tmp.display());
    let down = labnet(&["down", &id], &env);
    assert!(down.status.success(), "{}", text(&down));
    std::fs::write(&tmp, "{").unwrap();
    let down = labnet(&["down", &id], &env);
    assert!(down.status.success(), "{}", text(&down));
    let left = entries(&run);
    assert!(left.is_empty(), "down left {left:?} in {}", run.display());
}
