//! The proxy error taxonomy: every failure the proxy answers itself, its `x-mesh-error` value, its HTTP status and its retry safety.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Header carried by every response the proxy generates itself.
pub const X_MESH_ERROR: &str = "x-mesh-error";

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// The whole exchange (all attempts, backoffs included).
    Request,
    /// One attempt.
    PerTry,
    /// No bytes moved on a connection or stream for too long.
    Idle,
    /// TCP (and TLS) connection establishment.
    Connect,
}

/// Why the proxy answered (or gave up on) a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// No route matched, or the destination service does not exist.
    NoRoute,
    /// The destination exists but has no endpoints.
    NoEndpoints,
    /// Every endpoint is ejected or unhealthy.
    AllEjected,
    /// The endpoint refused the TCP connection (RST to SYN).
    ConnectRefused,
    /// Connecting failed for another reason (unreachable, TLS handshake, ...).
    ConnectFailed,
    /// A timeout fired; [`TimeoutKind::Connect`] is the `connect-timeout` cause.
    Timeout(TimeoutKind),
    /// A circuit breaker limit was full.
    CircuitOpen,
    /// A local rate limit refused the request.
    RateLimited,
    /// Authorization policy denied the source.
    AuthzDenied,
    /// The upstream reset the connection or stream after the request was (maybe) delivered.
    UpstreamReset,
    /// The upstream refused the stream before processing it (HTTP/2 `REFUSED_STREAM`, or
    /// GOAWAY for a stream above its last-stream-id).
    RefusedStream,
    /// A retry was wanted but the retry budget was empty (recorded; the original failure is
    /// what the client sees).
    BudgetExhausted,
    /// The downstream request was malformed.
    BadRequest,
    /// Protocol detection on an inbound connection saw no bytes in time.
    DetectTimeout,
    /// The listener's connection limit was full; the connection was refused.
    ConnectionLimit,
    /// The upstream spoke broken HTTP or failed in another way.
    UpstreamError,
}

/// A counter per [`Cause`], lock-free, for the `by cause` metric.
#[derive(Debug, Default)]
pub struct CauseCounters {
    counts: [AtomicU64; Cause::COUNT],
}

// === impl Cause ===

impl Cause {
    /// The connect timeout, spelled as the contract's `connect-timeout` cause.
    pub const CONNECT_TIMEOUT: Cause = Cause::Timeout(TimeoutKind::Connect);

    /// Number of distinct causes (for counter arrays).
    pub const COUNT: usize = 19;

    /// Every cause, in [`Cause::index`] order.
    pub const ALL: [Cause; Cause::COUNT] = [
        Cause::NoRoute,
        Cause::NoEndpoints,
        Cause::AllEjected,
        Cause::ConnectRefused,
        Cause::ConnectFailed,
        Cause::Timeout(TimeoutKind::Request),
        Cause::Timeout(TimeoutKind::PerTry),
        Cause::Timeout(TimeoutKind::Idle),
        Cause::Timeout(TimeoutKind::Connect),
        Cause::CircuitOpen,
        Cause::RateLimited,
        Cause::AuthzDenied,
        Cause::UpstreamReset,
        Cause::RefusedStream,
        Cause::BudgetExhausted,
        Cause::BadRequest,
        Cause::DetectTimeout,
        Cause::ConnectionLimit,
        Cause::UpstreamError,
    ];

    /// The `x-mesh-error` header value (also the log field, span attribute and metric label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::NoRoute => "no-route",
            Cause::NoEndpoints => "no-endpoints",
            Cause::AllEjected => "all-ejected",
            Cause::ConnectRefused => "connect-refused",
            Cause::ConnectFailed => "connect-failed",
            Cause::Timeout(TimeoutKind::Request) => "timeout:request",
            Cause::Timeout(TimeoutKind::PerTry) => "timeout:per-try",
            Cause::Timeout(TimeoutKind::Idle) => "timeout:idle",
            // The contract names it `connect-timeout` rather than `timeout:connect`.
            Cause::Timeout(TimeoutKind::Connect) => "connect-timeout",
            Cause::CircuitOpen => "circuit-open",
            Cause::RateLimited => "rate-limited",
            Cause::AuthzDenied => "authz-denied",
            Cause::UpstreamReset => "upstream-reset",
            Cause::RefusedStream => "refused-stream",
            Cause::BudgetExhausted => "budget-exhausted",
            Cause::BadRequest => "bad-request",
            Cause::DetectTimeout => "detect-timeout",
            Cause::ConnectionLimit => "connection-limit",
            Cause::UpstreamError => "upstream-error",
        }
    }

    /// Parses an `x-mesh-error` value back (tests, tooling).
    pub fn from_str_value(s: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Dense index in `0..COUNT`, for counter arrays.
    pub const fn index(self) -> usize {
        match self {
            Cause::NoRoute => 0,
            Cause::NoEndpoints => 1,
            Cause::AllEjected => 2,
            Cause::ConnectRefused => 3,
            Cause::ConnectFailed => 4,
            Cause::Timeout(TimeoutKind::Request) => 5,
            Cause::Timeout(TimeoutKind::PerTry) => 6,
            Cause::Timeout(TimeoutKind::Idle) => 7,
            Cause::Timeout(TimeoutKind::Connect) => 8,
            Cause::CircuitOpen => 9,
            Cause::RateLimited => 10,
            Cause::AuthzDenied => 11,
            Cause::UpstreamReset => 12,
            Cause::RefusedStream => 13,
            Cause::BudgetExhausted => 14,
            Cause::BadRequest => 15,
            Cause::DetectTimeout => 16,
            Cause::ConnectionLimit => 17,
            Cause::UpstreamError => 18,
        }
    }

    /// The HTTP status of the response the proxy generates for this cause.
    ///
    /// `no-route` is 503, not 404: a missing destination is usually discovery lag or a rollout
    /// in progress, and a 404 would be cached by clients and intermediaries as permanent.
    pub const fn status(self) -> u16 {
        match self {
            Cause::NoRoute
            | Cause::NoEndpoints
            | Cause::AllEjected
            | Cause::ConnectRefused
            | Cause::ConnectFailed
            | Cause::CircuitOpen
            | Cause::UpstreamReset
            | Cause::RefusedStream
            | Cause::BudgetExhausted
            | Cause::ConnectionLimit => 503,
            Cause::Timeout(_) => 504,
            Cause::RateLimited => 429,
            Cause::AuthzDenied => 403,
            Cause::BadRequest | Cause::DetectTimeout => 400,
            Cause::UpstreamError => 502,
        }
    }

    /// True when the request provably never reached the application, so sending it again
    /// cannot duplicate a side effect: the connection was never established, or the peer
    /// refused the stream unprocessed. These are retried even without a retry policy.
    pub const fn is_retry_safe(self) -> bool {
        matches!(
            self,
            Cause::ConnectRefused
                | Cause::ConnectFailed
                | Cause::Timeout(TimeoutKind::Connect)
                | Cause::RefusedStream
        )
    }

    /// True for failures that say the endpoint itself is broken (the "gateway failure" class
    /// of outlier detection), as opposed to a slow or erroring application.
    pub const fn is_gateway_failure(self) -> bool {
        matches!(
            self,
            Cause::ConnectRefused
                | Cause::ConnectFailed
                | Cause::Timeout(TimeoutKind::Connect)
                | Cause::UpstreamReset
                | Cause::RefusedStream
                | Cause::UpstreamError
        )
    }

    /// True when the failure happened at the upstream (as opposed to local policy such as
    /// rate limits or no route); only these count against an endpoint.
    pub const fn is_upstream(self) -> bool {
        self.is_gateway_failure() || matches!(self, Cause::Timeout(TimeoutKind::PerTry))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Cause {}

// === impl CauseCounters ===

impl CauseCounters {
    /// Counts one occurrence.
    pub fn incr(&self, cause: Cause) {
        self.counts[cause.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The current count of one cause.
    pub fn get(&self, cause: Cause) -> u64 {
        self.counts[cause.index()].load(Ordering::Relaxed)
    }

    /// Every cause with its count (for the metrics exporter).
    pub fn snapshot(&self) -> impl Iterator<Item = (Cause, u64)> + '_ {
        Cause::ALL.into_iter().map(|c| (c, self.get(c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_all_order_and_is_dense() {
        for (i, c) in Cause::ALL.into_iter().enumerate() {
            assert_eq!(c.index(), i, "{c}");
        }
    }

    #[test]
    fn strings_are_unique_and_round_trip() {
        for c in Cause::ALL {
            assert_eq!(Cause::from_str_value(c.as_str()), Some(c));
        }
        assert_eq!(Cause::from_str_value("nope"), None);
    }

    #[test]
    fn contract_values() {
        assert_eq!(
            Cause::Timeout(TimeoutKind::Request).as_str(),
            "timeout:request"
        );
        assert_eq!(Cause::CONNECT_TIMEOUT.as_str(), "connect-timeout");
        assert_eq!(Cause::CircuitOpen.as_str(), "circuit-open");
        assert_eq!(Cause::AllEjected.as_str(), "all-ejected");
    }

    #[test]
    fn statuses() {
        assert_eq!(Cause::Timeout(TimeoutKind::PerTry).status(), 504);
        assert_eq!(Cause::RateLimited.status(), 429);
        assert_eq!(Cause::AuthzDenied.status(), 403);
        assert_eq!(Cause::BadRequest.status(), 400);
        assert_eq!(Cause::UpstreamError.status(), 502);
        assert_eq!(Cause::CircuitOpen.status(), 503);
    }

    #[test]
    fn only_never_reached_app_is_retry_safe() {
        let safe: Vec<_> = Cause::ALL
            .into_iter()
            .filter(|c| c.is_retry_safe())
            .collect();
        assert_eq!(
            safe,
            [
                Cause::ConnectRefused,
                Cause::ConnectFailed,
                Cause::CONNECT_TIMEOUT,
                Cause::RefusedStream
            ]
        );
        // A reset after sending may have reached the app: never retried by default.
        assert!(!Cause::UpstreamReset.is_retry_safe());
        assert!(!Cause::Timeout(TimeoutKind::PerTry).is_retry_safe());
    }

    #[test]
    fn counters_count() {
        let c = CauseCounters::default();
        c.incr(Cause::RateLimited);
        c.incr(Cause::RateLimited);
        assert_eq!(c.get(Cause::RateLimited), 2);
        assert_eq!(c.snapshot().map(|(_, n)| n).sum::<u64>(), 2);
    }
}
