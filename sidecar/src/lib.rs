//! The mesh sidecar: a per-workload proxy configured by the control plane.

pub mod accesslog;
pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod dns;
pub mod health;
pub mod identity;
pub mod identity_wiring;
pub mod inbound;
pub mod init;
pub mod memory;
pub mod names;
pub mod observe;
pub mod orig_dst;
pub mod outbound;
pub mod proxy;
pub mod resilience;
pub mod routing;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod xds;
