//! Resilience of one outbound request: safe retries with a budget, per-try and request timeouts, circuit-breaker permits and replayable bodies, driven by `call_reclaiming`.
//!
//! Every component is lock-free on the request path (atomics; the only mutex is the
//! uncontended one inside [`ReplayBody`]) and runs on tokio's clock, so the tests drive them
//! with a paused clock.
//!
//! | piece | what |
//! |---|---|
//! | [`retry`] | [`RetryPolicy`], [`should_retry`]: safe by default, status retries opt-in and idempotent-only |
//! | [`replay`] | [`ReplayBody`]: tees up to 64 KiB of the request body for replays |
//! | [`budget`] | [`RetryBudget`]: retries ≤ 20 % of requests + 10/s over 10 s, always on |
//! | [`circuit`] | [`CircuitBreaker`]: caps on concurrent requests, retries and pending connects (attempts waiting for a new connection), with RAII permits |
//! | [`timeouts`] | which of the per-try and request timeouts ends an attempt, as `timeout:<kind>` |
//! | [`classify`] | hyper / h2 / io send errors → [`Cause`] |
//! | [`wiring`] | config from the `state` domain model, per-cluster registry, balancer picks, the 429 |
//! | [`driver`] | [`call_reclaiming`]: all of the above around one outbound request |
//!
//! The cause taxonomy is the data path's one, [`crate::proxy::Cause`] (re-exported here as
//! [`Cause`]): its `x-mesh-error` value, HTTP status and retry safety. The other resilience
//! concerns live with the data they act on: outlier detection, health checks and the
//! `max_requests` in-flight check per endpoint set in `crate::balance`, route rate limits in
//! `crate::state::limiter`, the listener connection limit in `crate::proxy::limit`.
//!
//! # Wiring into the outbound HTTP path
//!
//! As wired in `outbound/forward.rs`: after routing, the route's rate limit
//! ([`wiring::rate_limited`] answers a refusal), then
//!
//! ```ignore
//! let res = registry.get(&lb.cluster);                       // budget + circuit breaker
//! let policy = CallPolicy { retry: route_retry.as_ref(), request_timeout, ..Default::default() };
//! let result = call_reclaiming(&res, &policy, req,
//!     |avoid| wiring::pick_index(members, first, avoid, || pool.pick(None)),
//!     |idx, req| attempt(&members[idx], req),   // Err(Failed { cause, unsent }) on failure
//!     keep_head).await;
//! match result {
//!     // The body keeps the concurrent-request permit while it streams.
//!     Ok(rsp) => rsp,
//!     Err(e) => e.cause.respond(&e),   // x-mesh-error: the last attempt's cause
//! }
//! ```
//!
//! Each attempt reports its outcome to the balancer's in-flight guard (latency, failure
//! penalty, outlier detection); the driver takes the request and retry permits itself, and an
//! attempt that must dial a new connection takes a pending permit for as long as the connect
//! lasts (`outbound/forward.rs`, `outbound/tcp.rs`).

pub mod budget;
pub mod circuit;
pub mod classify;
pub mod driver;
pub mod replay;
pub mod retry;
pub mod timeouts;
pub mod wiring;

pub use crate::proxy::Cause;
pub use budget::{BudgetConfig, RetryBudget};
pub use circuit::{CircuitBreaker, CircuitLimits, Permit, Resource};
pub use classify::classify_client_error;
pub use driver::{
    CallError, CallInfo, CallPolicy, ClusterConfig, ClusterResilience, Failed, GuardedBody,
    call_reclaiming,
};
pub use replay::{DEFAULT_REPLAY_LIMIT, ReplayBody};
pub use retry::{Decision, Outcome, RetryOn, RetryPolicy, Stop, should_retry};
