//! netns: see the crate README / docs.
