//! The lab core: config ([`config`]), paths of persisted state ([`paths`]), and the plan of
//! netlink steps that builds and removes a lab.
pub mod config;
pub mod paths;

pub use config::{Ipv4Cidr, Lab, Uplink};
