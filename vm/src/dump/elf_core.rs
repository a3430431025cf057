//! The ELF64 little-endian core QEMU's `dump-guest-memory` (paging off) writes: the ELF header,
//! the program headers (one PT_NOTE first, then the PT_LOADs of guest physical memory, `p_paddr`
//! = guest physical), the notes, then the memory. [`Core`] reads its header part and guest
//! physical memory; [`Core::add_note`] adds a note without rewriting the memory when the file
//! system can insert a range (ext4, XFS), else by one streamed copy.
//!
//! The note goes into the existing PT_NOTE, right after QEMU's own notes, and the memory moves
//! up: crash insists that the program headers follow the ELF header and that the first one is
//! the PT_NOTE whose notes lie before the first PT_LOAD's data (it reads "everything before
//! the memory" as the header), so a second PT_NOTE or a table at the end would lose crash.
use object::elf::{FileHeader64, ProgramHeader64, ELFCLASS64, ELFDATA2LSB, PT_LOAD, PT_NOTE};
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian as LE;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use crate::Error;

/// The header part of a dump and where its memory starts, with the file to read memory from.
pub struct Core {
    file: File,
    /// Bytes 0..memory_offset: ELF header, program headers, notes.
    head: Vec<u8>,
    /// Where the first PT_LOAD's data starts (QEMU puts the notes right before it).
    memory_offset: u64,
}

/// The header part is a few KiB (a few program headers, a note per CPU); refuse absurd ones.
const MAX_HEAD: u64 = 64 << 20;

/// Why a dump could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    Io(Error),
    /// It is not laid out as QEMU writes cores: nothing was changed.
    #[error("{0}")]
    Layout(String),
}

fn layout(path: &Path, what: impl std::fmt::Display) -> CoreError {
    CoreError::Layout(format!("{}: {what}", path.display()))
}

/// A read of the headers: a file that ends before them is no core (QEMU stopped short?).
fn short(path: &Path) -> impl FnOnce(std::io::Error) -> CoreError + '_ {
    move |e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => layout(path, "ends within its headers"),
        _ => CoreError::Io(Error::io(path, e)),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CoreError + '_ {
    move |e| CoreError::Io(Error::io(path, e))
}

impl Core {
    pub fn open(path: &Path) -> Result<Core, CoreError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let mut ehdr = [0u8; 64];
        file.read_exact_at(&mut ehdr, 0).map_err(short(path))?;
        let h = FileHeader64::<LE>::parse(&ehdr[..]).map_err(|e| layout(path, e))?;
        if h.e_ident.class != ELFCLASS64 || h.e_ident.data != ELFDATA2LSB {
            return Err(layout(path, "not a little-endian ELF64 core"));
        }
        let (phoff, phnum) = (h.e_phoff.get(LE), u64::from(h.e_phnum.get(LE)));
        let table_end = phoff.saturating_add(phnum * 56);
        if h.e_phentsize.get(LE) != 56 || phnum == 0 || phnum == 0xffff || table_end > MAX_HEAD {
            return Err(layout(path, "unexpected program header table"));
        }
        let mut table = vec![0u8; table_end as usize];
        file.read_exact_at(&mut table, 0).map_err(short(path))?;
        let memory_offset = h
            .program_headers(LE, &*table)
            .map_err(|e| layout(path, e))?
            .iter()
            .filter(|p| p.p_type(LE) == PT_LOAD && p.p_filesz(LE) > 0)
            .map(|p| p.p_offset(LE))
            .min()
            .ok_or_else(|| layout(path, "no PT_LOAD segment"))?;
        if memory_offset < table_end || memory_offset > MAX_HEAD {
            return Err(layout(path, "memory overlaps the headers"));
        }
        let mut head = vec![0u8; memory_offset as usize];
        file.read_exact_at(&mut head, 0).map_err(short(path))?;
        Ok(Core {
            file,
            head,
            memory_offset,
        })
    }

    fn header(&self) -> &FileHeader64<LE> {
        FileHeader64::<LE>::parse(&*self.head).expect("checked in open")
    }

    fn phdrs(&self) -> &[ProgramHeader64<LE>] {
        self.header()
            .program_headers(LE, &*self.head)
            .expect("checked in open")
    }

    pub fn machine(&self) -> object::elf::Machine {
        self.header().e_machine.get(LE)
    }

    /// The descs of the notes named `name` in the PT_NOTE segments.
    pub fn notes(&self, name: &[u8]) -> Vec<Vec<u8>> {
        let mut found = vec![];
        for ph in self.phdrs() {
            if let Ok(Some(mut notes)) = ph.notes(LE, &*self.head) {
                while let Ok(Some(n)) = notes.next() {
                    if n.name() == name {
                        found.push(n.desc().to_vec());
                    }
                }
            }
        }
        found
    }

    /// `len` bytes of guest physical memory at `paddr`, when one PT_LOAD holds them all.
    pub fn read_phys(&self, paddr: u64, len: usize) -> Option<Vec<u8>> {
        let end = paddr.checked_add(len as u64)?;
        let ph = self.phdrs().iter().find(|p| {
            p.p_type(LE) == PT_LOAD
                && p.p_paddr(LE) <= paddr
                && end <= p.p_paddr(LE).saturating_add(p.p_filesz(LE))
        })?;
        let mut buf = vec![0u8; len];
        let off = ph.p_offset(LE).saturating_add(paddr - ph.p_paddr(LE));
        self.file.read_exact_at(&mut buf, off).ok()?;
        Some(buf)
    }

    pub fn read_phys_u64(&self, paddr: u64) -> Option<u64> {
        let b = self.read_phys(paddr, 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// Adds `note` (a whole ELF note: header, padded name and desc) to the file at `path`
    /// (the one opened): the PT_NOTE grows by it and the memory moves up by a multiple of the
    /// file system's block size, so the PT_LOADs keep their offsets' page alignment.
    pub fn add_note(self, path: &Path, note: &[u8]) -> Result<(), CoreError> {
        let md = self.file.metadata().map_err(io(path))?;
        let block = md.blksize().max(4096);
        let shift = (note.len() as u64).div_ceil(block) * block;
        let head = self.shifted_head(path, note, shift)?;
        // Insert a hole of `shift` bytes below the memory (no copy of it), then write the new
        // header part over everything before the moved memory.
        let at = self.memory_offset / block * block;
        let inserted = nix::fcntl::fallocate(
            &self.file,
            nix::fcntl::FallocateFlags::FALLOC_FL_INSERT_RANGE,
            at as libc::off_t,
            shift as libc::off_t,
        );
        match inserted {
            Ok(()) => self
                .file
                .write_all_at(&head, 0)
                .and_then(|()| self.file.sync_data())
                .map_err(io(path)),
            // Not on this file system (tmpfs, NFS, ...): the header part and a streamed copy
            // of the memory into a new file, renamed over the old one.
            Err(_) => copy_with_head(path, self.file, &head, self.memory_offset),
        }
    }

    /// The header part with `note` appended to the PT_NOTE and the PT_LOADs `shift` bytes
    /// further on, padded to the new start of the memory.
    fn shifted_head(&self, path: &Path, note: &[u8], shift: u64) -> Result<Vec<u8>, CoreError> {
        let phoff = self.header().e_phoff.get(LE) as usize;
        let phnum = self.phdrs().len();
        // The layout QEMU writes, and crash wants: the one PT_NOTE first, its notes last
        // before the memory.
        let first = &self.phdrs()[0];
        let notes_end = first.p_offset(LE) + first.p_filesz(LE);
        if first.p_type(LE) != PT_NOTE
            || self.phdrs()[1..].iter().any(|p| p.p_type(LE) != PT_LOAD)
            || notes_end != self.memory_offset
        {
            return Err(layout(
                path,
                "not QEMU's layout (one PT_NOTE first, its notes right before the memory)",
            ));
        }
        let mut head = self.head.clone();
        head.extend_from_slice(note);
        head.resize((self.memory_offset + shift) as usize, 0);
        let table = &mut head[phoff..phoff + phnum * 56];
        let phdrs: &mut [ProgramHeader64<LE>] =
            object::pod::slice_from_all_bytes_mut(table).map_err(|_| layout(path, "phdrs"))?;
        let grown = phdrs[0].p_filesz.get(LE) + note.len() as u64;
        phdrs[0].p_filesz.set(LE, grown);
        phdrs[0].p_memsz.set(LE, grown);
        for p in &mut phdrs[1..] {
            if p.p_offset.get(LE) >= self.memory_offset {
                p.p_offset.set(LE, p.p_offset.get(LE) + shift);
            }
        }
        Ok(head)
    }
}

/// One ELF note as the kernel and QEMU lay it out: the sizes and type, then the name and the
/// desc, each zero-padded to 4 bytes.
pub fn encode_note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let pad = |n: usize| n.div_ceil(4) * 4;
    let mut n = Vec::with_capacity(12 + pad(name.len()) + pad(desc.len()));
    n.extend_from_slice(&(name.len() as u32).to_le_bytes());
    n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    n.extend_from_slice(&ty.to_le_bytes());
    n.extend_from_slice(name);
    n.resize(12 + pad(name.len()), 0);
    n.extend_from_slice(desc);
    n.resize(12 + pad(name.len()) + pad(desc.len()), 0);
    n
}

/// Writes `head` and then `old`'s bytes from `from` on into a new file beside `path`, and
/// renames it over `path` (std's copy uses copy_file_range: no round trip through userspace).
fn copy_with_head(path: &Path, mut old: File, head: &[u8], from: u64) -> Result<(), CoreError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.labnet-{}", std::process::id()));
    let copied = (|| {
        let mut new = File::create(&tmp)?;
        new.write_all(head)?;
        old.seek(SeekFrom::Start(from))?;
        std::io::copy(&mut (&mut old).take(u64::MAX), &mut new)?;
        new.sync_data()
    })();
    if let Err(e) = copied.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path)(e));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn phdr(ty: object::elf::ProgramType, offset: u64, paddr: u64, size: u64) -> Vec<u8> {
        let mut p = vec![];
        p.extend_from_slice(&ty.0.to_le_bytes());
        p.extend_from_slice(&0u32.to_le_bytes()); // p_flags
        for v in [offset, 0, paddr, size, size, 0] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p
    }

    /// A core the way QEMU writes one for x86_64: a PT_NOTE with one "CORE" note, then one
    /// PT_LOAD per `(paddr, memory)`.
    pub fn synthetic(segments: &[(u64, &[u8])]) -> Vec<u8> {
        let notes = encode_note(b"CORE\0", 1, &[7u8; 20]);
        let phnum = 1 + segments.len();
        let notes_at = 64 + 56 * phnum as u64;
        let mut f = vec![0u8; 64];
        f[..7].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1]);
        f[16..18].copy_from_slice(&object::elf::ET_CORE.0.to_le_bytes());
        f[18..20].copy_from_slice(&object::elf::EM_X86_64.0.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
        f.extend(phdr(PT_NOTE, notes_at, 0, notes.len() as u64));
        let mut at = notes_at + notes.len() as u64;
        for (paddr, mem) in segments {
            f.extend(phdr(PT_LOAD, at, *paddr, mem.len() as u64));
            at += mem.len() as u64;
        }
        f.extend(notes);
        for (_, mem) in segments {
            f.extend_from_slice(mem);
        }
        f
    }

    fn memory(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn check_added(path: &Path, mems: &[(u64, Vec<u8>)], old_memory_offset: u64) {
        let c = Core::open(path).unwrap();
        assert_eq!(c.notes(b"VMCOREINFO"), vec![b"OSRELEASE=6.1.0\n".to_vec()]);
        assert_eq!(c.notes(b"CORE").len(), 1, "QEMU's own note kept");
        for (paddr, mem) in mems {
            assert_eq!(&c.read_phys(*paddr, mem.len()).unwrap(), mem);
        }
        // What crash wants: the table right after the ELF header, the memory 4 KiB-aligned
        // as before (QEMU's start is not page-aligned: the shift keeps that).
        assert_eq!(c.header().e_phoff.get(LE), 64);
        assert_eq!(c.phdrs()[0].p_type(LE), PT_NOTE);
        assert!(c.memory_offset > old_memory_offset);
        assert_eq!((c.memory_offset - old_memory_offset) % 4096, 0);
        // And object's own reader (drgn's and gdb's way: follow the headers) finds it too.
        let data = std::fs::read(path).unwrap();
        let h = FileHeader64::<LE>::parse(&*data).unwrap();
        let mut names = vec![];
        for ph in h.program_headers(LE, &*data).unwrap() {
            if let Some(mut n) = ph.notes(LE, &*data).unwrap() {
                while let Some(n) = n.next().unwrap() {
                    names.push(n.name().to_vec());
                }
            }
        }
        assert_eq!(names, vec![b"CORE".to_vec(), b"VMCOREINFO".to_vec()]);
    }

    fn two_segments() -> Vec<(u64, Vec<u8>)> {
        vec![(0, memory(1, 3 * 4096 + 100)), (1 << 20, memory(9, 5000))]
    }

    fn write_core(dir: &Path, mems: &[(u64, Vec<u8>)]) -> std::path::PathBuf {
        let segs: Vec<(u64, &[u8])> = mems.iter().map(|(a, m)| (*a, &m[..])).collect();
        let p = dir.join("vmcore");
        std::fs::write(&p, synthetic(&segs)).unwrap();
        p
    }

    #[test]
    fn reads_guest_physical_memory_by_paddr() {
        let d = tempfile::tempdir().unwrap();
        let mems = two_segments();
        let c = Core::open(&write_core(d.path(), &mems)).unwrap();
        assert_eq!(c.machine(), object::elf::EM_X86_64);
        assert_eq!(c.read_phys(4096, 16).unwrap(), mems[0].1[4096..4112]);
        assert_eq!(c.read_phys((1 << 20) + 8, 8).unwrap(), mems[1].1[8..16]);
        assert!(
            c.read_phys(mems[0].1.len() as u64 - 4, 8).is_none(),
            "past the end"
        );
        assert!(c.read_phys(1 << 30, 1).is_none());
        assert!(c.notes(b"VMCOREINFO").is_empty());
    }

    #[test]
    fn adds_a_note_in_place_and_the_memory_moves_up() {
        let d = tempfile::tempdir().unwrap();
        let mems = two_segments();
        let p = write_core(d.path(), &mems);
        let n = encode_note(b"VMCOREINFO\0", 0, b"OSRELEASE=6.1.0\n");
        let c = Core::open(&p).unwrap();
        let old = c.memory_offset;
        let inode = std::fs::metadata(&p).unwrap().ino();
        c.add_note(&p, &n).unwrap();
        check_added(&p, &mems, old);
        // Where the file system inserts ranges (ext4, XFS) the file is changed in place, not
        // copied to a new one.
        if inserts_ranges(d.path()) {
            assert_eq!(std::fs::metadata(&p).unwrap().ino(), inode, "copied");
        }
    }

    fn inserts_ranges(dir: &Path) -> bool {
        let f = tempfile::tempfile_in(dir).unwrap();
        f.set_len(1 << 16).unwrap();
        let flags = nix::fcntl::FallocateFlags::FALLOC_FL_INSERT_RANGE;
        nix::fcntl::fallocate(&f, flags, 0, 1 << 12).is_ok()
    }

    #[test]
    fn adds_a_note_by_a_copy_where_ranges_cannot_be_inserted() {
        let d = tempfile::tempdir().unwrap();
        let mems = two_segments();
        let p = write_core(d.path(), &mems);
        let n = encode_note(b"VMCOREINFO\0", 0, b"OSRELEASE=6.1.0\n");
        let c = Core::open(&p).unwrap();
        let old = c.memory_offset;
        let head = c.shifted_head(&p, &n, 4096).unwrap();
        copy_with_head(&p, c.file, &head, c.memory_offset).unwrap();
        check_added(&p, &mems, old);
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "temp file left"
        );
    }

    #[test]
    fn refuses_what_is_not_a_core_it_knows() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(
            &p,
            b"not an ELF file at all, but long enough for a header......",
        )
        .unwrap();
        assert!(Core::open(&p).is_err());
        // A PT_NOTE that is not first: not QEMU's layout, nothing is changed.
        let mut f = synthetic(&[(0, &memory(0, 4096))]);
        let (a, b) = (64, 64 + 56);
        let first: Vec<u8> = f[a..b].to_vec();
        let second: Vec<u8> = f[b..b + 56].to_vec();
        f[a..b].copy_from_slice(&second);
        f[b..b + 56].copy_from_slice(&first);
        std::fs::write(&p, &f).unwrap();
        let n = encode_note(b"VMCOREINFO\0", 0, b"OSRELEASE=6.1.0\n");
        let err = Core::open(&p).unwrap().add_note(&p, &n).unwrap_err();
        assert!(err.to_string().contains("not QEMU's layout"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), f);
    }
}
