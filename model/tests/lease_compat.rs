//! The lease log format is a contract between processes and across versions: a log written
//! by dhcpd before the record moved into this crate (`tests/data/leases-v1.log`, made by
//! dhcpd's store, with a comment, a bad checksum, a record missing fields, a torn tail and
//! the preallocated NULs added) still reads the same, and today's writer produces its
//! record lines byte for byte.
use model::lease::{self, BadRecord, LeaseState};
use std::net::Ipv4Addr;

const V1: &[u8] = include_bytes!("data/leases-v1.log");

#[test]
fn v1_log_parses_as_written() {
    let p = lease::parse_log(V1).unwrap();
    let ips: Vec<Ipv4Addr> = p.records.iter().map(|l| l.ip).collect();
    assert_eq!(
        ips,
        [100, 101, 102, 103, 101].map(|d| Ipv4Addr::new(192, 168, 0, d))
    );
    let first = &p.records[0];
    assert_eq!(first.mac, "52:54:00:12:34:56");
    assert_eq!(first.hostname.as_deref(), Some("vm1"));
    assert_eq!(first.client_id.as_deref(), Some("01:52:54:00:12:34:56"));
    assert_eq!((first.start, first.expires), (1_700_000_000, 4_000_000_000));
    assert_eq!(p.records[1].hostname, None);
    assert_eq!(p.records[2].hostname.as_deref(), Some("über-box \"q\"\\"));
    assert_eq!(p.records[2].state, LeaseState::Declined);
    assert_eq!(p.records[4].state, LeaseState::Released);

    // Line 7 is a comment; 8, 9 and 10 are damage, each named by its line.
    let bad: Vec<(usize, &BadRecord)> = p.bad.iter().map(|b| (b.line, &b.why)).collect();
    assert_eq!(bad.len(), 3, "{:?}", p.bad);
    assert!(matches!(bad[0], (8, BadRecord::Checksum { .. })), "{bad:?}");
    assert!(matches!(bad[1], (9, BadRecord::Json(_))), "{bad:?}");
    assert!(matches!(bad[2], (10, BadRecord::Torn)), "{bad:?}");
    assert!(p.bad[1]
        .to_string()
        .starts_with("line 9: not a lease record: missing field"));

    let latest = p.latest();
    assert_eq!(latest.len(), 4);
    assert_eq!(
        latest[&Ipv4Addr::new(192, 168, 0, 101)].state,
        LeaseState::Released
    );
}

#[test]
fn writer_reproduces_v1_lines() {
    let text = &V1[..lease::data_len(V1)];
    let lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
    assert_eq!(lines[0], format!("{}\n", lease::HEADER).as_bytes());
    let p = lease::parse_log(V1).unwrap();
    for (i, r) in p.records.iter().enumerate() {
        assert_eq!(
            lease::encode_record(r).as_bytes(),
            lines[i + 1],
            "record on line {}",
            i + 2
        );
    }
}

#[test]
fn reader_of_a_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(lease::log_path(dir.path()), V1).unwrap();
    let r = lease::read(dir.path()).unwrap();
    let states: Vec<(u8, LeaseState)> = r
        .leases
        .iter()
        .map(|l| (l.ip.octets()[3], l.state))
        .collect();
    // .103's active record ran out in 2023: it reads as expired.
    assert_eq!(
        states,
        [
            (100, LeaseState::Active),
            (101, LeaseState::Released),
            (102, LeaseState::Declined),
            (103, LeaseState::Expired)
        ]
    );
    assert_eq!(r.skipped.len(), 3);
}
