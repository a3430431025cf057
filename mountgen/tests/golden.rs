//! Golden tests over every captured sample: each input format × {new, old} syntax × every
//! ms_mode (plus the default). `LABNET_BLESS=1 cargo test -p mountgen --test golden` rewrites.
mod common;
use common::*;
use mountgen::kconfig::{self, CephBuild};
use mountgen::plan::{self, Auth, MountRequest, MsMode, Syntax, PRESET_SEED};
use mountgen::{monmap, render, Secret};

fn modes() -> Vec<Option<MsMode>> {
    std::iter::once(None)
        .chain(MsMode::ALL.into_iter().map(Some))
        .collect()
}

fn secret_of(cluster: &str) -> Option<Secret> {
    let t =
        std::fs::read_to_string(fixture(&format!("{cluster}.auth_get_client.fs.keyring"))).ok()?;
    mountgen::secret::keyring_secret(&t, "client.fs", "keyring").ok()
}

fn describe(cluster: &str, input: &str) -> String {
    let file = format!("{cluster}.{input}");
    let text = read_fixture(&file);
    let map = monmap::parse(&text, &file).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut out = format!(
        "# {file}\n# format={} mons={} fsid={} quorum={:?}\n",
        map.format.as_str(),
        map.mons.len(),
        map.fsid.as_deref().unwrap_or("-"),
        map.quorum
    );
    for m in &map.mons {
        let addrs: Vec<String> = m
            .addrs
            .iter()
            .map(|a| format!("{}:{a}", a.kind.as_str()))
            .collect();
        out.push_str(&format!(
            "# mon.{} rank={:?} {}\n",
            m.name,
            m.rank,
            addrs.join(" ")
        ));
    }
    for syntax in [Syntax::New, Syntax::Old] {
        for mode in modes() {
            let mut req = MountRequest::new("fs", Some("a"), syntax);
            req.ms_mode = mode;
            req.options = PRESET_SEED.iter().map(|s| s.to_string()).collect();
            req.auth = Auth::Key;
            // Confs from generate-minimal-conf carry the fsid; give it for the others too so
            // every new-syntax case is exercised.
            if map.fsid.is_none() {
                req.fsid = Some(
                    read_fixture(&format!("{cluster}.fsid.txt"))
                        .trim()
                        .to_string(),
                );
            }
            out.push_str(&format!(
                "\n## syntax={} ms_mode={}\n",
                syntax.as_str(),
                mode.map(|m| m.as_str()).unwrap_or("(default)")
            ));
            match plan::build(&map, &req) {
                Ok(p) => {
                    out.push_str(&format!("source: {}\n", p.source));
                    out.push_str(&format!("data:   {}\n", p.data(false)));
                    if let Some(s) = secret_of(cluster) {
                        let fb = p.with_auth(&Auth::Secret(s));
                        out.push_str(&format!(
                            "cmd:    {}\n",
                            render::mount_command(&fb, "/mnt", false)
                        ));
                    }
                    for n in &p.notes {
                        out.push_str(&format!("note:   {n}\n"));
                    }
                }
                Err(e) => out.push_str(&format!("error:  {e}\n")),
            }
        }
    }
    out
}

#[test]
fn every_sample_every_syntax_every_ms_mode() {
    for c in CLUSTERS {
        for i in INPUTS {
            check_golden(&format!("{c}.{i}.mount.txt"), &describe(c, i));
        }
    }
}

/// The same cluster gives the same mount whatever format its map came in.
#[test]
fn formats_agree() {
    for c in CLUSTERS {
        let fsid = read_fixture(&format!("{c}.fsid.txt")).trim().to_string();
        let mut seen: Option<(String, Vec<String>)> = None;
        for i in INPUTS {
            let file = format!("{c}.{i}");
            let map = monmap::parse(&read_fixture(&file), &file).unwrap();
            assert_eq!(map.fsid.as_deref(), Some(fsid.as_str()), "{file}: fsid");
            let mut results = Vec::new();
            for syntax in [Syntax::New, Syntax::Old] {
                for mode in modes() {
                    let mut req = MountRequest::new("fs", Some("a"), syntax);
                    req.ms_mode = mode;
                    results.push(match plan::build(&map, &req) {
                        Ok(p) => format!("{} {}", p.source, p.data(false)),
                        Err(e) => format!("error {e}"),
                    });
                }
            }
            match &seen {
                None => seen = Some((file, results)),
                Some((first, r)) => assert_eq!(r, &results, "{file} disagrees with {first}"),
            }
        }
    }
}

/// Ceph's own `config generate-minimal-conf` output is reproduced byte for byte.
#[test]
fn minimal_conf_matches_ceph() {
    for c in CLUSTERS {
        let map = monmap::parse(&read_fixture(&format!("{c}.mon_dump.json")), c).unwrap();
        let want = read_fixture(&format!("{c}.generate-minimal-conf.txt"));
        assert_eq!(map.minimal_conf(map.fsid.as_deref().unwrap()), want, "{c}");
    }
}

/// Seed 000's exact command for a vstart cluster (3 mons, v2 ports, ms_mode=crc).
#[test]
fn seed_000_form() {
    let c = "3mon-v2v1-127.0.0.1-vstartports";
    let map = monmap::parse(&read_fixture(&format!("{c}.mon_dump.json")), c).unwrap();
    let mut req = MountRequest::new("fs", Some("a"), Syntax::New);
    req.ms_mode = Some(MsMode::Crc);
    req.options = PRESET_SEED.iter().map(|s| s.to_string()).collect();
    req.auth = Auth::Secret(secret_of(c).unwrap());
    let p = plan::build(&map, &req).unwrap();
    assert_eq!(
        render::mount_command(&p, "/mnt", true),
        "mount -t ceph fs@0d11e97a-bb59-47ec-9a31-a3ee664e88ef.a=/ /mnt -o \
         mon_addr=127.0.0.1:40762/127.0.0.1:40764/127.0.0.1:40766,ms_mode=crc,name=fs,\
         secret=AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==,norequire_active_mds,noshare"
    );
    assert!(!render::mount_command(&p, "/mnt", false).contains("AQBA6gJr"));
}

#[test]
fn render_forms() {
    let c = "3mon-v2v1-127.0.0.1-vstartports";
    let map = monmap::parse(&read_fixture(&format!("{c}.mon_dump.json")), c).unwrap();
    for syntax in [Syntax::New, Syntax::Old] {
        let mut req = MountRequest::new("fs", Some("a"), syntax);
        req.path = "/volumes/t 1".into();
        req.options = PRESET_SEED.iter().map(|s| s.to_string()).collect();
        // Generic options become flags (or stay userspace-only), never kernel data.
        req.options
            .extend(["noatime", "ro", "nofail"].map(String::from));
        req.auth = Auth::Secret(secret_of(c).unwrap());
        let p = plan::build(&map, &req).unwrap();
        assert_eq!(p.flags, 0x400 | 0x1, "MS_NOATIME | MS_RDONLY");
        assert!(!p.data(false).contains("noatime") && !p.data(false).contains("nofail"));
        let target = "/mnt/ceph-a";
        let s = syntax.as_str();
        check_golden(
            &format!("render.{s}.cmd"),
            &format!("{}\n", render::mount_command(&p, target, false)),
        );
        check_golden(
            &format!("render.{s}.syscall"),
            &format!("{}\n", render::mount_syscall(&p, target, false)),
        );
        check_golden(
            &format!("render.{s}.fstab"),
            &format!("{}\n", render::fstab_line(&p, target, false)),
        );
        check_golden(
            &format!("render.{s}.{}", render::unit_name(target)),
            &render::systemd_unit(&p, target, false),
        );
        check_golden(
            &format!("render.{s}.json"),
            &render::to_json(&p, target, false),
        );
        for text in [
            render::mount_command(&p, target, false),
            render::fstab_line(&p, target, false),
            render::systemd_unit(&p, target, false),
            render::to_json(&p, target, false),
        ] {
            assert!(!text.contains("AQBA6gJr"), "secret leaked: {text}");
        }
        assert!(
            render::to_json(&p, target, true).contains("AQBA6gJrg6vLCxAAmVZt5mv+oD2Qc+Vxz8OrUg==")
        );
    }
}

#[test]
fn kernel_config_fragments() {
    check_golden(
        "kconfig.builtin",
        &kconfig::fragment(CephBuild::Builtin, true),
    );
    check_golden(
        "kconfig.modules",
        &kconfig::fragment(CephBuild::Modules, true),
    );
    check_golden(
        "kconfig.builtin-novm",
        &kconfig::fragment(CephBuild::Builtin, false),
    );
}

/// systemd's own escaping agrees with unit_name (systemd is in the CI package list).
#[test]
fn unit_name_matches_systemd_escape() {
    let Ok(out) = std::process::Command::new("systemd-escape")
        .args(["--path", "--suffix=mount", "/mnt/ceph-a/x y/.z"])
        .output()
    else {
        panic!("systemd-escape not found: install systemd (.ci/install-deps.sh does)");
    };
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().trim(),
        render::unit_name("/mnt/ceph-a/x y/.z")
    );
}
