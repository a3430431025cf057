//! Which kernel image QEMU boots, and how. PVH (the default on microvm): QEMU boots an
//! uncompressed `vmlinux` ELF through its PVH entry, skipping the in-guest decompression of a
//! bzImage (about 2.5 s under TCG, machine.md). A kernel build tree (or a `labnet kernel
//! build --out` dir) has that `vmlinux` beside its bzImage; it is used when it has the PVH
//! ELF note and the tree's config has `VIRTIO_MMIO_CMDLINE_DEVICES` (without ACPI, devices
//! are only announced on the command line). Anything else boots the bzImage, saying why.
//!
//! `--pvh` forces it for any bzImage: the ELF is then cut out of the bzImage's payload
//! (xz/gzip/zstd, decompressed in-process), checked for the note and cached by (path, size,
//! mtime). Measured with the Debian 6.1 kernel on QEMU 10 microvm/TCG: PVH needs
//! `acpi=off,ioapic2=off` (else timer interrupts stop once a virtio-mmio device exists), and
//! that kernel ignores `virtio_mmio.device=` (no CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES): no eth0.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use object::read::elf::{FileHeader, ProgramHeader};

/// How a bzImage's payload is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Xz,
    Gzip,
    Zstd,
}

/// The compressed payload of a bzImage (boot protocol ≥ 2.08) and its compression.
pub fn bzimage_payload(b: &[u8]) -> Option<(&[u8], Compression)> {
    if b.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let le32 = |o: usize| Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?) as usize);
    let version = u16::from_le_bytes(b.get(0x206..0x208)?.try_into().ok()?);
    if version < 0x208 {
        return None; // payload_offset/length appeared in boot protocol 2.08
    }
    let setup_sects = match *b.get(0x1f1)? {
        0 => 4,
        n => n as usize,
    };
    let (off, len) = (le32(0x248)?, le32(0x24c)?);
    let start = ((setup_sects + 1) * 512).checked_add(off)?;
    let p = b.get(start..start.checked_add(len)?)?;
    let c = if p.starts_with(b"\xfd7zXZ\x00") {
        Compression::Xz
    } else if p.starts_with(b"\x1f\x8b") {
        Compression::Gzip
    } else if p.starts_with(b"\x28\xb5\x2f\xfd") {
        Compression::Zstd
    } else {
        return None;
    };
    Some((p, c))
}

/// Decompresses one stream (the kernel appends its size after it; that is ignored).
pub fn decompress(payload: &[u8], c: Compression) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    match c {
        Compression::Xz => liblzma::read::XzDecoder::new(payload).read_to_end(&mut out),
        Compression::Gzip => flate2::read::GzDecoder::new(payload).read_to_end(&mut out),
        Compression::Zstd => ruzstd::decoding::StreamingDecoder::new(payload)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
            .read_to_end(&mut out),
    }?;
    Ok(out)
}

/// Why `--pvh` could not get a vmlinux out of a bzImage (the bzImage then boots as it is).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a bzImage with a known compressed payload")]
    NotBzImage { path: PathBuf },
    #[error("{path}: {compression:?} payload: {source}")]
    Decompress {
        path: PathBuf,
        compression: Compression,
        source: std::io::Error,
    },
    #[error("{path}: the unpacked kernel has no PVH entry note (CONFIG_PVH)")]
    NoPvhNote { path: PathBuf },
}

/// XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point QEMU needs to boot an ELF kernel.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// True when `b` is a 64-bit little-endian ELF with the Xen PVH entry note (parsed with
/// `object`: every offset bounds-checked).
pub fn has_pvh_note(b: &[u8]) -> bool {
    pvh_note(b).unwrap_or(false)
}

/// [`has_pvh_note`] of a file, reading only its headers and notes (a build tree's vmlinux
/// is tens of MB; this runs on every boot).
pub fn file_has_pvh_note(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let cache = object::read::ReadCache::new(f);
    pvh_note(&cache).unwrap_or(false)
}

fn pvh_note<'a, R: object::ReadRef<'a>>(b: R) -> object::read::Result<bool> {
    let h = object::elf::FileHeader64::<object::Endianness>::parse(b)?;
    let e = h.endian()?;
    for ph in h.program_headers(e, b)? {
        let Some(mut notes) = ph.notes(e, b)? else {
            continue;
        };
        while let Some(n) = notes.next()? {
            if n.name() == b"Xen" && n.n_type(e).0 == XEN_ELFNOTE_PHYS32_ENTRY {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Returns a cached vmlinux for the bzImage `kernel`, making it on first use; Err(reason)
/// when that is not possible (the caller then boots the bzImage).
pub fn vmlinux_for(kernel: &Path, cache: &Path) -> Result<PathBuf, UnpackError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| UnpackError::Io { path, source }
    };
    let md = std::fs::metadata(kernel).map_err(io(kernel))?;
    let abs = std::fs::canonicalize(kernel).map_err(io(kernel))?;
    let key = crate::naming::fnv1a(&[
        &abs.display().to_string(),
        &md.size().to_string(),
        &md.mtime().to_string(),
    ]);
    let out = cache.join(format!("vmlinux-{key:016x}"));
    if out.exists() {
        return Ok(out);
    }
    let b = std::fs::read(kernel).map_err(io(kernel))?;
    let (payload, compression) = bzimage_payload(&b).ok_or_else(|| UnpackError::NotBzImage {
        path: kernel.into(),
    })?;
    let elf = decompress(payload, compression).map_err(|source| UnpackError::Decompress {
        path: kernel.into(),
        compression,
        source,
    })?;
    if !has_pvh_note(&elf) {
        return Err(UnpackError::NoPvhNote {
            path: kernel.into(),
        });
    }
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let tmp = cache.join(format!(".vmlinux-{key:016x}.{}", std::process::id()));
    std::fs::write(&tmp, &elf).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &out).map_err(io(&out))?;
    Ok(out)
}

/// `--pvh` / `--no-pvh` / neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PvhMode {
    /// PVH when the kernel is a build tree's bzImage with a PVH vmlinux beside it.
    #[default]
    Auto,
    /// PVH for any bzImage, unpacking the vmlinux from it when there is none beside it.
    Force,
    /// Always the bzImage.
    Off,
}

/// What QEMU is given as `-kernel`, and the one line that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootChoice {
    pub kernel: PathBuf,
    pub pvh: bool,
    pub line: String,
    /// The kernel's CONFIG_HZ, when its build config is known (for `lpj=`, see
    /// [`crate::qemu::cmdline_for`]).
    pub hz: Option<u32>,
}

/// CONFIG_HZ from a kernel `.config` text.
pub fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ=")?.trim().parse().ok())
}

/// A build tree's (or `kernel build --out` dir's) `vmlinux` beside the bzImage, and the
/// config of that build: `T/arch/x86/boot/bzImage` → `T/vmlinux`, `T/.config`;
/// `D/bzImage` → `D/vmlinux`, `D/config` or `D/.config`.
pub fn beside(kernel: &Path) -> Option<(PathBuf, Option<PathBuf>)> {
    let k = std::fs::canonicalize(kernel).ok()?;
    let root = if k.ends_with("arch/x86/boot/bzImage") {
        k.parent()?.parent()?.parent()?.parent()?.to_path_buf()
    } else {
        k.parent()?.to_path_buf()
    };
    let v = root.join("vmlinux");
    if !v.is_file() || v == k {
        return None;
    }
    let config = [root.join(".config"), root.join("config")]
        .into_iter()
        .find(|c| c.is_file());
    Some((v, config))
}

/// Decides between the vmlinux (PVH) and the bzImage for a microvm (`microvm`: false on
/// q35, which always boots the bzImage). `cache`: where `--pvh` keeps unpacked vmlinuxes.
pub fn choose(kernel: &Path, microvm: bool, mode: PvhMode, cache: &Path) -> BootChoice {
    let bz = |why: String| BootChoice {
        kernel: kernel.to_path_buf(),
        pvh: false,
        line: format!("booting the bzImage {} ({why})", kernel.display()),
        hz: None,
    };
    let pvh = |v: PathBuf, how: &str| BootChoice {
        line: format!(
            "booting {} through PVH ({how}; no in-guest decompression)",
            v.display()
        ),
        kernel: v,
        pvh: true,
        hz: None,
    };
    if mode == PvhMode::Off {
        return bz("--no-pvh".into());
    }
    if !microvm {
        return bz("PVH is for microvm; this is q35".into());
    }
    if file_has_pvh_note(kernel) {
        return pvh(kernel.to_path_buf(), "--kernel is a PVH vmlinux");
    }
    match beside(kernel) {
        Some((v, config)) => {
            if !file_has_pvh_note(&v) {
                return bz(format!(
                    "{} has no PVH entry note: CONFIG_PVH is off",
                    v.display()
                ));
            }
            let config_text = config
                .as_ref()
                .and_then(|c| std::fs::read_to_string(c).ok());
            let cmdline_devices = config_text.as_ref().map(|t| {
                t.lines()
                    .any(|l| l == "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y")
            });
            if let (Some(false), Some(c), PvhMode::Auto) = (cmdline_devices, &config, mode) {
                return bz(format!(
                    "{} lacks CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y: no devices under PVH",
                    c.display()
                ));
            }
            BootChoice {
                hz: config_text.as_deref().and_then(config_hz),
                ..pvh(v, "the vmlinux beside the bzImage")
            }
        }
        None if mode == PvhMode::Force => match vmlinux_for(kernel, cache) {
            Ok(v) => pvh(v, "--pvh: unpacked from the bzImage"),
            Err(why) => bz(format!("--pvh: no vmlinux: {why}")),
        },
        None => bz("no vmlinux beside it: not a build tree's bzImage; --pvh unpacks one".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Truncated or garbled headers never panic (every offset is bounds-checked).
    #[test]
    fn malformed_inputs_are_rejected() {
        let mut elf = vec![0u8; 4096];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // 64-bit
        elf[5] = 1; // little-endian
        elf[6] = 1;
        elf[0x20..0x28].copy_from_slice(&0xffff_ffff_ff00u64.to_le_bytes()); // e_phoff far out
        elf[0x36] = 56;
        elf[0x38] = 0xff; // many program headers
        for n in [0, 4, 16, 64, 100, 4096] {
            assert!(!has_pvh_note(&elf[..n]));
        }
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206] = 0x0f;
        bz[0x207] = 0x02;
        bz[0x248..0x24c].copy_from_slice(&u32::MAX.to_le_bytes());
        bz[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(bzimage_payload(&bz).is_none());
        assert!(bzimage_payload(&bz[..0x210]).is_none());
        assert!(decompress(b"\xfd7zXZ\x00garbage", Compression::Xz).is_err());
    }

    #[test]
    fn choice_without_a_tree_is_the_bzimage() {
        let d = tempfile::tempdir().unwrap();
        let k = d.path().join("vmlinuz-x");
        std::fs::write(&k, vec![0u8; 8192]).unwrap();
        let c = choose(&k, true, PvhMode::Auto, d.path());
        assert!(!c.pvh);
        assert!(c.line.contains("no vmlinux beside it"), "{}", c.line);
        assert!(choose(&k, true, PvhMode::Off, d.path())
            .line
            .contains("--no-pvh"));
        assert!(choose(&k, false, PvhMode::Auto, d.path())
            .line
            .contains("q35"));
        // A vmlinux beside it without the PVH note: the bzImage, and why.
        std::fs::write(d.path().join("vmlinux"), b"not an elf").unwrap();
        let c = choose(&k, true, PvhMode::Auto, d.path());
        assert!(!c.pvh && c.line.contains("no PVH entry note"), "{}", c.line);
    }

    #[test]
    fn hz_from_config() {
        assert_eq!(
            config_hz("# c\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(config_hz("CONFIG_HZ_1000=y\n"), None);
    }

    #[test]
    fn not_a_bzimage() {
        assert!(bzimage_payload(&[0u8; 4096]).is_none());
        assert!(!has_pvh_note(b"\x7fELF"));
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("k");
        std::fs::write(&f, vec![0u8; 8192]).unwrap();
        let e = vmlinux_for(&f, d.path()).unwrap_err();
        assert!(
            matches!(&e, UnpackError::NotBzImage { path } if path == &f),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with(&format!("{}: not a bzImage", f.display())));
        let e = vmlinux_for(&d.path().join("nope"), d.path()).unwrap_err();
        assert!(
            matches!(&e, UnpackError::Io { path, .. } if path.ends_with("nope")),
            "{e:?}"
        );
    }

    /// A bzImage header whose payload is cut short names the file and the compression.
    #[test]
    fn truncated_payload_names_file_and_compression() {
        let mut b = vec![0u8; 4096];
        b[0x1f1] = 1; // one setup sector: the payload starts at 1024 + offset
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        b[0x248..0x24c].copy_from_slice(&0u32.to_le_bytes());
        b[0x24c..0x250].copy_from_slice(&64u32.to_le_bytes());
        b[1024..1030].copy_from_slice(b"\xfd7zXZ\x00");
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("bzImage");
        std::fs::write(&f, &b).unwrap();
        let e = vmlinux_for(&f, d.path()).unwrap_err();
        assert!(
            matches!(&e, UnpackError::Decompress { path, compression: Compression::Xz, .. } if path == &f),
            "{e:?}"
        );
        assert!(e.to_string().contains("bzImage: Xz payload: "), "{e}");
    }

    /// The Debian kernel CI unpacks: xz payload, and the ELF inside has the PVH note.
    #[test]
    #[ignore = "needs the Debian kernel .ci/install-deps.sh unpacks (CI runs --include-ignored)"]
    fn debian_bzimage_unpacks_to_pvh_elf() {
        let k = Path::new("/var/cache/labnet-kernel/boot/vmlinuz-6.1.0-56-amd64");
        assert!(
            k.exists(),
            "{} not unpacked (.ci/install-deps.sh)",
            k.display()
        );
        let b = std::fs::read(k).unwrap();
        let (_, c) = bzimage_payload(&b).unwrap();
        assert_eq!(c, Compression::Xz);
        let d = tempfile::tempdir().unwrap();
        let v = vmlinux_for(k, d.path()).unwrap();
        assert!(has_pvh_note(&std::fs::read(&v).unwrap()));
        assert!(file_has_pvh_note(&v) && !file_has_pvh_note(k));
        // Cached: the same file comes back without unpacking again.
        let mtime = std::fs::metadata(&v).unwrap().modified().unwrap();
        assert_eq!(vmlinux_for(k, d.path()).unwrap(), v);
        assert_eq!(std::fs::metadata(&v).unwrap().modified().unwrap(), mtime);
    }
}
