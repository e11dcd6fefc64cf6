//! The mesh sidecar: a per-workload proxy configured by the control plane.

pub mod accesslog;
pub mod admin;
pub mod app;
pub mod balance;
pub mod config;
pub mod inbound;
pub mod outbound;
pub mod proxy;
pub mod resilience;
pub mod routing;
pub mod state;
pub mod telemetry;
pub mod trace;
pub mod xds;
