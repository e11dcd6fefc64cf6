//! Cluster domain types: how a service's endpoints are balanced, protected and reached.

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderName;

use super::{Name, TlsMode};

/// Per-service upstream settings. Every knob is plain data; the balancer and proxy read it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub name: Name,
    pub namespace: Option<Name>,
    pub lb: LbPolicy,
    pub hash_on: Option<HashOn>,
    pub outlier: Option<OutlierDetection>,
    pub circuit_breakers: CircuitBreakers,
    pub health_check: Option<HealthCheck>,
    /// Bound on dialling one endpoint; `None` = the outbound listener's own
    /// (`OutboundConfig::connect_timeout`).
    pub connect_timeout: Option<Duration>,
    /// Pooled upstream connections dialled for this service close after this long unused.
    pub idle_timeout: Duration,
    pub tls_mode: TlsMode,
    pub protocol: Protocol,
    pub retry_budget: Option<RetryBudget>,
    pub request_timeout: Option<Duration>,
    pub vip: Option<IpAddr>,
    pub ports: Vec<u16>,
    /// SPIFFE IDs the control plane binds to the service (secure naming): a proxy with an
    /// identity dials only endpoints that claim one of these, and verifies the peer presents
    /// it. Empty = no binding known (a static config): the endpoint's own identity is used.
    pub identities: Vec<Name>,
}

impl Cluster {
    /// Connect timeout when neither the cluster nor the outbound config sets one: 1 s is far
    /// above a loopback or LAN handshake yet short enough that a request can still be retried
    /// on another endpoint.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Idle pooled connections are closed after 90 s, matching common server keep-alive
    /// limits so the proxy rarely reuses a connection the server is about to close.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

    /// A cluster with every default, for services that have endpoints but no Cluster resource.
    pub fn with_defaults(name: Name) -> Self {
        Self {
            name,
            namespace: None,
            lb: LbPolicy::default(),
            hash_on: None,
            // Outlier detection is on by default (the proto's defaults).
            outlier: super::convert::cluster::outlier(&Default::default()),
            circuit_breakers: CircuitBreakers::default(),
            health_check: None,
            connect_timeout: None,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            tls_mode: TlsMode::default(),
            protocol: Protocol::Detect,
            retry_budget: None,
            request_timeout: None,
            vip: None,
            ports: Vec::new(),
            identities: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// Power of two choices over PeakEWMA latency, penalising recent 5xx/429.
    #[default]
    P2cEwma,
    RoundRobin,
    WeightedRoundRobin,
    RingHash,
    Maglev,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(Name),
    SourceIp,
}

/// What a consistent-hash balancer hashes on.
#[derive(Debug, Clone)]
pub struct HashOn {
    pub key: HashKey,
    /// With a cookie key: set the cookie on the response when the request had none.
    pub generate_cookie: bool,
    /// Cookie lifetime; `None` = session cookie.
    pub cookie_ttl: Option<Duration>,
}

/// Ejection on consecutive failures (`crate::balance::Outlier`); the proto's failure-rate
/// fields and interval are refused when converted, since nothing here keeps rates.
#[derive(Debug, Clone)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

/// Limits; `None` = the proxy default. The proto's `max_connections` is refused when
/// converted: a peer's requests share one multiplexed HTTP/2 connection.
#[derive(Debug, Clone, Default)]
pub struct CircuitBreakers {
    /// Attempts waiting for a new upstream connection (its connect) at once.
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// `None` = TCP connect check.
    pub http_path: Option<Name>,
    pub expected_status: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_retries_per_second: u32,
    pub window: Duration,
}

/// The protocol a service's app speaks. `Detect` sniffs each connection and speaks the
/// client's HTTP version upstream; `Http1`, `Http2` and `Grpc` fix the version the app gets
/// (HTTP/2 with prior knowledge for the last two); `Tcp` proxies every connection to the
/// service's VIP as opaque bytes, unsniffed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Detect,
    Http1,
    Http2,
    Grpc,
    Tcp,
}
