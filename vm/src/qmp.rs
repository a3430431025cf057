//! Just enough QMP (QEMU's JSON monitor on a unix socket) to power a VM down, quit it or
//! dump its memory.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{Error, QmpFailure};

pub struct Qmp {
    path: PathBuf,
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, Error> {
        let err = |failure| Error::Qmp {
            path: path.display().to_string(),
            command: None,
            failure,
        };
        let io = |e| err(QmpFailure::Io(e));
        let s = UnixStream::connect(path).map_err(io)?;
        s.set_read_timeout(Some(timeout)).map_err(io)?;
        let r = BufReader::new(s.try_clone().map_err(io)?);
        let mut q = Qmp {
            path: path.to_path_buf(),
            w: s,
            r,
        };
        let greeting = q.read_msg(None)?;
        if greeting.get("QMP").is_none() {
            return Err(err(QmpFailure::Greeting(greeting.to_string())));
        }
        q.execute("qmp_capabilities")?;
        Ok(q)
    }

    /// The next message, read while running `cmd` (None: while connecting).
    fn read_msg(&mut self, cmd: Option<&str>) -> Result<serde_json::Value, Error> {
        let mut line = String::new();
        let n = self
            .r
            .read_line(&mut line)
            .map_err(|e| self.err(cmd, QmpFailure::Io(e)))?;
        if n == 0 {
            return Err(self.err(cmd, QmpFailure::Closed));
        }
        serde_json::from_str(&line)
            .map_err(|source| self.err(cmd, QmpFailure::BadReply { line, source }))
    }

    fn err(&self, cmd: Option<&str>, failure: QmpFailure) -> Error {
        Error::Qmp {
            path: self.path.display().to_string(),
            command: cmd.map(str::to_string),
            failure,
        }
    }

    /// Runs a command without arguments and returns its "return" value (events are skipped).
    pub fn execute(&mut self, cmd: &str) -> Result<serde_json::Value, Error> {
        self.execute_with(cmd, None)
    }

    /// Runs a command with these arguments (a JSON object) and returns its "return" value.
    pub fn execute_with(
        &mut self,
        cmd: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, Error> {
        let mut req = serde_json::json!({ "execute": cmd });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let msg = format!("{req}\n");
        self.w
            .write_all(msg.as_bytes())
            .map_err(|e| self.err(Some(cmd), QmpFailure::Io(e)))?;
        loop {
            let m = self.read_msg(Some(cmd))?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                // QEMU's error object: {"class": "GenericError", "desc": "..."}.
                let field = |k: &str| match &e[k] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "?".to_string(),
                    v => v.to_string(),
                };
                let failure = QmpFailure::Refused {
                    class: field("class"),
                    desc: field("desc"),
                };
                return Err(self.err(Some(cmd), failure));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A monitor that greets, accepts qmp_capabilities and refuses the next command the
    /// way QEMU does: the error carries the command and QEMU's class and description.
    #[test]
    fn a_refused_command_names_it_and_keeps_qemus_class() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let l = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let mut line = String::new();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .unwrap();
            r.read_line(&mut line).unwrap();
            w.write_all(b"{\"return\": {}}\n").unwrap();
            r.read_line(&mut line).unwrap();
            w.write_all(b"{\"event\": \"X\"}\n{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'path9' not found\"}}\n")
                .unwrap();
        });
        let mut q = Qmp::connect(&sock, Duration::from_secs(5)).unwrap();
        let e = q
            .execute_with("device_del", Some(serde_json::json!({ "id": "path9" })))
            .unwrap_err();
        server.join().unwrap();
        match &e {
            Error::Qmp {
                command: Some(c),
                failure: QmpFailure::Refused { class, desc },
                ..
            } => {
                assert_eq!(c, "device_del");
                assert_eq!(class, "DeviceNotFound");
                assert_eq!(desc, "Device 'path9' not found");
            }
            other => panic!("not a refusal: {other:?}"),
        }
        assert_eq!(
            e.to_string(),
            format!(
                "QMP {}: device_del: DeviceNotFound: Device 'path9' not found",
                sock.display()
            )
        );
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_io_failure_while_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let e = Qmp::connect(&dir.path().join("none.sock"), Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(
            matches!(&e, Error::Qmp { command: None, failure: QmpFailure::Io(io), .. } if io.kind() == std::io::ErrorKind::NotFound),
            "{e:?}"
        );
    }
}
