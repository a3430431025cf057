//! Parsing monitor maps from the outputs people actually have at hand:
//! `ceph mon dump --format=json|json-pretty`, `ceph quorum_status --format=json`, plain-text
//! `ceph mon dump`, and a ceph.conf (or `ceph config generate-minimal-conf`) `mon_host` line.
//!
//! Quirks of real dumps handled here (see tests/fixtures/ceph-samples): a leading blank line;
//! keys with a trailing `": "` (`"removed_ranks: "`, `"disallowed_leaders: "`);
//! `crush_location` as a string; the top-level `addr` being the v2 address in v2-only
//! clusters (so it is only used when `public_addrs` is absent, as in pre-Nautilus dumps);
//! `dumped monmap epoch N` on the same stream when stderr was merged into stdout.
use crate::addr::{self, AddrType, MonAddr, TypeTag};
use crate::Error;
use serde_json::Value;

/// Which kind of text a [`MonMap`] was parsed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
    Conf,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Text => "text",
            Format::Conf => "conf",
        }
    }
}

/// One monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mon {
    /// `a` for `mon.a`; `noname-a`, `noname-b`… for entries of a `mon_host` line.
    pub name: String,
    pub rank: Option<u64>,
    /// In the order Ceph lists them (v2 first in practice).
    pub addrs: Vec<MonAddr>,
}

impl Mon {
    /// First address of the given protocol.
    pub fn addr(&self, kind: AddrType) -> Option<MonAddr> {
        self.addrs.iter().copied().find(|a| a.kind == kind)
    }
}

/// A parsed monitor map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonMap {
    pub fsid: Option<String>,
    pub epoch: Option<u64>,
    pub mons: Vec<Mon>,
    /// Ranks in quorum, when the input says (JSON dumps and quorum_status do).
    pub quorum: Option<Vec<u64>>,
    pub format: Format,
}

/// Parses any supported input, detecting the format. `origin` names the input in errors
/// (a file name, `stdin`, or the command that produced it).
pub fn parse(input: &str, origin: &str) -> Result<MonMap, Error> {
    let text = strip_noise(input);
    let t = text.trim_start();
    if t.is_empty() {
        return Err(Error::Input {
            origin: origin.into(),
            msg: "input is empty".into(),
        });
    }
    if t.starts_with('{') {
        return parse_json(&text, origin);
    }
    // A conf is checked first: its "fsid = …" line would also pass for a text dump.
    if find_conf_mon_host(&text).is_some() || looks_like_conf(&text) {
        return parse_conf(&text, origin);
    }
    if looks_like_text_dump(&text) {
        return parse_text(&text, origin);
    }
    Err(Error::Input {
        origin: origin.into(),
        msg: "not recognised: expected `ceph mon dump` output (JSON or text) or a ceph.conf \
              with mon_host"
            .into(),
    })
}

/// Drops the `dumped monmap epoch N` line that `ceph` prints on stderr (present when a
/// command's stderr was merged into stdout, e.g. over ssh).
fn strip_noise(input: &str) -> String {
    input
        .lines()
        .filter(|l| !l.trim_start().starts_with("dumped monmap epoch"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Section headers or `key = value` lines; a text dump has neither.
fn looks_like_conf(text: &str) -> bool {
    text.lines().map(str::trim).any(|l| {
        l.strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
            .is_some_and(|sec| {
                !sec.is_empty()
                    && sec
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._- ".contains(c))
            })
            || l.split_once('=').is_some_and(|(k, _)| {
                !k.trim().is_empty()
                    && k.trim()
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || " _-".contains(c))
            })
    })
}

fn looks_like_text_dump(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("epoch ") || l.starts_with("fsid ") || mon_line(l).is_some()
    })
}

/// `0: [v2:…,v1:…] mon.a` → (rank, addrs, name)
fn mon_line(l: &str) -> Option<(u64, &str, &str)> {
    let (rank, rest) = l.split_once(": ")?;
    let rank = rank.trim().parse::<u64>().ok()?;
    let (addrs, name) = rest.trim().rsplit_once(' ')?;
    let name = name.strip_prefix("mon.")?;
    Some((rank, addrs.trim(), name))
}

/// JSON from `ceph mon dump --format=json[-pretty]` or `ceph quorum_status --format=json`.
pub fn parse_json(input: &str, origin: &str) -> Result<MonMap, Error> {
    let text = strip_noise(input);
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Input {
        origin: origin.into(),
        msg: format!(
            "invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ),
    })?;
    let field = |f: &str, msg: String| Error::Field {
        origin: origin.into(),
        field: f.into(),
        msg,
    };
    let top = v
        .as_object()
        .ok_or_else(|| field("(top level)", "not a JSON object".into()))?;
    // quorum_status nests the map under "monmap" and keeps "quorum" at the top.
    let (map, prefix) = match top.get("monmap") {
        Some(m) => (
            m.as_object()
                .ok_or_else(|| field("monmap", "not an object".into()))?,
            "monmap.",
        ),
        None => (top, ""),
    };
    let fsid = match map.get("fsid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(field(&format!("{prefix}fsid"), "not a string".into())),
    };
    let epoch = map.get("epoch").and_then(Value::as_u64);
    let mons_v = map.get("mons").ok_or_else(|| {
        field(
            &format!("{prefix}mons"),
            "missing (is this `ceph mon dump --format=json`?)".into(),
        )
    })?;
    let mons_a = mons_v
        .as_array()
        .ok_or_else(|| field(&format!("{prefix}mons"), "not an array".into()))?;
    let mut mons = Vec::new();
    for (i, m) in mons_a.iter().enumerate() {
        let f = format!("{prefix}mons[{i}]");
        let m = m
            .as_object()
            .ok_or_else(|| field(&f, "not an object".into()))?;
        let rank = m.get("rank").and_then(Value::as_u64);
        let name = match m.get("name") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None | Some(Value::String(_)) => format!("rank{}", rank.unwrap_or(i as u64)),
            Some(_) => return Err(field(&format!("{f}.name"), "not a string".into())),
        };
        let mut addrs = Vec::new();
        let vec = m.get("public_addrs").and_then(|p| p.get("addrvec"));
        if let Some(vec) = vec {
            let vec = vec.as_array().ok_or_else(|| {
                field(&format!("{f}.public_addrs.addrvec"), "not an array".into())
            })?;
            for (j, a) in vec.iter().enumerate() {
                let fa = format!("{f}.public_addrs.addrvec[{j}]");
                let ty = a.get("type").and_then(Value::as_str).ok_or_else(|| {
                    field(&format!("{fa}.type"), "missing or not a string".into())
                })?;
                let tag = TypeTag::parse(ty).ok_or_else(|| {
                    field(
                        &format!("{fa}.type"),
                        format!("unknown address type {ty:?} (expected v1, v2 or any)"),
                    )
                })?;
                let s = a.get("addr").and_then(Value::as_str).ok_or_else(|| {
                    field(&format!("{fa}.addr"), "missing or not a string".into())
                })?;
                let (inner_tag, ip, port) = addr::parse_entity_addr(s)
                    .map_err(|e| field(&format!("{fa}.addr"), e.to_string()))?;
                let tag = if inner_tag == TypeTag::Any {
                    tag
                } else {
                    inner_tag
                };
                addrs.extend(addr::resolve(tag, ip, port));
            }
        }
        // Pre-Nautilus dumps have only "addr" (a legacy address). Newer ones also have it,
        // but there it may be the v2 address (v2-only clusters), so it is a fallback only.
        if addrs.is_empty() {
            for key in ["public_addr", "addr"] {
                if let Some(s) = m.get(key).and_then(Value::as_str) {
                    addrs = addr::parse_addr_or_vec(s)
                        .map_err(|e| field(&format!("{f}.{key}"), e.to_string()))?;
                    break;
                }
            }
        }
        // 0.0.0.0:0/0 is Ceph's "no address yet" (a mon added but never started).
        addrs.retain(|a| !a.addr.ip().is_unspecified());
        if addrs.is_empty() {
            return Err(field(&f, format!("mon.{name} has no address")));
        }
        mons.push(Mon {
            name,
            rank: Some(rank.unwrap_or(i as u64)),
            addrs: dedup(addrs),
        });
    }
    let quorum = match top.get("quorum") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|r| {
                    r.as_u64()
                        .ok_or_else(|| field("quorum", "not an array of ranks".into()))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(field("quorum", "not an array of ranks".into())),
    };
    finish(
        MonMap {
            fsid,
            epoch,
            mons,
            quorum,
            format: Format::Json,
        },
        origin,
    )
}

/// Plain-text `ceph mon dump`.
pub fn parse_text(input: &str, origin: &str) -> Result<MonMap, Error> {
    let mut fsid = None;
    let mut epoch = None;
    let mut mons = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let l = line.trim();
        let at = |msg: String| Error::Input {
            origin: origin.into(),
            msg: format!("line {}: {msg}", n + 1),
        };
        if let Some(v) = l.strip_prefix("fsid ") {
            fsid = Some(v.trim().to_string());
        } else if let Some(v) = l.strip_prefix("epoch ") {
            epoch = Some(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| at(format!("bad epoch {v:?}")))?,
            );
        } else if let Some((rank, addrs, name)) = mon_line(l) {
            let addrs =
                addr::parse_addr_or_vec(addrs).map_err(|e| at(format!("mon.{name}: {e}")))?;
            mons.push(Mon {
                name: name.to_string(),
                rank: Some(rank),
                addrs: dedup(addrs),
            });
        } else if l
            .split_once(':')
            .is_some_and(|(r, _)| r.parse::<u64>().is_ok())
        {
            return Err(at(format!("cannot parse mon line {l:?}")));
        }
    }
    finish(
        MonMap {
            fsid,
            epoch,
            mons,
            quorum: None,
            format: Format::Text,
        },
        origin,
    )
}

/// Normalises a ceph.conf option name: Ceph treats ' ', '-' and '_' alike.
fn conf_key(k: &str) -> String {
    k.trim().to_ascii_lowercase().replace([' ', '-'], "_")
}

/// (section, key, value) of every option line.
fn conf_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::from("global");
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.trim().to_string();
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            let mut v = v.trim();
            // Inline comments start at an unquoted '#' or ';' preceded by space.
            for sep in [" #", " ;", "\t#", "\t;"] {
                if let Some(i) = v.find(sep) {
                    v = v[..i].trim_end();
                }
            }
            let v = v.trim_matches('"');
            out.push((section.clone(), conf_key(k), v.to_string()));
        }
    }
    out
}

fn find_conf_mon_host(text: &str) -> Option<(String, Option<String>)> {
    let e = conf_entries(text);
    let pick = |key: &str| {
        ["global", "client", "mon"].iter().find_map(|sec| {
            e.iter()
                .find(|(s, k, _)| s == sec && k == key)
                .map(|(_, _, v)| v.clone())
        })
    };
    let host = pick("mon_host")?;
    Some((host, pick("fsid")))
}

/// A ceph.conf (or `generate-minimal-conf` output) with `mon_host`/`mon host`.
pub fn parse_conf(input: &str, origin: &str) -> Result<MonMap, Error> {
    let (host, fsid) = find_conf_mon_host(input).ok_or_else(|| Error::Field {
        origin: origin.into(),
        field: "mon_host".into(),
        msg: "missing in [global], [client] and [mon]".into(),
    })?;
    let mut map = parse_mon_host(&host, origin)?;
    map.fsid = fsid;
    finish(map, origin)
}

/// Just a `mon_host` value, e.g. `[v2:10.0.0.1:3300/0,v1:10.0.0.1:6789/0] 10.0.0.2`.
pub fn parse_mon_host(value: &str, origin: &str) -> Result<MonMap, Error> {
    let field = |msg: String| Error::Field {
        origin: origin.into(),
        field: "mon_host".into(),
        msg,
    };
    let mut mons = Vec::new();
    for (i, entry) in addr::split_mon_host(value)
        .map_err(|e| field(e.to_string()))?
        .into_iter()
        .enumerate()
    {
        let addrs = addr::parse_addr_or_vec(entry).map_err(|e| field(e.to_string()))?;
        mons.push(Mon {
            name: noname(i),
            rank: None,
            addrs: dedup(addrs),
        });
    }
    Ok(MonMap {
        fsid: None,
        epoch: None,
        mons,
        quorum: None,
        format: Format::Conf,
    })
}

/// Ceph's names for mons known only by address: noname-a, noname-b, …
fn noname(i: usize) -> String {
    let mut s = String::new();
    let mut n = i;
    loop {
        s.insert(0, (b'a' + (n % 26) as u8) as char);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    format!("noname-{s}")
}

/// Drops duplicates and Ceph's "no address yet" (0.0.0.0:0/0).
fn dedup(addrs: Vec<MonAddr>) -> Vec<MonAddr> {
    let mut out: Vec<MonAddr> = Vec::new();
    for a in addrs.into_iter().filter(|a| !a.addr.ip().is_unspecified()) {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

fn finish(map: MonMap, origin: &str) -> Result<MonMap, Error> {
    if map.mons.is_empty() {
        return Err(Error::Input {
            origin: origin.into(),
            msg: "no monitors found".into(),
        });
    }
    if let Some(m) = map.mons.iter().find(|m| m.addrs.is_empty()) {
        return Err(Error::Input {
            origin: origin.into(),
            msg: format!("mon.{} has no address", m.name),
        });
    }
    if let Some(f) = &map.fsid {
        check_fsid(f).map_err(|e| Error::Field {
            origin: origin.into(),
            field: "fsid".into(),
            msg: e.to_string(),
        })?;
    }
    Ok(map)
}

/// An fsid that is not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{fsid:?} is not a UUID like 0d11e97a-bb59-47ec-9a31-a3ee664e88ef")]
pub struct BadFsid {
    pub fsid: String,
}

/// The kernel parses the fsid as a UUID (`8-4-4-4-12` hex digits).
pub fn check_fsid(f: &str) -> Result<(), BadFsid> {
    let groups: Vec<&str> = f.split('-').collect();
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(BadFsid { fsid: f.into() })
    }
}

impl MonMap {
    /// The map as `ceph config generate-minimal-conf` prints it.
    pub fn minimal_conf(&self, fsid: &str) -> String {
        let hosts: Vec<String> = self
            .mons
            .iter()
            .map(|m| match m.addrs.as_slice() {
                // Ceph writes a lone v1 address on the default port untyped (readable by
                // pre-Nautilus clients), everything else typed.
                [a] if a.kind == AddrType::V1 && a.addr.port() == addr::PORT_V1 => {
                    format!("{}/0", a.addr)
                }
                [a] => a.ceph_typed(),
                many => format!(
                    "[{}]",
                    many.iter()
                        .map(MonAddr::ceph_typed)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            })
            .collect();
        format!(
            "# minimal ceph.conf for {fsid}\n[global]\n\tfsid = {fsid}\n\tmon_host = {}\n",
            hosts.join(" ")
        )
    }
}

/// Checks a file system name against `ceph fs ls --format=json` output.
pub fn check_fs_exists(fs_ls_json: &str, fs: &str, origin: &str) -> Result<(), Error> {
    let v: Value = serde_json::from_str(fs_ls_json.trim()).map_err(|e| Error::Input {
        origin: origin.into(),
        msg: format!("invalid JSON from `ceph fs ls --format=json`: {e}"),
    })?;
    let names: Vec<&str> = v
        .as_array()
        .ok_or_else(|| Error::Input {
            origin: origin.into(),
            msg: "expected a JSON array".into(),
        })?
        .iter()
        .filter_map(|f| f.get("name").and_then(Value::as_str))
        .collect();
    if names.contains(&fs) {
        Ok(())
    } else {
        Err(Error::NoSuchFs {
            fs: fs.into(),
            known: if names.is_empty() {
                "the cluster has no file systems".into()
            } else {
                format!("file systems: {}", names.join(", "))
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_dump_with_only_addr() {
        let j = r#"{"epoch":3,"fsid":"0d11e97a-bb59-47ec-9a31-a3ee664e88ef","mons":[
            {"rank":0,"name":"a","addr":"10.0.0.1:6789/0"},
            {"rank":1,"name":"b","addr":"10.0.0.2:6789/0"}]}"#;
        let m = parse(j, "t").unwrap();
        assert_eq!(m.mons.len(), 2);
        assert_eq!(
            m.mons[1].addrs,
            vec![MonAddr::new(
                AddrType::V1,
                "10.0.0.2".parse().unwrap(),
                6789
            )]
        );
        assert_eq!(m.quorum, None);
    }

    #[test]
    fn ipv6_dump() {
        let j = r#"{"fsid":"0d11e97a-bb59-47ec-9a31-a3ee664e88ef","mons":[{"rank":0,"name":"a",
            "public_addrs":{"addrvec":[{"type":"v2","addr":"[fd00::1]:3300","nonce":0},
            {"type":"v1","addr":"[fd00::1]:6789","nonce":0}]},"addr":"[fd00::1]:6789/0"}],"quorum":[0]}"#;
        let m = parse(j, "t").unwrap();
        assert_eq!(
            m.mons[0].addr(AddrType::V2).unwrap().to_string(),
            "[fd00::1]:3300"
        );
        assert_eq!(m.quorum, Some(vec![0]));
    }

    #[test]
    fn noname_sequence() {
        assert_eq!(noname(0), "noname-a");
        assert_eq!(noname(25), "noname-z");
        assert_eq!(noname(26), "noname-aa");
    }

    #[test]
    fn conf_variants() {
        let c = "[global]\n  mon host = 10.0.0.1, 10.0.0.2:6789 ; comment\n fsid = 0d11e97a-bb59-47ec-9a31-a3ee664e88ef\n";
        let m = parse(c, "c").unwrap();
        assert_eq!(m.format, Format::Conf);
        assert_eq!(m.mons.len(), 2);
        assert_eq!(m.mons[0].addrs.len(), 2);
        assert_eq!(m.mons[1].addrs.len(), 1);
        assert_eq!(
            m.fsid.as_deref(),
            Some("0d11e97a-bb59-47ec-9a31-a3ee664e88ef")
        );
    }

    #[test]
    fn fsid_check() {
        assert!(check_fsid("0d11e97a-bb59-47ec-9a31-a3ee664e88ef").is_ok());
        assert!(check_fsid("0d11e97a-bb59-47ec-9a31-a3ee664e88e").is_err());
        assert!(check_fsid("").is_err());
        assert!(check_fsid("zd11e97a-bb59-47ec-9a31-a3ee664e88ef").is_err());
    }
}
