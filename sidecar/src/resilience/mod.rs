//! Resilience: error taxonomy, safe retries with budgets, timeouts, outlier detection, circuit breakers, rate limits and health checks.

pub mod errors;

pub use errors::{Cause, CauseCounters, TimeoutKind, X_MESH_ERROR};
