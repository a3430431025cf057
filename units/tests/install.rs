//! `install` / `remove` under a temp root: the layout `systemctl --root` uses, enablement
//! links, several labs sharing the templates, and never touching files labnet did not write.
mod common;
use common::*;
use std::path::{Path, PathBuf};

fn tree(root: &Path) -> Vec<String> {
    fn walk(d: &Path, root: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let meta = p.symlink_metadata().unwrap();
            if meta.file_type().is_symlink() {
                out.push(format!(
                    "{rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if meta.is_dir() {
                out.push(format!("{rel}/"));
                walk(&p, root, out);
            } else {
                out.push(rel);
            }
        }
    }
    let mut out = vec![];
    walk(root, root, &mut out);
    out.sort();
    out
}

fn unit_dir(root: &Path) -> PathBuf {
    root.join(units::UNIT_DIR)
}

#[test]
fn install_then_remove_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let files = units::generate(&default_lab(), &opts(Path::new(BIN), None)).unwrap();
    let changes = units::install(root, "sepian", &files, true).unwrap();
    assert_eq!(
        changes
            .iter()
            .filter(|c| matches!(c, units::Change::Wrote(_)))
            .count(),
        4,
        "{changes:?}"
    );
    let u = "etc/systemd/system";
    assert_eq!(
        tree(root),
        [
            "etc/".to_string(),
            "etc/systemd/".into(),
            format!("{u}/"),
            format!("{u}/labnet-dhcpd@.service"),
            format!("{u}/labnet-dns@.service"),
            format!("{u}/labnet@.service"),
            format!("{u}/labnet@sepian.service.d/"),
            format!("{u}/labnet@sepian.service.d/labnet.conf"),
            format!("{u}/multi-user.target.wants/"),
            format!("{u}/multi-user.target.wants/labnet@sepian.service -> /etc/systemd/system/labnet@.service"),
        ]
    );
    // Installed text is the generated text, mode 0644.
    for f in &files {
        let p = unit_dir(root).join(&f.path);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), f.text);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
    // A second install changes nothing.
    let again = units::install(root, "sepian", &files, true).unwrap();
    assert!(
        again
            .iter()
            .all(|c| matches!(c, units::Change::Unchanged(_))),
        "{again:?}"
    );
    assert_eq!(units::installed_labs(root).unwrap(), ["sepian"]);

    units::remove(root, "sepian").unwrap();
    assert_eq!(tree(root), Vec::<String>::new());
    // Removing again is a no-op, not an error.
    assert!(units::remove(root, "sepian").unwrap().is_empty());
}

#[test]
fn templates_stay_while_another_lab_uses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = units::generate(&default_lab(), &opts(Path::new(BIN), None)).unwrap();
    let b = units::generate(&wg_lab(), &opts(Path::new(BIN), Some(WG_CONFIG))).unwrap();
    units::install(root, "sepian", &a, false).unwrap();
    units::install(root, "wglab", &b, true).unwrap();
    assert_eq!(units::installed_labs(root).unwrap(), ["sepian", "wglab"]);

    units::remove(root, "sepian").unwrap();
    let left = tree(root);
    assert!(
        left.iter().any(|p| p.ends_with("/labnet@.service")),
        "{left:?}"
    );
    assert!(!left.iter().any(|p| p.contains("sepian")), "{left:?}");
    assert!(
        left.iter()
            .any(|p| p.ends_with("labnet-dns@wglab.service.d/labnet.conf")),
        "{left:?}"
    );

    units::remove(root, "wglab").unwrap();
    assert_eq!(tree(root), Vec::<String>::new());
}

#[test]
fn reinstall_without_config_drops_stale_dropins() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let with = units::generate(&wg_lab(), &opts(Path::new(BIN), Some(WG_CONFIG))).unwrap();
    units::install(root, "wglab", &with, false).unwrap();
    let dhcpd_dropin = unit_dir(root).join("labnet-dhcpd@wglab.service.d/labnet.conf");
    assert!(dhcpd_dropin.exists());
    let without = units::generate(&wg_lab(), &opts(Path::new(BIN), None)).unwrap();
    let changes = units::install(root, "wglab", &without, false).unwrap();
    assert!(
        changes.contains(&units::Change::Removed(dhcpd_dropin.clone())),
        "{changes:?}"
    );
    assert!(!dhcpd_dropin.parent().unwrap().exists());
    let lab_dropin =
        std::fs::read_to_string(unit_dir(root).join("labnet@wglab.service.d/labnet.conf")).unwrap();
    assert!(!lab_dropin.contains("--config"), "{lab_dropin}");
}

#[test]
fn foreign_files_are_never_overwritten_or_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dir = unit_dir(root);
    std::fs::create_dir_all(&dir).unwrap();
    let mine = "[Service]\nExecStart=/bin/true\n";
    std::fs::write(dir.join("labnet-dns@.service"), mine).unwrap();
    let files = units::generate(&default_lab(), &opts(Path::new(BIN), None)).unwrap();
    let e = units::install(root, "sepian", &files, false).unwrap_err();
    assert!(matches!(e, units::UnitsError::NotOurs { .. }), "{e}");
    assert!(e.to_string().contains("labnet-dns@.service"), "{e}");
    // Checked before writing: nothing of ours appeared.
    assert!(!dir.join("labnet@.service").exists());

    // An admin's own drop-in next to ours survives remove (and keeps its directory).
    std::fs::remove_file(dir.join("labnet-dns@.service")).unwrap();
    units::install(root, "sepian", &files, false).unwrap();
    let own = dir.join("labnet@sepian.service.d/override.conf");
    std::fs::write(&own, "[Service]\nEnvironment=X=1\n").unwrap();
    std::fs::write(dir.join("labnet-dns@.service.bak"), mine).unwrap();
    units::remove(root, "sepian").unwrap();
    assert_eq!(
        std::fs::read_to_string(&own).unwrap(),
        "[Service]\nEnvironment=X=1\n"
    );
    assert!(dir.join("labnet-dns@.service.bak").exists());
    assert!(!dir.join("labnet@sepian.service.d/labnet.conf").exists());
}
