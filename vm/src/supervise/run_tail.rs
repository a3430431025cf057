//! Follows a `vm run` guest's serial log: the command's output and status between the
//! init's markers, and when each boot milestone was seen.
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::initramfs;

/// When the host saw each milestone of a run, measured from [`prepare`]'s start (serial log
/// polled every 5 ms). `kernel` is the first console byte: with `timings` the kernel prints
/// its notices (loglevel=6), so that is its first line, "Linux version ...".
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub qemu_spawned: Option<Duration>,
    pub qemu_ready: Option<Duration>,
    pub kernel: Option<Duration>,
    pub init: Option<Duration>,
    pub link_up: Option<Duration>,
    pub lease: Option<Duration>,
    pub command_start: Option<Duration>,
    pub command_end: Option<Duration>,
    pub qemu_exit: Option<Duration>,
}

impl Timings {
    /// One line: `qemu start 0.05 s, ... qemu exit 2.10 s` (missing milestones left out).
    pub fn render(&self) -> String {
        let items = [
            ("qemu start", self.qemu_spawned),
            ("qmp up", self.qemu_ready),
            ("kernel start", self.kernel),
            ("/init", self.init),
            ("link up", self.link_up),
            ("lease", self.lease),
            ("command start", self.command_start),
            ("command end", self.command_end),
            ("qemu exit", self.qemu_exit),
        ];
        items
            .iter()
            .filter_map(|(n, t)| t.map(|t| format!("{n} {:.2} s", t.as_secs_f64())))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Follows the serial log and picks the command's output and status out of it.
pub(super) struct RunTail {
    file: Option<std::fs::File>,
    buf: Vec<u8>,
    in_output: bool,
    pending_newline: bool,
    pub(super) rc: Option<i32>,
    verbose: bool,
    /// Say on stderr when the guest got its lease and started the command, as NAME: ….
    progress: Option<String>,
    pub(super) begun: bool,
    pub(super) panic: Option<String>,
    pub(super) origin: Instant,
    pub(super) timings: Timings,
}

impl RunTail {
    pub(super) fn new(verbose: bool, progress: Option<String>) -> RunTail {
        RunTail {
            file: None,
            buf: vec![],
            in_output: false,
            pending_newline: false,
            rc: None,
            verbose,
            progress,
            begun: false,
            panic: None,
            origin: Instant::now(),
            timings: Timings::default(),
        }
    }

    pub(super) fn poll(&mut self, path: &Path, out: &mut dyn Write) {
        if self.file.is_none() {
            self.file = std::fs::File::open(path).ok();
        }
        let Some(f) = self.file.as_mut() else { return };
        let mut chunk = [0u8; 8192];
        loop {
            match f.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.timings
                        .kernel
                        .get_or_insert_with(|| self.origin.elapsed());
                    self.buf.extend_from_slice(&chunk[..n])
                }
            }
        }
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=i).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line(&line, out);
        }
        let _ = out.flush();
    }

    fn line(&mut self, line: &[u8], out: &mut dyn Write) {
        let s = String::from_utf8_lossy(line);
        let now = self.origin.elapsed();
        let t = &mut self.timings;
        for (marker, slot) in [
            (initramfs::INIT_MARK, &mut t.init),
            (initramfs::LINK_MARK, &mut t.link_up),
            (initramfs::LEASE_MARK, &mut t.lease),
            (initramfs::RUN_BEGIN, &mut t.command_start),
            (initramfs::RUN_END_PREFIX, &mut t.command_end),
        ] {
            if slot.is_none() && s.contains(marker) {
                *slot = Some(now);
            }
        }
        if self.panic.is_none() {
            if let Some(i) = s.find("Kernel panic - ") {
                self.panic = Some(s[i..].trim_end().to_string());
            }
        }
        if !self.in_output {
            if s.contains(initramfs::RUN_BEGIN) {
                self.in_output = true;
                self.begun = true;
                if let Some(name) = &self.progress {
                    eprintln!("{name}: running the command");
                }
            } else if self.verbose {
                eprintln!("{s}");
            } else if let Some(name) = &self.progress {
                if let Some(i) = s.find("labnet-init: ") {
                    // The init's own news: its lease, or what went wrong on the way.
                    eprintln!("{name}: {}", s[i + "labnet-init: ".len()..].trim_end());
                }
            }
            return;
        }
        if let Some(i) = s.find(initramfs::RUN_END_PREFIX) {
            let rest = &s[i + initramfs::RUN_END_PREFIX.len()..];
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            self.rc = digits.parse().ok();
            self.in_output = false;
            // The marker follows a newline the init added itself; drop it.
            self.pending_newline = false;
            return;
        }
        if self.pending_newline {
            let _ = out.write_all(b"\n");
        }
        let _ = out.write_all(line);
        self.pending_newline = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(log: &[u8], verbose: bool) -> (String, Option<i32>) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("serial.log");
        std::fs::write(&p, b"").unwrap();
        let mut t = RunTail::new(verbose, None);
        let mut out = vec![];
        // Written in pieces, as QEMU does, with polls in between.
        for chunk in log.chunks(7) {
            let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
            f.write_all(chunk).unwrap();
            t.poll(&p, &mut out);
        }
        (String::from_utf8(out).unwrap(), t.rc)
    }

    #[test]
    fn timings_pick_up_each_milestone_once() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("serial.log");
        std::fs::write(&p, b"[0.1] Linux version 6.1\r\nlabnet-init: /init running\r\nlabnet-init: eth0 up\r\nlabnet-init: lease 192.168.0.100 on eth0\r\n@@LABNET-RUN-BEGIN@@\r\nlabnet-init: /init running\r\n@@LABNET-RUN-END rc=0@@\r\n").unwrap();
        let mut t = RunTail::new(false, None);
        let mut out = vec![];
        t.poll(&p, &mut out);
        let tm = &t.timings;
        for (n, v) in [
            ("kernel", tm.kernel),
            ("init", tm.init),
            ("link", tm.link_up),
            ("lease", tm.lease),
            ("start", tm.command_start),
            ("end", tm.command_end),
        ] {
            assert!(v.is_some(), "{n} missing");
        }
        assert!(tm.init <= tm.command_start && tm.command_start <= tm.command_end);
        let r = tm.render();
        assert!(
            r.starts_with("kernel start ")
                && r.contains(", /init ")
                && r.contains(", command end "),
            "{r}"
        );
        // The command's own output mentioning a marker does not move the milestone.
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "labnet-init: /init running"
        );
    }

    #[test]
    fn run_output_between_markers() {
        let log = b"\x1bc\x1b[?7l[    1.0] boot noise\r\n@@LABNET-RUN-BEGIN@@\r\nhi\r\nthere\r\n\r\n@@LABNET-RUN-END rc=3@@\r\n[    2.5] reboot: Power down\r\n";
        assert_eq!(tail_of(log, false), ("hi\nthere\n".into(), Some(3)));
    }

    #[test]
    fn output_without_final_newline_and_empty_output() {
        let log = b"@@LABNET-RUN-BEGIN@@\r\nno-newline\r\n@@LABNET-RUN-END rc=0@@\r\n";
        assert_eq!(tail_of(log, false), ("no-newline".into(), Some(0)));
        let log = b"@@LABNET-RUN-BEGIN@@\r\n\r\n@@LABNET-RUN-END rc=127@@\r\n";
        assert_eq!(tail_of(log, false), ("".into(), Some(127)));
    }

    #[test]
    fn no_end_marker_means_no_status() {
        let log = b"@@LABNET-RUN-BEGIN@@\r\nhalf\r\nKernel panic\r\n";
        let (out, rc) = tail_of(log, false);
        assert_eq!(rc, None);
        assert!(out.starts_with("half"), "{out}");
    }
}
