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

/// Whether a listed lab table (`nft -j list table`) is [`lab_table`]'s: the masquerade out
/// of `uplink` and both filter chains with policy drop.
pub fn is_lab_table(listed: &serde_json::Value, uplink: &str) -> bool {
    let s = listed.to_string();
    let drop_chains = listed["nftables"]
        .as_array()
        .map(|objs| {
            objs.iter()
                .filter(|o| {
                    let c = &o["chain"];
                    ["input", "forward"].contains(&c["name"].as_str().unwrap_or_default())
                        && c["policy"] == "drop"
                })
                .count()
        })
        .unwrap_or(0);
    s.contains("masquerade") && s.contains(&format!("\"{uplink}\"")) && drop_chains == 2
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

/// Whether a listed table is [`peering_table`]'s for `peering`.
pub fn is_peering_table(listed: &serde_json::Value, peering: &str) -> bool {
    let s = listed.to_string();
    s.contains("maxseg") && s.contains(&format!("\"{peering}\""))
}

/// Whether a listed lab table lets the peering link `peering` in (built by
/// [`lab_table_peered`] with it).
pub fn lab_table_admits(listed: &serde_json::Value, peering: &str) -> bool {
    listed.to_string().contains(&format!("\"{peering}\""))
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
        nftables::helper::apply_ruleset(&ruleset)
            .map_err(|e| Error::Other(format!("nft: applying labnet's table: {e}")))
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
    in_netns(ns, move || {
        nftables::helper::apply_ruleset(&rs)
            .map_err(|e| Error::Other(format!("nft: deleting labnet's table: {e}")))
    })
}

/// The table's rules as JSON (None when it does not exist).
pub fn list_table(ns: Option<&str>, table: &str) -> Result<Option<serde_json::Value>, Error> {
    let table = table.to_string();
    in_netns(ns, move || {
        let out = std::process::Command::new("nft")
            .args(["-j", "list", "table", "ip", &table])
            .output()
            .map_err(|e| Error::Other(format!("cannot run nft: {e}")))?;
        if !out.status.success() {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&out.stdout).ok())
    })
}

pub fn table_exists(ns: Option<&str>, table: &str) -> Result<bool, Error> {
    Ok(list_table(ns, table)?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str, actual: &str) {
        testkit::golden!(name, actual);
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
