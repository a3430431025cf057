//! Shared by the units tests: the labs the goldens are made from.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

pub const BIN: &str = "/usr/local/bin/labnet";
/// Where the wg lab's config "lives" in the goldens (the file need not exist for generation).
pub const WG_CONFIG: &str = "/etc/labnet/wglab.toml";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The embedded default lab (no config file).
pub fn default_lab() -> model::Lab {
    model::Lab::embedded_default()
}

/// The WireGuard lab, parsed as if read from WG_CONFIG.
pub fn wg_lab() -> model::Lab {
    let text = std::fs::read_to_string(fixture("wg.toml")).unwrap();
    model::config::parse(&text, WG_CONFIG, None).unwrap_or_else(|e| panic!("{e}"))
}

pub fn opts(bin: &Path, config: Option<&str>) -> units::Options {
    units::Options {
        labnet_bin: bin.to_path_buf(),
        config: config.map(PathBuf::from),
    }
}
