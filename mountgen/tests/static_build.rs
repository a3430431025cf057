//! kmount must run inside busybox guests with no libc: the documented crt-static build gives
//! an ELF without a program interpreter that runs with an empty environment.
mod common;
use common::*;
use std::process::Command;

/// True if the ELF has a PT_INTERP program header (i.e. needs a dynamic loader).
fn has_interp(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit ELF expected");
    let u16at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64at(0x20), u16at(0x36), u16at(0x38));
    (0..phnum)
        .any(|i| u32::from_le_bytes(elf[phoff + i * phentsize..][..4].try_into().unwrap()) == 3)
}

#[test]
fn kmount_builds_static_and_runs_without_libc() {
    // The command documented in the crate docs (testkit runs it).
    let bin = testkit::static_kmount();
    let elf = std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    assert!(!has_interp(&elf), "{} is dynamically linked", bin.display());
    // And the dynamically linked debug build does have an interpreter (the check can fail).
    assert!(has_interp(
        &std::fs::read(env!("CARGO_BIN_EXE_kmount")).unwrap()
    ));

    let out = Command::new(&bin)
        .env_clear()
        .args([
            "--dry-run",
            "--syntax",
            "new",
            "--name",
            "fs",
            "--fs",
            "a",
            "--mon-dump",
        ])
        .arg(fixture("1mon-v2v1-127.0.0.1.mon_dump.json"))
        .arg("/mnt")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.contains("mount(\"fs@9c5e8523-e32c-4ca9-80da-df6e8fddd9bf.a=/\", \"/mnt\", \"ceph\", 0, \"mon_addr=127.0.0.1:3300,ms_mode=prefer-crc,name=fs\")"), "{s}");
}
