//! `labnet test FILE.toml`: wiring for the matrix crate (plan, run, print, JUnit).
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use crate::ctx::Ctx;

/// Exit status when a target did not pass.
const EXIT_NOT_ALL_PASSED: u8 = 1;
/// Exit status when the file (or --filter) is bad: nothing ran.
const EXIT_BAD_FILE: u8 = 2;

pub const EXAMPLES: &str = "\
A target is one `labnet vm run` of the generated initramfs: each key is the vm run flag of
the same name (kernel, modules, module, share, add, append, mem, cpus, machine, accel,
timeout, lab), plus name (also its VM's name), command (a shell command line) or script (a
host file run with sh), and tree (a build tree: its arch/x86/boot/bzImage). [defaults] holds
keys for every target; a target's own key replaces the default's. Relative paths are
relative to the file.

    [defaults]
    tree = \"~/linux\"
    timeout = 300

    [[target]]
    name = \"ceph-builtin\"
    command = \"grep -w ceph /proc/filesystems\"

    [[target]]
    name = \"distro-6-1\"
    kernel = \"/boot/vmlinuz-6.1.0-56-amd64\"
    module = [\"ceph\"]
    command = \"grep -w ceph /proc/filesystems\"

Verdicts: PASS (exit 0), FAIL (non-zero exit, or the guest ended without a status), TIMEOUT
(the target's timeout), PANIC (the kernel panicked), ERROR (its VM could not run). The
console of a target that did not pass is kept in --logs (NAME.console.log); every command's
output is there too (NAME.out).

Exit status: 0 every target passed; 1 one did not; 2 the file (or --filter) is bad and
nothing ran.

Examples:
  labnet test matrix.toml --jobs 2 --junit results.xml
  labnet test matrix.toml --filter '^ceph-'";

#[derive(Args)]
pub struct TestArgs {
    /// The test file (TOML: [defaults] and [[target]]).
    pub file: PathBuf,
    /// Run only the targets whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub filter: Option<String>,
    /// Write a JUnit XML report here.
    #[arg(long, value_name = "OUT.xml")]
    pub junit: Option<PathBuf>,
    /// Run up to N targets at once (each its own VM).
    #[arg(long, short, value_name = "N", default_value_t = 1)]
    pub jobs: usize,
    /// Where the targets' output and failed consoles go.
    #[arg(long, value_name = "DIR", default_value = "labnet-test-logs")]
    pub logs: PathBuf,
}

pub fn test(ctx: &Ctx, a: TestArgs) -> Result<()> {
    let lab = ctx.lab_name(None)?;
    let plan = matrix::plan(&a.file, a.filter.as_deref(), &lab)
        .map_err(|e| crate::report::with_code(EXIT_BAD_FILE, e))?;
    if plan.is_empty() {
        return Err(crate::report::with_code(
            EXIT_BAD_FILE,
            anyhow::anyhow!(
                "{}: no target matches --filter {:?}",
                a.file.display(),
                a.filter.unwrap_or_default()
            ),
        ));
    }
    std::fs::create_dir_all(&a.logs).with_context(|| format!("--logs {}", a.logs.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("signal handler")?;
    }
    let width = plan.iter().map(|p| p.target.name.len()).max().unwrap_or(0);
    eprintln!(
        "labnet test: {} target{} from {}, up to {} at once",
        plan.len(),
        if plan.len() == 1 { "" } else { "s" },
        a.file.display(),
        a.jobs.max(1)
    );
    let t0 = Instant::now();
    let results = matrix::run::run_all(
        plan,
        a.jobs,
        &a.logs,
        &stop,
        crate::cmd_vm::lease_ip,
        &mut |r| eprintln!("{}", matrix::report::line(r, width)),
    );
    let wall = t0.elapsed();
    print!("{}", matrix::report::summary(&results, wall));
    if let Some(out) = &a.junit {
        let suite = a.file.file_name().map_or_else(
            || a.file.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        std::fs::write(out, matrix::report::junit(&suite, &results, wall))
            .with_context(|| format!("--junit {}", out.display()))?;
    }
    let failed = results
        .iter()
        .filter(|r| r.verdict != matrix::run::Verdict::Pass)
        .count();
    if failed == 0 {
        return Ok(());
    }
    Err(crate::report::with_code(
        EXIT_NOT_ALL_PASSED,
        anyhow::anyhow!("{failed} of {} targets did not pass", results.len()),
    ))
}
