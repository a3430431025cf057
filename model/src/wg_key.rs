//! WireGuard private key files (one base64 key, as `wg genkey` writes): read and checked
//! here, so the key never leaves memory except through the UAPI socket / netlink.
use std::path::{Path, PathBuf};

/// 44 base64 characters ending in `=`: the shape of a WireGuard key.
pub(crate) fn is_base64_key(s: &str) -> bool {
    s.len() == 44
        && s.ends_with('=')
        && s[..43]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

/// Reads a WireGuard private key file (one base64 key). The key never leaves memory except
/// through the UAPI socket / netlink.
pub fn read_private_key(path: &Path) -> Result<String, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let key = text.trim();
    if !is_base64_key(key) {
        return Err(KeyError::NotAKey {
            path: path.to_path_buf(),
        });
    }
    Ok(key.to_string())
}

/// Why a WireGuard private key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} does not hold a WireGuard key (44 base64 characters, as `wg genkey` writes)", path.display())]
    NotAKey { path: PathBuf },
}
