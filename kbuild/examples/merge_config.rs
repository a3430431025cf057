//! `labnet kernel-config`'s merge of the CephFS options into a kernel `.config`: what it sets,
//! and (inside a kernel tree) what Kconfig kept after `make olddefconfig`. Without a CONFIG
//! argument it merges into a throwaway `.config` (no tree: the Kconfig check is skipped).
//! `cargo run -p kbuild --example merge_config [CONFIG] [--modules] [--vm]`
use mountgen::kconfig::{self, CephBuild};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let build = if args.iter().any(|a| a == "--modules") {
        CephBuild::Modules
    } else {
        CephBuild::Builtin
    };
    let vm = args.iter().any(|a| a == "--vm");
    let scratch = tempfile::tempdir()?;
    let config = match args.iter().find(|a| !a.starts_with("--")) {
        Some(c) => c.into(),
        None => {
            let c = scratch.path().join(".config");
            std::fs::write(&c, "CONFIG_CEPH_FS=m\n# CONFIG_CEPH_LIB is not set\n")?;
            c
        }
    };
    let tree = kbuild::tree_of(&config);
    let report = kbuild::merge(&config, tree.as_ref(), &kconfig::options(build, vm), None)?;
    print!("{}", report.render());
    Ok(())
}
