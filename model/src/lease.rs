//! The lease log: the record dhcpd writes and everyone else reads (`labnet leases`, the
//! lease lookup of `labnet vm`), with its on-disk format, written and read by this code only.
//! dhcpd's store (durable appends, compaction) writes lines with [`encode_record`] and
//! recovers with [`parse_log`]; readers use [`load`] or [`read`].
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
//! match, is a torn or corrupt write: readers skip it (and are told which line and why), and
//! the server, when it starts, rewrites the file from the good records (the bad lines are
//! kept aside in `leases.log.corrupt`). Compaction writes the live state to `leases.log.tmp`,
//! fsyncs it and renames it over `leases.log`, so a reader always sees a complete file.
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
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a labnet lease log (first line is {found:?}, expected {HEADER:?})")]
    Header { path: PathBuf, found: String },
}

/// The first line of a file is not [`HEADER`] (the first 80 bytes of it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a labnet lease log (first line is {found:?}, expected {HEADER:?})")]
pub struct NotALeaseLog {
    pub found: String,
}

/// A line of the log that holds no record (skipped by every reader).
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct BadLine {
    /// 1-based, counting the header.
    pub line: usize,
    /// Its bytes in the file: `start..end` (with the `\n`, when it has one).
    pub start: usize,
    pub end: usize,
    pub why: BadRecord,
}

/// Why a line is not a record.
#[derive(Debug, thiserror::Error)]
pub enum BadRecord {
    /// The last line has no `\n`: a write in progress, or cut short by a crash.
    #[error("torn record (no newline)")]
    Torn,
    #[error("not UTF-8")]
    NotUtf8,
    #[error("no checksum (expected JSON, a space and 8 hex digits)")]
    NoChecksum,
    #[error("checksum {found} does not match the record's {computed:08x}")]
    Checksum { found: String, computed: u32 },
    #[error("not a lease record: {0}")]
    Json(#[source] serde_json::Error),
}

impl BadRecord {
    /// A torn tail is what a reader sees while the server appends; anything else is damage.
    pub fn is_torn(&self) -> bool {
        matches!(self, BadRecord::Torn)
    }
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
    /// Hardware address, lowercase `aa:bb:cc:dd:ee:ff` ([`hex_colon`]).
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

/// Unix seconds now (what `start`, `expires` and [`Lease::state_at`] count in).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a reader got from a lab's lease log.
#[derive(Debug, Default)]
pub struct Leases {
    /// The latest record per address, sorted by address, as of when it was read.
    pub leases: Vec<Lease>,
    /// Lines that held no record (a torn tail while the server appends, or damage).
    pub skipped: Vec<BadLine>,
}

/// Reads the leases of a lab from `state_dir/leases.log`: the latest record per address,
/// sorted by address, with active leases past their expiry reported as expired, and the
/// lines skipped. A missing file (no lease yet) is an empty list. Safe while the server runs.
pub fn read(state_dir: &Path) -> Result<Leases, LeaseError> {
    let path = log_path(state_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Leases::default()),
        Err(source) => return Err(LeaseError::Io { path, source }),
    };
    let parsed = parse_log(&bytes).map_err(|e| LeaseError::Header {
        path: path.clone(),
        found: e.found,
    })?;
    let now = now_secs();
    let leases = parsed
        .latest()
        .into_values()
        .map(|mut l| {
            l.state = l.state_at(now);
            l
        })
        .collect();
    Ok(Leases {
        leases,
        skipped: parsed.bad,
    })
}

/// [`read`]'s leases alone.
pub fn load(state_dir: &Path) -> Result<Vec<Lease>, LeaseError> {
    read(state_dir).map(|r| r.leases)
}

/// The result of parsing a log: good records in file order, and the lines that were not.
#[derive(Debug, Default)]
pub struct ParsedLog {
    pub records: Vec<Lease>,
    /// Lines that failed to parse (bad checksum, bad JSON, torn tail), in file order.
    pub bad: Vec<BadLine>,
}

impl ParsedLog {
    /// The last record of each address.
    pub fn latest(&self) -> BTreeMap<Ipv4Addr, Lease> {
        let mut m = BTreeMap::new();
        for r in &self.records {
            m.insert(r.ip, r.clone());
        }
        m
    }
}

/// Parses a whole log (an empty file is an empty log).
pub fn parse_log(bytes: &[u8]) -> Result<ParsedLog, NotALeaseLog> {
    // The log ends at its first NUL: the rest is preallocated space (records never contain
    // NUL, JSON escapes control characters).
    let bytes = &bytes[..data_len(bytes)];
    let mut out = ParsedLog::default();
    let mut pos = 0;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let (end, complete) = match bytes[pos..].iter().position(|&b| b == b'\n') {
            Some(i) => (pos + i, true),
            None => (bytes.len(), false),
        };
        let line = &bytes[pos..end];
        let next = if complete { end + 1 } else { end };
        if line_no == 1 {
            if line != HEADER.as_bytes() {
                // A torn header on a brand-new file is just an empty log.
                if !complete && HEADER.as_bytes().starts_with(line) {
                    return Ok(out);
                }
                return Err(NotALeaseLog {
                    found: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
                });
            }
            pos = next;
            continue;
        }
        if line.first() == Some(&b'#') && complete {
            pos = next;
            continue;
        }
        let parsed = if complete {
            parse_record(line)
        } else {
            Err(BadRecord::Torn)
        };
        match parsed {
            Ok(l) => out.records.push(l),
            // An empty line is nothing, not damage.
            Err(_) if complete && line.is_empty() => {}
            Err(why) => out.bad.push(BadLine {
                line: line_no,
                start: pos,
                end: next,
                why,
            }),
        }
        pos = next;
    }
    Ok(out)
}

/// Length of the log data: everything before the first NUL byte.
pub fn data_len(bytes: &[u8]) -> usize {
    bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())
}

/// One record line, without its `\n`.
pub fn parse_record(line: &[u8]) -> Result<Lease, BadRecord> {
    let line = std::str::from_utf8(line).map_err(|_| BadRecord::NotUtf8)?;
    let (json, crc) = line.rsplit_once(' ').ok_or(BadRecord::NoChecksum)?;
    let computed = crc32(json.as_bytes());
    let found = (crc.len() == 8)
        .then(|| u32::from_str_radix(crc, 16).ok())
        .flatten();
    match found {
        None => return Err(BadRecord::NoChecksum),
        Some(c) if c != computed => {
            return Err(BadRecord::Checksum {
                found: crc.into(),
                computed,
            })
        }
        Some(_) => {}
    }
    serde_json::from_str(json).map_err(BadRecord::Json)
}

/// One record line, with its trailing newline.
pub fn encode_record(l: &Lease) -> String {
    let json = serde_json::to_string(l).expect("lease serializes");
    let crc = crc32(json.as_bytes());
    format!("{json} {crc:08x}\n")
}

/// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), as zlib computes it.
fn crc32(data: &[u8]) -> u32 {
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

/// `aa:bb:cc:dd:ee:ff` (lowercase hex, colon separated) for any byte string: a lease's
/// `mac` and `client_id`.
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
        let r = read(dir.path()).unwrap();
        let l = &r.leases;
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(l[0].state, LeaseState::Released);
        assert_eq!(l[1].state, LeaseState::Active);
        assert_eq!(r.skipped.len(), 1);
        assert_eq!(r.skipped[0].line, 5);
        assert!(r.skipped[0].why.is_torn());
    }

    /// A corrupt line is skipped, later lines kept, and the skip names the line and why.
    #[test]
    fn corrupt_line_names_its_line_number() {
        let mut text = format!("{HEADER}\n# a comment\n");
        let mut bad = encode_record(&lease([10, 0, 0, 1], LeaseState::Active));
        bad.replace_range(8..9, "9"); // flip a digit of the address: checksum no longer matches
        text += &bad;
        text += &encode_record(&lease([10, 0, 0, 2], LeaseState::Active));
        text += "{\"ip\":\"10.0.0.3\"}\n";
        let p = parse_log(text.as_bytes()).unwrap();
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.records[0].ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.bad.len(), 2);
        assert_eq!(p.bad[0].line, 3);
        assert!(
            matches!(p.bad[0].why, BadRecord::Checksum { .. }),
            "{:?}",
            p.bad[0]
        );
        assert!(p.bad[0].to_string().starts_with("line 3: checksum "));
        assert_eq!(
            &text.as_bytes()[p.bad[0].start..p.bad[0].end],
            bad.as_bytes()
        );
        assert_eq!(p.bad[1].line, 5);
        assert!(
            matches!(p.bad[1].why, BadRecord::NoChecksum),
            "{:?}",
            p.bad[1]
        );
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
        assert_eq!(p.bad.len(), 1);
        let b = &p.bad[0];
        assert_eq!(
            (b.line, b.start, b.end),
            (3, text.len() - 4096 - 30, text.len() - 4096)
        );
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
        let e = load(dir.path()).unwrap_err();
        assert!(
            matches!(&e, LeaseError::Header { found, .. } if found == "lease 10.0.0.1 {"),
            "{e:?}"
        );
        assert!(
            e.to_string().contains("leases.log: not a labnet lease log"),
            "{e}"
        );
        // A brand-new file whose header is still being written is an empty log.
        assert!(parse_log(&HEADER.as_bytes()[..5])
            .unwrap()
            .records
            .is_empty());
    }
}
