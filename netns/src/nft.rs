//! The nftables tables labnet owns: in a lab with an uplink, the input/forward policy (from
//! the uplink only replies) and NAT for traffic leaving through the uplink; for a host
//! uplink, the NAT in labnet's own namespace.
//! Built with the `nftables` crate's JSON schema and applied by `nft -j -f -` started inside
//! the target namespace (so nothing else's ruleset is touched; the table is deleted whole).
use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, CT};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::nsfs::in_netns;
use crate::Error;

/// Name of labnet's table inside a lab namespace (the namespace is labnet's alone).
pub const LAB_TABLE: &str = "labnet";

/// Table name for a host-uplink lab's NAT in labnet's own namespace.
pub fn host_table(lab: &str) -> String {
    format!("labnet-{lab}")
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn postrouting_chain(table: &str) -> Chain<'static> {
    Chain {
        family: NfFamily::IP,
        table: table.to_string().into(),
        name: "postrouting".into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(100), // srcnat
        policy: Some(NfChainPolicy::Accept),
        ..Default::default()
    }
}

fn filter_chain(name: &str, hook: NfHook) -> Chain<'static> {
    Chain {
        family: NfFamily::IP,
        table: LAB_TABLE.into(),
        name: name.to_string().into(),
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(0),
        policy: Some(NfChainPolicy::Drop),
        ..Default::default()
    }
}

fn iif(name: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: meta(MetaKey::Iifname),
        right: Expression::String(name.to_string().into()),
        op: Operator::EQ,
    })
}

fn oif(name: &str) -> Statement<'static> {
    Statement::Match(Match {
        left: meta(MetaKey::Oifname),
        right: Expression::String(name.to_string().into()),
        op: Operator::EQ,
    })
}

/// `ct state established,related`: replies to the lab's own connections.
fn replies() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        right: Expression::List(vec![
            Expression::String("established".into()),
            Expression::String("related".into()),
        ]),
        op: Operator::IN,
    })
}

fn rule(
    chain: &str,
    mut expr: Vec<Statement<'static>>,
    verdict: Statement<'static>,
    why: &str,
) -> NfListObject<'static> {
    expr.push(verdict);
    NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: LAB_TABLE.into(),
        chain: chain.to_string().into(),
        expr: expr.into(),
        comment: Some(format!("labnet: {why}").into()),
        ..Default::default()
    })
}

/// labnet's table in a lab with an uplink:
///
/// ```text
/// table ip labnet {
///   chain input { type filter hook input priority 0; policy drop;
///     iifname "lo" accept; ct state established,related accept; iifname "BRIDGE" accept }
///   chain forward { type filter hook forward priority 0; policy drop;
///     ct state established,related accept; iifname "BRIDGE" oifname "UPLINK" accept }
///   chain postrouting { type nat hook postrouting priority srcnat;
///     oifname "UPLINK" masquerade } }
/// ```
///
/// From the uplink (the bounce box, the host) only replies to the lab's own connections come
/// in: the lab's DNS and DHCP are no open services to the other side, nor are its VMs. From
/// the bridge, the lab host (its daemons, a cluster on the bridge address) and the way out;
/// from anywhere else (a link that is neither), nothing. The NAT is seed 000's `iptables -t
/// nat -A POSTROUTING -o wg-sepian -j MASQUERADE`, in a table of its own.
pub fn lab_table(bridge: &str, uplink: &str) -> Nftables<'static> {
    lab_table_peered(bridge, uplink, None)
}

/// [`lab_table`], and for a lab with a peering link (`peering`: its name) the routed
/// network of joined labs: the peer labs may reach this lab's services and clients and be
/// reached by them, in both directions, without NAT (input, and forward bridge <-> peering;
/// AllowedIPs already limits what comes in to each peer's lab subnet).
pub fn lab_table_peered(bridge: &str, uplink: &str, peering: Option<&str>) -> Nftables<'static> {
    let accept = || Statement::Accept(None);
    let mut b = Batch::new();
    b.add(NfListObject::Table(Table {
        family: NfFamily::IP,
        name: LAB_TABLE.into(),
        ..Default::default()
    }));
    b.add(NfListObject::Chain(filter_chain("input", NfHook::Input)));
    b.add(rule(
        "input",
        vec![iif("lo")],
        accept(),
        "the lab's own traffic",
    ));
    b.add(rule(
        "input",
        vec![replies()],
        accept(),
        "replies to the lab's connections",
    ));
    b.add(rule(
        "input",
        vec![iif(bridge)],
        accept(),
        "the lab's clients",
    ));
    b.add(NfListObject::Chain(filter_chain(
        "forward",
        NfHook::Forward,
    )));
    b.add(rule(
        "forward",
        vec![replies()],
        accept(),
        "replies to the lab's connections",
    ));
    b.add(rule(
        "forward",
        vec![iif(bridge), oif(uplink)],
        accept(),
        "the lab's clients out through the uplink",
    ));
    if let Some(p) = peering {
        b.add(rule(
            "input",
            vec![iif(p)],
            accept(),
            "peer labs (their DNS forwards, pings)",
        ));
        b.add(rule(
            "forward",
            vec![iif(bridge), oif(p)],
            accept(),
            "the lab's clients to peer labs, not NAT'ed",
        ));
        b.add(rule(
            "forward",
            vec![iif(p), oif(bridge)],
            accept(),
            "peer labs to the lab's clients",
        ));
    }
    b.add(NfListObject::Chain(postrouting_chain(LAB_TABLE)));
    b.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: LAB_TABLE.into(),
        chain: "postrouting".into(),
        expr: vec![oif(uplink), Statement::Masquerade(None)].into(),
        comment: Some("labnet: lab traffic leaving the uplink".into()),
        ..Default::default()
    }));
    b.to_nftables()
}

/// The table of a lab's peering link, in the lab: TCP SYNs into the tunnel get their MSS
/// clamped to the route's MTU (the link's), so a TCP connection through two tunnels (a
/// CephFS mount from a peer lab) does not stall on full-size segments that cannot pass.
///
/// ```text
/// table ip labnet-peering { chain forward { type filter hook forward priority mangle; policy accept;
///   oifname "PEERING" tcp flags syn tcp option maxseg size set rt mtu } }
/// ```
pub const PEERING_TABLE: &str = "labnet-peering";

pub fn peering_table(peering: &str) -> Nftables<'static> {
    use nftables::expr::{Payload, PayloadField, RTKey, TcpOption, RT};
    let mut b = Batch::new();
    b.add(NfListObject::Table(Table {
        family: NfFamily::IP,
        name: PEERING_TABLE.into(),
        ..Default::default()
    }));
    b.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: PEERING_TABLE.into(),
        name: "forward".into(),
        _type: Some(NfChainType::Filter),
        hook: Some(NfHook::Forward),
        prio: Some(-150), // mangle
        policy: Some(NfChainPolicy::Accept),
        ..Default::default()
    }));
    let syn = Statement::Match(Match {
        left: Expression::Named(NamedExpression::Payload(Payload::PayloadField(
            PayloadField {
                protocol: "tcp".into(),
                field: "flags".into(),
            },
        ))),
        right: Expression::String("syn".into()),
        op: Operator::IN,
    });
    let clamp = Statement::Mangle(nftables::stmt::Mangle {
        key: Expression::Named(NamedExpression::TcpOption(TcpOption {
            name: "maxseg".into(),
            field: Some("size".into()),
        })),
        value: Expression::Named(NamedExpression::RT(RT {
            key: RTKey::MTU,
            family: None,
        })),
    });
    b.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: PEERING_TABLE.into(),
        chain: "forward".into(),
        expr: vec![oif(peering), syn, clamp].into(),
        comment: Some("labnet: MSS clamp into the peering tunnel".into()),
        ..Default::default()
    }));
    b.to_nftables()
}

/// For a host uplink: in labnet's own namespace, masquerade what arrives from the lab's veth
/// and leaves by any other interface (libvirt's default network does the same).
pub fn host_masquerade(lab: &str, host_veth: &str) -> Nftables<'static> {
    let table = host_table(lab);
    let mut b = Batch::new();
    b.add(NfListObject::Table(Table {
        family: NfFamily::IP,
        name: table.clone().into(),
        ..Default::default()
    }));
    b.add(NfListObject::Chain(postrouting_chain(&table)));
    b.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: table.into(),
        chain: "postrouting".into(),
        expr: vec![
            Statement::Match(Match {
                left: meta(MetaKey::Iifname),
                right: Expression::String(host_veth.to_string().into()),
                op: Operator::EQ,
            }),
            Statement::Match(Match {
                left: meta(MetaKey::Oifname),
                right: Expression::String(host_veth.to_string().into()),
                op: Operator::NEQ,
            }),
            Statement::Masquerade(None),
        ]
        .into(),
        comment: Some(format!("labnet: NAT for lab {lab}").into()),
        ..Default::default()
    }));
    b.to_nftables()
}

/// Applies a ruleset inside namespace `ns` (None = labnet's own).
pub fn apply(ns: Option<&str>, ruleset: Nftables<'static>) -> Result<(), Error> {
    in_netns(ns, move || {
        nftables::helper::apply_ruleset(&ruleset).map_err(|e| Error::Nft {
            what: "applying labnet's table".into(),
            detail: e.to_string(),
        })
    })
}

/// Deletes a whole table; a missing table (or namespace) is fine.
pub fn delete_table(ns: Option<&str>, table: &str) -> Result<(), Error> {
    if !table_exists(ns, table)? {
        return Ok(());
    }
    let mut b = Batch::new();
    b.delete(NfListObject::Table(Table {
        family: NfFamily::IP,
        name: table.to_string().into(),
        ..Default::default()
    }));
    let rs = b.to_nftables();
    let table_name = table.to_string();
    in_netns(ns, move || {
        nftables::helper::apply_ruleset(&rs).map_err(|e| Error::Nft {
            what: format!("deleting table ip {}", table_name),
            detail: e.to_string(),
        })
    })
}

/// Reads table `ip TABLE` in namespace `ns` with the nftables crate's ruleset reader (`nft -j
/// list table`, parsed into its schema); None when the table does not exist.
pub fn read_table(ns: Option<&str>, table: &str) -> Result<Option<Nftables<'static>>, Error> {
    let table = table.to_string();
    in_netns(ns, move || {
        let args = ["list", "table", "ip", table.as_str()];
        match nftables::helper::get_current_ruleset_with_args(nftables::helper::DEFAULT_NFT, &args)
        {
            Ok(t) => Ok(Some(t)),
            Err(nftables::helper::NftablesError::NftExecution { inner, .. }) => {
                Err(Error::ToolMissing {
                    tool: "nft".into(),
                    package: "nftables".into(),
                    source: inner,
                })
            }
            // nft exits non-zero for a table that is not there.
            Err(nftables::helper::NftablesError::NftFailed { .. }) => Ok(None),
            Err(e) => Err(Error::Nft {
                what: format!("reading table ip {table}"),
                detail: e.to_string(),
            }),
        }
    })
}

pub fn table_exists(ns: Option<&str>, table: &str) -> Result<bool, Error> {
    Ok(read_table(ns, table)?.is_some())
}

/// One way a listed table differs from the one labnet makes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", content = "what", rename_all = "snake_case")]
pub enum TableDiff {
    Missing(String),
    Different(String),
    Extra(String),
}

/// The table's elements, whether listed (`nft -j list`) or to be added (a batch).
fn elements<'a>(t: &'a Nftables<'static>) -> impl Iterator<Item = &'a NfListObject<'static>> {
    use nftables::schema::{NfCmd, NfObject};
    t.objects.iter().filter_map(|o| match o {
        NfObject::ListObject(x) | NfObject::CmdObject(NfCmd::Add(x)) => Some(x),
        _ => None,
    })
}

fn chains<'a>(t: &'a Nftables<'static>) -> impl Iterator<Item = &'a Chain<'static>> {
    elements(t).filter_map(|o| match o {
        NfListObject::Chain(c) => Some(c),
        _ => None,
    })
}

fn rules<'a>(t: &'a Nftables<'static>) -> impl Iterator<Item = &'a Rule<'static>> {
    elements(t).filter_map(|o| match o {
        NfListObject::Rule(r) => Some(r),
        _ => None,
    })
}

/// Typed comparison of a listed table (`read_table`) with what labnet applies (`lab_table`,
/// `host_masquerade`): each chain's type, hook, priority and policy; each rule (found by its
/// `labnet: ...` comment) statement by statement; chains and rules labnet did not make.
pub fn diff(want: &Nftables<'static>, listed: &Nftables<'static>) -> Vec<TableDiff> {
    let mut out = vec![];
    let base = |c: &Chain| (c._type, c.hook, c.prio, c.policy);
    for w in chains(want) {
        match chains(listed).find(|l| l.name == w.name) {
            None => out.push(TableDiff::Missing(format!("chain {}", w.name))),
            Some(l) if base(l) != base(w) => out.push(TableDiff::Different(format!(
                "chain {}: {:?} (want {:?})",
                w.name,
                base(l),
                base(w)
            ))),
            Some(_) => {}
        }
    }
    for l in chains(listed) {
        if !chains(want).any(|w| w.name == l.name) {
            out.push(TableDiff::Extra(format!("chain {}", l.name)));
        }
    }
    let key = |r: &Rule| {
        (
            r.chain.to_string(),
            r.comment.as_deref().map(str::to_string),
        )
    };
    for w in rules(want) {
        let (chain, comment) = key(w);
        let what = format!(
            "rule in {chain} \"{}\"",
            comment.clone().unwrap_or_default()
        );
        match rules(listed).find(|l| key(l) == key(w)) {
            None => out.push(TableDiff::Missing(what)),
            Some(l) if l.expr != w.expr => out.push(TableDiff::Different(format!(
                "{what}: {} (want {})",
                serde_json::to_string(&l.expr).unwrap_or_default(),
                serde_json::to_string(&w.expr).unwrap_or_default()
            ))),
            Some(_) => {}
        }
    }
    for l in rules(listed) {
        if !rules(want).any(|w| key(w) == key(l)) {
            out.push(TableDiff::Extra(format!(
                "rule in {}: {}",
                l.chain,
                serde_json::to_string(&l.expr).unwrap_or_default()
            )));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str, actual: &str) {
        testkit::golden!(name, actual);
    }

    /// A table as nft lists it (handles, metainfo) equals labnet's; a flushed one lacks its
    /// rules; an edited one differs; someone's own rule is extra.
    #[test]
    fn diff_of_listed_tables() {
        use nftables::schema::{NfCmd, NfObject};
        let want = lab_table("br0", "wg-sepian");
        // As nft lists it: elements (not add commands), with handles.
        let listed = Nftables {
            objects: want
                .objects
                .iter()
                .enumerate()
                .filter_map(|(i, o)| match o {
                    NfObject::CmdObject(NfCmd::Add(x)) => {
                        let mut x = x.clone();
                        if let NfListObject::Rule(r) = &mut x {
                            r.handle = Some(i as u32);
                        }
                        Some(NfObject::ListObject(x))
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
                .into(),
        };
        assert_eq!(diff(&want, &listed), []);
        let flushed: Vec<_> = listed
            .objects
            .iter()
            .filter(|o| !matches!(o, NfObject::ListObject(NfListObject::Rule(_))))
            .cloned()
            .collect();
        let d = diff(
            &want,
            &Nftables {
                objects: flushed.into(),
            },
        );
        assert_eq!(d.len(), 6, "{d:?}");
        assert!(
            d.iter().all(|x| matches!(x, TableDiff::Missing(_))),
            "{d:?}"
        );
        let other = lab_table("br0", "eth9");
        let d = diff(&want, &other);
        assert_eq!(d.len(), 2, "forward and masquerade name the uplink: {d:?}");
        assert!(
            d.iter().all(|x| matches!(x, TableDiff::Different(_))),
            "{d:?}"
        );
        let mut extra = listed.clone();
        extra
            .objects
            .to_mut()
            .push(NfObject::ListObject(NfListObject::Rule(Rule {
                family: NfFamily::IP,
                table: LAB_TABLE.into(),
                chain: "input".into(),
                expr: vec![Statement::Accept(None)].into(),
                ..Default::default()
            })));
        assert_eq!(
            diff(&want, &extra),
            [TableDiff::Extra(
                r#"rule in input: [{"accept":null}]"#.into()
            )]
        );
    }

    /// The real round trip: labnet's table applied by nft in a throwaway namespace reads back
    /// (nftables crate's reader) equal to what was applied; flushed, its rules are missing.
    #[test]
    #[ignore = "needs root (CAP_NET_ADMIN, netns)"]
    fn applied_table_reads_back_equal() {
        testkit::require_root();
        struct Gone(String);
        impl Drop for Gone {
            fn drop(&mut self) {
                let _ = crate::nsfs::delete_netns(&self.0);
            }
        }
        let ns = Gone(testkit::unique("lanft"));
        crate::nsfs::create_netns(&ns.0).unwrap();
        assert_eq!(read_table(Some(&ns.0), LAB_TABLE).unwrap(), None);
        let want = lab_table("br0", "wg-sepian");
        apply(Some(&ns.0), want.clone()).unwrap();
        let listed = read_table(Some(&ns.0), LAB_TABLE)
            .unwrap()
            .expect("table listed");
        assert_eq!(diff(&want, &listed), []);
        let peered = lab_table_peered("br0", "wg-sepian", Some("wgp-x"));
        delete_table(Some(&ns.0), LAB_TABLE).unwrap();
        apply(Some(&ns.0), peered.clone()).unwrap();
        let listed = read_table(Some(&ns.0), LAB_TABLE).unwrap().expect("listed");
        assert_eq!(diff(&peered, &listed), []);
        assert_ne!(
            diff(&want, &listed),
            [],
            "the peered table is not the plain one"
        );
        let clamp = peering_table("wgp-x");
        apply(Some(&ns.0), clamp.clone()).unwrap();
        let listed = read_table(Some(&ns.0), PEERING_TABLE)
            .unwrap()
            .expect("listed");
        assert_eq!(diff(&clamp, &listed), []);
        delete_table(Some(&ns.0), LAB_TABLE).unwrap();
        apply(Some(&ns.0), want.clone()).unwrap();
        let host = host_masquerade("x", "lnh-x");
        apply(Some(&ns.0), host.clone()).unwrap();
        let listed = read_table(Some(&ns.0), &host_table("x"))
            .unwrap()
            .expect("listed");
        assert_eq!(diff(&host, &listed), []);
        let out = in_netns(Some(&ns.0), || {
            std::process::Command::new("nft")
                .args(["flush", "table", "ip", LAB_TABLE])
                .status()
                .map_err(|e| Error::io("nft", e))
        })
        .unwrap();
        assert!(out.success());
        let flushed = read_table(Some(&ns.0), LAB_TABLE)
            .unwrap()
            .expect("still there");
        let d = diff(&want, &flushed);
        assert_eq!(d.len(), 6, "{d:?}");
    }

    #[test]
    fn lab_table_golden() {
        let json = serde_json::to_string_pretty(&lab_table("br0", "wg-sepian")).unwrap();
        golden("nft-lab-table.json", &(json + "\n"));
    }

    #[test]
    fn peering_tables_golden() {
        let json =
            serde_json::to_string_pretty(&lab_table_peered("br0", "wg-laba", Some("wgp-laba")))
                .unwrap();
        golden("nft-lab-table-peered.json", &(json + "\n"));
        let json = serde_json::to_string_pretty(&peering_table("wgp-laba")).unwrap();
        golden("nft-peering-table.json", &(json + "\n"));
    }

    #[test]
    fn host_masquerade_golden() {
        let json = serde_json::to_string_pretty(&host_masquerade("sepian", "lnh-sepian")).unwrap();
        golden("nft-host-masquerade.json", &(json + "\n"));
    }
}
