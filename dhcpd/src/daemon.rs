//! Daemon plumbing shared by `labnet dhcpd`: entering the lab namespace, sd_notify, signals.
use std::path::Path;

use crate::Error;

/// Moves the calling thread into the network namespace at `path` (/run/netns/LAB). Call it
/// before any other thread or runtime exists: setns only moves the calling thread, and
/// threads created later inherit it.
pub fn enter_netns(path: &Path) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: e,
    })?;
    // SAFETY: a valid fd for the duration of the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::Io {
            path: format!("setns {}", path.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Sends `state` (e.g. "READY=1") to $NOTIFY_SOCKET, if set. Abstract sockets ('@name')
/// too. Returns whether a message was sent.
pub fn sd_notify(state: &str) -> Result<bool, Error> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let err = |e: std::io::Error| Error::Io {
        path: format!("NOTIFY_SOCKET {}", path.to_string_lossy()),
        source: e,
    };
    let sock = std::os::unix::net::UnixDatagram::unbound().map_err(err)?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(err)?;
        sock.send_to_addr(state.as_bytes(), &addr).map_err(err)?;
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
            .map_err(err)?;
    }
    Ok(true)
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
