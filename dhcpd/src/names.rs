//! Host names from DHCP clients, as DNS names in the lab zone.
//!
//! - [`label`]: what a client sends (option 12, or a reservation's name) becomes one DNS label.
//!   Case is folded and non-ASCII goes to IDNA punycode (`über-box` → `xn--ber-box-m2a`),
//!   both lossless for DNS. Anything else that is no letter, digit or `-` becomes `-`, and a
//!   label over 63 bytes is cut; both lose information, so such a label gets a suffix from a
//!   hash of what the client sent (`my_box` → `my-box-4f9a1c`): two different names never
//!   end up as the same label by sanitizing or cutting.
//! - [`hosts`]: which lease a name points to. One name, one address: a reserved name belongs
//!   to its reservation's MAC only (no other client can take it, even while that MAC has no
//!   lease); otherwise, of the active leases that claim a name, the newest wins.
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

/// Longest DNS label.
const MAX_LABEL: usize = 63;
/// Hex digits of the suffix that keeps lossy labels apart.
const SUFFIX: usize = 6;

/// The DNS label for a client's host name (its first dot-separated part); None when nothing
/// usable is left.
pub fn label(name: &str) -> Option<String> {
    let first = name.split('.').next().unwrap_or("").trim();
    if first.is_empty() {
        return None;
    }
    // Lossless for DNS: case folding, and punycode for what is not ASCII.
    let ascii = if first.is_ascii() {
        first.to_ascii_lowercase()
    } else {
        match idna::domain_to_ascii(first) {
            Ok(a) if !a.is_empty() && !a.contains('.') => a,
            _ => first.to_lowercase(),
        }
    };
    let mut lossy = false;
    let mut out = String::with_capacity(ascii.len());
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c);
        } else {
            lossy = true;
            out.push('-');
        }
    }
    let trimmed = out.trim_matches('-');
    if trimmed.len() != out.len() {
        lossy = true;
    }
    let mut out = trimmed.to_string();
    if out.len() > MAX_LABEL {
        lossy = true;
    }
    if lossy {
        out.truncate(MAX_LABEL - SUFFIX - 1);
        let out = out.trim_end_matches('-');
        let base = if out.is_empty() { "host" } else { out };
        return Some(format!("{base}-{}", digest(first)));
    }
    (!out.is_empty()).then_some(out)
}

/// A stable short hash (FNV-1a, the same in every build) of the name as the client sent it.
fn digest(s: &str) -> String {
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    s.hash(&mut h);
    format!("{:0width$x}", h.finish() & 0xff_ffff, width = SUFFIX)
}

/// A lease's claim on a name.
pub struct Claim<'a> {
    pub ip: Ipv4Addr,
    pub mac: &'a str,
    pub name: &'a str,
    /// When the lease was (re)bound: the newest claim wins a name.
    pub start: u64,
}

/// `(ip, name)` for the hosts file: at most one address per name. `reserved` maps reserved
/// names to their reservation's MAC (as the leases spell it).
pub fn hosts<'a>(
    claims: impl IntoIterator<Item = Claim<'a>>,
    reserved: &HashMap<String, String>,
) -> Vec<(Ipv4Addr, &'a str)> {
    let mut winner: BTreeMap<&'a str, (bool, u64, Ipv4Addr)> = BTreeMap::new();
    for c in claims {
        let is_reservation = match reserved.get(c.name) {
            Some(mac) if mac.eq_ignore_ascii_case(c.mac) => true,
            Some(_) => continue, // a squatter: no record
            None => false,
        };
        let rank = (is_reservation, c.start, c.ip);
        match winner.get(c.name) {
            Some(best) if *best >= rank => {}
            _ => {
                winner.insert(c.name, rank);
            }
        }
    }
    let mut out: Vec<(Ipv4Addr, &str)> =
        winner.into_iter().map(|(n, (_, _, ip))| (ip, n)).collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label("vm1").as_deref(), Some("vm1"));
        assert_eq!(label("VM1.example.org").as_deref(), Some("vm1"));
        assert_eq!(label("über-box").as_deref(), Some("xn--ber-box-m2a"));
        assert_eq!(label("ÜBER-box"), label("über-box"));
        // Lossy: replaced characters get a suffix, and different originals stay apart.
        let a = label("my_box").unwrap();
        let b = label("my box").unwrap();
        assert!(
            a.starts_with("my-box-") && a.len() == "my-box-".len() + SUFFIX,
            "{a}"
        );
        assert_ne!(a, b);
        assert_ne!(a, "my-box");
        assert_eq!(label("my_box").unwrap(), a, "stable");
        // Cut at 63 with distinct suffixes.
        let long1 = format!("{}x", "a".repeat(70));
        let long2 = format!("{}y", "a".repeat(70));
        let (l1, l2) = (label(&long1).unwrap(), label(&long2).unwrap());
        assert!(l1.len() <= 63 && l2.len() <= 63);
        assert_ne!(l1, l2);
        assert_eq!(label("").as_deref(), None);
        assert_eq!(label(".x").as_deref(), None);
        assert!(label("___").unwrap().starts_with("host-"));
        assert!(label("-a-").unwrap().starts_with("a-"));
    }

    #[test]
    fn one_address_per_name_newest_or_reservation_wins() {
        let reserved: HashMap<String, String> =
            [("vmres".to_string(), "52:54:00:00:00:10".to_string())].into();
        let ip = |n: u8| Ipv4Addr::new(10, 0, 0, n);
        let claims = vec![
            Claim {
                ip: ip(1),
                mac: "52:54:00:00:00:01",
                name: "box",
                start: 100,
            },
            Claim {
                ip: ip(2),
                mac: "52:54:00:00:00:02",
                name: "box",
                start: 200,
            },
            Claim {
                ip: ip(3),
                mac: "52:54:00:00:00:03",
                name: "vmres",
                start: 300,
            },
            Claim {
                ip: ip(4),
                mac: "52:54:00:00:00:04",
                name: "solo",
                start: 50,
            },
        ];
        assert_eq!(
            hosts(claims, &reserved),
            vec![(ip(2), "box"), (ip(4), "solo")]
        );
        let claims = vec![
            Claim {
                ip: ip(3),
                mac: "52:54:00:00:00:03",
                name: "vmres",
                start: 300,
            },
            Claim {
                ip: ip(10),
                mac: "52:54:00:00:00:10",
                name: "vmres",
                start: 1,
            },
        ];
        assert_eq!(hosts(claims, &reserved), vec![(ip(10), "vmres")]);
    }
}
