//! Writing and removing the generated files under a root directory, the way `systemctl
//! --root` lays them out. Nothing here talks to systemd except [`systemctl`], which the CLI
//! calls only when `root` is `/` and systemd runs.
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{
    dropin_path, lab_unit, UnitFile, UnitsError, DROPIN, LAB_TEMPLATE, MARKER, TEMPLATES, WANTED_BY,
};

/// Where units go, relative to the root: the administrator's unit directory.
pub const UNIT_DIR: &str = "etc/systemd/system";

/// One thing `install` or `remove` did (or found already done).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Wrote(PathBuf),
    Unchanged(PathBuf),
    Linked(PathBuf),
    Removed(PathBuf),
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Wrote(p) => write!(f, "wrote     {}", p.display()),
            Change::Unchanged(p) => write!(f, "unchanged {}", p.display()),
            Change::Linked(p) => write!(f, "enabled   {}", p.display()),
            Change::Removed(p) => write!(f, "removed   {}", p.display()),
        }
    }
}

fn is_ours(path: &Path) -> Result<bool, UnitsError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.starts_with(MARKER)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        // Not UTF-8 or not a file: certainly not ours.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(false),
        Err(e) => Err(UnitsError::io(path, e)),
    }
}

fn is_root_dir(root: &Path) -> bool {
    std::fs::canonicalize(root).is_ok_and(|p| p == Path::new("/"))
}

/// The enablement symlink of the lab unit and what it points to (as `systemctl enable`
/// writes it: the template's path as seen from inside `root`).
fn wants_link(unit_dir: &Path, lab: &str) -> (PathBuf, PathBuf) {
    (
        unit_dir
            .join(format!("{WANTED_BY}.wants"))
            .join(lab_unit(lab)),
        Path::new("/").join(UNIT_DIR).join(LAB_TEMPLATE),
    )
}

/// Writes `files` (from [`crate::generate`] for `lab`) under `root`/etc/systemd/system;
/// with `enable`, links the lab unit into multi-user.target.wants. Files that exist and are
/// not labnet's are never overwritten (checked before anything is written). Drop-ins of this
/// lab that an earlier install wrote but `files` no longer has are removed.
pub fn install(
    root: &Path,
    lab: &str,
    files: &[UnitFile],
    enable: bool,
) -> Result<Vec<Change>, UnitsError> {
    let unit_dir = root.join(UNIT_DIR);
    for f in files {
        let p = unit_dir.join(&f.path);
        if p.exists() && !is_ours(&p)? {
            return Err(UnitsError::NotOurs {
                path: p.display().to_string(),
            });
        }
    }
    let (link, target) = wants_link(&unit_dir, lab);
    if enable {
        if let Ok(cur) = std::fs::read_link(&link) {
            if cur.file_name() != target.file_name() {
                return Err(UnitsError::NotOurs {
                    path: link.display().to_string(),
                });
            }
        } else if link.symlink_metadata().is_ok() {
            return Err(UnitsError::NotOurs {
                path: link.display().to_string(),
            });
        }
    }

    let mut changes = vec![];
    for f in files {
        let p = unit_dir.join(&f.path);
        if std::fs::read_to_string(&p).is_ok_and(|t| t == f.text) {
            changes.push(Change::Unchanged(p));
            continue;
        }
        write_atomic(&p, &f.text)?;
        changes.push(Change::Wrote(p));
    }
    for t in TEMPLATES {
        let rel = dropin_path(t, lab);
        if !files.iter().any(|f| f.path == rel) {
            changes.extend(remove_dropin(&unit_dir, &rel)?);
        }
    }
    if enable {
        if std::fs::read_link(&link).is_ok() {
            changes.push(Change::Unchanged(link));
        } else {
            let dir = link.parent().expect("wants dir");
            std::fs::create_dir_all(dir).map_err(|e| UnitsError::io(dir, e))?;
            std::os::unix::fs::symlink(&target, &link).map_err(|e| UnitsError::io(&link, e))?;
            changes.push(Change::Linked(link));
        }
    }
    Ok(changes)
}

fn write_atomic(path: &Path, text: &str) -> Result<(), UnitsError> {
    let dir = path.parent().expect("unit file has a directory");
    std::fs::create_dir_all(dir).map_err(|e| UnitsError::io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.labnet-tmp",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("unit")
    ));
    std::fs::write(&tmp, text).map_err(|e| UnitsError::io(&tmp, e))?;
    // Unit files are read by PID 1 and by `systemctl cat` users alike: 0644.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| UnitsError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| UnitsError::io(path, e))
}

/// Removes `UNIT@LAB.service.d/labnet.conf` if it is ours, and its directory if now empty.
fn remove_dropin(unit_dir: &Path, rel: &Path) -> Result<Vec<Change>, UnitsError> {
    let p = unit_dir.join(rel);
    let mut out = vec![];
    if is_ours(&p)? {
        std::fs::remove_file(&p).map_err(|e| UnitsError::io(&p, e))?;
        out.push(Change::Removed(p.clone()));
    }
    if let Some(d) = p.parent() {
        if rmdir_if_empty(d)? {
            out.push(Change::Removed(d.to_path_buf()));
        }
    }
    Ok(out)
}

fn rmdir_if_empty(d: &Path) -> Result<bool, UnitsError> {
    match std::fs::remove_dir(d) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(e) => Err(UnitsError::io(d, e)),
    }
}

/// Labs that have labnet drop-ins or an enablement link under `root`.
pub fn installed_labs(root: &Path) -> Result<Vec<String>, UnitsError> {
    let unit_dir = root.join(UNIT_DIR);
    let mut labs = vec![];
    let rd = match std::fs::read_dir(&unit_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(labs),
        Err(e) => return Err(UnitsError::io(&unit_dir, e)),
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        for t in TEMPLATES {
            let (pre, post) = t.split_once("@.").expect("template name");
            let Some(lab) = name
                .strip_prefix(&format!("{pre}@"))
                .and_then(|r| r.strip_suffix(&format!(".{post}.d")))
            else {
                continue;
            };
            if is_ours(&e.path().join(DROPIN))? && !labs.iter().any(|l| l == lab) {
                labs.push(lab.to_string());
            }
        }
        if name.ends_with(".wants") {
            let Ok(links) = std::fs::read_dir(e.path()) else {
                continue;
            };
            for l in links.flatten() {
                let n = l.file_name().to_string_lossy().into_owned();
                let Some(lab) = n
                    .strip_prefix("labnet@")
                    .and_then(|r| r.strip_suffix(".service"))
                else {
                    continue;
                };
                if std::fs::read_link(l.path()).is_ok() && !labs.iter().any(|x| x == lab) {
                    labs.push(lab.to_string());
                }
            }
        }
    }
    labs.sort();
    Ok(labs)
}

/// Removes `lab`'s drop-ins and enablement link, and the templates too when no other lab
/// is installed. Under a root other than `/`, directories left empty are removed up to
/// `root` (so install + remove leaves the root as it was).
pub fn remove(root: &Path, lab: &str) -> Result<Vec<Change>, UnitsError> {
    let unit_dir = root.join(UNIT_DIR);
    let mut changes = vec![];
    let (link, _) = wants_link(&unit_dir, lab);
    if std::fs::read_link(&link).is_ok() {
        std::fs::remove_file(&link).map_err(|e| UnitsError::io(&link, e))?;
        changes.push(Change::Removed(link.clone()));
    }
    for t in TEMPLATES {
        changes.extend(remove_dropin(&unit_dir, &dropin_path(t, lab))?);
    }
    if installed_labs(root)?.iter().all(|l| l == lab) {
        for t in TEMPLATES {
            let p = unit_dir.join(t);
            if is_ours(&p)? {
                std::fs::remove_file(&p).map_err(|e| UnitsError::io(&p, e))?;
                changes.push(Change::Removed(p));
            }
        }
    }
    if !is_root_dir(root) {
        let mut dirs = vec![link.parent().expect("wants dir").to_path_buf()];
        let mut d = unit_dir.clone();
        while d != root && d.starts_with(root) {
            dirs.push(d.clone());
            if !d.pop() {
                break;
            }
        }
        for d in dirs {
            if rmdir_if_empty(&d)? {
                changes.push(Change::Removed(d));
            }
        }
    }
    Ok(changes)
}

/// True when `root` is this system's root and systemd is the running init (sd_booted()).
pub fn systemd_running(root: &Path) -> bool {
    is_root_dir(root) && Path::new("/run/systemd/system").is_dir()
}

/// Runs `systemctl ARGS`; the error carries its stderr.
pub fn systemctl(args: &[&str]) -> Result<(), UnitsError> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| UnitsError::Systemctl(format!("cannot run systemctl: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(UnitsError::Systemctl(format!(
            "systemctl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
