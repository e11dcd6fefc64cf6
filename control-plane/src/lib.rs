//! Library root.
