//! Shared helpers for end-to-end scenarios.

pub mod netns;
