//! Replays every committed corpus file (seeds and inputs that once crashed a target) through
//! its target, in a plain build: a fixed finding stays fixed, and every target runs in
//! `cargo test`. A panic on any thread (the DNS server's too) fails the input.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

static PANICKED: AtomicBool = AtomicBool::new(false);

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

#[test]
fn every_corpus_input_passes_its_target() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        default(info);
    }));
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut names: Vec<String> = labnet_fuzz::TARGETS
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    names.sort();
    assert_eq!(dirs, names, "one corpus directory per target");
    for (name, f) in labnet_fuzz::TARGETS {
        let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join(name))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{name}: no seed");
        for p in &files {
            let data = std::fs::read(p).unwrap();
            let r = std::panic::catch_unwind(|| f(&data));
            assert!(
                r.is_ok() && !PANICKED.load(Ordering::SeqCst),
                "{name}: {} fails (see the panic above)",
                p.display()
            );
        }
        eprintln!("{name}: {} inputs", files.len());
    }
    labnet_fuzz::remove_scratch_dir();
    assert!(
        !labnet_fuzz::scratch_dir().exists(),
        "scratch dir left behind"
    );
}
