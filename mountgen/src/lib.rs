//! mountgen: see the crate README / docs.
