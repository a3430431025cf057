//! Daemon plumbing shared by `labnet dhcpd`: entering the lab namespace, sd_notify, signals.
use std::path::Path;

use crate::Error;

/// Moves the calling thread into the network namespace at `path` (/run/netns/LAB). Call it
/// before any other thread or runtime exists: setns only moves the calling thread, and
/// threads created later inherit it.
pub fn enter_netns(path: &Path) -> Result<(), Error> {
    model::netns::enter_path(path).map_err(|e| Error::Io {
        path: format!("setns {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Sends `state` (e.g. "READY=1") to $NOTIFY_SOCKET, if set. Abstract sockets ('@name')
/// too. Returns whether a message was sent.
pub fn sd_notify(state: &str) -> Result<bool, Error> {
    Ok(model::notify::notify(state))
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
