//! Proxy-generated errors: the one cause taxonomy — a cause per failure, its HTTP status, its retry safety and the `x-mesh-error` response.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use super::body::ProxyBody;

/// Header naming the cause on every response the proxy makes itself.
pub const MESH_ERROR: &str = "x-mesh-error";

/// Why the proxy answered a request itself (or dropped a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Cause {
    #[error("no-route")]
    NoRoute,
    #[error("no-endpoints")]
    NoEndpoints,
    #[error("connect-refused")]
    ConnectRefused,
    #[error("connect-timeout")]
    ConnectTimeout,
    #[error("timeout:request")]
    RequestTimeout,
    #[error("upstream-reset")]
    UpstreamReset,
    #[error("bad-request")]
    BadRequest,
    #[error("headers-too-large")]
    HeadersTooLarge,
    #[error("detect-timeout")]
    DetectTimeout,
    #[error("authz-denied")]
    AuthzDenied,
    #[error("rate-limited")]
    RateLimited,
    #[error("circuit-open")]
    CircuitOpen,
    #[error("fault-abort")]
    FaultAbort,
    #[error("app-unavailable")]
    AppUnavailable,
    #[error("connection-limit")]
    ConnectionLimit,
    #[error("timeout:per-try")]
    PerTryTimeout,
    /// HTTP/2 REFUSED_STREAM or GOAWAY before processing: the request never reached the app.
    #[error("refused-stream")]
    RefusedStream,
    /// The peer sidecar failed mTLS (wrong identity, untrusted chain, no TLS at all).
    #[error("tls-handshake")]
    TlsHandshake,
}

const ALL: [Cause; 18] = [
    Cause::NoRoute,
    Cause::NoEndpoints,
    Cause::ConnectRefused,
    Cause::ConnectTimeout,
    Cause::RequestTimeout,
    Cause::UpstreamReset,
    Cause::BadRequest,
    Cause::HeadersTooLarge,
    Cause::DetectTimeout,
    Cause::AuthzDenied,
    Cause::RateLimited,
    Cause::CircuitOpen,
    Cause::FaultAbort,
    Cause::AppUnavailable,
    Cause::ConnectionLimit,
    Cause::PerTryTimeout,
    Cause::RefusedStream,
    Cause::TlsHandshake,
];

/// Process-wide count per cause, for the metrics exporter (one relaxed add per error).
static COUNTS: [AtomicU64; ALL.len()] = [const { AtomicU64::new(0) }; ALL.len()];

// === impl Cause ===

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "no-route",
            Self::NoEndpoints => "no-endpoints",
            Self::ConnectRefused => "connect-refused",
            Self::ConnectTimeout => "connect-timeout",
            Self::RequestTimeout => "timeout:request",
            Self::UpstreamReset => "upstream-reset",
            Self::BadRequest => "bad-request",
            Self::HeadersTooLarge => "headers-too-large",
            Self::DetectTimeout => "detect-timeout",
            Self::AuthzDenied => "authz-denied",
            Self::RateLimited => "rate-limited",
            Self::CircuitOpen => "circuit-open",
            Self::FaultAbort => "fault-abort",
            Self::AppUnavailable => "app-unavailable",
            Self::ConnectionLimit => "connection-limit",
            Self::PerTryTimeout => "timeout:per-try",
            Self::RefusedStream => "refused-stream",
            Self::TlsHandshake => "tls-handshake",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::AuthzDenied => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::RequestTimeout | Self::ConnectTimeout | Self::PerTryTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Self::NoEndpoints
            | Self::CircuitOpen
            | Self::AppUnavailable
            | Self::ConnectionLimit
            | Self::RefusedStream
            | Self::FaultAbort => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConnectRefused
            | Self::UpstreamReset
            | Self::DetectTimeout
            | Self::TlsHandshake => StatusCode::BAD_GATEWAY,
        }
    }

    /// True when the request provably never reached an application, so sending it again
    /// cannot duplicate a side effect: no connection to the endpoint was established
    /// (refused, timed out, or the peer failed mTLS before a request byte was sent), the peer
    /// refused the stream unprocessed, or a peer sidecar's app refused its connection. These
    /// are retried for any method, even without a retry policy.
    pub const fn is_retry_safe(self) -> bool {
        matches!(
            self,
            Self::ConnectRefused
                | Self::ConnectTimeout
                | Self::TlsHandshake
                | Self::RefusedStream
                | Self::AppUnavailable
        )
    }

    /// True when the failure happened at the upstream rather than in local policy (no route,
    /// rate limit, circuit open): a route's `5xx`, `gateway-error` and status conditions
    /// retry these too. A reset or a per-try timeout may have reached the app.
    pub const fn is_upstream(self) -> bool {
        self.is_retry_safe() || matches!(self, Self::UpstreamReset | Self::PerTryTimeout)
    }

    /// Counts the error and logs it with its cause.
    pub fn record(self, detail: &dyn std::fmt::Display) {
        COUNTS[self as usize].fetch_add(1, Relaxed);
        tracing::info!(cause = self.as_str(), %detail, "proxy error");
    }

    /// The proxy's own response for this cause (counted and logged).
    pub fn respond(self, detail: &dyn std::fmt::Display) -> Response<ProxyBody> {
        self.record(detail);
        let mut rsp = Response::new(ProxyBody::full(Bytes::from_static(
            self.as_str().as_bytes(),
        )));
        *rsp.status_mut() = self.status();
        rsp.headers_mut()
            .insert(MESH_ERROR, HeaderValue::from_static(self.as_str()));
        rsp
    }

    /// The cause whose `as_str` is `name` (reads `x-mesh-error` back as a static label).
    pub fn from_name(name: &str) -> Option<&'static str> {
        ALL.iter().map(|c| c.as_str()).find(|s| *s == name)
    }

    /// Every cause with its count so far.
    pub fn counts() -> impl Iterator<Item = (Cause, u64)> {
        ALL.iter().map(|&c| (c, COUNTS[c as usize].load(Relaxed)))
    }
}

/// Raw HTTP/1.1 error response for connections rejected before hyper sees them.
pub fn raw_http1_response(cause: Cause) -> Vec<u8> {
    let status = cause.status();
    let body = cause.as_str();
    format!(
        "HTTP/1.1 {} {}\r\n{MESH_ERROR}: {body}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_read_back() {
        for c in ALL {
            assert_eq!(Cause::from_name(c.as_str()), Some(c.as_str()));
            assert_eq!(c.to_string(), c.as_str());
            assert_eq!(ALL.iter().filter(|o| o.as_str() == c.as_str()).count(), 1);
        }
        assert_eq!(Cause::from_name("nope"), None);
    }

    #[test]
    fn only_never_reached_app_is_retry_safe() {
        let safe: Vec<_> = ALL.into_iter().filter(|c| c.is_retry_safe()).collect();
        assert_eq!(
            safe,
            [
                Cause::ConnectRefused,
                Cause::ConnectTimeout,
                Cause::AppUnavailable,
                Cause::RefusedStream,
                Cause::TlsHandshake,
            ]
        );
        // A reset or a timed-out try may have reached the app: retried only when opted in.
        for c in [Cause::UpstreamReset, Cause::PerTryTimeout] {
            assert!(!c.is_retry_safe() && c.is_upstream(), "{c}");
        }
        for c in [Cause::RateLimited, Cause::CircuitOpen, Cause::NoRoute] {
            assert!(!c.is_upstream(), "{c}");
        }
    }

    #[test]
    fn a_failed_handshake_answers_502_tls_handshake() {
        let rsp = Cause::TlsHandshake.respond(&"test");
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(rsp.headers()[MESH_ERROR], "tls-handshake");
    }
}
