//! The hosts file dhcpd writes ([`format`], [`write`]) and dns reads ([`parse`]) (`state_dir(lab)/hosts`): one `IP NAME` per line, NAME without
//! the zone. The parser is lenient on purpose: a bad line is skipped (and reported), never a
//! reason to stop serving the good ones.
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::{paths, Error};

/// One usable line of the hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub ip: Ipv4Addr,
    /// Lower-case, relative to the zone (no trailing zone, no trailing dot).
    pub name: String,
}

/// A line that was skipped, with why (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    pub message: String,
}

/// Parses the hosts file text. `zone` (e.g. "lab") is stripped from names that carry it, so
/// both `vm1` and `vm1.lab` mean `vm1.lab.`. Extra names after the first are aliases.
pub fn parse(text: &str, zone: &str) -> (Vec<HostEntry>, Vec<BadLine>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let ip_s = words.next().unwrap_or("");
        let Ok(ip) = ip_s.parse::<Ipv4Addr>() else {
            bad.push(BadLine {
                line: i + 1,
                message: format!("{ip_s:?} is not an IPv4 address"),
            });
            continue;
        };
        let mut any = false;
        for name in words {
            any = true;
            match relative_name(name, &zone) {
                Some(name) => out.push(HostEntry { ip, name }),
                None => bad.push(BadLine {
                    line: i + 1,
                    message: format!(
                        "{name:?} is not a host name (letters, digits, '-', '_' and dots)"
                    ),
                }),
            }
        }
        if !any {
            bad.push(BadLine {
                line: i + 1,
                message: format!("{ip} has no name"),
            });
        }
    }
    (out, bad)
}

/// `vm1`, `VM1.lab`, `vm1.lab.` -> `vm1`; None if it is not a valid host name.
/// The hosts file of `lab`.
pub fn file(lab: &str) -> PathBuf {
    paths::state_dir(lab).join("hosts")
}

/// `IP NAME` lines, sorted by address then name, as [`parse`] reads them back.
pub fn format<'a>(entries: impl IntoIterator<Item = (Ipv4Addr, &'a str)>) -> String {
    let mut v: Vec<(Ipv4Addr, &str)> = entries.into_iter().collect();
    v.sort();
    v.iter().map(|(ip, h)| format!("{ip} {h}\n")).collect()
}

/// Replaces `STATE_DIR/hosts` atomically, so dns never reads half a file.
pub fn write(state_dir: &Path, text: &str) -> Result<(), Error> {
    let path = state_dir.join("hosts");
    paths::write_atomic(&path, text.as_bytes(), false).map_err(|e| Error::io(&path, e))
}

fn relative_name(name: &str, zone: &str) -> Option<String> {
    let mut n = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(stripped) = n.strip_suffix(&format!(".{zone}")) {
        n = stripped.to_string();
    }
    let ok = !n.is_empty()
        && n.len() <= 200
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    ok.then_some(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_format_writes_parse_reads() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let text = super::format([(ip("192.168.0.101"), "vm2"), (ip("192.168.0.100"), "vm1")]);
        assert_eq!(text, "192.168.0.100 vm1\n192.168.0.101 vm2\n");
        let (hosts, bad) = super::parse(&text, "lab");
        assert!(bad.is_empty());
        assert_eq!(
            hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["vm1", "vm2"]
        );
    }

    use super::*;

    #[test]
    fn parses_names_aliases_comments_and_zone_suffix() {
        let text = "# written by labnet dhcpd\n192.168.0.100 vm1\n192.168.0.101 VM2.lab alias2\n\n192.168.0.102 vm3.lab. # trailing\n";
        let (hosts, bad) = parse(text, "lab");
        assert!(bad.is_empty(), "{bad:?}");
        let got: Vec<(String, String)> = hosts
            .iter()
            .map(|h| (h.ip.to_string(), h.name.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("192.168.0.100".into(), "vm1".into()),
                ("192.168.0.101".into(), "vm2".into()),
                ("192.168.0.101".into(), "alias2".into()),
                ("192.168.0.102".into(), "vm3".into()),
            ]
        );
    }

    #[test]
    fn bad_lines_are_skipped_and_reported() {
        let text = "not-an-ip vm1\n192.168.0.5\n192.168.0.6 bad/name\n192.168.0.7 -dash\n192.168.0.8 good\n";
        let (hosts, bad) = parse(text, "lab");
        assert_eq!(
            hosts,
            vec![HostEntry {
                ip: "192.168.0.8".parse().unwrap(),
                name: "good".into()
            }]
        );
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4]);
        assert!(
            bad[0].message.contains("not an IPv4 address"),
            "{:?}",
            bad[0]
        );
    }

    #[test]
    fn subdomains_are_allowed_other_zones_are_kept_relative() {
        let (hosts, _) = parse("10.0.0.1 a.b\n10.0.0.2 x.other\n", "lab");
        assert_eq!(hosts[0].name, "a.b");
        // not our zone's suffix: the name is taken as relative (x.other.lab.)
        assert_eq!(hosts[1].name, "x.other");
    }
}
