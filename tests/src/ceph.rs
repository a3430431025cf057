//! The tests' throwaway Ceph cluster (tests/fixtures/ceph-cluster.sh) in a namespace of the
//! test's, and what a guest fetches from "the cluster host": its mon dump and a client's
//! keyring, served over HTTP.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use crate::{run, spawn_in, text, Cleanup};

/// tests/fixtures/ceph-cluster.sh.
pub fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/ceph-cluster.sh")
}

/// The fixture's cluster, its state in `dir`, its daemons in netns `ns`; stopped (`down`, by
/// the pid files the fixture wrote) when dropped — declare it after the test's Cleanup, so it
/// goes before the namespaces.
pub struct Cluster {
    pub dir: PathBuf,
    pub ns: String,
}

impl Cluster {
    /// `ceph-cluster.sh up` in `ns` on `addr` (which must be there already); `mgr: false`
    /// leaves out the mgr (the kernel client does not need one). Panics if it did not come up.
    pub fn up(dir: &Path, ns: &str, addr: &str, mgr: bool) -> Cluster {
        let c = Cluster {
            dir: dir.to_path_buf(),
            ns: ns.to_string(),
        };
        let t = Instant::now();
        let out = run(Command::new("timeout")
            .arg("120")
            .arg(fixture())
            .arg("up")
            .env("CEPH_DIR", dir)
            .env("CEPH_NETNS", ns)
            .env("CEPH_ADDR", addr)
            .env("CEPH_MGR", if mgr { "1" } else { "0" }));
        assert!(
            out.status.success(),
            "ceph cluster did not come up: {}",
            text(&out)
        );
        eprintln!("ceph cluster up in {:.1} s", t.elapsed().as_secs_f64());
        c
    }

    /// `ceph ARGS` / `rados ARGS` as client.admin inside the cluster's namespace.
    pub fn cli(&self, prog: &str, args: &[&str]) -> Output {
        run(Command::new("timeout")
            .args(["30", "ip", "netns", "exec", &self.ns, prog])
            .args(args)
            .env("CEPH_CONF", self.dir.join("ceph.conf")))
    }

    /// [`Cluster::cli`], which must succeed; its stdout.
    pub fn must(&self, prog: &str, args: &[&str]) -> Vec<u8> {
        let o = self.cli(prog, args);
        assert!(o.status.success(), "{prog} {args:?}: {}", text(&o));
        o.stdout
    }

    /// The cluster's fsid, from its mon dump.
    pub fn fsid(&self) -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&self.must("ceph", &["mon", "dump", "--format=json"])).unwrap();
        v["fsid"].as_str().unwrap().to_string()
    }

    /// Writes `www/mon_dump.json` and `www/fs.keyring` (client.fs) as `ceph` prints them and
    /// serves `www` with busybox httpd on `addr`:8080 in the cluster's namespace (its output
    /// in `log`); returns httpd's pid (the Cleanup kills it).
    pub fn serve_mount_info(&self, c: &mut Cleanup, www: &Path, addr: &str, log: &Path) -> u32 {
        std::fs::create_dir_all(www).unwrap();
        std::fs::write(
            www.join("mon_dump.json"),
            self.must("ceph", &["mon", "dump", "--format=json"]),
        )
        .unwrap();
        std::fs::write(
            www.join("fs.keyring"),
            self.must("ceph", &["auth", "get", "client.fs"]),
        )
        .unwrap();
        spawn_in(
            c,
            &self.ns,
            log,
            &[
                "busybox",
                "httpd",
                "-f",
                "-p",
                &format!("{addr}:8080"),
                "-h",
                www.to_str().unwrap(),
            ],
        )
    }

    /// The pids of the daemons the fixture started.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_dir(self.dir.join("run"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".pid"))
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn down(&self) -> Output {
        run(Command::new("timeout")
            .arg("60")
            .arg(fixture())
            .arg("down")
            .env("CEPH_DIR", &self.dir))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.down();
    }
}
