//! The few system calls kmount makes: add_key(2), mount(2), and reading what the running
//! kernel offers. Thin wrappers so the binary stays free of policy.
use std::ffi::CString;
use std::io;
use std::path::Path;

/// `KEY_SPEC_PROCESS_KEYRING`: the key lives as long as the process, which is long enough
/// because the kernel copies the secret while parsing `key=` during mount(2) (mount.ceph
/// uses the same keyring).
pub const KEY_SPEC_PROCESS_KEYRING: i32 = -2;

fn cstr(s: &str, what: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// add_key(2) with type "ceph". `ENODEV` means the kernel has no "ceph" key type
/// (libceph not loaded or too old).
pub fn add_ceph_key(description: &str, payload: &[u8]) -> io::Result<i64> {
    let ty = cstr("ceph", "key type")?;
    let desc = cstr(description, "key description")?;
    // SAFETY: all pointers are valid for the call; the kernel copies the payload.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr() as *const libc::c_void,
            payload.len(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// mount(2).
pub fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
    let (s, t, f, d) = (
        cstr(source, "source")?,
        cstr(target, "target")?,
        cstr(fstype, "fstype")?,
        cstr(data, "data")?,
    );
    // SAFETY: valid NUL-terminated strings for the duration of the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags as libc::c_ulong,
            d.as_ptr() as *const libc::c_void,
        )
    };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `uname -r`.
pub fn kernel_release() -> io::Result<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string())
}

/// Whether `fs` is listed in /proc/filesystems.
pub fn filesystem_available(fs: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs)))
        .unwrap_or(false)
}

/// The ceph module advertises new-syntax support here (what mount.ceph checks).
pub const MOUNT_SYNTAX_V2_PARAM: &str = "/sys/module/ceph/parameters/mount_syntax_v2";

pub fn kernel_has_mount_syntax_v2() -> bool {
    Path::new(MOUNT_SYNTAX_V2_PARAM).exists()
}

/// Dynamic debug control files, in the order to try.
pub const DYNDBG_CONTROL: &[&str] = &[
    "/proc/dynamic_debug/control",
    "/sys/kernel/debug/dynamic_debug/control",
];

/// Finds an executable in $PATH (and the sbin directories busybox systems use).
pub fn which(prog: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/sbin", "/usr/sbin", "/bin", "/usr/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(prog))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        });
    found
}

/// A readable explanation of a mount(2) errno for a CephFS mount.
pub fn explain_mount_errno(err: &io::Error, fs: Option<&str>, path: &str) -> String {
    match err.raw_os_error() {
        Some(libc::ENODEV) => "the kernel has no ceph file system (module not loaded or not built?)".into(),
        Some(libc::ENOENT) => format!(
            "no such file system {:?} or path {path:?} in the cluster (or the mount point does not exist)",
            fs.unwrap_or("(default)")
        ),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied: wrong name/secret or caps, or not root".into(),
        Some(libc::EHOSTUNREACH) => "no MDS is up (or this client may not see it)".into(),
        Some(libc::ETIMEDOUT) => "timed out talking to the monitors (wrong address, firewall, or ms_mode?)".into(),
        Some(libc::EINVAL) => "the kernel rejected the source or options (see dmesg)".into(),
        _ => String::new(),
    }
}
