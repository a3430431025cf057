//! From a [`MonMap`] and a request to the exact mount(2) call.
//!
//! Address choice follows mount.ceph: an explicit `ms_mode=legacy` uses v1 addresses, any
//! other explicit ms_mode uses v2 addresses (and fails if there are none). Without an explicit
//! ms_mode the new syntax uses v2 addresses with `ms_mode=prefer-crc` (mount.ceph's default)
//! and falls back to v1 addresses without ms_mode when the cluster has no v2; the old syntax,
//! like mount.ceph's old-syntax path, uses v1 addresses without ms_mode and falls back to v2 +
//! prefer-crc. A v2 address is never emitted without an ms_mode: the kernel then speaks
//! msgr1 to a msgr2 port and the mount hangs (measured, see shared/notes/machine.md).
use crate::addr::{AddrType, MonAddr};
use crate::monmap::{check_fsid, MonMap};
use crate::secret::Secret;
use crate::Error;
use std::fmt;
use std::str::FromStr;

/// The kernel's `ms_mode=` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsMode {
    Legacy,
    Crc,
    Secure,
    PreferCrc,
    PreferSecure,
}

impl MsMode {
    pub const ALL: [MsMode; 5] = [
        MsMode::Legacy,
        MsMode::Crc,
        MsMode::Secure,
        MsMode::PreferCrc,
        MsMode::PreferSecure,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            MsMode::Legacy => "legacy",
            MsMode::Crc => "crc",
            MsMode::Secure => "secure",
            MsMode::PreferCrc => "prefer-crc",
            MsMode::PreferSecure => "prefer-secure",
        }
    }
    /// Modes that may use AES-GCM and so need the guest's `gcm` crypto module.
    pub fn may_encrypt(self) -> bool {
        matches!(self, MsMode::Secure | MsMode::PreferSecure)
    }
}

impl fmt::Display for MsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MsMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        MsMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| Error::Request {
                field: "ms_mode".into(),
                msg: format!("{s:?} is not one of legacy, crc, secure, prefer-crc, prefer-secure"),
            })
    }
}

/// Device string syntax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// `NAME@FSID.FS=/PATH` with `mon_addr=a/b/c` (kernel 5.17+).
    New,
    /// `a,b,c:/PATH` with `name=`, `mds_namespace=`, `fsid=` (every kernel).
    Old,
}

impl Syntax {
    pub fn as_str(self) -> &'static str {
        match self {
            Syntax::New => "new",
            Syntax::Old => "old",
        }
    }
}

impl FromStr for Syntax {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "new" => Ok(Syntax::New),
            "old" => Ok(Syntax::Old),
            _ => Err(Error::Request {
                field: "syntax".into(),
                msg: format!("{s:?} is not new or old"),
            }),
        }
    }
}

/// The syntax a kernel release (`uname -r`, e.g. `6.1.0-56-amd64`) understands: new from 5.17.
pub fn syntax_for_kernel(release: &str) -> Result<Syntax, Error> {
    let bad = || Error::Request {
        field: "kernel release".into(),
        msg: format!("cannot read a version from {release:?}"),
    };
    let mut it = release.trim().split(|c: char| !c.is_ascii_digit());
    let major: u32 = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    let minor: u32 = it.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok(if (major, minor) >= (5, 17) {
        Syntax::New
    } else {
        Syntax::Old
    })
}

/// How the mount authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No cephx option (auth disabled, or the kernel default).
    None,
    /// `key=client.NAME`: the secret was put into the kernel keyring with add_key(2), so it
    /// never shows up in the options or /proc/mounts.
    Key,
    /// `secret=BASE64`, the fallback when the kernel has no "ceph" key type.
    Secret(Secret),
    /// `secretfile=PATH`: for mount.ceph (what fstab and .mount units run), which reads the
    /// bare base64 key from PATH; the kernel never sees this option.
    SecretFile(String),
}

/// The seed's mount options (`norequire_active_mds,noshare`).
pub const PRESET_SEED: &[&str] = &["norequire_active_mds", "noshare"];

/// What to mount.
#[derive(Clone, Debug)]
pub struct MountRequest {
    /// cephx user without `client.` (a leading `client.` is accepted and dropped).
    pub name: String,
    /// CephFS name; required for the new syntax.
    pub fs: Option<String>,
    /// Path inside the file system.
    pub path: String,
    /// Overrides (and must equal) the fsid in the map.
    pub fsid: Option<String>,
    /// `None` = mount.ceph's default behaviour (see module docs).
    pub ms_mode: Option<MsMode>,
    pub syntax: Syntax,
    /// Use only monitors in the quorum list of the dump.
    pub quorum_only: bool,
    /// Extra kernel options, e.g. [`PRESET_SEED`].
    pub options: Vec<String>,
    pub auth: Auth,
}

impl MountRequest {
    pub fn new(name: &str, fs: Option<&str>, syntax: Syntax) -> Self {
        MountRequest {
            name: name.into(),
            fs: fs.map(Into::into),
            path: "/".into(),
            fsid: None,
            ms_mode: None,
            syntax,
            quorum_only: false,
            options: Vec::new(),
            auth: Auth::None,
        }
    }
}

/// One comma-separated kernel option.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountOpt {
    pub key: String,
    pub value: Option<String>,
    /// Holds the secret: shown as `<redacted>` unless asked.
    pub secret: bool,
}

impl MountOpt {
    fn kv(k: &str, v: impl Into<String>) -> Self {
        MountOpt {
            key: k.into(),
            value: Some(v.into()),
            secret: false,
        }
    }
    fn render(&self, reveal: bool) -> String {
        match (&self.value, self.secret && !reveal) {
            (None, _) => self.key.clone(),
            (Some(_), true) => format!("{}=<redacted>", self.key),
            (Some(v), false) => format!("{}={v}", self.key),
        }
    }
}

/// The resolved mount: everything mount(2) gets, plus what it was derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountPlan {
    pub syntax: Syntax,
    /// mount(2) `source`.
    pub source: String,
    /// Always `ceph`.
    pub fstype: &'static str,
    /// mount(2) `data`, in order.
    pub options: Vec<MountOpt>,
    pub mon_addrs: Vec<MonAddr>,
    pub ms_mode: Option<MsMode>,
    pub fsid: Option<String>,
    pub name: String,
    pub fs: Option<String>,
    pub path: String,
    /// mount(2) `mountflags` from generic options such as `ro` or `noatime`.
    pub flags: u64,
    /// Those generic options (and userspace-only ones like `_netdev`) as given: they go on a
    /// `mount -o` command line, fstab and units, but never into the kernel's data string.
    pub generic_options: Vec<String>,
    /// Decisions worth telling the user (fallbacks, skipped mons).
    pub notes: Vec<String>,
}

/// Generic mount options that are mount(2) flags, as mount(8) and mount.ceph translate them:
/// (name, flags set, flags cleared).
#[allow(clippy::unnecessary_cast)] // c_ulong is u64 only on 64-bit targets
const FLAG_OPTIONS: &[(&str, u64, u64)] = &[
    ("ro", libc::MS_RDONLY as u64, 0),
    ("rw", 0, libc::MS_RDONLY as u64),
    ("nosuid", libc::MS_NOSUID as u64, 0),
    ("suid", 0, libc::MS_NOSUID as u64),
    ("nodev", libc::MS_NODEV as u64, 0),
    ("dev", 0, libc::MS_NODEV as u64),
    ("noexec", libc::MS_NOEXEC as u64, 0),
    ("exec", 0, libc::MS_NOEXEC as u64),
    ("sync", libc::MS_SYNCHRONOUS as u64, 0),
    ("async", 0, libc::MS_SYNCHRONOUS as u64),
    ("noatime", libc::MS_NOATIME as u64, 0),
    ("nodiratime", libc::MS_NODIRATIME as u64, 0),
    ("relatime", libc::MS_RELATIME as u64, 0),
    ("strictatime", libc::MS_STRICTATIME as u64, 0),
    ("lazytime", libc::MS_LAZYTIME as u64, 0),
];

/// Options only userspace (mount(8), systemd) understands; mount.ceph drops them too.
const USERSPACE_OPTIONS: &[&str] = &[
    "defaults", "auto", "noauto", "_netdev", "nofail", "user", "nouser", "users",
];

impl MountPlan {
    /// mount(2) data. The secret is `<redacted>` unless `reveal`.
    pub fn data(&self, reveal: bool) -> String {
        self.options
            .iter()
            .map(|o| o.render(reveal))
            .collect::<Vec<_>>()
            .join(",")
    }
    /// What a user passes to `mount -o` (and fstab/units): the data plus generic options.
    pub fn user_options(&self, reveal: bool) -> String {
        let mut v: Vec<String> = self.options.iter().map(|o| o.render(reveal)).collect();
        v.extend(self.generic_options.iter().cloned());
        v.join(",")
    }
    pub fn has_secret(&self) -> bool {
        self.options.iter().any(|o| o.secret)
    }
    /// The same plan with a different authentication option (kmount's fallback from
    /// `key=` to `secret=`).
    pub fn with_auth(&self, auth: &Auth) -> MountPlan {
        let mut p = self.clone();
        let i = p
            .options
            .iter()
            .position(|o| o.key == "key" || o.key == "secret" || o.key == "secretfile");
        let new = auth_opt(auth, &p.name);
        match (i, new) {
            (Some(i), Some(o)) => p.options[i] = o,
            (Some(i), None) => {
                p.options.remove(i);
            }
            (None, Some(o)) => p.options.push(o),
            (None, None) => {}
        }
        p
    }
}

fn auth_opt(auth: &Auth, name: &str) -> Option<MountOpt> {
    match auth {
        Auth::None => None,
        Auth::Key => Some(MountOpt::kv("key", format!("client.{name}"))),
        Auth::Secret(s) => Some(MountOpt {
            key: "secret".into(),
            value: Some(s.base64().into()),
            secret: true,
        }),
        Auth::SecretFile(path) => Some(MountOpt::kv("secretfile", path.clone())),
    }
}

/// Options that kmount/labnet set themselves and must not come in through `-o`.
const MANAGED: &[(&str, &str)] = &[
    ("secret", "pass the secret with --keyring, --secret-file or --secret-stdin, never on the command line"),
    ("secretfile", "use --secret-file (the kernel does not read files)"),
    ("key", "set by the tool after add_key(2)"),
    ("name", "use --name"),
    ("mon_addr", "addresses come from the mon dump"),
    ("ms_mode", "use --ms-mode"),
    ("mds_namespace", "use --fs"),
    ("fs", "use --fs"),
    ("fsid", "use --fsid"),
];

fn check_token(field: &str, v: &str, forbid: &[char]) -> Result<(), Error> {
    if v.is_empty() {
        return Err(Error::Request {
            field: field.into(),
            msg: "empty".into(),
        });
    }
    if let Some(c) = v
        .chars()
        .find(|c| forbid.contains(c) || c.is_whitespace() || c.is_control())
    {
        return Err(Error::Request {
            field: field.into(),
            msg: format!("{v:?} contains {c:?}"),
        });
    }
    Ok(())
}

/// One `-o` option. Its errors never quote the option's text, only a name that reads as an
/// option name: a value may be a secret (`secret=KEY`), and a pasted key is no option name.
fn check_option(index: usize, o: &str) -> Result<(), Error> {
    let (key, value) = match o.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (o, None),
    };
    let is_name = !key.is_empty()
        && key.len() <= 32
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    let managed = MANAGED
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key.trim()));
    if let Some((k, why)) = managed {
        return Err(Error::Request {
            field: format!("option {k}="),
            msg: (*why).into(),
        });
    }
    if !is_name {
        return Err(Error::Request {
            field: format!("option {} of -o", index + 1),
            msg: "not a mount option name (lowercase letters, digits, '_', '.', '-'); \
                  its text is not shown in case it is a secret"
                .into(),
        });
    }
    let bad = value.and_then(|v| {
        v.chars()
            .find(|c| *c == ',' || c.is_whitespace() || c.is_control())
    });
    match (value, bad) {
        (Some(""), _) => Err(Error::Request {
            field: format!("option {key}="),
            msg: "empty value".into(),
        }),
        (_, Some(c)) => Err(Error::Request {
            field: format!("option {key}="),
            msg: format!("the value contains {c:?} (the value is not shown)"),
        }),
        _ => Ok(()),
    }
}

/// Builds the mount for `req` from `map`.
pub fn build(map: &MonMap, req: &MountRequest) -> Result<MountPlan, Error> {
    let name = req
        .name
        .strip_prefix("client.")
        .unwrap_or(&req.name)
        .to_string();
    check_token("name", &name, &[',', '=', '@', '/', ':'])?;
    if let Some(fs) = &req.fs {
        check_token("fs", fs, &[',', '=', '/', ':', '@'])?;
    }
    if !req.path.starts_with('/') {
        return Err(Error::Request {
            field: "path".into(),
            msg: format!("{:?} must start with '/'", req.path),
        });
    }
    // Paths may hold spaces (the kernel takes the source verbatim), but no control characters.
    if let Some(c) = req.path.chars().find(|c| c.is_control()) {
        return Err(Error::Request {
            field: "path".into(),
            msg: format!("{:?} contains {c:?}", req.path),
        });
    }
    for (i, o) in req.options.iter().enumerate() {
        check_option(i, o)?;
    }

    let fsid = match (&req.fsid, &map.fsid) {
        (Some(given), Some(dump)) if !given.eq_ignore_ascii_case(dump) => {
            return Err(Error::FsidMismatch {
                given: given.clone(),
                dump: dump.clone(),
            })
        }
        (Some(f), _) | (None, Some(f)) => {
            check_fsid(f).map_err(|e| Error::Request {
                field: "fsid".into(),
                msg: e.to_string(),
            })?;
            Some(f.to_ascii_lowercase())
        }
        (None, None) => None,
    };

    let mut notes = Vec::new();
    let mons: Vec<_> = if req.quorum_only {
        let q = map.quorum.as_ref().ok_or(Error::NoQuorum)?;
        let (inq, out): (Vec<_>, Vec<_>) = map
            .mons
            .iter()
            .partition(|m| m.rank.is_some_and(|r| q.contains(&r)));
        for m in out {
            notes.push(format!("mon.{} is not in quorum; left out", m.name));
        }
        inq
    } else {
        map.mons.iter().collect()
    };
    if mons.is_empty() {
        return Err(Error::NoAddr {
            kind: "quorum",
            why: "no monitor of the map is in quorum".into(),
        });
    }
    let pick = |kind: AddrType| -> Vec<MonAddr> {
        let mut v: Vec<MonAddr> = Vec::new();
        for a in mons.iter().filter_map(|m| m.addr(kind)) {
            if !v.contains(&a) {
                v.push(a);
            }
        }
        v
    };
    let (v1, v2) = (pick(AddrType::V1), pick(AddrType::V2));
    let (addrs, ms_mode) = match req.ms_mode {
        Some(MsMode::Legacy) if v1.is_empty() => {
            return Err(Error::NoAddr {
                kind: "v1",
                why: "ms_mode=legacy needs one, but the cluster has only v2 (msgr2) addresses; use another ms_mode".into(),
            })
        }
        Some(MsMode::Legacy) => (v1, Some(MsMode::Legacy)),
        Some(m) if v2.is_empty() => {
            return Err(Error::NoAddr {
                kind: "v2",
                why: format!("ms_mode={m} needs one, but the cluster has only v1 addresses (ms_bind_msgr2=false?); use ms_mode=legacy"),
            })
        }
        Some(m) => (v2, Some(m)),
        None => match req.syntax {
            Syntax::New if !v2.is_empty() => (v2, Some(MsMode::PreferCrc)),
            Syntax::New => {
                notes.push("no v2 address in the map: using v1 addresses without ms_mode".into());
                (v1, None)
            }
            Syntax::Old if !v1.is_empty() => (v1, None),
            Syntax::Old => {
                notes.push("no v1 address in the map: using v2 addresses with ms_mode=prefer-crc".into());
                (v2, Some(MsMode::PreferCrc))
            }
        },
    };
    let kind = if ms_mode.is_some_and(|m| m != MsMode::Legacy) {
        AddrType::V2
    } else {
        AddrType::V1
    };
    for m in &mons {
        if m.addr(kind).is_none() {
            notes.push(format!(
                "mon.{} has no {} address; left out",
                m.name,
                kind.as_str()
            ));
        }
    }

    let joined = |sep: &str| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(sep)
    };
    let mut options = Vec::new();
    let (mut flags, mut generic_options) = (0u64, Vec::new());
    let mut kernel_extra = Vec::new();
    for o in &req.options {
        if let Some((_, set, clear)) = FLAG_OPTIONS.iter().find(|(n, ..)| n == o) {
            flags = (flags | set) & !clear;
            generic_options.push(o.clone());
        } else if USERSPACE_OPTIONS.contains(&o.as_str()) {
            generic_options.push(o.clone());
        } else {
            kernel_extra.push(o);
        }
    }
    let extra = kernel_extra.into_iter().map(|o| match o.split_once('=') {
        Some((k, v)) => MountOpt::kv(k, v),
        None => MountOpt {
            key: o.clone(),
            value: None,
            secret: false,
        },
    });
    let source = match req.syntax {
        Syntax::New => {
            let fs = req.fs.as_ref().ok_or(Error::Request {
                field: "fs".into(),
                msg: "the new syntax (NAME@FSID.FS=/PATH) needs a file system name".into(),
            })?;
            let fsid = fsid.as_ref().ok_or(Error::NoFsid)?;
            // Seed 000's order: mon_addr, ms_mode, name, secret, extras.
            options.push(MountOpt::kv("mon_addr", joined("/")));
            if let Some(m) = ms_mode {
                options.push(MountOpt::kv("ms_mode", m.as_str()));
            }
            options.push(MountOpt::kv("name", &name));
            options.extend(auth_opt(&req.auth, &name));
            options.extend(extra);
            format!("{name}@{fsid}.{fs}={}", req.path)
        }
        Syntax::Old => {
            // mount.ceph's order: user options, then key/secret, then mds_namespace and fsid.
            options.push(MountOpt::kv("name", &name));
            if let Some(m) = ms_mode {
                options.push(MountOpt::kv("ms_mode", m.as_str()));
            }
            options.extend(extra);
            options.extend(auth_opt(&req.auth, &name));
            if let Some(fs) = &req.fs {
                options.push(MountOpt::kv("mds_namespace", fs));
            }
            if let Some(f) = &fsid {
                options.push(MountOpt::kv("fsid", f));
            }
            format!("{}:{}", joined(","), req.path)
        }
    };
    Ok(MountPlan {
        syntax: req.syntax,
        source,
        fstype: "ceph",
        options,
        mon_addrs: addrs,
        ms_mode,
        fsid,
        name,
        fs: req.fs.clone(),
        path: req.path.clone(),
        flags,
        generic_options,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        for (rel, want) in [
            ("6.1.0-56-amd64", Syntax::New),
            ("5.17.0", Syntax::New),
            ("5.16.20-arch1", Syntax::Old),
            ("4.19.0-26-amd64", Syntax::Old),
            ("6.18.44-fc-v782", Syntax::New),
            ("10.0", Syntax::New),
        ] {
            assert_eq!(syntax_for_kernel(rel).unwrap(), want, "{rel}");
        }
        assert!(syntax_for_kernel("linux")
            .unwrap_err()
            .to_string()
            .contains("cannot read a version from \"linux\""));
        assert!(syntax_for_kernel("6").is_err());
    }

    #[test]
    fn ms_mode_names_roundtrip() {
        for m in MsMode::ALL {
            assert_eq!(m.as_str().parse::<MsMode>().unwrap(), m);
        }
        assert!("CRC".parse::<MsMode>().is_err());
    }
}
