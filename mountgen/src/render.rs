//! Text forms of a [`MountPlan`]: a shell command, an fstab line, a systemd `.mount` unit, JSON.
//! Every form redacts the secret unless `reveal` is set.
use crate::plan::MountPlan;
use serde_json::json;

/// Quotes `s` for a POSIX shell (unchanged when it needs no quoting).
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// `mount -t ceph SOURCE TARGET -o DATA`, shell-quoted.
pub fn mount_command(plan: &MountPlan, target: &str, reveal: bool) -> String {
    let data = plan.user_options(reveal);
    let mut cmd = format!(
        "mount -t {} {} {}",
        plan.fstype,
        shell_quote(&plan.source),
        shell_quote(target)
    );
    if !data.is_empty() {
        cmd.push_str(" -o ");
        cmd.push_str(&shell_quote(&data));
    }
    cmd
}

/// The mount(2) call as C would spell it.
pub fn mount_syscall(plan: &MountPlan, target: &str, reveal: bool) -> String {
    format!(
        "mount({:?}, {:?}, {:?}, {}, {:?})",
        plan.source,
        target,
        plan.fstype,
        if plan.flags == 0 {
            "0".to_string()
        } else {
            format!("{:#x}", plan.flags)
        },
        plan.data(reveal)
    )
}

/// fstab escapes whitespace and backslashes as octal.
fn fstab_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => o.push_str(&format!("\\{:03o}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// An /etc/fstab line (`_netdev` so it waits for the network).
pub fn fstab_line(plan: &MountPlan, target: &str, reveal: bool) -> String {
    let mut data = plan.user_options(reveal);
    if !plan.generic_options.iter().any(|o| o == "_netdev") {
        if !data.is_empty() {
            data.push(',');
        }
        data.push_str("_netdev");
    }
    format!(
        "{} {} {} {} 0 0",
        fstab_escape(&plan.source),
        fstab_escape(target),
        plan.fstype,
        fstab_escape(&data)
    )
}

/// systemd's name for the mount unit of `path` (`systemd-escape --path --suffix=mount`).
pub fn unit_name(path: &str) -> String {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return "-.mount".into();
    }
    // Collapse duplicate slashes like systemd does.
    let parts: Vec<&str> = trimmed.split('/').filter(|p| !p.is_empty()).collect();
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, b) in part.bytes().enumerate() {
            let plain = b.is_ascii_alphanumeric()
                || b == b':'
                || b == b'_'
                || (b == b'.' && (i, j) != (0, 0));
            if plain {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    out.push_str(".mount");
    out
}

/// A systemd `.mount` unit; install it as [`unit_name`]`(target)`.
pub fn systemd_unit(plan: &MountPlan, target: &str, reveal: bool) -> String {
    // '%' starts a specifier in unit files.
    let esc = |s: &str| s.replace('%', "%%");
    let mut u = String::new();
    u.push_str("[Unit]\n");
    u.push_str(&format!(
        "Description=CephFS {} on {}\n",
        esc(&plan.source),
        esc(target)
    ));
    u.push_str("Wants=network-online.target\nAfter=network-online.target\n\n");
    u.push_str("[Mount]\n");
    u.push_str(&format!("What={}\n", esc(&plan.source)));
    u.push_str(&format!("Where={}\n", esc(target)));
    u.push_str(&format!("Type={}\n", plan.fstype));
    let data = plan.user_options(reveal);
    if !data.is_empty() {
        u.push_str(&format!("Options={}\n", esc(&data)));
    }
    u.push_str("TimeoutSec=60\n\n[Install]\nWantedBy=remote-fs.target\n");
    u
}

/// The plan as a JSON object (pretty-printed, trailing newline).
pub fn to_json(plan: &MountPlan, target: &str, reveal: bool) -> String {
    let v = json!({
        "syntax": plan.syntax.as_str(),
        "source": plan.source,
        "target": target,
        "fstype": plan.fstype,
        "flags": plan.flags,
        "generic_options": plan.generic_options,
        "data": plan.data(reveal),
        "options": plan.options.iter().map(|o| json!({
            "key": o.key,
            "value": if o.secret && !reveal { Some("<redacted>".to_string()) } else { o.value.clone() },
        })).collect::<Vec<_>>(),
        "mon_addrs": plan.mon_addrs.iter().map(|a| json!({"type": a.kind.as_str(), "addr": a.to_string()})).collect::<Vec<_>>(),
        "ms_mode": plan.ms_mode.map(|m| m.as_str()),
        "fsid": plan.fsid,
        "name": plan.name,
        "fs": plan.fs,
        "path": plan.path,
        "notes": plan.notes,
        "command": mount_command(plan, target, reveal),
        "fstab": fstab_line(plan, target, reveal),
        "unit_name": unit_name(target),
    });
    let mut s = serde_json::to_string_pretty(&v).expect("JSON of plain values");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("fs@x.a=/"), "fs@x.a=/");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("secret=<redacted>"), "'secret=<redacted>'");
    }

    #[test]
    fn unit_names() {
        assert_eq!(unit_name("/mnt"), "mnt.mount");
        assert_eq!(unit_name("/mnt/ceph-fs/x"), "mnt-ceph\\x2dfs-x.mount");
        assert_eq!(unit_name("/"), "-.mount");
        assert_eq!(unit_name("//srv//a b/"), "srv-a\\x20b.mount");
        assert_eq!(unit_name("/.hidden"), "\\x2ehidden.mount");
    }

    #[test]
    fn fstab_escapes() {
        assert_eq!(fstab_escape("/mnt/a b"), "/mnt/a\\040b");
    }
}
