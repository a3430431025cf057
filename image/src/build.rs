//! `labnet image build`: mmdebstrap → root tarball (cached by recipe) → unpacked tree →
//! labnet's guest files, host key, kmount → kernel and initrd copied out → `mkfs.ext4 -d`
//! → qcow2. The tree is only ever a directory of files: no loop mount, no chroot on the
//! host (mmdebstrap's unshare mode runs the package scripts inside a user namespace).
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::recipe::Recipe;
use crate::store::{self, Image, Manifest};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Qcow2,
    Raw,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "qcow2" => Ok(Format::Qcow2),
            "raw" => Ok(Format::Raw),
            _ => Err(Error::invalid(
                "--format",
                format!("{s:?}: expected qcow2 or raw"),
            )),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Qcow2 => "qcow2",
            Format::Raw => "raw",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub suite: String,
    /// None: the host apt's mirror ([`crate::recipe::host_mirror`]).
    pub mirror: Option<String>,
    pub size_bytes: u64,
    /// Extra packages on top of [`crate::recipe::BASE_PACKAGES`].
    pub packages: Vec<String>,
    pub format: Format,
    /// A (static) kmount binary to install at /usr/local/bin/kmount.
    pub kmount: Option<PathBuf>,
}

/// Rough sizes the free-space check uses: the root tarball, the unpacked tree, the disk.
const TARBALL_MIB: u64 = 1200;
const TREE_MIB: u64 = 1200;
const DISK_MIB: u64 = 1000;

fn need(prog: &str, package: &str) -> Result<PathBuf> {
    crate::which(prog).ok_or_else(|| Error::MissingProgram {
        program: prog.into(),
        hint: format!(" in PATH (apt-get install {package})"),
    })
}

/// Builds image `o.name` into the store. `say` gets one progress line per step.
pub fn build(o: &Options, say: &mut dyn FnMut(&str)) -> Result<Image> {
    let t0 = Instant::now();
    crate::check_name(&o.name)?;
    let mirror = match &o.mirror {
        Some(m) => m.clone(),
        None => crate::recipe::host_mirror()?,
    };
    let recipe = Recipe::new(&o.suite, &mirror, &o.packages)?;
    let mkfs = need("mkfs.ext4", "e2fsprogs")?;
    let keygen = need("ssh-keygen", "openssh-client")?;
    let tar = need("tar", "tar")?;
    let qemu_img = match o.format {
        Format::Qcow2 => Some(need("qemu-img", "qemu-utils")?),
        Format::Raw => None,
    };
    if let Some(k) = &o.kmount {
        if !k.is_file() {
            return Err(Error::invalid(
                "--kmount",
                format!("{}: not a file", k.display()),
            ));
        }
    }
    let dest = store::image_dir(&o.name);
    if dest.join(Manifest::FILE).exists() {
        return Err(Error::Exists {
            name: o.name.clone(),
            dir: dest.display().to_string(),
        });
    }
    let images = crate::images_dir();
    std::fs::create_dir_all(&images).map_err(|e| Error::io(&images, e))?;
    let tarball = recipe.tarball();
    let cached = tarball.exists();
    if !cached {
        need("mmdebstrap", "mmdebstrap")?;
    }
    check_space(&images, TREE_MIB + DISK_MIB.min(o.size_bytes >> 20))?;
    if !cached {
        check_space(tarball.parent().unwrap_or(&images), TARBALL_MIB)?;
    }

    let tarball = root_tarball(&recipe, say)?;
    let build = images.join(format!(".{}.build", o.name));
    let _ = std::fs::remove_dir_all(&build);
    let _ = std::fs::remove_dir_all(&dest);
    let r = (|| -> Result<Manifest> {
        let root = build.join("root");
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let t = Instant::now();
        run(
            Command::new(&tar)
                .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
                .arg(&tarball)
                .arg("-C")
                .arg(&root),
            "tar -x (the root tarball)",
        )?;
        say(&format!(
            "unpacked {} in {:.1} s",
            tarball.display(),
            t.elapsed().as_secs_f64()
        ));
        crate::guest::apply(&root, &crate::guest::entries())?;
        let host_key = host_key(&keygen, &root, &build, &o.name)?;
        if let Some(k) = &o.kmount {
            let dst = root.join("usr/local/bin/kmount");
            std::fs::create_dir_all(root.join("usr/local/bin")).map_err(|e| Error::io(&dst, e))?;
            std::fs::copy(k, &dst).map_err(|e| Error::io(&dst, e))?;
            set_mode(&dst, 0o755)?;
        }
        let kernel_release = copy_kernel(&root, &build)?;
        say(&format!("kernel {kernel_release}; host key {host_key}"));
        let t = Instant::now();
        let raw = build.join("disk.raw");
        run(
            Command::new(&mkfs)
                .args([
                    "-q",
                    "-F",
                    "-L",
                    "labnet-root",
                    "-E",
                    "root_owner=0:0",
                    "-d",
                ])
                .arg(&root)
                .arg(&raw)
                .arg(format!("{}k", o.size_bytes / 1024)),
            "mkfs.ext4 -d",
        )?;
        std::fs::remove_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        say(&format!(
            "mkfs.ext4 -d in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        let disk = match qemu_img {
            None => "disk.raw".to_string(),
            Some(qi) => {
                let t = Instant::now();
                let q = build.join("disk.qcow2");
                run(
                    Command::new(qi)
                        .args(["convert", "-f", "raw", "-O", "qcow2"])
                        .arg(&raw)
                        .arg(&q),
                    "qemu-img convert",
                )?;
                std::fs::remove_file(&raw).map_err(|e| Error::io(&raw, e))?;
                say(&format!("qcow2 in {:.1} s", t.elapsed().as_secs_f64()));
                "disk.qcow2".to_string()
            }
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let m = Manifest {
            name: o.name.clone(),
            suite: recipe.suite.clone(),
            mirror: recipe.mirror.clone(),
            packages: recipe.packages.clone(),
            created: store::rfc3339(now),
            size_bytes: o.size_bytes,
            format: o.format.as_str().into(),
            disk,
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            kernel_release,
            host_key,
            kmount: o.kmount.is_some(),
            recipe_key: recipe.key(),
            build_secs: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        };
        let mp = build.join(Manifest::FILE);
        let bytes = serde_json::to_vec_pretty(&m).expect("manifest serializes");
        std::fs::write(&mp, bytes).map_err(|e| Error::io(&mp, e))?;
        Ok(m)
    })();
    match r {
        Ok(manifest) => {
            std::fs::rename(&build, &dest).map_err(|e| Error::io(&dest, e))?;
            Ok(Image {
                dir: dest,
                manifest,
            })
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&build);
            Err(e)
        }
    }
}

fn check_space(dir: &Path, need_mib: u64) -> Result<()> {
    let free_mib = crate::free_bytes(dir).unwrap_or(u64::MAX) >> 20;
    if free_mib < need_mib {
        return Err(Error::DiskFull {
            path: dir.display().to_string(),
            free_mib,
            need_mib,
        });
    }
    Ok(())
}

/// The recipe's root tarball from the cache, made with mmdebstrap the first time (under a
/// lock, so parallel builds of one recipe wait for each other instead of racing).
fn root_tarball(recipe: &Recipe, say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let tarball = recipe.tarball();
    let dir = tarball
        .parent()
        .expect("the root tarball is a file in the cache dir");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let _lock = lock(&tarball.with_extension("lock"))?;
    if tarball.exists() {
        say(&format!("root tarball cached: {}", tarball.display()));
        return Ok(tarball);
    }
    let tmp = tarball.with_extension("tar.tmp");
    let _ = std::fs::remove_file(&tmp);
    let args = recipe.mmdebstrap_args(&tmp);
    say(&format!("mmdebstrap {}", args.join(" ")));
    let t = Instant::now();
    let mut cmd = Command::new(need("mmdebstrap", "mmdebstrap")?);
    // mmdebstrap must not outlive an interrupted build.
    // SAFETY: between fork and exec only prctl, which is async-signal-safe.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io("mmdebstrap", e))?;
    // Its "I:" progress lines go on; the tail is kept for the error.
    let mut tail: Vec<String> = vec![];
    for line in BufReader::new(child.stderr.take().expect("stderr is piped"))
        .lines()
        .map_while(|l| l.ok())
    {
        if let Some(progress) = line.strip_prefix("I: ") {
            say(&format!("mmdebstrap: {progress}"));
        }
        tail.push(line);
        if tail.len() > 40 {
            tail.remove(0);
        }
    }
    let st = child.wait().map_err(|e| Error::io("mmdebstrap", e))?;
    if !st.success() {
        let _ = std::fs::remove_file(&tmp);
        let text = tail.join("\n");
        return Err(classify_mmdebstrap(recipe, &text, dir, st.to_string()));
    }
    std::fs::rename(&tmp, &tarball).map_err(|e| Error::io(&tarball, e))?;
    say(&format!(
        "mmdebstrap done in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(tarball)
}

/// Turns mmdebstrap's failure output into the error the user can act on.
fn classify_mmdebstrap(recipe: &Recipe, text: &str, dir: &Path, status: String) -> Error {
    if text.contains("does not have a Release file") {
        return Error::UnknownSuite {
            suite: recipe.suite.clone(),
            mirror: recipe.mirror.clone(),
        };
    }
    if text.contains("No space left on device") {
        return Error::DiskFull {
            path: dir.display().to_string(),
            free_mib: crate::free_bytes(dir).unwrap_or(0) >> 20,
            need_mib: TARBALL_MIB,
        };
    }
    let errs: Vec<&str> = text.lines().filter(|l| l.starts_with("E: ")).collect();
    Error::Command {
        what: "mmdebstrap".into(),
        status,
        detail: format!(
            ":\n{}",
            if errs.is_empty() {
                text.to_string()
            } else {
                errs.join("\n")
            }
        ),
    }
}

/// The image's ssh host key (ed25519 only), generated fresh for this image; returns the
/// public key as "TYPE BASE64" and keeps a copy of the .pub next to the disk.
fn host_key(keygen: &Path, root: &Path, build: &Path, name: &str) -> Result<String> {
    let key = root.join("etc/ssh/ssh_host_ed25519_key");
    run(
        Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("labnet-image-{name}"))
            .arg("-f")
            .arg(&key),
        "ssh-keygen (host key)",
    )?;
    let pubf = key.with_extension("pub");
    let text = std::fs::read_to_string(&pubf).map_err(|e| Error::io(&pubf, e))?;
    let keep = build.join("ssh_host_ed25519_key.pub");
    std::fs::write(&keep, &text).map_err(|e| Error::io(&keep, e))?;
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

/// Copies the newest /boot/vmlinuz-REL and its initrd out of the tree (QEMU boots them with
/// -kernel/-initrd; the disk has no boot loader). Returns REL.
fn copy_kernel(root: &Path, build: &Path) -> Result<String> {
    let boot = root.join("boot");
    let mut rels: Vec<String> = std::fs::read_dir(&boot)
        .map_err(|e| Error::io(&boot, e))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .collect();
    rels.sort_by(|a, b| version_cmp(a, b));
    let rel = rels.pop().ok_or_else(|| {
        Error::invalid(
            "--package",
            format!(
                "no kernel in {} (linux-image-amd64 missing?)",
                boot.display()
            ),
        )
    })?;
    for (from, to) in [
        (format!("vmlinuz-{rel}"), "vmlinuz"),
        (format!("initrd.img-{rel}"), "initrd.img"),
    ] {
        let src = boot.join(&from);
        let dst = build.join(to);
        std::fs::copy(&src, &dst).map_err(|e| Error::io(&src, e))?;
        set_mode(&dst, 0o644)?;
    }
    Ok(rel)
}

/// Compares kernel releases by their numeric parts ("6.1.0-10" < "6.1.0-9" as text).
fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a).cmp(&parts(b))
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| Error::io(p, e))
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(what, e))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if err.contains("No space left on device") || err.contains("Could not allocate block") {
        return Err(Error::DiskFull {
            path: what.into(),
            free_mib: 0,
            need_mib: 0,
        });
    }
    Err(Error::Command {
        what: what.into(),
        status: out.status.to_string(),
        detail: if err.is_empty() {
            String::new()
        } else {
            format!(": {err}")
        },
    })
}

/// An exclusive flock on `path`, released when the returned guard is dropped.
pub fn lock(path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut v = vec!["6.1.0-9-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v, ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-10-amd64"]);
    }

    #[test]
    fn mmdebstrap_failures_are_classified() {
        let r = Recipe::new("nosuch", "http://m/debian", &[]).unwrap();
        let d = Path::new("/tmp");
        let e = classify_mmdebstrap(
            &r,
            "E: The repository 'http://m/debian nosuch Release' does not have a Release file.\nE: mmdebstrap failed to run",
            d,
            "exit status: 25".into(),
        );
        assert!(matches!(e, Error::UnknownSuite { .. }), "{e}");
        assert!(e.to_string().contains("\"nosuch\""), "{e}");
        let e = classify_mmdebstrap(
            &r,
            "tar: x: Cannot write: No space left on device",
            d,
            "1".into(),
        );
        assert!(matches!(e, Error::DiskFull { .. }), "{e}");
        let e = classify_mmdebstrap(&r, "I: x\nE: Unable to locate package nope", d, "1".into());
        assert!(
            e.to_string().contains("Unable to locate package nope"),
            "{e}"
        );
    }
}
