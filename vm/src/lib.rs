//! vm: see the crate README / docs.
