//! dns: see the crate README / docs.
