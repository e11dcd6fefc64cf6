//! Glue to the sidecar's data path: resilience config from the domain model (`state`), per-cluster state kept across requests, and cause mapping to and from `proxy::Cause`.

use std::sync::Arc;

use dashmap::DashMap;
use http::{HeaderValue, Response};

use super::budget::BudgetConfig;
use super::circuit::{CircuitLimits, DEFAULT_MAX, DEFAULT_MAX_RETRIES};
use super::driver::{ClusterConfig, ClusterResilience};
use super::errors::{Cause, TimeoutKind};
use super::outlier::OutlierConfig;
use super::ratelimit::RetryAfter;
use super::retry::{RetryOn, RetryPolicy, grpc_code};
use crate::balance::LbEndpoint;
use crate::proxy::{Cause as ProxyCause, ProxyBody};
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

/// The 429 for a rate-limited request: `x-mesh-error: rate-limited` and `Retry-After`.
pub fn rate_limited(wait: RetryAfter, detail: &dyn std::fmt::Display) -> Response<ProxyBody> {
    let mut rsp = ProxyCause::RateLimited.respond(detail);
    rsp.headers_mut().insert(
        http::header::RETRY_AFTER,
        HeaderValue::from(wait.header_secs()),
    );
    rsp
}

// === impl ClusterRegistry ===

impl ClusterRegistry {
    /// The state for `cluster`. The balancer already runs outlier detection per endpoint, so
    /// the registry's state has it off; budgets and breakers live here.
    pub fn get(&self, cluster: &state::Cluster) -> Arc<ClusterResilience> {
        let cfg = ClusterConfig {
            outlier: OutlierConfig::disabled(),
            ..ClusterConfig::from(cluster)
        };
        if let Some(entry) = self.clusters.get(&cluster.name)
            && entry.0 == cfg
        {
            return entry.1.clone();
        }
        // Validated when converted from the proto; a bad budget falls back to the default.
        let res = ClusterResilience::new(&cfg, 0).unwrap_or_else(|_| {
            let fallback = ClusterConfig {
                budget: BudgetConfig::default(),
                ..cfg.clone()
            };
            ClusterResilience::new(&fallback, 0).expect("default budget is valid")
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
            outlier: c
                .outlier
                .as_ref()
                .map_or_else(OutlierConfig::default, |o| OutlierConfig {
                    enabled: true,
                    consecutive_5xx: o.consecutive_5xx,
                    consecutive_gateway: o.consecutive_gateway_failures,
                    failure_percentage: o.failure_percentage,
                    failure_percentage_min_requests: o.failure_percentage_min_requests,
                    interval: o.interval,
                    base_ejection: o.base_ejection,
                    max_ejection_percent: o.max_ejection_percent,
                    ..OutlierConfig::default()
                }),
            circuit: CircuitLimits {
                max_connections: cb.max_connections.unwrap_or(DEFAULT_MAX),
                max_pending: cb.max_pending_requests.unwrap_or(DEFAULT_MAX),
                max_requests: cb.max_requests.unwrap_or(DEFAULT_MAX),
                max_retries: cb.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
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

/// The resilience cause of a data-path send failure.
pub fn from_proxy_cause(c: ProxyCause) -> Cause {
    match c {
        ProxyCause::NoRoute => Cause::NoRoute,
        ProxyCause::NoEndpoints => Cause::NoEndpoints,
        ProxyCause::AllEjected => Cause::AllEjected,
        ProxyCause::ConnectRefused => Cause::ConnectRefused,
        ProxyCause::TlsHandshake => Cause::ConnectFailed,
        ProxyCause::ConnectTimeout => Cause::CONNECT_TIMEOUT,
        ProxyCause::RequestTimeout => Cause::Timeout(TimeoutKind::Request),
        ProxyCause::PerTryTimeout => Cause::Timeout(TimeoutKind::PerTry),
        ProxyCause::RefusedStream => Cause::RefusedStream,
        ProxyCause::ConnectionLimit => Cause::ConnectionLimit,
        ProxyCause::UpstreamReset => Cause::UpstreamReset,
        ProxyCause::BadRequest | ProxyCause::HeadersTooLarge => Cause::BadRequest,
        ProxyCause::DetectTimeout => Cause::DetectTimeout,
        ProxyCause::AuthzDenied => Cause::AuthzDenied,
        ProxyCause::RateLimited => Cause::RateLimited,
        ProxyCause::CircuitOpen => Cause::CircuitOpen,
        ProxyCause::FaultAbort | ProxyCause::AppUnavailable => Cause::UpstreamError,
    }
}

/// The data-path cause for the response to the client. Causes the data path has no variant
/// for map to the nearest one (an idle timeout is a request timeout; an upstream protocol
/// error is a reset).
pub fn to_proxy_cause(c: Cause) -> ProxyCause {
    match c {
        Cause::NoRoute => ProxyCause::NoRoute,
        Cause::NoEndpoints => ProxyCause::NoEndpoints,
        Cause::AllEjected => ProxyCause::AllEjected,
        Cause::ConnectRefused | Cause::ConnectFailed => ProxyCause::ConnectRefused,
        Cause::Timeout(TimeoutKind::Connect) => ProxyCause::ConnectTimeout,
        Cause::Timeout(TimeoutKind::PerTry) => ProxyCause::PerTryTimeout,
        Cause::Timeout(_) => ProxyCause::RequestTimeout,
        Cause::CircuitOpen => ProxyCause::CircuitOpen,
        Cause::RateLimited => ProxyCause::RateLimited,
        Cause::AuthzDenied => ProxyCause::AuthzDenied,
        Cause::RefusedStream => ProxyCause::RefusedStream,
        Cause::UpstreamReset | Cause::UpstreamError | Cause::BudgetExhausted => {
            ProxyCause::UpstreamReset
        }
        Cause::ConnectionLimit => ProxyCause::ConnectionLimit,
        Cause::BadRequest => ProxyCause::BadRequest,
        Cause::DetectTimeout => ProxyCause::DetectTimeout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert!(p.validate().is_ok());
    }

    #[test]
    fn causes_round_trip_where_both_sides_have_them() {
        for c in [
            Cause::NoRoute,
            Cause::ConnectRefused,
            Cause::CONNECT_TIMEOUT,
            Cause::Timeout(TimeoutKind::Request),
            Cause::Timeout(TimeoutKind::PerTry),
            Cause::CircuitOpen,
            Cause::UpstreamReset,
            Cause::RefusedStream,
            Cause::RateLimited,
        ] {
            assert_eq!(from_proxy_cause(to_proxy_cause(c)), c);
            assert_eq!(to_proxy_cause(c).as_str(), c.as_str());
        }
    }
}
