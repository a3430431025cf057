//! dhcpd: labnet's DHCPv4 server for one lab bridge.
//!
//! - [`leases`]: the durable lease log format and the reading API (`labnet leases`, vm, dns).
pub mod leases;

pub use leases::{Lease, LeaseState};
