//! The fast microvm boot: QEMU boots an uncompressed `vmlinux` ELF through its PVH entry,
//! which skips the in-guest decompression of a bzImage (about 2.5 s under TCG, machine.md).
//! For a kernel build tree the ELF is `vmlinux` at the tree's root; for a distro bzImage it
//! is cut out of the bzImage's payload (xz/gzip/zstd, decompressed with the system tool),
//! checked for the PVH ELF note, and cached by (path, size, mtime).
//!
//! Opt-in (`--pvh`). Measured with the Debian 6.1 kernel on QEMU 10 microvm/TCG: with ACPI
//! (or the second IOAPIC) on, a PVH boot hangs once a virtio-mmio device exists (timer
//! interrupts stop: printk time freezes); with `acpi=off,ioapic2=off` it boots and powers off
//! (by reset) in ~2.7 s instead of ~6.8 s, but then devices are only announced through
//! `virtio_mmio.device=` on the command line, which that kernel ignores
//! (no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), so it has no eth0. Kernels built for microvm
//! usually have that option.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The compressed payload of a bzImage and the tool that unpacks it.
pub fn bzimage_payload(b: &[u8]) -> Option<(&[u8], &'static str)> {
    if b.len() < 0x250 || &b[0x202..0x206] != b"HdrS" {
        return None;
    }
    let version = u16::from_le_bytes([b[0x206], b[0x207]]);
    if version < 0x208 {
        return None; // payload_offset/length appeared in boot protocol 2.08
    }
    let setup_sects = match b[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let off = u32::from_le_bytes(b[0x248..0x24c].try_into().unwrap()) as usize;
    let len = u32::from_le_bytes(b[0x24c..0x250].try_into().unwrap()) as usize;
    let start = (setup_sects + 1) * 512 + off;
    let p = b.get(start..start.checked_add(len)?)?;
    let tool = if p.starts_with(b"\xfd7zXZ\x00") {
        "xz"
    } else if p.starts_with(b"\x1f\x8b") {
        "gzip"
    } else if p.starts_with(b"\x28\xb5\x2f\xfd") {
        "zstd"
    } else {
        return None;
    };
    Some((p, tool))
}

/// True when the ELF has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY = 18), which
/// QEMU needs to boot it directly.
pub fn has_pvh_note(b: &[u8]) -> bool {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 {
        return false;
    }
    // Every offset and size comes from the file: checked arithmetic, bounds-checked reads
    // (an overflow here was a fuzzing finding: fuzz/corpus/kernel/crash-phdr-offset-overflow).
    let word = |o: usize, n: usize| -> Option<usize> {
        let s = b.get(o..o.checked_add(n)?)?;
        Some(
            s.iter()
                .rev()
                .fold(0usize, |acc, &x| (acc << 8) | x as usize),
        )
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (word(0x20, 8), word(0x36, 2), word(0x38, 2))
    else {
        return false;
    };
    for i in 0..phnum {
        let Some(ph) = i.checked_mul(phentsize).and_then(|x| x.checked_add(phoff)) else {
            break;
        };
        if word(ph, 4) != Some(4) {
            continue; // PT_NOTE only
        }
        let (Some(mut o), Some(size)) = (
            ph.checked_add(8).and_then(|p| word(p, 8)),
            ph.checked_add(32).and_then(|p| word(p, 8)),
        ) else {
            continue;
        };
        let end = o.saturating_add(size).min(b.len());
        while o.saturating_add(12) <= end {
            let (Some(namesz), Some(descsz), Some(ty)) =
                (word(o, 4), word(o + 4, 4), word(o + 8, 4))
            else {
                break;
            };
            let name = (o + 12)
                .checked_add(namesz)
                .and_then(|e| b.get(o + 12..e))
                .unwrap_or(&[]);
            if name == b"Xen\0" && ty == 18 {
                return true;
            }
            let Some(next) = namesz
                .div_ceil(4)
                .checked_add(descsz.div_ceil(4))
                .and_then(|words| words.checked_mul(4))
                .and_then(|n| n.checked_add(o + 12))
            else {
                break;
            };
            o = next;
        }
    }
    false
}

/// Returns a cached vmlinux for the bzImage `kernel`, making it on first use; Err(reason)
/// when that is not possible (the caller then boots the bzImage).
pub fn vmlinux_for(kernel: &Path, cache: &Path) -> Result<PathBuf, String> {
    let md = std::fs::metadata(kernel).map_err(|e| e.to_string())?;
    let abs = std::fs::canonicalize(kernel).map_err(|e| e.to_string())?;
    let key = crate::naming::fnv1a(&[
        &abs.display().to_string(),
        &md.size().to_string(),
        &md.mtime().to_string(),
    ]);
    let out = cache.join(format!("vmlinux-{key:016x}"));
    if out.exists() {
        return Ok(out);
    }
    let b = std::fs::read(kernel).map_err(|e| e.to_string())?;
    let (payload, tool) =
        bzimage_payload(&b).ok_or("not a bzImage with a known compressed payload")?;
    let bin = crate::which(tool).ok_or_else(|| format!("{tool} not installed"))?;
    let mut args = vec!["-dc"];
    if tool == "xz" {
        args.push("--single-stream"); // the kernel appends its size after the stream
    }
    let mut child = Command::new(bin)
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{tool}: {e}"))?;
    let mut stdin = child.stdin.take().unwrap();
    let data = payload.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let o = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    let _ = feeder.join();
    // gzip exits 2 for the trailing size bytes ("trailing garbage ignored"); judge the output.
    if !has_pvh_note(&o.stdout) {
        return Err("the unpacked kernel has no PVH entry note (CONFIG_PVH)".into());
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let tmp = cache.join(format!(".vmlinux-{key:016x}.{}", std::process::id()));
    std::fs::write(&tmp, &o.stdout).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_bzimage() {
        assert!(bzimage_payload(&[0u8; 4096]).is_none());
        assert!(!has_pvh_note(b"\x7fELF"));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("k");
        std::fs::write(&f, vec![0u8; 8192]).unwrap();
        assert!(vmlinux_for(&f, d.path()).is_err());
    }

    /// The Debian kernel CI unpacks: xz payload, and the ELF inside has the PVH note.
    #[test]
    fn debian_bzimage_unpacks_to_pvh_elf() {
        let k = Path::new("/var/cache/labnet-kernel/boot/vmlinuz-6.1.0-56-amd64");
        if !k.exists() {
            eprintln!("skip: {} not unpacked", k.display());
            return;
        }
        let b = std::fs::read(k).unwrap();
        let (_, tool) = bzimage_payload(&b).unwrap();
        assert_eq!(tool, "xz");
        let d = tempfile::tempdir().unwrap();
        let v = vmlinux_for(k, d.path()).unwrap();
        assert!(has_pvh_note(&std::fs::read(&v).unwrap()));
        // Cached: the same file comes back without unpacking again.
        let mtime = std::fs::metadata(&v).unwrap().modified().unwrap();
        assert_eq!(vmlinux_for(k, d.path()).unwrap(), v);
        assert_eq!(std::fs::metadata(&v).unwrap().modified().unwrap(), mtime);
    }
}
