//! Proxy-generated errors: a cause per failure, its HTTP status and the `x-mesh-error` response.

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
    #[error("all-ejected")]
    AllEjected,
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

const ALL: [Cause; 19] = [
    Cause::NoRoute,
    Cause::NoEndpoints,
    Cause::AllEjected,
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
            Self::AllEjected => "all-ejected",
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
            | Self::AllEjected
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
