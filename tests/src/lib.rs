//! Shared helpers for end-to-end scenarios.
