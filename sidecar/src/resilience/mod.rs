//! Resilience: error taxonomy, safe retries with budgets, timeouts, outlier detection, circuit breakers, rate limits and health checks.

pub mod budget;
pub mod circuit;
pub mod classify;
pub mod errors;
pub mod health;
pub mod outlier;
pub mod ratelimit;
pub mod replay;
pub mod retry;
pub mod timeouts;

pub use budget::{BudgetConfig, RetryBudget};
pub use errors::{Cause, CauseCounters, TimeoutKind, X_MESH_ERROR};
pub use replay::{DEFAULT_REPLAY_LIMIT, ReplayBody};
pub use retry::{Decision, Outcome, RetryOn, RetryPolicy, Stop, should_retry};
