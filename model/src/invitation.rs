//! Joining labs of two hosts without pasting keys on a command line: `labnet peer invite`
//! writes an [`Invitation`] (this lab's public key, endpoint, subnet, zone, DNS address:
//! public data only, never a private key), `labnet peer add FILE` on the other host turns
//! it into a `[[peers]]` entry of that lab's config ([`add_peer`]), `peer remove` takes it
//! out again ([`remove_peer`]). The file is written and read by this module only; an
//! invitation is valid exactly when it makes a valid `[[peers]]` entry (same validation).
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::Path;

use crate::config::{self, ConfigError, Ipv4Cidr, Lab, RawPeer, V};

/// The version of the invitation format this labnet writes and reads.
pub const FORMAT: u32 = 1;

/// What one lab tells another about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The inviting lab's name (becomes the peer's `name`).
    pub name: String,
    /// Its peering link's public key.
    pub public_key: String,
    /// HOST:PORT its peering link listens on, as written (resolved by `peer add`).
    pub endpoint: Option<String>,
    /// Its bridge subnet, as a network.
    pub subnet: Ipv4Cidr,
    /// The zone peers know it by ([`Lab::peer_zone`]).
    pub zone: String,
    /// Its lab DNS server (the bridge address).
    pub dns: Ipv4Addr,
}

/// The file as serde reads and writes it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InvitationFile {
    labnet_peer_invitation: u32,
    name: String,
    public_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    subnet: String,
    zone: String,
    dns: String,
}

impl Lab {
    /// The zone other labs know this one by: its `dns.zone`, except that the default
    /// zone `lab` (every lab's, so meaningless across hosts) becomes `NAME.lab`.
    pub fn peer_zone(&self) -> String {
        if self.dns.zone == "lab" {
            format!("{}.lab", self.name)
        } else {
            self.dns.zone.clone()
        }
    }
}

impl Invitation {
    /// This lab's invitation. `endpoint` (from `--endpoint`) overrides `peering.endpoint`.
    pub fn for_lab(lab: &Lab, public_key: &str, endpoint: Option<&str>) -> Invitation {
        let net = lab.bridge.address;
        Invitation {
            name: lab.name.clone(),
            public_key: public_key.to_string(),
            endpoint: endpoint
                .map(str::to_string)
                .or_else(|| lab.peering.as_ref().and_then(|p| p.endpoint.clone())),
            subnet: Ipv4Cidr {
                addr: net.network(),
                prefix: net.prefix,
            },
            zone: lab.peer_zone(),
            dns: net.addr,
        }
    }

    /// The file's text: a comment saying what it is and how to use it, then the fields.
    pub fn to_toml(&self) -> String {
        let f = InvitationFile {
            labnet_peer_invitation: FORMAT,
            name: self.name.clone(),
            public_key: self.public_key.clone(),
            endpoint: self.endpoint.clone(),
            subnet: self.subnet.to_string(),
            zone: self.zone.clone(),
            dns: self.dns.to_string(),
        };
        let body = toml::to_string(&f).unwrap_or_default();
        format!(
            "# labnet peer invitation from lab {:?}: public data only (no private key).\n\
             # On the other host: labnet peer add THIS_FILE [--lab LAB]\n{body}",
            self.name
        )
    }

    /// Parses and validates an invitation's text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Invitation, ConfigError> {
        let f: InvitationFile = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: format!(
                "not a labnet peer invitation: {}",
                e.message().trim_end().replace('\n', " ")
            ),
        })?;
        let v = V { file };
        if f.labnet_peer_invitation != FORMAT {
            return Err(v.err(
                "labnet_peer_invitation",
                format!(
                    "format {} is not one this labnet reads (it reads {FORMAT})",
                    f.labnet_peer_invitation
                ),
            ));
        }
        let inv = Invitation {
            name: f.name,
            public_key: f.public_key,
            endpoint: f.endpoint,
            subnet: Ipv4Cidr::parse(&f.subnet).ok_or_else(|| {
                v.err(
                    "subnet",
                    format!("expected a subnet like 192.168.1.0/24, got {:?}", f.subnet),
                )
            })?,
            zone: f.zone,
            dns: f
                .dns
                .parse()
                .map_err(|_| v.err("dns", format!("expected an IPv4 address, got {:?}", f.dns)))?,
        };
        // The same checks as a [[peers]] entry, with the file's own field names.
        config::validate_peer(&v, "", &inv.entry()).map_err(|e| match e {
            ConfigError::Field {
                file,
                field,
                message,
            } => ConfigError::Field {
                file,
                field: field.trim_start_matches('.').to_string(),
                message,
            },
            e => e,
        })?;
        Ok(inv)
    }

    pub fn load(path: &Path) -> Result<Invitation, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Invitation::parse(&text, &file)
    }

    /// The `[[peers]]` entry this invitation makes.
    pub(crate) fn entry(&self) -> RawPeer {
        RawPeer {
            name: Some(self.name.clone()),
            public_key: Some(self.public_key.clone()),
            endpoint: self.endpoint.clone(),
            subnet: Some(self.subnet.to_string()),
            zone: Some(self.zone.clone()),
            dns: Some(self.dns.to_string()),
            persistent_keepalive: None,
        }
    }
}

/// What [`add_peer`] did to the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEdit {
    Added,
    /// A peer of that name was there with other fields (a new key, a new endpoint): replaced.
    Updated,
    /// The same peer was there already: the text is unchanged.
    Unchanged,
}

fn parse_doc(text: &str, file: &str) -> Result<toml_edit::DocumentMut, ConfigError> {
    text.parse::<toml_edit::DocumentMut>()
        .map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.message().trim_end().replace('\n', " "),
        })
}

fn entry_table(p: &RawPeer) -> toml_edit::Table {
    let mut t = toml_edit::Table::new();
    let mut set = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            t[k] = toml_edit::value(v.as_str());
        }
    };
    set("name", &p.name);
    set("public_key", &p.public_key);
    set("endpoint", &p.endpoint);
    set("subnet", &p.subnet);
    set("zone", &p.zone);
    set("dns", &p.dns);
    t
}

/// The fields of a `[[peers]]` table that an invitation sets, as strings.
fn entry_fields(t: &toml_edit::Table) -> Vec<(String, String)> {
    ["name", "public_key", "endpoint", "subnet", "zone", "dns"]
        .iter()
        .filter_map(|k| {
            t.get(k)
                .and_then(|v| v.as_str())
                .map(|v| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// The config text with `inv` as a `[[peers]]` entry (comments and layout kept), checked by
/// parsing it as lab `lab` (so an overlapping subnet is refused before anything is written).
pub fn add_peer(
    text: &str,
    file: &str,
    lab: &str,
    inv: &Invitation,
) -> Result<(String, PeerEdit), ConfigError> {
    let mut doc = parse_doc(text, file)?;
    let new = entry_table(&inv.entry());
    let peers = doc
        .entry("peers")
        .or_insert(toml_edit::Item::ArrayOfTables(
            toml_edit::ArrayOfTables::new(),
        ))
        .as_array_of_tables_mut()
        .ok_or_else(|| V { file }.err("peers", "expected [[peers]] tables"))?;
    let at = peers
        .iter()
        .position(|t| t.get("name").and_then(|v| v.as_str()) == Some(inv.name.as_str()));
    let edit = match at {
        Some(i) => {
            let old = peers.get_mut(i).expect("position is in range");
            if entry_fields(old) == entry_fields(&new) {
                PeerEdit::Unchanged
            } else {
                // Keep what the user added by hand (persistent_keepalive, comments).
                for k in ["endpoint", "zone", "dns"] {
                    old.remove(k);
                }
                for (k, v) in new.iter() {
                    old[k] = v.clone();
                }
                PeerEdit::Updated
            }
        }
        None => {
            peers.push(new);
            PeerEdit::Added
        }
    };
    if edit == PeerEdit::Unchanged {
        return Ok((text.to_string(), edit));
    }
    let out = doc.to_string();
    config::parse(&out, file, Some(lab))?;
    Ok((out, edit))
}

/// The config text without peer `name`; None when the config has no such peer.
pub fn remove_peer(
    text: &str,
    file: &str,
    lab: &str,
    name: &str,
) -> Result<Option<String>, ConfigError> {
    let mut doc = parse_doc(text, file)?;
    let Some(peers) = doc
        .get_mut("peers")
        .and_then(|p| p.as_array_of_tables_mut())
    else {
        return Ok(None);
    };
    let Some(i) = peers
        .iter()
        .position(|t| t.get("name").and_then(|v| v.as_str()) == Some(name))
    else {
        return Ok(None);
    };
    peers.remove(i);
    if peers.is_empty() {
        doc.remove("peers");
    }
    let out = doc.to_string();
    config::parse(&out, file, Some(lab))?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb=";
    const KEY_C: &str = "ccccccccccccccccccccccccccccccccccccccccccc=";

    fn lab_b() -> Lab {
        config::parse(
            "name = \"labb\"\n[bridge]\naddress = \"192.168.1.1/24\"\n[peering]\nlisten_port = 51821\nendpoint = \"10.99.0.2:51821\"\n",
            "labb.toml",
            None,
        )
        .unwrap()
    }

    #[test]
    fn invitation_golden_and_round_trip() {
        let inv = Invitation::for_lab(&lab_b(), KEY_B, None);
        let text = inv.to_toml();
        testkit::golden!("invitation-labb.toml", &text);
        assert_eq!(Invitation::parse(&text, "inv").unwrap(), inv);
        // --endpoint overrides peering.endpoint.
        let inv2 = Invitation::for_lab(&lab_b(), KEY_B, Some("10.99.0.9:4000"));
        assert_eq!(inv2.endpoint.as_deref(), Some("10.99.0.9:4000"));
        assert_eq!(inv.zone, "labb.lab");
        assert_eq!(inv.dns, Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(inv.subnet.to_string(), "192.168.1.0/24");
    }

    #[test]
    fn invitation_errors_name_the_field() {
        let good = Invitation::for_lab(&lab_b(), KEY_B, None).to_toml();
        let e = |t: String| Invitation::parse(&t, "inv.toml").unwrap_err().to_string();
        assert_eq!(
            e(good.replace(KEY_B, "abc")),
            "inv.toml: public_key: expected a WireGuard public key: 44 base64 characters ending in '='"
        );
        assert_eq!(
            e(good.replace("labnet_peer_invitation = 1", "labnet_peer_invitation = 7")),
            "inv.toml: labnet_peer_invitation: format 7 is not one this labnet reads (it reads 1)"
        );
        assert_eq!(
            e(good.replace("192.168.1.0/24", "192.168.1.0")),
            "inv.toml: subnet: expected a subnet like 192.168.1.0/24, got \"192.168.1.0\""
        );
        assert_eq!(
            e(good.replace("10.99.0.2:51821", "nowhere")),
            "inv.toml: endpoint: expected HOST:PORT of the peer lab's host, got \"nowhere\""
        );
        assert!(e(good.clone() + "private_key = \"x\"\n").contains("unknown field"));
        assert!(e("name = 3".into()).starts_with("inv.toml: not a labnet peer invitation"));
    }

    const LAB_A: &str = "# lab A, by hand\nname = \"laba\"\n\n[bridge]\naddress = \"192.168.0.1/24\"  # the VMs\n\n[peering]\nlisten_port = 51820\n";

    #[test]
    fn add_update_remove_peer_keeps_the_file() {
        let inv = Invitation::for_lab(&lab_b(), KEY_B, None);
        let (added, edit) = add_peer(LAB_A, "laba.toml", "laba", &inv).unwrap();
        assert_eq!(edit, PeerEdit::Added);
        testkit::golden!("laba-with-peer-labb.toml", &added);
        let lab = config::parse(&added, "laba.toml", None).unwrap();
        assert_eq!(lab.peers.len(), 1);
        assert_eq!(lab.peers[0].subnet.to_string(), "192.168.1.0/24");
        assert_eq!(
            lab.peers[0].endpoint,
            Some("10.99.0.2:51821".parse().unwrap())
        );
        // Idempotent.
        let (again, edit) = add_peer(&added, "laba.toml", "laba", &inv).unwrap();
        assert_eq!(
            (again.as_str(), edit),
            (added.as_str(), PeerEdit::Unchanged)
        );
        // A new key for the same lab replaces the entry.
        let rekeyed = Invitation {
            public_key: KEY_C.into(),
            ..inv.clone()
        };
        let (upd, edit) = add_peer(&added, "laba.toml", "laba", &rekeyed).unwrap();
        assert_eq!(edit, PeerEdit::Updated);
        let lab = config::parse(&upd, "laba.toml", None).unwrap();
        assert_eq!(
            (lab.peers.len(), lab.peers[0].public_key.as_str()),
            (1, KEY_C)
        );
        // Removing gives the hand-written file back.
        let removed = remove_peer(&added, "laba.toml", "laba", "labb")
            .unwrap()
            .unwrap();
        assert_eq!(removed.trim_end(), LAB_A.trim_end());
        assert_eq!(
            remove_peer(LAB_A, "laba.toml", "laba", "labb").unwrap(),
            None
        );
    }

    #[test]
    fn add_peer_refuses_an_overlapping_subnet_before_writing() {
        let inv = Invitation {
            subnet: Ipv4Cidr::parse("192.168.0.0/16").unwrap(),
            ..Invitation::for_lab(&lab_b(), KEY_B, None)
        };
        assert_eq!(
            add_peer(LAB_A, "laba.toml", "laba", &inv).unwrap_err().to_string(),
            "laba.toml: peers[0].subnet: 192.168.0.0/16 of lab \"labb\" overlaps the bridge subnet 192.168.0.0/24 of this lab \"laba\" (bridge.address); lab subnets must be disjoint"
        );
    }
}
