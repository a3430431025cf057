//! Bad input gives an error that names the input and field, never a panic.
mod common;
use common::*;
use mountgen::plan::{self, Auth, MountRequest, MsMode, Syntax};
use mountgen::{monmap, secret};
use proptest::prelude::*;

fn parse_err(input: &str) -> String {
    match monmap::parse(input, "in.json") {
        Ok(m) => panic!("expected an error for {input:?}, got {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn map_errors_are_specific() {
    let cases: &[(&str, &str)] = &[
        ("", "in.json: input is empty"),
        ("  \n\n", "in.json: input is empty"),
        ("dumped monmap epoch 1\n", "in.json: input is empty"),
        ("{}", "in.json: mons: missing (is this `ceph mon dump --format=json`?)"),
        ("{\"mons\": []}", "in.json: no monitors found"),
        ("{\"mons\": \"a\"}", "in.json: mons: not an array"),
        ("{\"mons\": [1]}", "in.json: mons[0]: not an object"),
        ("{\"epoch\": 1, ", "in.json: invalid JSON at line 1 column"),
        ("[1,2]", "in.json: not recognised"),
        ("hello world\n", "in.json: not recognised"),
        ("\u{0}\u{1}garbage", "in.json: not recognised"),
        (
            r#"{"mons":[{"name":"a","public_addrs":{"addrvec":[{"type":"v3","addr":"1.2.3.4:1","nonce":0}]}}]}"#,
            "in.json: mons[0].public_addrs.addrvec[0].type: unknown address type \"v3\" (expected v1, v2 or any)",
        ),
        (
            r#"{"mons":[{"name":"a","public_addrs":{"addrvec":[{"addr":"1.2.3.4:1"}]}}]}"#,
            "in.json: mons[0].public_addrs.addrvec[0].type: missing or not a string",
        ),
        (
            r#"{"mons":[{"name":"a","public_addrs":{"addrvec":[{"type":"v2","addr":"mon-a.lab:3300"}]}}]}"#,
            "in.json: mons[0].public_addrs.addrvec[0].addr: \"mon-a.lab\" in \"mon-a.lab:3300\" is not an IP address",
        ),
        (r#"{"mons":[{"name":"a","rank":0}]}"#, "in.json: mons[0]: mon.a has no address"),
        (
            r#"{"mons":[{"name":"b","public_addrs":{"addrvec":[]},"addr":"0.0.0.0:0/0"}]}"#,
            "in.json: mons[0]: mon.b has no address",
        ),
        (r#"{"mons":[{"name":"a","addr":"1.2.3.4:6789/0"}],"quorum":"x"}"#, "in.json: quorum: not an array of ranks"),
        (r#"{"fsid":"nope","mons":[{"name":"a","addr":"1.2.3.4:6789/0"}]}"#, "in.json: fsid: \"nope\" is not a UUID"),
        (r#"{"fsid":7,"mons":[{"name":"a","addr":"1.2.3.4:6789/0"}]}"#, "in.json: fsid: not a string"),
        ("epoch 1\nfsid x\n0: [v2:1.2.3.4:3300/0,v1:1.2.3.4:6789/0 mon.a\n", "in.json: line 3: mon.a: unclosed"),
        ("epoch 1\n0: foo:1.2.3.4 mon.a\n", "in.json: line 2: mon.a: unknown address type \"foo\""),
        ("epoch 1\nfsid 0d11e97a-bb59-47ec-9a31-a3ee664e88ef\n", "in.json: no monitors found"),
        ("epoch 1\n0: [v2:1.2.3.4:3300/0] mon.a\n1: 0.0.0.0:0/0 mon.b\n", "in.json: mon.b has no address"),
        ("[global]\nfsid = 0d11e97a-bb59-47ec-9a31-a3ee664e88ef\n", "in.json: mon_host: missing in [global], [client] and [mon]"),
        ("[global]\nmon host = [v2:1.2.3.4:3300\n", "in.json: mon_host: unclosed '['"),
        ("[global]\nmon_host = v9:1.2.3.4\n", "in.json: mon_host: unknown address type \"v9\""),
    ];
    for (input, want) in cases {
        let got = parse_err(input);
        assert!(
            got.starts_with(want),
            "input {input:?}\n  want prefix: {want}\n  got:         {got}"
        );
    }
}

fn sample_map(c: &str) -> monmap::MonMap {
    monmap::parse(&read_fixture(&format!("{c}.mon_dump.json")), c).unwrap()
}

fn build_err(map: &monmap::MonMap, f: impl FnOnce(&mut MountRequest)) -> String {
    let mut req = MountRequest::new("fs", Some("a"), Syntax::New);
    f(&mut req);
    plan::build(map, &req)
        .map(|p| panic!("expected an error, got {p:?}"))
        .unwrap_err()
        .to_string()
}

#[test]
fn plan_errors_are_specific() {
    let both = sample_map("1mon-v2v1-127.0.0.1");
    let v1 = sample_map("1mon-v1only-msgr2false-127.0.0.1");
    let v2 = sample_map("1mon-v2only-msgr1false-127.0.0.1-nofs");
    let text = monmap::parse(&read_fixture("1mon-v2v1-127.0.0.1.mon_dump.txt"), "t").unwrap();
    let conf_nofsid = monmap::parse("[global]\nmon_host = 10.0.0.1\n", "c").unwrap();

    assert!(build_err(&v1, |r| r.ms_mode = Some(MsMode::Crc))
        .starts_with("no v2 mon address: ms_mode=crc needs one"));
    assert!(build_err(&v2, |r| r.ms_mode = Some(MsMode::Legacy))
        .starts_with("no v1 mon address: ms_mode=legacy needs one"));
    assert_eq!(
        build_err(&both, |r| r.fsid = Some("0d11e97a-bb59-47ec-9a31-a3ee664e88ef".into())),
        "fsid mismatch: --fsid is 0d11e97a-bb59-47ec-9a31-a3ee664e88ef but the mon dump says 9c5e8523-e32c-4ca9-80da-df6e8fddd9bf"
    );
    assert!(build_err(&conf_nofsid, |_| {}).starts_with("no fsid"));
    assert!(build_err(&conf_nofsid, |r| r.fsid = Some("xyz".into()))
        .starts_with("fsid: \"xyz\" is not a UUID"));
    assert!(build_err(&text, |r| r.quorum_only = true)
        .starts_with("quorum-only: the input has no quorum list"));
    assert!(build_err(&both, |r| r.fs = None).starts_with("fs: the new syntax"));
    assert!(build_err(&both, |r| r.name = "f@s".into()).starts_with("name: \"f@s\" contains '@'"));
    assert!(build_err(&both, |r| r.name = String::new()).starts_with("name: empty"));
    assert!(build_err(&both, |r| r.fs = Some("a,b".into())).starts_with("fs: \"a,b\" contains ','"));
    assert!(build_err(&both, |r| r.path = "volumes".into())
        .starts_with("path: \"volumes\" must start with '/'"));
    assert!(build_err(&both, |r| r.options = vec!["secret=AQxx".into()])
        .starts_with("option secret=: pass the secret with --keyring"));
    assert!(build_err(&both, |r| r.options = vec!["ms_mode=crc".into()])
        .starts_with("option ms_mode=: use --ms-mode"));
    assert!(build_err(&both, |r| r.options = vec!["a,b".into()])
        .starts_with("option 1 of -o: not a mount option name"));
    assert!(build_err(&both, |r| r.options =
        vec!["noshare".into(), "x=a,b".into()])
    .starts_with("option x=: the value contains ','"));

    // Old syntax without fs/fsid is fine: the kernel then uses the default fs.
    let mut req = MountRequest::new("fs", None, Syntax::Old);
    req.auth = Auth::None;
    let p = plan::build(&conf_nofsid, &req).unwrap();
    assert_eq!(
        (p.source.as_str(), p.data(false).as_str()),
        ("10.0.0.1:6789:/", "name=fs")
    );
}

#[test]
fn quorum_filter() {
    // quorum_status of the 3-mon cluster with mon.c out of quorum.
    let mut j: serde_json::Value = serde_json::from_str(&read_fixture(
        "3mon-v2v1-127.0.0.1-vstartports.quorum_status.json",
    ))
    .unwrap();
    j["quorum"] = serde_json::json!([0, 1]);
    let map = monmap::parse(&j.to_string(), "q").unwrap();
    let mut req = MountRequest::new("fs", Some("a"), Syntax::New);
    req.quorum_only = true;
    let p = plan::build(&map, &req).unwrap();
    assert_eq!(
        p.data(false),
        "mon_addr=127.0.0.1:40762/127.0.0.1:40764,ms_mode=prefer-crc,name=fs"
    );
    assert_eq!(p.notes, ["mon.c is not in quorum; left out"]);
    j["quorum"] = serde_json::json!([]);
    let map = monmap::parse(&j.to_string(), "q").unwrap();
    assert!(plan::build(&map, &req)
        .unwrap_err()
        .to_string()
        .contains("no monitor of the map is in quorum"));
}

/// A real dump taken after mon.c was killed: quorum [0,1].
#[test]
fn real_degraded_quorum() {
    let c = "3mon-v1only-msgr2false-192.168.251.1-vstartports-monc-down";
    for input in ["mon_dump.json", "quorum_status.json"] {
        let map = monmap::parse(&read_fixture(&format!("{c}.{input}")), input).unwrap();
        assert_eq!(map.quorum, Some(vec![0, 1]), "{input}");
        let mut req = MountRequest::new("fs", Some("a"), Syntax::New);
        let all = plan::build(&map, &req).unwrap();
        assert_eq!(all.mon_addrs.len(), 3);
        req.quorum_only = true;
        let p = plan::build(&map, &req).unwrap();
        assert_eq!(
            p.data(false),
            "mon_addr=192.168.251.1:40763/192.168.251.1:40765,name=fs"
        );
        assert_eq!(
            p.notes,
            [
                "mon.c is not in quorum; left out",
                "no v2 address in the map: using v1 addresses without ms_mode"
            ]
        );
    }
}

#[test]
fn keys_and_fs_errors() {
    let kr = read_fixture("3mon-v2v1-127.0.0.1-vstartports.auth_get_client.fs.keyring");
    assert!(secret::secret_from_text(&kr, "client.fs", "k").is_ok());
    let bare = read_fixture("3mon-v2v1-127.0.0.1-vstartports.auth_get-key_client.fs.txt");
    assert_eq!(
        secret::secret_from_text(&bare, "client.fs", "k").unwrap(),
        secret::secret_from_text(&kr, "client.fs", "k").unwrap()
    );
    let e = secret::secret_from_text("", "client.fs", "empty.keyring")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "unreadable key in empty.keyring: the key is empty");
    let e = secret::secret_from_text(&kr, "client.admin", "fs.keyring")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "unreadable key in fs.keyring: no [client.admin] section (sections: client.fs)"
    );
    let e = secret::secret_from_text("not base64!", "client.fs", "k")
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid base64 character at offset 10"), "{e}");

    let nofs = read_fixture("1mon-v2only-msgr1false-127.0.0.1-nofs.fs_ls.json");
    let e = monmap::check_fs_exists(&nofs, "a", "fs_ls")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "no such fs \"a\": the cluster has no file systems");
    let ls = read_fixture("1mon-v2v1-127.0.0.1.fs_ls.json");
    assert!(monmap::check_fs_exists(&ls, "a", "fs_ls").is_ok());
    assert_eq!(
        monmap::check_fs_exists(&ls, "b", "fs_ls")
            .unwrap_err()
            .to_string(),
        "no such fs \"b\": file systems: a"
    );
}

#[test]
fn stderr_merged_into_stdout_is_tolerated() {
    let j = format!(
        "dumped monmap epoch 1\n{}",
        read_fixture("1mon-v2v1-127.0.0.1.mon_dump.json")
    );
    assert_eq!(monmap::parse(&j, "x").unwrap().mons.len(), 1);
}

fn arb_mon() -> impl Strategy<Value = (bool, bool, [u8; 4], u16, u16)> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<[u8; 4]>(),
        1u16..,
        1u16..,
    )
        // 0.0.0.0 is Ceph's "no address" and is dropped by the parser.
        .prop_filter("a mon needs an address", |(a, b, ip, ..)| {
            (*a || *b) && *ip != [0, 0, 0, 0]
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary text never panics the parser.
    #[test]
    fn parser_never_panics(s in ".{0,300}") {
        let _ = monmap::parse(&s, "fuzz");
    }

    /// Text built from the grammar's own pieces (brackets, types, colons) never panics either.
    #[test]
    fn parser_never_panics_on_near_misses(parts in prop::collection::vec(prop::sample::select(vec![
        "{", "}", "[", "]", "\"mons\"", ":", ",", "\"addrvec\"", "\"type\"", "\"v2\"", "\"v1\"", "\"addr\"",
        "\"1.2.3.4:3300\"", "v2:", "v1:", "[::1]", "0: ", " mon.a", "\n", "epoch 1", "fsid ", "mon_host = ",
        "/0", "3300", "::", "\"public_addrs\"", "{\"addrvec\":[", "null", "-1", "1e99",
    ]), 0..40)) {
        let s: String = parts.concat();
        let _ = monmap::parse(&s, "fuzz");
        let _ = monmap::parse_mon_host(&s, "fuzz");
    }

    /// Generated maps: JSON and text renderings parse to the same mons, and the default
    /// new-syntax plan uses v2 (with prefer-crc) iff any mon has v2.
    #[test]
    fn generated_maps_roundtrip(mons in prop::collection::vec(arb_mon(), 1..6)) {
        let mut js = Vec::new();
        let mut txt = String::from("epoch 1\nfsid 0d11e97a-bb59-47ec-9a31-a3ee664e88ef\n");
        for (i, (has2, has1, ip, p2, p1)) in mons.iter().enumerate() {
            let ip = format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3]);
            let mut vec = Vec::new();
            let mut tv = Vec::new();
            if *has2 { vec.push(serde_json::json!({"type":"v2","addr":format!("{ip}:{p2}"),"nonce":0})); tv.push(format!("v2:{ip}:{p2}/0")); }
            if *has1 { vec.push(serde_json::json!({"type":"v1","addr":format!("{ip}:{p1}"),"nonce":0})); tv.push(format!("v1:{ip}:{p1}/0")); }
            js.push(serde_json::json!({"rank": i, "name": format!("m{i}"), "public_addrs": {"addrvec": vec}, "crush_location": "{}"}));
            let t = if tv.len() == 1 { tv[0].clone() } else { format!("[{}]", tv.join(",")) };
            txt.push_str(&format!("{i}: {t} mon.m{i}\n"));
        }
        let j = serde_json::json!({"fsid": "0d11e97a-bb59-47ec-9a31-a3ee664e88ef", "removed_ranks: ": "", "mons": js, "quorum": (0..mons.len()).collect::<Vec<_>>()});
        let a = monmap::parse(&j.to_string(), "j").unwrap();
        let b = monmap::parse(&txt, "t").unwrap();
        prop_assert_eq!(&a.mons, &b.mons);
        let conf = monmap::parse(&a.minimal_conf("0d11e97a-bb59-47ec-9a31-a3ee664e88ef"), "c").unwrap();
        let addrs = |m: &monmap::MonMap| m.mons.iter().map(|x| x.addrs.clone()).collect::<Vec<_>>();
        prop_assert_eq!(addrs(&a), addrs(&conf));

        let p = plan::build(&a, &MountRequest::new("fs", Some("a"), Syntax::New)).unwrap();
        let any_v2 = mons.iter().any(|m| m.0);
        prop_assert_eq!(p.ms_mode.is_some(), any_v2);
        let want = if any_v2 { mountgen::AddrType::V2 } else { mountgen::AddrType::V1 };
        prop_assert!(p.mon_addrs.iter().all(|x| x.kind == want));
        prop_assert!(!p.mon_addrs.is_empty());
    }
}
