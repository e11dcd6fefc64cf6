//! Cluster policy domain types: how a client proxy balances, protects and connects to a service.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    /// Meshed traffic must be mTLS (the default).
    #[default]
    Strict,
    Permissive,
    Disabled,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum LbPolicy {
    #[default]
    P2cEwma,
    RoundRobin,
    WeightedRoundRobin,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// Detect per connection.
    #[default]
    Detect,
    Http1,
    Http2,
    Grpc,
    Tcp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashKey {
    Header(String),
    Cookie(String),
    SourceIp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashOn {
    pub key: HashKey,
    pub generate_cookie: bool,
    pub cookie_ttl: Option<Duration>,
}

/// Zero fields mean "proxy default", exactly as on the wire. The proto's failure-percentage
/// fields and `interval_ms` have no counterpart: the proxy ejects on consecutive failures
/// only, so validation refuses them (records stored before are read without them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutlierDetection {
    pub disabled: bool,
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failures: u32,
    pub base_ejection: Option<Duration>,
    pub max_ejection_percent: u32,
}

/// Zero fields mean "proxy default". The proto's `max_connections` has no counterpart: the
/// proxy multiplexes a peer's requests over one HTTP/2 connection, so validation refuses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitBreakers {
    /// Requests waiting for a new upstream connection at once.
    pub max_pending_requests: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `None` = TCP connect check.
    pub http_path: Option<String>,
    pub expected_status: Option<u16>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryBudget {
    /// 0..=1; kept as per-mille internally so the policy stays `Eq` and hashes stably.
    pub ratio_permille: u32,
    pub min_retries_per_second: u32,
    pub window: Option<Duration>,
}

impl Eq for RetryBudget {}

/// The stored, operator-set part of a service's cluster. VIP, ports and namespace are not
/// policy: the registry adds them when the Cluster resource is built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterPolicy {
    pub service: String,
    pub lb_policy: LbPolicy,
    pub hash_on: Option<HashOn>,
    pub outlier_detection: Option<OutlierDetection>,
    pub circuit_breakers: Option<CircuitBreakers>,
    pub health_check: Option<HealthCheck>,
    pub connect_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    pub tls_mode: TlsMode,
    pub protocol: Protocol,
    pub retry_budget: Option<RetryBudget>,
    pub request_timeout: Option<Duration>,
}

// === impl ClusterPolicy ===

impl ClusterPolicy {
    /// The policy a service gets when the operator stored none: every field at the proxy default.
    pub fn default_for(service: &str) -> Self {
        Self {
            service: service.to_string(),
            ..Self::default()
        }
    }
}
