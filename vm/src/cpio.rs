//! A minimal `newc` cpio writer: what the kernel's initramfs unpacker reads. The archive is
//! left uncompressed on purpose: under TCG, decompressing a gzip initramfs in the guest costs
//! more than QEMU copying a few extra megabytes into guest memory.
use std::io::{self, Write};

pub struct Writer<W: Write> {
    out: W,
    ino: u32,
    written: u64,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Writer {
            out,
            ino: 0,
            written: 0,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let hdr = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so the archive is reproducible
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..n])
    }

    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[])
    }
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, S_IFREG | (perm & 0o7777), (0, 0), data)
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }
    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, S_IFCHR | perm, (major, minor), &[])
    }

    /// Writes the trailer and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_newc() {
        let mut w = Writer::new(Vec::new());
        w.dir("bin").unwrap();
        w.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        // Each header is 110 bytes; "bin\0" pads to 4 -> next header at 112... check via search.
        let s = String::from_utf8_lossy(&out);
        assert_eq!(s.matches("070701").count(), 4);
        assert!(s.contains("init\0"));
        assert!(s.contains("TRAILER!!!\0"));
    }

    /// Cross-check with the system's cpio, when installed: it must list what we wrote.
    #[test]
    #[ignore = "needs cpio (installed by .ci/install-deps.sh; CI runs --include-ignored)"]
    fn system_cpio_reads_it() {
        let cpio = crate::which("cpio").expect("cpio not installed (.ci/install-deps.sh)");
        let mut w = Writer::new(Vec::new());
        w.dir("etc").unwrap();
        w.file("etc/hostname", 0o644, b"vm1\n").unwrap();
        w.symlink("etc/link", "hostname").unwrap();
        let out = w.finish().unwrap();
        let mut child = std::process::Command::new(cpio)
            .args(["-t", "-v"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&out).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let list = String::from_utf8_lossy(&o.stdout);
        assert!(list.contains("etc/hostname"), "{list}");
        assert!(list.contains("etc/link -> hostname"), "{list}");
        assert!(
            list.lines().next().unwrap().starts_with("drwxr-xr-x"),
            "{list}"
        );
    }
}
