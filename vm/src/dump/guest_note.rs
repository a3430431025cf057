//! The guest kernel's VMCOREINFO note, read out of a dump's guest memory with the vmlinux's
//! symbols, for when QEMU could not put it in: on a PVH boot (no ACPI) the 6.1 kernel's fw_cfg
//! driver fails, so the vmcoreinfo device never learns where the note is (see qemu.rs).
//!
//! The kernel keeps the note in a page it allocated (`u32 *vmcoreinfo_note`, kernel/
//! crash_core.c, CRASH_CORE): the pointer is a kernel-image variable, the page is in the direct
//! map. x86_64 only; anything that does not check out gives no note rather than a wrong one.
use std::path::Path;

use object::{Object, ObjectSection, ObjectSymbol};

use super::elf_core::Core;

/// Where the x86_64 kernel image is mapped: image virtual = physical + this + phys_base.
const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// The direct map's base without a `page_offset_base` variable (no RANDOMIZE_MEMORY, 4-level).
const PAGE_OFFSET_DEFAULT: u64 = 0xffff_8880_0000_0000;
/// `VMCOREINFO_BYTES` is a page: a bigger desc is not a VMCOREINFO note.
const MAX_DESC: u32 = 4096;
const NAME: &[u8] = b"VMCOREINFO\0";

/// Why the note could not be taken from guest memory.
#[derive(Debug, thiserror::Error)]
pub enum Missing {
    #[error("no vmlinux is known for the booted kernel {0} (it needs the ELF with symbols)")]
    NoVmlinux(String),
    #[error("{path}: {what}")]
    Vmlinux { path: String, what: String },
    #[error("the dump is not of an x86_64 guest")]
    NotX86_64,
    #[error("guest memory: {0}")]
    Memory(String),
    #[error("the vmcore: {0}")]
    Layout(String),
}

/// What the finder needs of the vmlinux: symbol addresses and the kernel's release.
#[derive(Debug, Clone)]
pub struct Symbols {
    pub vmcoreinfo_note: u64,
    pub phys_base: u64,
    /// Only with RANDOMIZE_MEMORY or 5-level paging; else the direct map is at its default.
    pub page_offset_base: Option<u64>,
    /// `init_uts_ns.name.release` in the image: what the note's OSRELEASE must say.
    pub release: String,
}

impl Symbols {
    pub fn of_vmlinux(path: &Path) -> Result<Symbols, Missing> {
        let bad = |what: String| Missing::Vmlinux {
            path: path.display().to_string(),
            what,
        };
        let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let elf = object::File::parse(&*data).map_err(|e| bad(e.to_string()))?;
        if elf.architecture() != object::Architecture::X86_64 {
            return Err(bad("not an x86_64 kernel".into()));
        }
        let find = |name: &str| elf.symbols().find(|s| s.name() == Ok(name));
        let addr = |name: &str| {
            find(name)
                .map(|s| s.address())
                .ok_or_else(|| bad(format!("no symbol {name} (a stripped vmlinux?)")))
        };
        // struct uts_namespace starts with struct new_utsname: sysname[65], nodename[65],
        // release[65].
        let uts = find("init_uts_ns").ok_or_else(|| bad("no symbol init_uts_ns".into()))?;
        let release = uts
            .section_index()
            .and_then(|i| elf.section_by_index(i).ok())
            .and_then(|s| s.data_range(uts.address() + 130, 65).ok().flatten())
            .and_then(|r| r.split(|b| *b == 0).next())
            .and_then(|r| std::str::from_utf8(r).ok())
            .filter(|r| !r.is_empty())
            .ok_or_else(|| bad("cannot read init_uts_ns's release".into()))?;
        Ok(Symbols {
            vmcoreinfo_note: addr("vmcoreinfo_note")?,
            phys_base: addr("phys_base")?,
            page_offset_base: find("page_offset_base").map(|s| s.address()),
            release: release.to_string(),
        })
    }
}

/// The guest's VMCOREINFO note (header, name and desc, as an ELF note) from `core`'s memory.
pub fn find(core: &Core, syms: &Symbols) -> Result<Vec<u8>, Missing> {
    if core.machine() != object::elf::EM_X86_64 {
        return Err(Missing::NotX86_64);
    }
    let mem = |what: String| Missing::Memory(what);
    let image_phys = |v: u64, name: &str| {
        v.checked_sub(START_KERNEL_MAP)
            .ok_or_else(|| mem(format!("{name} at {v:#x} is not in the kernel image")))
    };
    let read = |paddr: u64, name: &str| {
        core.read_phys_u64(paddr)
            .ok_or_else(|| mem(format!("{name} (physical {paddr:#x}) is not in the dump")))
    };
    // A PVH boot (and any boot without the decompressor's relocation) runs the image at its
    // link address: phys_base is 0, so the symbols' physical addresses are their link ones.
    let phys_base = read(image_phys(syms.phys_base, "phys_base")?, "phys_base")?;
    if phys_base != 0 {
        return Err(mem(format!(
            "phys_base is {phys_base:#x}: the kernel was relocated"
        )));
    }
    let page_offset = match syms.page_offset_base {
        Some(v) => read(image_phys(v, "page_offset_base")?, "page_offset_base")?,
        None => PAGE_OFFSET_DEFAULT,
    };
    let ptr = read(
        image_phys(syms.vmcoreinfo_note, "vmcoreinfo_note")?,
        "vmcoreinfo_note",
    )?;
    let paddr = ptr.checked_sub(page_offset).ok_or_else(|| {
        mem(format!(
            "vmcoreinfo_note is {ptr:#x}, not in the direct map at {page_offset:#x}"
        ))
    })?;
    let head = core.read_phys(paddr, 12).ok_or_else(|| {
        mem(format!(
            "the note at physical {paddr:#x} is not in the dump"
        ))
    })?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (namesz, descsz, ty) = (word(0), word(4), word(8));
    if namesz as usize != NAME.len() || descsz == 0 || descsz > MAX_DESC {
        return Err(mem(format!(
            "no VMCOREINFO note at physical {paddr:#x} (name size {namesz}, desc size {descsz})"
        )));
    }
    let name_at = paddr.saturating_add(12);
    let desc_at = name_at.saturating_add(NAME.len().div_ceil(4) as u64 * 4);
    let name = core.read_phys(name_at, NAME.len());
    let desc = core.read_phys(desc_at, descsz as usize);
    let (Some(name), Some(desc)) = (name, desc) else {
        return Err(mem(format!("the note at {paddr:#x} is not in the dump")));
    };
    if name != NAME {
        return Err(mem(format!(
            "the note at physical {paddr:#x} is not named VMCOREINFO"
        )));
    }
    let release = desc
        .strip_prefix(b"OSRELEASE=")
        .and_then(|d| d.split(|b| *b == b'\n').next())
        .map(String::from_utf8_lossy);
    match release {
        Some(r) if r == syms.release => {}
        Some(r) => {
            return Err(mem(format!(
                "the note is of release {r}, the vmlinux of {}",
                syms.release
            )))
        }
        None => return Err(mem("the note's desc does not start with OSRELEASE=".into())),
    }
    // A fresh note: its padding zeroed (the kernel's page may hold old bytes there).
    Ok(super::elf_core::encode_note(NAME, ty, &desc))
}

#[cfg(test)]
mod tests {
    use super::super::elf_core::{encode_note as elf_note, tests::synthetic};
    use super::*;

    const DESC: &[u8] = b"OSRELEASE=6.1.192-3\nPAGESIZE=4096\n";
    const NOTE_PAGE: u64 = 0x3000;

    fn syms() -> Symbols {
        Symbols {
            vmcoreinfo_note: START_KERNEL_MAP + 0x1000,
            phys_base: START_KERNEL_MAP + 0x1008,
            page_offset_base: None,
            release: "6.1.192-3".into(),
        }
    }

    /// 16 KiB of guest memory with the pointer at 0x1000, phys_base at 0x1008 and `the_note`
    /// in the direct-mapped page at NOTE_PAGE.
    fn memory(ptr: u64, phys_base: u64, the_note: &[u8]) -> Vec<u8> {
        let mut m = vec![0xaau8; 0x4000];
        m[0x1000..0x1008].copy_from_slice(&ptr.to_le_bytes());
        m[0x1008..0x1010].copy_from_slice(&phys_base.to_le_bytes());
        m[0x1010..0x1018].copy_from_slice(&0xffff_9000_0000_0000u64.to_le_bytes());
        m[NOTE_PAGE as usize..][..the_note.len()].copy_from_slice(the_note);
        m
    }

    fn find_in(mem: &[u8], syms: &Symbols) -> Result<Vec<u8>, Missing> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmcore");
        std::fs::write(&p, synthetic(&[(0, mem)])).unwrap();
        find(&Core::open(&p).unwrap(), syms)
    }

    #[test]
    fn finds_the_note_through_the_pointer_in_the_direct_map() {
        let n = elf_note(NAME, 0, DESC);
        let mem = memory(PAGE_OFFSET_DEFAULT + NOTE_PAGE, 0, &n);
        assert_eq!(find_in(&mem, &syms()).unwrap(), n);
        // With RANDOMIZE_MEMORY the base is a variable (here at 0x1010).
        let s = Symbols {
            page_offset_base: Some(START_KERNEL_MAP + 0x1010),
            ..syms()
        };
        let mem = memory(0xffff_9000_0000_0000 + NOTE_PAGE, 0, &n);
        assert_eq!(find_in(&mem, &s).unwrap(), n);
    }

    #[test]
    fn anything_that_does_not_check_out_gives_no_note() {
        let good = elf_note(NAME, 0, DESC);
        let ptr = PAGE_OFFSET_DEFAULT + NOTE_PAGE;
        let cases: Vec<(&str, Vec<u8>, Symbols)> = vec![
            ("relocated", memory(ptr, 0x200000, &good), syms()),
            ("not set", memory(0, 0, &good), syms()),
            (
                "outside the dump",
                memory(ptr + (1 << 30), 0, &good),
                syms(),
            ),
            (
                "other name",
                memory(ptr, 0, &elf_note(b"VMCOREINFX\0", 0, DESC)),
                syms(),
            ),
            (
                "no OSRELEASE",
                memory(ptr, 0, &elf_note(NAME, 0, b"PAGESIZE=4096\n")),
                syms(),
            ),
            (
                "other release",
                memory(ptr, 0, &good),
                Symbols {
                    release: "6.1.0".into(),
                    ..syms()
                },
            ),
            (
                "symbol outside the image",
                memory(ptr, 0, &good),
                Symbols {
                    vmcoreinfo_note: 0x1000,
                    ..syms()
                },
            ),
        ];
        for (what, mem, s) in cases {
            let r = find_in(&mem, &s);
            assert!(matches!(r, Err(Missing::Memory(_))), "{what}: {r:?}");
        }
        // Old bytes in the desc's padding are not carried over.
        assert_eq!(DESC.len() % 4, 2);
        let mut mem = memory(ptr, 0, &good);
        let end = NOTE_PAGE as usize + good.len();
        mem[end - 2..end].fill(0xff);
        assert_eq!(find_in(&mem, &syms()).unwrap(), good);
    }

    #[test]
    fn symbols_of_a_file_that_is_no_kernel() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("vmlinux");
        std::fs::write(&p, b"no ELF").unwrap();
        assert!(matches!(
            Symbols::of_vmlinux(&p),
            Err(Missing::Vmlinux { .. })
        ));
        let this = std::env::current_exe().unwrap();
        let err = Symbols::of_vmlinux(&this).unwrap_err().to_string();
        assert!(err.contains("init_uts_ns"), "{err}");
    }
}
