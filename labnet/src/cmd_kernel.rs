//! `labnet kernel-config` and `labnet kernel build` (wiring for mountgen::kconfig and kbuild).
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use mountgen::kconfig::{self, CephBuild};
use std::path::PathBuf;

pub const KCONFIG_EXAMPLES: &str = "\
Examples:
  labnet kernel-config > labnet.config && scripts/kconfig/merge_config.sh -m .config labnet.config
  labnet kernel-config --merge .config   # runs make olddefconfig; the old file is kept as .config.old
  labnet kernel build --tree ~/linux --base defconfig   # the whole build, see `labnet kernel build --help`";

/// Exit status when Kconfig dropped or changed an option labnet requires.
const EXIT_REQUIRED_LOST: u8 = crate::report::exit::NOT_AS_CONFIGURED;

#[derive(Args)]
pub struct FragmentArgs {
    /// Build the Ceph code into the kernel (the default: no modules in the guest).
    #[arg(long, conflicts_with = "modules")]
    builtin: bool,
    /// Build libceph and ceph as modules (reload them with modprobe after a rebuild).
    #[arg(long)]
    modules: bool,
    /// Leave out the --vm part (PVH, virtio-pci/mmio, console, net, disks, 9p, virtiofs).
    #[arg(long)]
    no_vm: bool,
}

impl FragmentArgs {
    fn ceph(&self) -> CephBuild {
        if self.modules {
            CephBuild::Modules
        } else {
            CephBuild::Builtin
        }
    }
}

#[derive(Args)]
pub struct KernelConfigArgs {
    #[command(flatten)]
    fragment: FragmentArgs,
    /// Merge the fragment into this .config (the previous one kept as .config.old), run
    /// `make olddefconfig` on it and report every option Kconfig dropped or changed.
    #[arg(long, value_name = ".config")]
    merge: Option<PathBuf>,
    /// The kernel source tree to ask (default: the .config's directory, a tree or an O= dir).
    #[arg(long, requires = "merge", value_name = "DIR")]
    tree: Option<PathBuf>,
}

pub fn kernel_config(a: KernelConfigArgs) -> Result<()> {
    let (ceph, vm) = (a.fragment.ceph(), !a.fragment.no_vm);
    let Some(path) = &a.merge else {
        print!("{}", kconfig::fragment(ceph, vm));
        return Ok(());
    };
    let tree = match &a.tree {
        // KCONFIG_CONFIG names the file, so it need not live in the tree.
        Some(t) => Some(kbuild::Tree::new(t, None)?),
        None => kbuild::tree_of(path),
    };
    let report = kbuild::merge(path, tree.as_ref(), &kconfig::options(ceph, vm), None)
        .with_context(|| format!("--merge {}", path.display()))?;
    print!("{}", report.render());
    if let Some(b) = &report.backup {
        println!("previous config kept as {}", b.display());
    }
    let lost = report.required_lost();
    if !lost.is_empty() {
        return Err(crate::report::with_code(
            EXIT_REQUIRED_LOST,
            anyhow::anyhow!(
                "Kconfig dropped or changed {} required option(s): {}",
                lost.len(),
                lost.iter().map(|o| o.option).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum KernelCommand {
    /// Base config + the labnet fragment + make: bzImage and vmlinux (+ the .config).
    Build(BuildArgs),
}

#[derive(Args)]
pub struct BuildArgs {
    /// The kernel source tree.
    #[arg(long, default_value = ".", value_name = "DIR")]
    tree: PathBuf,
    /// Build the objects here (make O=DIR) instead of inside the tree.
    #[arg(long, value_name = "DIR")]
    objdir: Option<PathBuf>,
    /// The config to start from: tinyconfig (fast, what CI uses), defconfig, or keep the tree's .config.
    #[arg(long, default_value = "tinyconfig")]
    base: kbuild::Base,
    /// Parallel make jobs (default: the number of CPUs).
    #[arg(long, short = 'j')]
    jobs: Option<usize>,
    /// Copy bzImage, vmlinux, config and build.log here.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    #[command(flatten)]
    fragment: FragmentArgs,
}

pub fn run(c: KernelCommand) -> Result<()> {
    match c {
        KernelCommand::Build(a) => build(a),
    }
}

fn build(a: BuildArgs) -> Result<()> {
    let tree = kbuild::Tree::new(&a.tree, a.objdir.as_deref())?;
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let o = kbuild::BuildOptions {
        tree,
        base: a.base,
        jobs,
        out: a.out.clone(),
        ceph: a.fragment.ceph(),
        vm: !a.fragment.no_vm,
        progress: kbuild::stderr_is_tty(),
    };
    match kbuild::build(&o) {
        Ok(b) => {
            for n in &b.notes {
                eprintln!("labnet kernel build: note: Kconfig did not keep {n}");
            }
            println!("bzImage {}", b.bzimage.display());
            println!("vmlinux {}", b.vmlinux.display());
            println!("config  {}", b.config.display());
            println!("log     {}", b.log.display());
            println!("built in {:.1} s with -j{jobs}", b.elapsed.as_secs_f64());
            Ok(())
        }
        Err(e @ kbuild::Error::RequiredLost { .. }) => {
            Err(crate::report::with_code(EXIT_REQUIRED_LOST, e))
        }
        Err(e) => Err(e.into()),
    }
}
