//! The lease log: reading it (for `labnet leases`, `labnet vm ip`, the dns server) and its
//! on-disk format, shared with the writer in [`crate::store`].
//!
//! # File format (`STATE_DIR/leases.log`, version 1)
//!
//! A text file of lines. The first line is the header `# labnet-dhcpd leases v1`; other lines
//! starting with `#` are comments. Every other line is one record:
//!
//! ```text
//! {"ip":"192.168.0.100","mac":"52:54:00:12:34:56","hostname":"vm1","client_id":"01:52:54:00:12:34:56","start":1700000000,"expires":1700003600,"state":"active"} 9f0c2a51
//! ```
//!
//! i.e. a JSON object (the fields of [`Lease`]), one space, and the CRC-32 (IEEE, as zlib/PNG
//! compute it) of the JSON bytes as 8 lowercase hex digits, then `\n`. Records are only ever
//! appended; replaying them in order, the last record for an address wins. `state` is one of
//! `active`, `released`, `declined`, `expired`. An `active` record whose `expires` is in the
//! past reads back as `expired`.
//!
//! The server appends one record per ACK / RELEASE / DECLINE and fsyncs before it answers, so
//! every ACKed lease survives a crash. A line without its `\n`, or whose checksum does not
//! match, is a torn or corrupt write: readers skip it, and the server, when it starts, rewrites
//! the file from the good records (the bad lines are kept aside in `leases.log.corrupt`).
//! Compaction writes the live state to `leases.log.tmp`, fsyncs it and renames it over
//! `leases.log`, so a reader always sees a complete file.
//!
//! The file is preallocated: after the last record it holds NUL bytes (a few MiB, written,
//! not sparse), and the log ends at the first NUL. Appending then overwrites blocks that are
//! already allocated without changing the file size, so the fsync before each ACK flushes
//! data only, not a filesystem journal commit; the file grows by another block of NULs
//! when the space runs out.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The header line of a version 1 lease log.
pub const HEADER: &str = "# labnet-dhcpd leases v1";
/// File name of the lease log inside the lab's state directory.
pub const LOG_NAME: &str = "leases.log";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a labnet lease log (first line is {found:?}, expected {HEADER:?})")]
    Header { path: String, found: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Bound to the client until `expires`.
    Active,
    /// The client sent DHCPRELEASE; the address is free (and preferred for the same client).
    Released,
    /// The client sent DHCPDECLINE (address in use by someone else); not handed out until
    /// `expires`.
    Declined,
    /// The lease ran out.
    Expired,
}

impl std::fmt::Display for LeaseState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
            LeaseState::Expired => "expired",
        })
    }
}

/// One lease, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// Hardware address, lowercase `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Option 61 as lowercase hex bytes joined by `:` (e.g. `01:52:54:00:12:34:56`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Unix seconds.
    pub start: u64,
    /// Unix seconds.
    pub expires: u64,
    pub state: LeaseState,
}

impl Lease {
    /// The state as of `now`: an active lease past its expiry is expired.
    pub fn state_at(&self, now: u64) -> LeaseState {
        if self.state == LeaseState::Active && self.expires <= now {
            LeaseState::Expired
        } else {
            self.state
        }
    }
}

pub fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LOG_NAME)
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the leases of a lab from `state_dir/leases.log`: the latest record per address,
/// sorted by address, with active leases past their expiry reported as expired. A missing
/// file (no lease yet) is an empty list. Safe while the server runs.
pub fn load(state_dir: &Path) -> Result<Vec<Lease>, LeaseError> {
    let path = log_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(LeaseError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    let parsed = parse_log(&bytes).map_err(|found| LeaseError::Header {
        path: path.display().to_string(),
        found,
    })?;
    let now = now_secs();
    Ok(parsed
        .latest()
        .into_values()
        .map(|mut l| {
            l.state = l.state_at(now);
            l
        })
        .collect())
}

/// The result of parsing a log: good records in file order, and what was wrong.
#[derive(Debug, Default)]
pub(crate) struct ParsedLog {
    pub records: Vec<Lease>,
    /// Byte ranges of lines that failed to parse (bad checksum, bad JSON, torn tail).
    pub bad: Vec<(usize, usize)>,
}

impl ParsedLog {
    pub fn latest(&self) -> BTreeMap<Ipv4Addr, Lease> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            m.insert(r.ip, r.clone());
        }
        m
    }
}

/// Parses a whole log. Err(first line) when the header is wrong (an empty file is fine).
pub(crate) fn parse_log(bytes: &[u8]) -> Result<ParsedLog, String> {
    // The log ends at its first NUL: the rest is preallocated space (records never contain
    // NUL, JSON escapes control characters).
    let bytes = &bytes[..data_len(bytes)];
    let mut out = ParsedLog::default();
    let mut pos = 0;
    let mut first = true;
    while pos < bytes.len() {
        let (end, complete) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (pos + i, true),
            None => (bytes.len(), false),
        };
        let line = &bytes[pos..end];
        let next = if complete { end + 1 } else { end };
        if first {
            first = false;
            if line != HEADER.as_bytes() {
                // A torn header on a brand-new file is just an empty log.
                if !complete && HEADER.as_bytes().starts_with(line) {
                    return Ok(out);
                }
                return Err(String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned());
            }
            pos = next;
            continue;
        }
        if line.first() == Some(&b'#') && complete {
            pos = next;
            continue;
        }
        match (complete, parse_record(line)) {
            (true, Some(l)) => out.records.push(l),
            _ => {
                if !(complete && line.is_empty()) {
                    out.bad.push((pos, next));
                }
            }
        }
        pos = next;
    }
    Ok(out)
}

/// Length of the log data: everything before the first NUL byte.
pub(crate) fn data_len(bytes: &[u8]) -> usize {
    bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())
}

fn parse_record(line: &[u8]) -> Option<Lease> {
    let line = std::str::from_utf8(line).ok()?;
    let (json, crc) = line.rsplit_once(' ')?;
    if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != crc32(json.as_bytes()) {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// One record line, with its trailing newline.
pub(crate) fn encode_record(l: &Lease) -> String {
    let json = serde_json::to_string(l).expect("lease serializes");
    let crc = crc32(json.as_bytes());
    format!("{json} {crc:08x}\n")
}

/// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), as zlib computes it.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in data {
        c = t[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// `aa:bb:cc:dd:ee:ff` (lowercase hex, colon separated) for any byte string.
pub fn hex_colon(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{x:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: [u8; 4], state: LeaseState) -> Lease {
        Lease {
            ip: Ipv4Addr::from(ip),
            mac: "52:54:00:00:00:01".into(),
            hostname: Some("vm1".into()),
            client_id: None,
            start: 100,
            expires: u64::MAX / 2,
            state,
        }
    }

    #[test]
    fn crc32_matches_zlib() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn last_record_wins_and_torn_tail_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!("{HEADER}\n");
        text += &encode_record(&lease([10, 0, 0, 1], LeaseState::Active));
        text += &encode_record(&lease([10, 0, 0, 2], LeaseState::Active));
        text += &encode_record(&lease([10, 0, 0, 1], LeaseState::Released));
        let torn = encode_record(&lease([10, 0, 0, 3], LeaseState::Active));
        text += &torn[..torn.len() - 5];
        std::fs::write(log_path(dir.path()), &text).unwrap();
        let l = load(dir.path()).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(l[0].state, LeaseState::Released);
        assert_eq!(l[1].state, LeaseState::Active);
    }

    #[test]
    fn corrupt_line_skipped_later_lines_kept() {
        let mut text = format!("{HEADER}\n");
        let mut bad = encode_record(&lease([10, 0, 0, 1], LeaseState::Active));
        bad.replace_range(8..9, "9"); // flip a digit of the address: checksum no longer matches
        text += &bad;
        text += &encode_record(&lease([10, 0, 0, 2], LeaseState::Active));
        let p = parse_log(text.as_bytes()).unwrap();
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.bad.len(), 1);
        assert_eq!(p.records[0].ip, Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn preallocated_nul_tail_ends_the_log() {
        let mut text = format!("{HEADER}\n").into_bytes();
        text.extend_from_slice(encode_record(&lease([10, 0, 0, 1], LeaseState::Active)).as_bytes());
        let torn = encode_record(&lease([10, 0, 0, 2], LeaseState::Active));
        text.extend_from_slice(&torn.as_bytes()[..30]);
        text.extend_from_slice(&[0u8; 4096]);
        let p = parse_log(&text).unwrap();
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.bad, vec![(text.len() - 4096 - 30, text.len() - 4096)]);
    }

    #[test]
    fn expired_active_reads_as_expired() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = lease([10, 0, 0, 1], LeaseState::Active);
        l.expires = 5;
        std::fs::write(
            log_path(dir.path()),
            format!("{HEADER}\n{}", encode_record(&l)),
        )
        .unwrap();
        assert_eq!(load(dir.path()).unwrap()[0].state, LeaseState::Expired);
    }

    #[test]
    fn missing_file_is_empty_and_wrong_header_names_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        std::fs::write(log_path(dir.path()), "lease 10.0.0.1 {\n").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("leases.log: not a labnet lease log"), "{e}");
    }
}
