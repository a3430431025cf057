//! Just enough QMP (QEMU's JSON monitor on a unix socket) to power a VM down, quit it or
//! dump its memory.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;

pub struct Qmp {
    path: PathBuf,
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, Error> {
        let err = |m: String| Error::Qmp {
            path: path.display().to_string(),
            message: m,
        };
        let s = UnixStream::connect(path).map_err(|e| err(e.to_string()))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| err(e.to_string()))?;
        let r = BufReader::new(s.try_clone().map_err(|e| err(e.to_string()))?);
        let mut q = Qmp {
            path: path.to_path_buf(),
            w: s,
            r,
        };
        let greeting = q.read_msg()?;
        if greeting.get("QMP").is_none() {
            return Err(err(format!("unexpected greeting {greeting}")));
        }
        q.execute("qmp_capabilities")?;
        Ok(q)
    }

    fn read_msg(&mut self) -> Result<serde_json::Value, Error> {
        let mut line = String::new();
        let n = self
            .r
            .read_line(&mut line)
            .map_err(|e| self.err(e.to_string()))?;
        if n == 0 {
            return Err(self.err("connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|e| self.err(format!("bad reply {line:?}: {e}")))
    }

    fn err(&self, message: String) -> Error {
        Error::Qmp {
            path: self.path.display().to_string(),
            message,
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
            .map_err(|e| self.err(e.to_string()))?;
        loop {
            let m = self.read_msg()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                return Err(self.err(format!("{cmd}: {e}")));
            }
        }
    }
}
