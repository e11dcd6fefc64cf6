//! The edge between protos and resilience config: `TryFrom<&proto>` for every policy, where 0 means "proxy default" and bad values are errors (NACK), never panics.

use std::time::Duration;

use mesh_proto::types::v1 as pb;

use super::budget::{BudgetConfig, BudgetError};
use super::circuit::{CircuitLimits, DEFAULT_MAX, DEFAULT_MAX_RETRIES};
use super::driver::ClusterConfig;
use super::health::{self, CheckKind, HealthCheckConfig};
use super::outlier::{self, OutlierConfig};
use super::ratelimit::{RateLimitConfig, RateLimitError};
use super::retry::{self, PolicyError, RetryOn, RetryPolicy};
use super::timeouts::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, Timeouts};

/// A resilience setting the proxy cannot apply.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error(transparent)]
    Retry(#[from] PolicyError),
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
    #[error("{field} is {value}, but must be a percentage (0..=100)")]
    Percent { field: &'static str, value: u32 },
    #[error("health check path {0:?} must start with '/'")]
    HealthPath(String),
    #[error("health check expected_status {0} is not an HTTP status (100..=599)")]
    HealthStatus(u32),
}

fn ms_or(ms: u64, default: Duration) -> Duration {
    if ms == 0 {
        default
    } else {
        Duration::from_millis(ms)
    }
}

fn or(v: u32, default: u32) -> u32 {
    if v == 0 { default } else { v }
}

fn percent(field: &'static str, value: u32) -> Result<u32, ConfigError> {
    if value > 100 {
        return Err(ConfigError::Percent { field, value });
    }
    Ok(value)
}

impl TryFrom<&pb::RetryPolicy> for RetryPolicy {
    type Error = ConfigError;

    fn try_from(p: &pb::RetryPolicy) -> Result<Self, ConfigError> {
        let backoff_base = ms_or(p.backoff_base_ms, retry::DEFAULT_BACKOFF_BASE);
        // Unset max follows the base (10×, as the defaults do) so a large base stays valid.
        let backoff_max = ms_or(
            p.backoff_max_ms,
            retry::DEFAULT_BACKOFF_MAX.max(backoff_base.saturating_mul(10)),
        );
        let policy = RetryPolicy {
            attempts: p.attempts.max(1),
            retry_on: RetryOn::parse(&p.retry_on)?,
            per_try_timeout: (p.per_try_timeout_ms != 0)
                .then(|| Duration::from_millis(p.per_try_timeout_ms)),
            allow_non_idempotent: p.allow_non_idempotent,
            backoff_base,
            backoff_max,
        };
        policy.validate()?;
        Ok(policy)
    }
}

impl TryFrom<&pb::OutlierDetection> for OutlierConfig {
    type Error = ConfigError;

    fn try_from(o: &pb::OutlierDetection) -> Result<Self, ConfigError> {
        let base_ejection = ms_or(o.base_ejection_ms, outlier::DEFAULT_BASE_EJECTION);
        Ok(OutlierConfig {
            enabled: !o.disabled,
            consecutive_5xx: or(o.consecutive_5xx, outlier::DEFAULT_CONSECUTIVE_5XX),
            consecutive_gateway: or(
                o.consecutive_gateway_failures,
                outlier::DEFAULT_CONSECUTIVE_GATEWAY,
            ),
            // The proto documents 0 as "off" for this one field; an absent OutlierDetection
            // message still gets the default (on).
            failure_percentage: percent("failure_percentage", o.failure_percentage)?,
            failure_percentage_min_requests: or(
                o.failure_percentage_min_requests,
                outlier::DEFAULT_FAILURE_PERCENTAGE_MIN_REQUESTS,
            ),
            interval: ms_or(o.interval_ms, outlier::DEFAULT_INTERVAL),
            base_ejection,
            max_ejection: outlier::DEFAULT_MAX_EJECTION.max(base_ejection),
            max_ejection_percent: or(
                percent("max_ejection_percent", o.max_ejection_percent)?,
                outlier::DEFAULT_MAX_EJECTION_PERCENT,
            ),
        })
    }
}

impl From<&pb::CircuitBreakers> for CircuitLimits {
    fn from(c: &pb::CircuitBreakers) -> Self {
        CircuitLimits {
            max_connections: or(c.max_connections, DEFAULT_MAX),
            max_pending: or(c.max_pending_requests, DEFAULT_MAX),
            max_requests: or(c.max_requests, DEFAULT_MAX),
            max_retries: or(c.max_retries, DEFAULT_MAX_RETRIES),
        }
    }
}

impl TryFrom<&pb::RetryBudget> for BudgetConfig {
    type Error = ConfigError;

    fn try_from(b: &pb::RetryBudget) -> Result<Self, ConfigError> {
        let d = BudgetConfig::default();
        let cfg = BudgetConfig {
            ratio: if b.ratio == 0.0 { d.ratio } else { b.ratio },
            min_per_second: or(b.min_retries_per_second, d.min_per_second),
            window: ms_or(b.window_ms, d.window),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl TryFrom<&pb::HealthCheck> for HealthCheckConfig {
    type Error = ConfigError;

    fn try_from(h: &pb::HealthCheck) -> Result<Self, ConfigError> {
        let kind = if h.http_path.is_empty() {
            CheckKind::Tcp
        } else {
            if !h.http_path.starts_with('/') {
                return Err(ConfigError::HealthPath(h.http_path.clone()));
            }
            let status = or(h.expected_status, 200);
            if !(100..=599).contains(&status) {
                return Err(ConfigError::HealthStatus(status));
            }
            CheckKind::Http {
                path: h.http_path.clone(),
                expected_status: status as u16,
            }
        };
        Ok(HealthCheckConfig {
            kind,
            interval: ms_or(h.interval_ms, health::DEFAULT_INTERVAL),
            timeout: ms_or(h.timeout_ms, health::DEFAULT_TIMEOUT),
            healthy_threshold: or(h.healthy_threshold, health::DEFAULT_HEALTHY_THRESHOLD),
            unhealthy_threshold: or(h.unhealthy_threshold, health::DEFAULT_UNHEALTHY_THRESHOLD),
        })
    }
}

impl TryFrom<&pb::RateLimit> for RateLimitConfig {
    type Error = ConfigError;

    fn try_from(r: &pb::RateLimit) -> Result<Self, ConfigError> {
        if r.requests_per_second == 0 {
            return Err(RateLimitError::ZeroRate.into());
        }
        Ok(RateLimitConfig {
            requests_per_second: r.requests_per_second,
            burst: r.burst,
            per_source: r.per_source,
        })
    }
}

impl TryFrom<&pb::Cluster> for ClusterConfig {
    type Error = ConfigError;

    /// Missing sub-messages mean the defaults (outlier detection on, budget on).
    fn try_from(c: &pb::Cluster) -> Result<Self, ConfigError> {
        Ok(ClusterConfig {
            outlier: c
                .outlier_detection
                .as_ref()
                .map_or(Ok(OutlierConfig::default()), OutlierConfig::try_from)?,
            circuit: c
                .circuit_breakers
                .as_ref()
                .map_or_else(CircuitLimits::default, CircuitLimits::from),
            budget: c
                .retry_budget
                .as_ref()
                .map_or(Ok(BudgetConfig::default()), BudgetConfig::try_from)?,
        })
    }
}

/// The cluster's timeouts: connect, idle and the default request timeout (a route's
/// `timeout_ms` overrides `request`; a retry policy's per-try timeout fills `per_try`).
pub fn cluster_timeouts(c: &pb::Cluster) -> Timeouts {
    Timeouts {
        connect: ms_or(c.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT),
        request: (c.request_timeout_ms != 0).then(|| Duration::from_millis(c.request_timeout_ms)),
        per_try: None,
        idle: Some(ms_or(c.idle_timeout_ms, DEFAULT_IDLE_TIMEOUT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroes_mean_defaults() {
        let cfg = ClusterConfig::try_from(&pb::Cluster::default()).unwrap();
        assert_eq!(cfg, ClusterConfig::default());
        let o = OutlierConfig::try_from(&pb::OutlierDetection::default()).unwrap();
        assert_eq!(
            o,
            OutlierConfig {
                failure_percentage: 0,
                ..OutlierConfig::default()
            }
        );
        assert_eq!(
            CircuitLimits::from(&pb::CircuitBreakers::default()),
            CircuitLimits::default()
        );
        let t = cluster_timeouts(&pb::Cluster::default());
        assert_eq!(t, Timeouts::default());
        let h = HealthCheckConfig::try_from(&pb::HealthCheck::default()).unwrap();
        assert_eq!(h, HealthCheckConfig::new(CheckKind::Tcp));
    }

    #[test]
    fn retry_policy_converts() {
        let p = RetryPolicy::try_from(&pb::RetryPolicy {
            attempts: 3,
            retry_on: vec!["5xx".into(), "grpc:unavailable".into()],
            per_try_timeout_ms: 500,
            allow_non_idempotent: false,
            backoff_base_ms: 100,
            backoff_max_ms: 0,
        })
        .unwrap();
        assert_eq!(p.attempts, 3);
        assert!(p.retry_on.server_error);
        assert_eq!(p.retry_on.grpc_codes, [14]);
        assert_eq!(p.per_try_timeout, Some(Duration::from_millis(500)));
        assert_eq!(p.backoff_max, Duration::from_secs(1));
    }

    #[test]
    fn bad_values_are_errors() {
        let bad_on = pb::RetryPolicy {
            retry_on: vec!["sometimes".into()],
            ..Default::default()
        };
        assert!(matches!(
            RetryPolicy::try_from(&bad_on),
            Err(ConfigError::Retry(_))
        ));
        let backwards = pb::RetryPolicy {
            backoff_base_ms: 100,
            backoff_max_ms: 10,
            ..Default::default()
        };
        assert!(RetryPolicy::try_from(&backwards).is_err());
        let pct = pb::OutlierDetection {
            max_ejection_percent: 150,
            ..Default::default()
        };
        assert!(matches!(
            OutlierConfig::try_from(&pct),
            Err(ConfigError::Percent { .. })
        ));
        let ratio = pb::RetryBudget {
            ratio: 2.0,
            ..Default::default()
        };
        assert!(BudgetConfig::try_from(&ratio).is_err());
        let path = pb::HealthCheck {
            http_path: "healthz".into(),
            ..Default::default()
        };
        assert_eq!(
            HealthCheckConfig::try_from(&path),
            Err(ConfigError::HealthPath("healthz".into()))
        );
        let status = pb::HealthCheck {
            http_path: "/healthz".into(),
            expected_status: 1000,
            ..Default::default()
        };
        assert!(HealthCheckConfig::try_from(&status).is_err());
        assert!(RateLimitConfig::try_from(&pb::RateLimit::default()).is_err());
        let disabled = pb::OutlierDetection {
            disabled: true,
            ..Default::default()
        };
        assert!(!OutlierConfig::try_from(&disabled).unwrap().enabled);
    }
}
