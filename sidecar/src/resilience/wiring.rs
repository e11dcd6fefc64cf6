//! Glue to the sidecar's data path: resilience config from the domain model (`state`), per-cluster state kept across requests, the balancer's picks for the driver, and the rate-limited response.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http::{HeaderValue, Response};

use super::budget::BudgetConfig;
use super::circuit::{CircuitLimits, DEFAULT_MAX, DEFAULT_MAX_PENDING, DEFAULT_MAX_RETRIES};
use super::driver::{ClusterConfig, ClusterResilience};
use super::retry::{RetryOn, RetryPolicy, grpc_code};
use crate::balance::LbEndpoint;
use crate::proxy::{Cause, ProxyBody};
use crate::state;
use crate::state::FastHasher;

/// Per-cluster resilience state (budget, circuit breaker) kept across requests and config
/// updates, replaced only when the cluster's resilience settings change.
#[derive(Debug, Default)]
pub struct ClusterRegistry {
    /// Looked up per request by cluster name (from the control plane, never from request
    /// bytes): foldhash, not SipHash.
    clusters: DashMap<state::Name, (ClusterConfig, Arc<ClusterResilience>), FastHasher>,
}

/// The 429 for a rate-limited request: `x-mesh-error: rate-limited` and `Retry-After: wait`
/// in whole seconds, rounded up and at least 1 (the header has no finer unit, and 0 would
/// invite an immediate retry that is refused again).
pub fn rate_limited(wait: Duration, detail: &dyn std::fmt::Display) -> Response<ProxyBody> {
    let mut rsp = Cause::RateLimited.respond(detail);
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    rsp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    rsp
}

// === impl ClusterRegistry ===

impl ClusterRegistry {
    /// The state for `cluster`: its retry budget and circuit breaker (outlier detection and
    /// health flags are per endpoint, in the balancer).
    pub fn get(&self, cluster: &state::Cluster) -> Arc<ClusterResilience> {
        let cfg = ClusterConfig::from(cluster);
        if let Some(entry) = self.clusters.get(&cluster.name)
            && entry.0 == cfg
        {
            return entry.1.clone();
        }
        // Validated when converted from the proto; a bad budget falls back to the default.
        let res = ClusterResilience::new(&cfg).unwrap_or_else(|_| {
            let fallback = ClusterConfig {
                budget: BudgetConfig::default(),
                ..cfg.clone()
            };
            ClusterResilience::new(&fallback).expect("default budget is valid")
        });
        let res = Arc::new(res);
        self.clusters
            .insert(cluster.name.clone(), (cfg, res.clone()));
        res
    }
}

impl From<&state::Cluster> for ClusterConfig {
    fn from(c: &state::Cluster) -> Self {
        let cb = &c.circuit_breakers;
        ClusterConfig {
            circuit: CircuitLimits {
                max_requests: cb.max_requests.unwrap_or(DEFAULT_MAX),
                max_retries: cb.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
                max_pending: cb.max_pending_requests.unwrap_or(DEFAULT_MAX_PENDING),
            },
            budget: c
                .retry_budget
                .as_ref()
                .map_or_else(BudgetConfig::default, |b| BudgetConfig {
                    ratio: b.ratio,
                    min_per_second: b.min_retries_per_second,
                    window: b.window,
                }),
        }
    }
}

impl From<&state::RetryPolicy> for RetryPolicy {
    fn from(p: &state::RetryPolicy) -> Self {
        let mut on = RetryOn::default();
        for c in &p.retry_on {
            match c {
                state::RetryOn::FiveXx => on.server_error = true,
                state::RetryOn::GatewayError => on.gateway_error = true,
                state::RetryOn::Reset => on.reset = true,
                state::RetryOn::ConnectFailure => on.connect_failure = true,
                state::RetryOn::Retriable4xx => on.retriable_4xx = true,
                state::RetryOn::Status(s) => on.statuses.push(*s),
                // Names were validated when the route was converted.
                state::RetryOn::Grpc(name) => on.grpc_codes.extend(grpc_code(name)),
            }
        }
        RetryPolicy {
            attempts: p.attempts.max(1),
            retry_on: on,
            per_try_timeout: p.per_try_timeout,
            allow_non_idempotent: p.allow_non_idempotent,
            backoff_base: p.backoff_base,
            backoff_max: p.backoff_max.max(p.backoff_base),
        }
    }
}

/// The driver's `pick` for a balancer pool: the endpoint already chosen for the first attempt
/// (`first`, taken), else up to three balancer picks looking for one other than `avoid` (the
/// endpoint that just failed); the failed one again when it is the only choice.
pub fn pick_index<'a>(
    members: &[Arc<LbEndpoint>],
    first: Option<Arc<LbEndpoint>>,
    avoid: Option<usize>,
    mut pick: impl FnMut() -> Option<&'a Arc<LbEndpoint>>,
) -> Result<usize, Cause> {
    let index = |e: &Arc<LbEndpoint>| members.iter().position(|m| Arc::ptr_eq(m, e));
    if let Some(e) = first {
        return index(&e).ok_or(Cause::NoEndpoints);
    }
    let mut last = None;
    // Three tries: P2C picks two random endpoints, so missing the failed one three times in a
    // row is unlikely unless it is the only available one.
    for _ in 0..3 {
        let Some(i) = pick().and_then(index) else {
            break;
        };
        if Some(i) != avoid {
            return Ok(i);
        }
        last = Some(i);
    }
    last.ok_or(Cause::NoEndpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_keeps_state_until_the_config_changes() {
        let reg = ClusterRegistry::default();
        let mut c = state::Cluster::with_defaults("svc".into());
        let a = reg.get(&c);
        assert!(Arc::ptr_eq(&a, &reg.get(&c)));
        c.circuit_breakers.max_requests = Some(7);
        let b = reg.get(&c);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.circuit.limits().max_requests, 7);
    }

    #[test]
    fn retry_policy_from_the_domain() {
        let p = RetryPolicy::from(&state::RetryPolicy {
            attempts: 3,
            retry_on: vec![
                state::RetryOn::FiveXx,
                state::RetryOn::Status(409),
                state::RetryOn::Grpc("unavailable".into()),
            ],
            per_try_timeout: Some(Duration::from_millis(200)),
            allow_non_idempotent: false,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        });
        assert!(p.retry_on.server_error);
        assert_eq!(p.retry_on.statuses, [409]);
        assert_eq!(p.retry_on.grpc_codes, [14]);
    }

    #[test]
    fn rate_limited_waits_whole_seconds() {
        let secs = |wait| rate_limited(wait, &"test").headers()[http::header::RETRY_AFTER].clone();
        assert_eq!(secs(Duration::from_millis(1200)), "2");
        assert_eq!(secs(Duration::from_millis(100)), "1");
        assert_eq!(secs(Duration::from_secs(3)), "3");
    }
}
