//! units: see the crate README / docs.
