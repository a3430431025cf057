//! `labnet kernel-config --merge` and `labnet kernel build` against the real kernel source
//! (Debian's linux-source-6.1, unpacked once into the cache): what the tree's Kconfig keeps
//! of the fragment on a tinyconfig and a defconfig base (goldens), the non-zero exit when a
//! required option is lost, and the missing-tool error. No root needed.
use labnet_tests::{cache_dir, labnet_bin, linux_source_tree, must, run, text};
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/kernel")
        .join(name)
}

/// `make O=DIR ARCH=x86_64 TARGET` in `tree`: a fresh object dir with that base config.
fn base_config(tree: &Path, dir: &Path, target: &str) -> PathBuf {
    must(
        Command::new("make")
            .arg("-C")
            .arg(tree)
            .arg(format!("O={}", dir.display()))
            .args(["ARCH=x86_64", "-s", target]),
    );
    dir.join(".config")
}

/// The merge report with the temp dir's path made stable.
fn report(out: &std::process::Output, dir: &Path) -> String {
    String::from_utf8_lossy(&out.stdout).replace(&dir.display().to_string(), "$DIR")
}

fn merge_golden(base: &str) {
    let tree = linux_source_tree();
    let dir = testkit::temp_dir(&format!("kcfg-{base}"));
    let cfg = base_config(&tree, dir.path(), base);
    let before = std::fs::read_to_string(&cfg).unwrap();
    let out = run(Command::new(labnet_bin())
        .args(["kernel-config", "--merge"])
        .arg(&cfg));
    assert!(out.status.success(), "{}", text(&out));
    testkit::check_golden(
        golden(&format!("merge-{base}.txt")),
        &report(&out, dir.path()),
    );
    // The previous config is kept; the merged one has every fragment option as asked.
    assert_eq!(
        std::fs::read_to_string(dir.path().join(".config.old")).unwrap(),
        before
    );
    let after = std::fs::read_to_string(&cfg).unwrap();
    for want in [
        "CONFIG_PVH=y",
        "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
        "CONFIG_CEPH_FS=y",
        "CONFIG_9P_FS=y",
        "CONFIG_VIRTIO_FS=y",
    ] {
        assert!(
            after.lines().any(|l| l == want),
            "{want} not in the merged .config"
        );
    }
    // The final values of the fragment's options, as Kconfig left them.
    let frag = must(Command::new(labnet_bin()).arg("kernel-config"));
    let set: String = frag
        .lines()
        .filter_map(|l| {
            let name = l
                .split('=')
                .next()
                .filter(|n| n.starts_with("CONFIG_"))
                .or_else(|| {
                    l.strip_prefix("# ")
                        .and_then(|r| r.strip_suffix(" is not set"))
                })?;
            let v = after
                .lines()
                .find_map(|a| a.strip_prefix(&format!("{name}=")).map(String::from))
                .unwrap_or_else(|| "n".into());
            Some(format!("{name}={v}\n"))
        })
        .collect();
    testkit::check_golden(golden(&format!("final-{base}.txt")), &set);
}

#[test]
fn merge_on_tinyconfig_keeps_every_option() {
    merge_golden("tinyconfig");
}

#[test]
fn merge_on_defconfig_keeps_every_option() {
    merge_golden("defconfig");
}

/// A tree whose Kconfig cannot give CEPH_FS (it depends on BROKEN there): the merge reports
/// it dropped and exits 3. The tree is a hard-link copy of the source with one Kconfig file
/// replaced (not edited: the links share the original's data).
#[test]
fn merge_fails_when_a_required_option_is_dropped() {
    let tree = linux_source_tree();
    let scratch = cache_dir().join("tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    let work = tempfile::Builder::new()
        .prefix("lk-broken-tree-")
        .tempdir_in(&scratch)
        .unwrap();
    let copy = work.path().join("linux");
    must(Command::new("cp").arg("-al").arg(&tree).arg(&copy));
    let kc = copy.join("fs/ceph/Kconfig");
    let orig = std::fs::read_to_string(&kc).unwrap();
    let broken = orig.replacen(
        "config CEPH_FS\n\ttristate \"Ceph distributed file system\"\n\tdepends on INET",
        "config CEPH_FS\n\ttristate \"Ceph distributed file system\"\n\tdepends on INET && BROKEN",
        1,
    );
    assert_ne!(broken, orig, "fs/ceph/Kconfig no longer looks as expected");
    std::fs::remove_file(&kc).unwrap();
    std::fs::write(&kc, broken).unwrap();
    let obj = work.path().join("obj");
    let cfg = base_config(&copy, &obj, "tinyconfig");
    let before = std::fs::read_to_string(&cfg).unwrap();
    let out = run(Command::new(labnet_bin())
        .args(["kernel-config", "--merge"])
        .arg(&cfg));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("kconfig CONFIG_CEPH_FS: dropped (required y, now is not set)")
            || stdout.contains("kconfig CONFIG_CEPH_FS: dropped (required y, absent"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CONFIG_CEPH_FS"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(obj.join(".config.old")).unwrap(),
        before
    );
    // The original tree is untouched.
    assert_eq!(
        std::fs::read_to_string(tree.join("fs/ceph/Kconfig")).unwrap(),
        orig
    );
}

/// Without flex in PATH, `kernel build` stops before make and names the package.
#[test]
fn build_names_the_missing_tool() {
    let tree = linux_source_tree();
    let bin = testkit::temp_dir("kbuild-path");
    for tool in ["make", "gcc", "ld", "bison", "bc", "perl"] {
        let p = labnet_tests::which(tool).unwrap_or_else(|| panic!("{tool} not installed"));
        std::os::unix::fs::symlink(p, bin.path().join(tool)).unwrap();
    }
    let obj = testkit::temp_dir("kbuild-obj");
    let out = run(Command::new(labnet_bin())
        .args(["kernel", "build", "--tree"])
        .arg(&tree)
        .arg("--objdir")
        .arg(obj.path())
        .env("PATH", bin.path()));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("flex not found: install it (apt-get install flex)"),
        "{}",
        text(&out)
    );
    // Nothing was configured.
    assert!(!obj.path().join(".config").exists());
}

/// The cached source-built kernel (`labnet kernel build --base tinyconfig` of linux-source-6.1,
/// built on first use): bzImage, vmlinux with the PVH note, and a config with everything the
/// fragment requires built in.
#[test]
fn source_kernel_is_built_with_the_fragment() {
    let k = labnet_tests::source_kernel();
    assert!(k.bzimage.is_file() && k.vmlinux.is_file(), "{k:?}");
    let elf = std::fs::read(&k.vmlinux).unwrap();
    assert!(
        vm::kernel::has_pvh_note(&elf),
        "{} has no PVH note",
        k.vmlinux.display()
    );
    let config = std::fs::read_to_string(&k.config).unwrap();
    for want in [
        "CONFIG_CEPH_FS=y",
        "CONFIG_PVH=y",
        "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
        "CONFIG_VIRTIO_NET=y",
        "CONFIG_9P_FS=y",
        "CONFIG_VIRTIO_FS=y",
        "CONFIG_FW_CFG_SYSFS=y",
        "CONFIG_KEXEC=y",
        "# CONFIG_LEGACY_PTYS is not set",
    ] {
        assert!(
            config.lines().any(|l| l == want),
            "{want} not in {}",
            k.config.display()
        );
    }
    assert!(
        !config.lines().any(|l| l == "CONFIG_MODULES=y"),
        "a no-modules kernel"
    );
    assert!(k.dir.join("build.log").is_file());
}
