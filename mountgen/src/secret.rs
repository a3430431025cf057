//! CephX secrets: from a keyring file (`[client.fs]\n key = …`), a bare key file (`ceph auth
//! get-key` output) or stdin. The base64 text decodes to Ceph's encoded CryptoKey
//! (u16 type, 8-byte creation time, u16 length, secret bytes); those decoded bytes are the
//! payload the kernel's "ceph" key type takes from add_key(2), exactly as mount.ceph does.
use crate::Error;
use std::fmt;

/// A cephx secret. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    b64: String,
    raw: Vec<u8>,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a text is not a ceph key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the key is empty")]
    Empty,
    #[error(transparent)]
    Base64(#[from] Base64Error),
    #[error("the key decodes to {0} bytes; a ceph key has at least 12")]
    TooShort(usize),
    #[error("unsupported key type {0} (expected 1 = AES)")]
    UnsupportedType(u16),
    #[error("key length field says {field} bytes but {follow} follow")]
    LengthMismatch { field: usize, follow: usize },
}

/// Why a text is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base64Error {
    #[error("invalid base64 character at offset {0}")]
    InvalidChar(usize),
    #[error("base64 data after '=' padding")]
    DataAfterPadding,
    #[error("truncated base64")]
    Truncated,
}

impl Secret {
    /// Validates a base64 key such as `AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==`.
    pub fn from_base64(s: &str) -> Result<Secret, KeyError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        let raw = base64_decode(s)?;
        // Encoded CryptoKey: type(2) created(8) len(2) secret(len).
        if raw.len() < 12 {
            return Err(KeyError::TooShort(raw.len()));
        }
        let ty = u16::from_le_bytes([raw[0], raw[1]]);
        let len = u16::from_le_bytes([raw[10], raw[11]]) as usize;
        if ty != 1 {
            return Err(KeyError::UnsupportedType(ty));
        }
        if raw.len() != 12 + len {
            return Err(KeyError::LengthMismatch {
                field: len,
                follow: raw.len() - 12,
            });
        }
        Ok(Secret {
            b64: s.to_string(),
            raw,
        })
    }
    /// The base64 text, for `secret=`.
    pub fn base64(&self) -> &str {
        &self.b64
    }
    /// The decoded bytes, the add_key(2) payload.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
}

/// Standard base64 (with or without padding; whitespace ignored).
pub fn base64_decode(s: &str) -> Result<Vec<u8>, Base64Error> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    let mut pad = 0usize;
    for (i, c) in s.bytes().enumerate() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                pad += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return Err(Base64Error::InvalidChar(i)),
        };
        if pad > 0 {
            return Err(Base64Error::DataAfterPadding);
        }
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 || pad > 2 {
        return Err(Base64Error::Truncated);
    }
    Ok(out)
}

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let n = ch
            .iter()
            .enumerate()
            .fold(0u32, |a, (i, b)| a | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= ch.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Entity names (`client.fs`) of the sections of a keyring.
pub fn keyring_entities(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .map(|s| s.trim().to_string())
        .collect()
}

/// The `key` of `[entity]` in a keyring. `origin` names the file in errors.
pub fn keyring_secret(text: &str, entity: &str, origin: &str) -> Result<Secret, Error> {
    let err = |msg: String| Error::Key {
        origin: origin.into(),
        msg,
    };
    let mut in_section = false;
    let mut found_section = false;
    for line in text.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_section = s.trim() == entity;
            found_section |= in_section;
            continue;
        }
        if !in_section {
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            if k.trim() == "key" {
                return Secret::from_base64(v.trim().trim_matches('"'))
                    .map_err(|e| err(format!("[{entity}] key: {e}")));
            }
        }
    }
    if found_section {
        Err(err(format!("[{entity}] has no `key = …` line")))
    } else {
        let have = keyring_entities(text);
        Err(err(format!(
            "no [{entity}] section (sections: {})",
            if have.is_empty() {
                "none".into()
            } else {
                have.join(", ")
            }
        )))
    }
}

/// A secret from text that is either a keyring or a bare base64 key (`ceph auth get-key`).
pub fn secret_from_text(text: &str, entity: &str, origin: &str) -> Result<Secret, Error> {
    if text.lines().any(|l| l.trim_start().starts_with('[')) {
        keyring_secret(text, entity, origin)
    } else {
        Secret::from_base64(text).map_err(|e| Error::Key {
            origin: origin.into(),
            msg: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_sample_key() {
        let k = "AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==";
        let s = Secret::from_base64(k).unwrap();
        assert_eq!(s.raw().len(), 28);
        assert_eq!(&s.raw()[..2], &[1, 0]);
        assert_eq!(base64_encode(s.raw()), k);
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        for n in 0..10u8 {
            let d: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64_decode(&base64_encode(&d)).unwrap(), d);
        }
    }

    #[test]
    fn bad_keys() {
        assert_eq!(Secret::from_base64("").unwrap_err(), KeyError::Empty);
        let e = Secret::from_base64("AQ*").unwrap_err();
        assert_eq!(e, KeyError::Base64(Base64Error::InvalidChar(2)));
        assert_eq!(e.to_string(), "invalid base64 character at offset 2");
        assert_eq!(
            Secret::from_base64("AAAA").unwrap_err(),
            KeyError::TooShort(3)
        );
        assert!(Secret::from_base64("AAAA")
            .unwrap_err()
            .to_string()
            .contains("at least 12"));
        // type 2
        let bad = base64_encode(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9]);
        assert_eq!(
            Secret::from_base64(&bad).unwrap_err().to_string(),
            "unsupported key type 2 (expected 1 = AES)"
        );
        let short = base64_encode(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 9]);
        assert_eq!(
            Secret::from_base64(&short).unwrap_err(),
            KeyError::LengthMismatch {
                field: 16,
                follow: 1
            }
        );
        assert_eq!(base64_decode("QQ=A"), Err(Base64Error::DataAfterPadding));
        assert_eq!(base64_decode("Q"), Err(Base64Error::Truncated));
    }

    #[test]
    fn keyring_lookup() {
        let kr = "[client.fs]\n\tkey = AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==\n\tcaps mds = \"allow rw\"\n";
        assert!(keyring_secret(kr, "client.fs", "k").is_ok());
        let e = keyring_secret(kr, "client.admin", "k")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no [client.admin] section (sections: client.fs)"),
            "{e}"
        );
        let e = keyring_secret("[client.x]\ncaps = 1\n", "client.x", "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no `key"), "{e}");
    }
}
