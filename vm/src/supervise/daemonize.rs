//! `--daemonize`: the supervisor as a detached process.
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::state::{self, Status, VmState};
use crate::Error;

/// How long `--daemonize` waits for the supervisor to report its VM running.
const START_WAIT: Duration = Duration::from_secs(120);

/// `--daemonize`: re-runs this program with `args` (the same command minus --daemonize) as
/// a detached supervisor (own session, output in the VM dir), and waits until its VM runs.
pub fn daemonize(args: &[std::ffi::OsString], lab: &str, name: &str) -> Result<VmState, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("/proc/self/exe", e))?;
    let dir = state::vm_dir(lab, name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let log = dir.join("supervisor.log");
    let f = std::fs::File::create(&log).map_err(|e| Error::io(&log, e))?;
    let mut cmd = Command::new(&exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(f.try_clone().map_err(|e| Error::io(&log, e))?)
        .stderr(f);
    // SAFETY: the hook runs between fork and exec and only calls setsid(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| Error::Spawn {
        program: format!("the VM supervisor ({})", exe.display()),
        source,
    })?;
    let pid = child.id();
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = VmState::load_dir(&dir) {
            if st.supervisor_pid == pid && st.status == Status::Running {
                return Ok(st);
            }
        }
        if let Ok(Some(s)) = child.try_wait() {
            let mut msg = String::new();
            let _ = std::fs::File::open(&log).and_then(|mut f| {
                f.seek(SeekFrom::Start(0))?;
                f.read_to_string(&mut msg)
            });
            return Err(Error::SupervisorExited {
                name: name.into(),
                status: s,
                log: msg.trim().into(),
            });
        }
        if t0.elapsed() > START_WAIT {
            return Err(Error::StartTimedOut {
                name: name.into(),
                secs: START_WAIT.as_secs(),
                log: log.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
