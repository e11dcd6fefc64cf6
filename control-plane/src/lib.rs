//! Library root.

pub mod ca;
