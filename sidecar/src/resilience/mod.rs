//! Resilience: error taxonomy, safe retries with budgets, timeouts, outlier detection, circuit breakers, rate limits and health checks.
//!
//! Every component is self-contained and lock-free on the request path (atomics; the only
//! mutex is the uncontended one inside [`ReplayBody`]) and runs on tokio's clock, so the
//! tests drive them with a paused clock.
//!
//! | piece | what |
//! |---|---|
//! | [`errors`] | [`Cause`]: `x-mesh-error` value, HTTP status, retry safety; counters by cause |
//! | [`retry`] | [`RetryPolicy`], [`should_retry`]: safe by default, status retries opt-in and idempotent-only |
//! | [`replay`] | [`ReplayBody`]: tees up to 64 KiB of the request body for replays |
//! | [`budget`] | [`RetryBudget`]: retries ≤ 20 % of requests + 10/s over 10 s, always on |
//! | [`outlier`] | [`OutlierDetector`]: consecutive / percentage ejection, growing ejection time, ≤ 50 % ejected |
//! | [`circuit`] | [`CircuitBreaker`]: connection / pending / request / retry caps with RAII permits |
//! | [`ratelimit`] | GCRA [`TokenBucket`], per-route or per-source [`RateLimiter`], listener [`ConnectionLimiter`] |
//! | [`health`] | [`HealthChecker`]: TCP or HTTP probes with thresholds → per-endpoint healthy flag |
//! | [`timeouts`] | request / per-try / idle / connect timeouts mapped to `timeout:<kind>` |
//! | [`classify`] | hyper / h2 / io client errors → [`Cause`] |
//! | [`proto`] | `TryFrom<&proto>` for every policy (0 = proxy default; bad values are errors) |
//! | [`wiring`] | config from the `state` domain model, per-cluster registry, cause mapping to `proxy::Cause` |
//! | [`driver`] | [`call_with_retries`]: all of the above around one outbound request |
//!
//! # Wiring into the outbound HTTP path
//!
//! As wired in `outbound/forward.rs` (with [`wiring`] for the glue); in general:
//!
//! Once per cluster (rebuilt when its endpoint list changes, since outlier and health state
//! are indexed by endpoint position):
//!
//! ```ignore
//! let res = Arc::new(ClusterResilience::new(&cluster_cfg, endpoints.len())?);
//! // Optional active checks; keep the checker alive as long as the cluster.
//! let checker = HealthChecker::spawn(hc_cfg, addrs.clone(), Arc::new(StandardProbe(hc_cfg.kind.clone())));
//! let res = res.with_health(checker.status().clone());
//! ```
//!
//! Per request, after routing (rate limit first, then the driver):
//!
//! ```ignore
//! if let Err(wait) = route_limiter.check(peer_identity) {
//!     return error_response(Cause::RateLimited, Some(wait));
//! }
//! let policy = CallPolicy { retry: route.retry.as_ref(), request_timeout, ..Default::default() };
//! let result = call_with_retries(&res, &policy, req,
//!     |avoid| balancer.pick(avoid, |i| res.is_available(i)),   // skip ejected/unhealthy
//!     |ep, req| {
//!         let fut = client.request(with_endpoint(req, &endpoints[ep]));
//!         async move { fut.await.map_err(|e| classify_client_error(&e)) }
//!     }).await;
//! match result {
//!     // The body keeps the concurrent-request permit while it streams.
//!     Ok(resp) => resp.map(|b| TimeoutBody::new(b, idle, deadline)),  // idle + request deadline
//!     Err(e) => error_response(e.cause, None),   // 5xx with x-mesh-error; count e.cause
//! }
//! ```
//!
//! Connections: the connector takes a [`Resource::Connection`] permit per upstream connection
//! (held by the connection task) and a [`Resource::Pending`] one while a request waits for a
//! pooled connection; the driver itself takes the request and retry permits. On the inbound
//! listener, [`ConnectionLimiter::try_accept`] runs before anything else is read.
//!
//! The balancer should also feed its EWMA with failures (a fast failure must not look like a
//! fast endpoint); the driver reports every attempt's outcome to the outlier detector itself.

pub mod budget;
pub mod circuit;
pub mod classify;
pub mod driver;
pub mod errors;
pub mod health;
pub mod outlier;
pub mod proto;
pub mod ratelimit;
pub mod replay;
pub mod retry;
pub mod timeouts;
pub mod wiring;

pub use budget::{BudgetConfig, RetryBudget};
pub use circuit::{CircuitBreaker, CircuitLimits, Permit, Resource};
pub use classify::classify_client_error;
pub use driver::{
    CallError, CallInfo, CallPolicy, ClusterConfig, ClusterResilience, Failed, GuardedBody,
    RoundRobin, call_reclaiming, call_with_retries, error_response,
};
pub use errors::{Cause, CauseCounters, TimeoutKind, X_MESH_ERROR};
pub use health::{CheckKind, HealthCheckConfig, HealthChecker, HealthStatus, StandardProbe};
pub use outlier::{OutlierConfig, OutlierDetector};
pub use ratelimit::{
    ConnPermit, ConnectionLimiter, RateLimitConfig, RateLimiter, RetryAfter, TokenBucket,
};
pub use replay::{DEFAULT_REPLAY_LIMIT, ReplayBody};
pub use retry::{Decision, Outcome, RetryOn, RetryPolicy, Stop, should_retry};
pub use timeouts::{TimeoutBody, Timeouts};
