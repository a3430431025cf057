//! libFuzzer's main for the target named by `LABNET_FUZZ_TARGET` (see labnet-fuzz).
#![no_main]
use std::sync::OnceLock;

fn target() -> fn(&[u8]) {
    static T: OnceLock<fn(&[u8])> = OnceLock::new();
    *T.get_or_init(|| {
        let name = std::env::var("LABNET_FUZZ_TARGET").unwrap_or_default();
        labnet_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<_> = labnet_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
            eprintln!("LABNET_FUZZ_TARGET={name:?}: expected one of {names:?}");
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| target()(data));
