//! The nftables table labnet owns: NAT for traffic leaving the lab through its uplink.
//! Built with the `nftables` crate's JSON schema and applied by `nft -j -f -` started inside
//! the target namespace (so nothing else's ruleset is touched; the table is deleted whole).
use nftables::batch::Batch;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression};
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

/// `table ip labnet { chain postrouting { type nat hook postrouting priority srcnat;
///  oifname "UPLINK" masquerade } }` — seed 000's `iptables -t nat -A POSTROUTING -o wg-sepian
/// -j MASQUERADE`, in a table of its own.
pub fn lab_masquerade(uplink: &str) -> Nftables<'static> {
    let mut b = Batch::new();
    b.add(NfListObject::Table(Table {
        family: NfFamily::IP,
        name: LAB_TABLE.into(),
        ..Default::default()
    }));
    b.add(NfListObject::Chain(postrouting_chain(LAB_TABLE)));
    b.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: LAB_TABLE.into(),
        chain: "postrouting".into(),
        expr: vec![
            Statement::Match(Match {
                left: meta(MetaKey::Oifname),
                right: Expression::String(uplink.to_string().into()),
                op: Operator::EQ,
            }),
            Statement::Masquerade(None),
        ]
        .into(),
        comment: Some("labnet: lab traffic leaving the uplink".into()),
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

/// True when `table` exists in `ns` and holds a masquerade rule for `oifname`.
pub fn masquerades(ns: Option<&str>, table: &str, oifname: &str) -> Result<bool, Error> {
    Ok(list_table(ns, table)?.is_some_and(|t| {
        let s = t.to_string();
        s.contains("masquerade") && s.contains(&format!("\"{oifname}\""))
    }))
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
    fn lab_masquerade_golden() {
        let json = serde_json::to_string_pretty(&lab_masquerade("wg-sepian")).unwrap();
        golden("nft-lab-masquerade.json", &(json + "\n"));
    }

    #[test]
    fn host_masquerade_golden() {
        let json = serde_json::to_string_pretty(&host_masquerade("sepian", "lnh-sepian")).unwrap();
        golden("nft-host-masquerade.json", &(json + "\n"));
    }
}
