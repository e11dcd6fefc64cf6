//! Library root.

pub mod ca;
pub mod identity_server;
