//! Named network namespaces, made like `ip netns add` does, without forking: a throwaway
//! thread unshares its network namespace and bind-mounts `/proc/thread-self/ns/net` onto
//! `/run/netns/NAME`; the namespace lives on through that mount after the thread ends.
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::fs::File;
use std::io;
use std::path::Path;

use crate::paths::{netns_path, NETNS_DIR as NETNS_RUN_DIR};
use crate::Error;

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

// <linux/nsfs.h>: NS_GET_NSTYPE = _IO(0xb7, 0x3); returns the namespace's CLONE_NEW* type.
nix::ioctl_none!(ns_get_nstype, 0xb7, 0x3);

fn is_netns_fd(f: &File) -> bool {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd, which `f` keeps open.
    let r = unsafe { ns_get_nstype(std::os::fd::AsRawFd::as_raw_fd(f)) };
    r == Ok(libc::CLONE_NEWNET)
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
        Some(n) => {
            let path = netns_path(n);
            let f = File::open(&path).map_err(|e| Error::io(&path, e))?;
            Some((f, path))
        }
        // Already there (the usual case: labnet's main thread never changes namespace):
        // no thread to start.
        None if same_netns("/proc/thread-self/ns/net", "/proc/self/ns/net") => return f(),
        // Called from a thread inside a lab: back to the main thread's namespace.
        None => {
            let path = Path::new("/proc/self/ns/net");
            let f = File::open(path).map_err(|e| Error::io(path, e))?;
            Some((f, path.to_path_buf()))
        }
    };
    std::thread::spawn(move || {
        if let Some((file, path)) = file {
            model::netns::enter_file(&file, &path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ns_inode(path: &str) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).unwrap().ino()
    }

    /// Removes the namespace even when an assertion fails.
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = delete_netns(&self.0);
        }
    }

    #[test]
    #[ignore = "needs root (CAP_NET_ADMIN, netns)"]
    fn create_enter_delete() {
        testkit::require_root();
        let name = testkit::unique("lrns");
        let _gone = Gone(name.clone());
        assert!(!netns_exists(&name));
        create_netns(&name).unwrap();
        assert!(netns_exists(&name), "NS_GET_NSTYPE says {name} is a netns");
        let again = create_netns(&name).unwrap_err().to_string();
        assert!(again.contains("exists"), "{again}");
        let host = ns_inode("/proc/self/ns/net");
        let lab = netns_path(&name).display().to_string();
        // The worker thread is in the lab; from inside it, None goes back to the host's.
        let (inside, back) = in_netns(Some(&name), move || {
            let inside = ns_inode("/proc/thread-self/ns/net");
            let back = in_netns(None, || Ok(ns_inode("/proc/thread-self/ns/net")))?;
            Ok((inside, back))
        })
        .unwrap();
        assert_eq!(inside, ns_inode(&lab));
        assert_ne!(inside, host);
        assert_eq!(back, host);
        delete_netns(&name).unwrap();
        assert!(!netns_exists(&name));
        // Missing is not an error.
        delete_netns(&name).unwrap();
    }

    #[test]
    #[ignore = "needs root (CAP_NET_ADMIN, netns)"]
    fn a_stale_file_is_not_a_netns() {
        testkit::require_root();
        let name = testkit::unique("lrns");
        let _gone = Gone(name.clone());
        prepare_run_dir().unwrap();
        std::fs::write(netns_path(&name), b"").unwrap();
        assert!(!netns_exists(&name));
        assert!(in_netns(Some(&name), || Ok(())).is_err());
    }
}
