//! systemd units for labnet labs: seed 000's hand-written `sepian-netns` oneshot and its
//! "hacked" dhcpd service, generated from a [`model::Lab`] and the absolute path of the
//! `labnet` binary. [`generate`] is pure text; [`install`] / [`remove`] write and delete the
//! files under a root directory (`/` or a test's temp dir).
//!
//! # What is generated
//!
//! | file | role |
//! |---|---|
//! | `labnet@.service` | `Type=oneshot`, `RemainAfterExit=yes`: `labnet up --no-daemons %i` / `labnet down %i` (ExecStop and ExecStopPost) |
//! | `labnet-dhcpd@.service` | `Type=notify`: `labnet dhcpd %i` inside `/run/netns/%i` |
//! | `labnet-dns@.service` | `Type=notify`: `labnet dns %i` inside `/run/netns/%i` |
//! | `labnet@LAB.service.d/labnet.conf` | per-lab drop-in: description from the config, `--config` |
//! | `labnet-{dhcpd,dns}@LAB.service.d/labnet.conf` | only when the lab has a config file: hands it over as a credential |
//!
//! # Templates, with per-lab drop-ins
//!
//! Everything in the units that depends on the lab is its name: the namespace
//! (`/run/netns/%i`), the state directory (`labnet/%i`), the argument of every command.
//! Lab names are limited to `[A-Za-z0-9_-]` (see [`model::config::valid_lab_name`]), which
//! need no unit-name escaping, so `%i` is the lab name verbatim (we never use `%I`, which
//! would turn `-` into `/`). One set of three templates therefore serves every lab, and
//! `systemctl start labnet@LAB` works for any lab whose config labnet can find. What is
//! not the name goes into drop-ins under `UNIT@LAB.service.d/`, written per lab:
//! the lab's description (bridge, subnet, uplink as configured at install time) and, when
//! the lab comes from a file, that file's path. The drop-ins are also the record of which
//! labs are installed: `remove LAB` deletes the templates only when no other lab has any.
//!
//! # The lab unit has no mount sandbox, on purpose
//!
//! `labnet up` creates the namespace by bind-mounting it on `/run/netns/LAB`, writes
//! `/etc/netns/LAB/`, and may change the host's nftables and `ip_forward`. Any option that
//! gives the unit its own mount namespace (`ProtectSystem=`, `ProtectHome=`, `PrivateTmp=`,
//! `ReadWritePaths=`, ...) would make that bind mount private to the unit (systemd sets up
//! the unit's mounts as slaves of the host's), so the namespace would vanish for everyone
//! else. The lab unit therefore runs as root with the host's view, like seed 000's oneshot,
//! but with a capability bounding set of only what `up`/`down` use (`CAP_NET_ADMIN`,
//! `CAP_SYS_ADMIN`, `CAP_DAC_READ_SEARCH`), `NoNewPrivileges=` and the seccomp-only
//! switches that need no mount namespace.
//!
//! # Userspace WireGuard gets no unit of its own
//!
//! When the kernel has no WireGuard, `labnet up` starts `wireguard-go IFACE` itself, in the
//! middle of its plan: it must wait for the UAPI socket, configure key and peer, and move the
//! TUN into the lab before the address, default route and NAT are added, and it records the
//! pid so `labnet down` can stop it. A separate unit could not be restarted on its own
//! anyway (a fresh wireguard-go comes up unconfigured, with its TUN in the wrong
//! namespace), so `Restart=` would only hide a broken uplink. Instead the process stays in
//! `labnet@LAB.service`'s cgroup (with `RemainAfterExit=yes`, systemd leaves processes a
//! oneshot left behind alone until the unit stops), where `systemctl status` shows it. On
//! stop, `ExecStop=labnet down` stops it by pid (SIGTERM, so it removes its UAPI socket and
//! TUN); only after ExecStop returns does systemd signal what is left in the cgroup.
//! `KillMode=control-group` (SIGTERM to every leftover, then SIGKILL) is set explicitly:
//! with `mixed` a leftover wireguard-go would get no SIGTERM, only the final SIGKILL (leaving
//! a stale socket under /var/run/wireguard); with `process` or `none` it would outlive the lab.
//! A wireguard-go that dies while the lab is up is reported by `labnet status`/`doctor`;
//! `systemctl restart labnet@LAB` rebuilds the lab (daemons included, see below).
//!
//! # The daemons
//!
//! `labnet-dhcpd@LAB` and `labnet-dns@LAB` are `Type=notify` (the daemons send `READY=1`
//! after binding), `BindsTo=` + `After=labnet@LAB.service` (they start after the namespace
//! exists, stop before `down` removes it, and stop when the lab stops), and are pulled in by
//! the lab unit's `Wants=`, so `systemctl start labnet@LAB` starts all three.
//! `NetworkNamespacePath=/run/netns/%i` puts them in the lab (so no `--enter-netns`).
//!
//! Least privilege: `DynamicUser=yes` with the shared name `labnet` (both daemons of a lab
//! get the same transient uid while they run, so the dns server can read the `hosts` file the
//! dhcpd writes), `StateDirectory=labnet/%i` (= `model::paths::state_dir`, leases and hosts;
//! both units declare it so both can reach it), and only the capabilities each needs:
//! `CAP_NET_BIND_SERVICE` for ports 67 / 53, plus `CAP_NET_RAW` for the dhcpd
//! (`SO_BINDTODEVICE` needs it before Linux 5.7). `ProtectSystem=strict`, `ProtectHome=yes`,
//! `NoNewPrivileges=yes`, a syscall filter and the other `Protect*` switches take the rest.
//! `/run/labnet/%i/reservations` (written by `labnet vm` as root) stays readable under
//! `ProtectSystem=strict`; it is deliberately not a `RuntimeDirectory=`: systemd would chown
//! it to the transient user and delete `/run/labnet/%i` (VM state, logs) when a daemon stops.
//! `Restart=on-failure` with `RestartSec=2s` and a start limit of 5 in 60 s follows the
//! seed's dhcpd unit.
//!
//! The daemons read the lab config as that unprivileged user inside the sandbox, where a
//! file under /home, /root or /tmp is invisible and a 0600 file unreadable. So when a lab
//! comes from a file, its drop-ins pass the file with `LoadCredential=lab.toml:PATH` (PID 1
//! copies it into the unit's credentials directory on every start) and run the daemon with
//! `--config %d/lab.toml`. The lab unit (root, host view) gets `--config PATH` directly.
//!
//! Every `Exec*=` names the `labnet` binary by the absolute path given to [`generate`]
//! (the CLI uses the running binary or `--labnet-bin`); nothing refers to a source tree.
//!
//! # Requirements and tests
//!
//! systemd >= 248 (`LoadCredential=`, the `%d` specifier, `ProtectProc=`); Debian 12 has 252.
//! The tests check every generated file against goldens (tests/golden, `LABNET_BLESS=1`
//! rewrites), run `systemd-analyze verify` on real instances (any warning fails), and
//! install/remove under a temp root. Without systemd as PID 1 the privileges cannot be
//! tried for real, so tests/tests/units_sandbox.rs does what systemd would with the printed
//! unit text: each daemon's ExecStart runs in the lab's namespace as a non-root uid with only
//! the unit's capabilities, no-new-privs, everything read-only but its state directory, the
//! config as a credential, and READY=1 on NOTIFY_SOCKET; then dns answers a query and dhcpd
//! leases an address to udhcpc, and without the capabilities neither can bind its port. The
//! lab unit's ExecStart/ExecStop build and remove a userspace-WireGuard lab under its
//! bounding set, and fail without CAP_SYS_ADMIN or CAP_DAC_READ_SEARCH.
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

mod install;
pub use install::{install, installed_labs, remove, systemctl, systemd_running, Change, UNIT_DIR};

/// The first line of every file labnet writes; `remove` deletes only files that start so.
pub const MARKER: &str = "# Generated by labnet";

pub const LAB_TEMPLATE: &str = "labnet@.service";
pub const DHCPD_TEMPLATE: &str = "labnet-dhcpd@.service";
pub const DNS_TEMPLATE: &str = "labnet-dns@.service";
pub const TEMPLATES: [&str; 3] = [LAB_TEMPLATE, DHCPD_TEMPLATE, DNS_TEMPLATE];
/// The drop-in file name inside `UNIT@LAB.service.d/`.
pub const DROPIN: &str = "labnet.conf";
/// Target the lab unit is enabled for (`[Install] WantedBy=`).
pub const WANTED_BY: &str = "multi-user.target";

#[derive(Debug, thiserror::Error)]
pub enum UnitsError {
    #[error("{field}: {path:?} must be an absolute path")]
    NotAbsolute { field: &'static str, path: PathBuf },
    #[error("{field}: {path:?} cannot be written into a unit file: {why}")]
    BadPath {
        field: &'static str,
        path: PathBuf,
        why: &'static str,
    },
    #[error("lab name {0:?} cannot be a unit instance name (letters, digits, '-' and '_' only)")]
    BadLabName(String),
    #[error("--for-service {0:?}: expected a service unit name (NAME.service)")]
    BadServiceName(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path}: exists and was not written by labnet (no {MARKER:?} header); move it away first"
    )]
    NotOurs { path: String },
    #[error("{0}")]
    Systemctl(String),
}

impl UnitsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        UnitsError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// What the units are generated from besides the lab itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// Absolute path of the installed `labnet` binary (every `Exec*=` uses it).
    pub labnet_bin: PathBuf,
    /// Absolute path of the lab's config file; `None` for the embedded default lab.
    pub config: Option<PathBuf>,
}

/// One generated file, with its path relative to the unit directory
/// (`labnet@.service`, `labnet@sepian.service.d/labnet.conf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub path: PathBuf,
    pub text: String,
}

/// `labnet@LAB.service` and friends.
pub fn instance(template: &str, lab: &str) -> String {
    template.replacen("@.", &format!("@{lab}."), 1)
}

pub fn lab_unit(lab: &str) -> String {
    instance(LAB_TEMPLATE, lab)
}

/// Generates the three templates and the lab's drop-ins, in a fixed order.
pub fn generate(lab: &model::Lab, opts: &Options) -> Result<Vec<UnitFile>, UnitsError> {
    if !model::config::valid_lab_name(&lab.name) {
        return Err(UnitsError::BadLabName(lab.name.clone()));
    }
    let bin = exec_path("labnet_bin", &opts.labnet_bin)?;
    let config = match &opts.config {
        Some(c) => Some((exec_arg("config", c)?, setting_path("config", c)?)),
        None => None,
    };

    let mut files = vec![
        UnitFile {
            path: LAB_TEMPLATE.into(),
            text: lab_template(&bin),
        },
        UnitFile {
            path: DHCPD_TEMPLATE.into(),
            text: daemon_template(&bin, Daemon::Dhcpd),
        },
        UnitFile {
            path: DNS_TEMPLATE.into(),
            text: daemon_template(&bin, Daemon::Dns),
        },
    ];

    let name = &lab.name;
    let mut t = header(&format!(
        "Per-lab settings of {}, from {}.\n# `labnet units remove {name}` deletes it.",
        lab_unit(name),
        lab.source
    ));
    t.push_str("[Unit]\n");
    let _ = writeln!(t, "Description=labnet lab {name}: {}", describe(lab));
    if let Some((arg, _)) = &config {
        t.push_str("\n[Service]\n# Read the lab from this file instead of /etc/labnet/LAB.toml.\nExecStart=\n");
        let _ = writeln!(t, "ExecStart={bin} up --no-daemons --config {arg} %i");
    }
    files.push(UnitFile {
        path: dropin_path(LAB_TEMPLATE, name),
        text: t,
    });

    if let Some((_, cred)) = &config {
        for d in [Daemon::Dhcpd, Daemon::Dns] {
            let mut t = header(&format!(
                "Per-lab settings of {}, from {}.\n# `labnet units remove {name}` deletes it.",
                instance(d.template(), name),
                lab.source
            ));
            t.push_str("[Service]\n");
            t.push_str("# PID 1 copies the config into the credentials directory (%d) on every start, so\n");
            t.push_str("# the sandboxed user reads it wherever it lives and whatever its mode.\n");
            let _ = writeln!(t, "LoadCredential=lab.toml:{cred}");
            t.push_str("ExecStart=\n");
            let _ = writeln!(t, "ExecStart={bin} {} %i --config %d/lab.toml", d.sub());
            files.push(UnitFile {
                path: dropin_path(d.template(), name),
                text: t,
            });
        }
    }
    Ok(files)
}

/// A drop-in that puts a user's own service into the lab: `NAME.service.d/labnet-LAB.conf`
/// with `NetworkNamespacePath=` and, since only `ip netns exec` bind-mounts
/// `/etc/netns/LAB/*` (systemd issue 28694), the lab's resolv.conf and nsswitch.conf bound over
/// the service's own; ordered after and bound to the lab unit, so it starts once the
/// namespace exists and stops with the lab.
pub fn service_dropin(lab: &str, service: &str) -> Result<UnitFile, UnitsError> {
    if !model::config::valid_lab_name(lab) {
        return Err(UnitsError::BadLabName(lab.into()));
    }
    let ok = service.ends_with(".service")
        && service.len() > ".service".len()
        && !service.starts_with('.')
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@:\\".contains(&b));
    if !ok {
        return Err(UnitsError::BadServiceName(service.into()));
    }
    let unit = lab_unit(lab);
    let mut t = header(&format!(
        "Runs {service} inside lab {lab}'s network namespace, resolving through the lab's dns.\n# Written by `labnet units print --for-service {service} {lab}`."
    ));
    t.push_str("[Unit]\n");
    let _ = writeln!(t, "BindsTo={unit}");
    let _ = writeln!(t, "After={unit}");
    t.push_str("\n[Service]\n");
    let _ = writeln!(t, "NetworkNamespacePath=/run/netns/{lab}");
    t.push_str(
        "# `ip netns exec` would bind these over /etc; a unit in the namespace needs it said.\n",
    );
    let _ = writeln!(
        t,
        "BindReadOnlyPaths=/etc/netns/{lab}/resolv.conf:/etc/resolv.conf"
    );
    let _ = writeln!(
        t,
        "BindReadOnlyPaths=/etc/netns/{lab}/nsswitch.conf:/etc/nsswitch.conf"
    );
    Ok(UnitFile {
        path: PathBuf::from(format!("{service}.d")).join(format!("labnet-{lab}.conf")),
        text: t,
    })
}

/// `UNIT@LAB.service.d/labnet.conf`.
pub fn dropin_path(template: &str, lab: &str) -> PathBuf {
    PathBuf::from(format!("{}.d", instance(template, lab))).join(DROPIN)
}

/// All generated files as one text, each preceded by a `# UNIT_DIR/PATH` line.
pub fn render(files: &[UnitFile], unit_dir: &Path) -> String {
    let mut out = String::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "# ==> {} <==", unit_dir.join(&f.path).display());
        out.push_str(&f.text);
    }
    out
}

fn describe(lab: &model::Lab) -> String {
    let up = match &lab.uplink {
        model::Uplink::None => "isolated".to_string(),
        model::Uplink::Wireguard(w) => format!("WireGuard {} via {}", w.interface, w.gateway),
        model::Uplink::Host(h) => format!("NAT to the host via {}", h.host_interface),
    };
    // `%` would be a specifier in Description=.
    format!("{} {}, {up}", lab.bridge.name, lab.bridge.address).replace('%', "%%")
}

fn header(what: &str) -> String {
    format!(
        "{MARKER} (`labnet units install`); do not edit, it is rewritten on install.\n\
         # Local changes belong in another drop-in (`systemctl edit UNIT`).\n# {what}\n"
    )
}

#[derive(Clone, Copy)]
enum Daemon {
    Dhcpd,
    Dns,
}

impl Daemon {
    fn template(self) -> &'static str {
        match self {
            Daemon::Dhcpd => DHCPD_TEMPLATE,
            Daemon::Dns => DNS_TEMPLATE,
        }
    }
    fn sub(self) -> &'static str {
        match self {
            Daemon::Dhcpd => "dhcpd",
            Daemon::Dns => "dns",
        }
    }
}

fn lab_template(bin: &str) -> String {
    let mut t = header("Template for every lab: %i is the lab (= network namespace) name.");
    t.push_str(&format!(
        "\
[Unit]
Description=labnet lab %i
# The uplink (a WireGuard endpoint) may need the host's network and name resolution.
Wants=network-online.target
After=network-online.target nss-lookup.target
# The lab's DHCP and DNS servers run as units of their own in the lab's namespace.
Wants=labnet-dhcpd@%i.service labnet-dns@%i.service

[Service]
Type=oneshot
RemainAfterExit=yes
# Builds the namespace, bridge, uplink and NAT; dhcpd and dns are the units above.
ExecStart={bin} up --no-daemons %i
# Undoes exactly what `up` recorded in /run/labnet/%i.json.
ExecStop={bin} down %i
# ExecStop runs only after a successful start; this also clears what a failed or
# timed-out `up` left recorded. With nothing recorded it is a no-op.
ExecStopPost={bin} down %i
# A userspace WireGuard (wireguard-go) started by `up` lives on in this unit's cgroup.
# `down` stops it by pid; whatever is left after ExecStop gets SIGTERM, then SIGKILL.
KillMode=control-group
TimeoutStartSec=90s
TimeoutStopSec=30s
# What `up` and `down` need, and no more: netlink, nftables and the TUN device
# (NET_ADMIN), making and entering namespaces (SYS_ADMIN), reading a key or config file
# owned by another user (DAC_READ_SEARCH).
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_DAC_READ_SEARCH
NoNewPrivileges=yes
LockPersonality=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
SystemCallArchitectures=native
# No ProtectSystem=/PrivateTmp=/...: a private mount namespace would hide the bind mount
# /run/netns/%i that `up` makes from the rest of the system.

[Install]
WantedBy={WANTED_BY}
"
    ));
    t
}

fn daemon_template(bin: &str, d: Daemon) -> String {
    let (what, caps, families) = match d {
        Daemon::Dhcpd => (
            "DHCP server",
            "CAP_NET_BIND_SERVICE CAP_NET_RAW",
            // A UDP socket bound to the bridge: no packet sockets.
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
        Daemon::Dns => (
            "DNS server",
            "CAP_NET_BIND_SERVICE",
            "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        ),
    };
    let why_caps = match d {
        Daemon::Dhcpd => {
            "# Port 67; SO_BINDTODEVICE on the bridge needs CAP_NET_RAW before Linux 5.7."
        }
        Daemon::Dns => "# Port 53.",
    };
    let sub = d.sub();
    let reload = match d {
        Daemon::Dhcpd => "",
        // `labnet peer add|remove` reloads it: the config's [[peers]] become its forward table.
        Daemon::Dns => "ExecReload=/bin/kill -HUP $MAINPID\n",
    };
    let mut t = header("Template for every lab: %i is the lab (= network namespace) name.");
    t.push_str(&format!(
        "\
[Unit]
Description=labnet {what} for lab %i
# Starts once the lab exists, stops before `labnet down` removes it, and with the lab.
BindsTo=labnet@%i.service
After=labnet@%i.service
StartLimitIntervalSec=60s
StartLimitBurst=5

[Service]
Type=notify
# Inside the lab: systemd joins the namespace, so no --enter-netns.
NetworkNamespacePath=/run/netns/%i
ExecStart={bin} {sub} %i
{reload}Restart=on-failure
RestartSec=2s
TimeoutStopSec=10s
# Both daemons of a lab share the transient user \"labnet\" and its state directory
# /var/lib/labnet/%i (leases, and the hosts file dhcpd writes for dns).
DynamicUser=yes
User=labnet
Group=labnet
StateDirectory=labnet/%i
StateDirectoryMode=0755
UMask=0022
{why_caps}
AmbientCapabilities={caps}
CapabilityBoundingSet={caps}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectClock=yes
ProtectHostname=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies={families}
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
"
    ));
    t
}

fn check_path(field: &'static str, p: &Path) -> Result<String, UnitsError> {
    if !p.is_absolute() {
        return Err(UnitsError::NotAbsolute {
            field,
            path: p.to_path_buf(),
        });
    }
    let s = p.to_str().ok_or_else(|| UnitsError::BadPath {
        field,
        path: p.to_path_buf(),
        why: "not valid UTF-8",
    })?;
    if s.chars().any(|c| c.is_control()) {
        return Err(UnitsError::BadPath {
            field,
            path: p.to_path_buf(),
            why: "it contains a control character (newline, tab, ...)",
        });
    }
    Ok(s.to_string())
}

/// Quotes a word of an `Exec*=` command line when it needs it. `%` is a specifier everywhere;
/// `$` is expanded in arguments but not in the executable's path.
fn quote_word(s: &str, is_exec: bool) -> String {
    let mut w = s.replace('%', "%%");
    if !is_exec {
        w = w.replace('$', "$$");
    }
    if w.chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        format!("\"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        w
    }
}

fn exec_path(field: &'static str, p: &Path) -> Result<String, UnitsError> {
    Ok(quote_word(&check_path(field, p)?, true))
}

fn exec_arg(field: &'static str, p: &Path) -> Result<String, UnitsError> {
    Ok(quote_word(&check_path(field, p)?, false))
}

/// A path as the value of a plain setting (`LoadCredential=ID:PATH`): specifiers only.
fn setting_path(field: &'static str, p: &Path) -> Result<String, UnitsError> {
    Ok(check_path(field, p)?.replace('%', "%%"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_word("/usr/bin/labnet", true), "/usr/bin/labnet");
        assert_eq!(
            quote_word("/opt/my bin/labnet", true),
            "\"/opt/my bin/labnet\""
        );
        assert_eq!(quote_word("/a%b$c", true), "/a%%b$c");
        assert_eq!(quote_word("/a%b$c", false), "/a%%b$$c");
        assert_eq!(quote_word("/a\"b\\c", false), "\"/a\\\"b\\\\c\"");
    }

    #[test]
    fn instance_names() {
        assert_eq!(lab_unit("sepian"), "labnet@sepian.service");
        assert_eq!(instance(DNS_TEMPLATE, "a-b"), "labnet-dns@a-b.service");
        assert_eq!(
            dropin_path(DHCPD_TEMPLATE, "x"),
            PathBuf::from("labnet-dhcpd@x.service.d/labnet.conf")
        );
    }

    #[test]
    fn relative_binary_is_refused_naming_the_field() {
        let lab = model::Lab::embedded_default();
        let e = generate(
            &lab,
            &Options {
                labnet_bin: "labnet".into(),
                config: None,
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "labnet_bin: \"labnet\" must be an absolute path"
        );
        let e = generate(
            &lab,
            &Options {
                labnet_bin: "/usr/bin/labnet".into(),
                config: Some("/etc/a\nb.toml".into()),
            },
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("config: "), "{e}");
    }
}
