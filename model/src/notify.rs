//! sd_notify without libsystemd: one datagram to $NOTIFY_SOCKET (a path, or an abstract
//! socket written `@name`). Used by systemd (Type=notify) and by `labnet up`, which both wait
//! for READY=1 before they count the daemon as started.
use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. "READY=1") if $NOTIFY_SOCKET is set. Returns whether it was sent.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    sent.is_ok()
}

/// `READY=1`: the sockets are bound and queries will be answered.
pub fn ready() -> bool {
    notify(READY)
}

const READY: &str = "READY=1";

/// The receiving end: whether one datagram (newline-separated assignments) says READY=1.
pub fn says_ready(datagram: &[u8]) -> bool {
    datagram
        .split(|b| *b == b'\n')
        .any(|l| l == READY.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_among_other_assignments() {
        assert!(says_ready(b"READY=1"));
        assert!(says_ready(b"STATUS=serving\nREADY=1\n"));
        assert!(!says_ready(b"READY=0"));
        assert!(!says_ready(b"STATUS=READY=1"));
        assert!(!says_ready(b""));
    }

    // Environment is process-wide: both cases in one test.
    #[test]
    fn sends_to_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &p);
        assert!(ready());
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("labnet-dns-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
        assert!(notify("STOPPING=1"));
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!ready());
    }
}
