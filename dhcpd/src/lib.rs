//! dhcpd: see the crate README / docs.
