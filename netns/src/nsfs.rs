//! Named network namespaces, made like `ip netns add` does, without forking: a throwaway
//! thread unshares its network namespace and bind-mounts `/proc/thread-self/ns/net` onto
//! `/run/netns/NAME`; the namespace lives on through that mount after the thread ends.
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;

pub const NETNS_RUN_DIR: &str = "/run/netns";

pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// True when /run/netns/NAME exists and is a namespace mount (not a stale empty file).
pub fn netns_exists(name: &str) -> bool {
    let p = netns_path(name);
    match (std::fs::metadata(&p), std::fs::metadata(NETNS_RUN_DIR)) {
        (Ok(f), Ok(_)) => {
            use std::os::unix::fs::MetadataExt;
            // A bind-mounted nsfs inode lives on the nsfs device, not /run's tmpfs.
            let run = std::fs::metadata("/run").map(|m| m.dev()).unwrap_or(0);
            f.dev() != run || File::open(&p).is_ok_and(|fd| is_netns_fd(&fd))
        }
        _ => false,
    }
}

fn is_netns_fd(f: &File) -> bool {
    // NS_GET_NSTYPE = _IO(0xb7, 0x3)
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which `f` keeps open.
    let r = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(f), 0xb703 as _) };
    r == libc::CLONE_NEWNET
}

/// Makes /run/netns a shared mount point (as iproute2 does) so namespaces created here are
/// visible to other mount namespaces, e.g. systemd services with PrivateMounts.
fn prepare_run_dir() -> Result<(), Error> {
    std::fs::create_dir_all(NETNS_RUN_DIR).map_err(|e| Error::io(NETNS_RUN_DIR, e))?;
    let shared = |_: ()| {
        mount(
            None::<&str>,
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    if shared(()).is_err() {
        mount(
            Some(NETNS_RUN_DIR),
            NETNS_RUN_DIR,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::sys("bind-mount /run/netns", e))?;
        shared(()).map_err(|e| Error::sys("make /run/netns shared", e))?;
    }
    Ok(())
}

/// Creates the named namespace. Fails with AlreadyExists if /run/netns/NAME exists.
pub fn create_netns(name: &str) -> Result<(), Error> {
    prepare_run_dir()?;
    let path = netns_path(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let target = path.clone();
    let res = std::thread::spawn(move || -> Result<(), Error> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| Error::sys("unshare(CLONE_NEWNET)", e))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| Error::sys("bind-mount the new namespace", e))
    })
    .join()
    .expect("netns thread panicked");
    if res.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    res
}

/// Unmounts and removes /run/netns/NAME. The namespace itself ends when its last process
/// leaves. Missing is not an error (down must work after a partial up).
pub fn delete_netns(name: &str) -> Result<(), Error> {
    let path = netns_path(name);
    if !path.exists() {
        return Ok(());
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(Error::sys("unmount the namespace", e)),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(&path, e)),
    }
}

/// Runs `f` on a fresh thread whose network namespace is `ns` (None = the caller's own, i.e.
/// the namespace labnet was started in). Sockets and child processes made inside `f` belong
/// to that namespace.
pub fn in_netns<T: Send + 'static>(
    ns: Option<&str>,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let file = match ns {
        Some(n) => Some(File::open(netns_path(n)).map_err(|e| Error::io(netns_path(n), e))?),
        // Already there (the usual case: labnet's main thread never changes namespace):
        // no thread to start.
        None if same_netns("/proc/thread-self/ns/net", "/proc/self/ns/net") => return f(),
        // Called from a thread inside a lab: back to the main thread's namespace.
        None => {
            Some(File::open("/proc/self/ns/net").map_err(|e| Error::io("/proc/self/ns/net", e))?)
        }
    };
    std::thread::spawn(move || {
        if let Some(file) = file {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys("setns into the lab", e))?;
        }
        f()
    })
    .join()
    .map_err(|_| Error::WorkerPanicked {
        what: "a namespace worker thread".into(),
    })?
}

/// Whether two namespace files name the same namespace (same nsfs inode).
fn same_netns(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Enters the lab's namespace for the whole (still single-threaded) process: used by the
/// daemons' `--enter-netns` before any runtime starts.
pub fn enter_netns(name: &str) -> Result<(), Error> {
    Ok(model::netns::enter(name)?)
}
