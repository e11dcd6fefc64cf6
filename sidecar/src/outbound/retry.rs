//! Route retry policy: which requests may be replayed, which outcomes retry, and backoff.

use std::time::Duration;

use http::{Method, Response, StatusCode, request::Parts};
use http_body::Body;
use hyper::body::Incoming;

use crate::proxy::Cause;
use crate::proxy::client::SendError;
use crate::state::{RetryOn, RetryPolicy};

/// A request can be replayed when it has no body (nothing to buffer) and its method is
/// idempotent, unless the policy allows non-idempotent retries.
pub(super) fn replayable(policy: &RetryPolicy, method: &Method, body: &Incoming) -> bool {
    body.is_end_stream() && (policy.allow_non_idempotent || method.is_idempotent())
}

/// A copy of the request head for another attempt (extensions are not carried).
pub(super) fn clone_parts(p: &Parts) -> Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = p.method.clone();
    parts.uri = p.uri.clone();
    parts.version = p.version;
    parts.headers = p.headers.clone();
    parts
}

/// True when the policy retries this outcome.
pub(super) fn should_retry(
    policy: &RetryPolicy,
    result: &Result<Response<Incoming>, SendError>,
) -> bool {
    policy.retry_on.iter().any(|on| match (on, result) {
        (RetryOn::Reset, Err((Cause::UpstreamReset, _))) => true,
        (RetryOn::ConnectFailure, Err((Cause::ConnectRefused | Cause::ConnectTimeout, _))) => true,
        (RetryOn::FiveXx | RetryOn::GatewayError, Err((c, _))) => *c != Cause::RequestTimeout,
        (RetryOn::FiveXx, Ok(r)) => r.status().is_server_error(),
        (RetryOn::GatewayError, Ok(r)) => matches!(r.status().as_u16(), 502..=504),
        (RetryOn::Retriable4xx, Ok(r)) => r.status() == StatusCode::CONFLICT,
        (RetryOn::Status(code), Ok(r)) => r.status().as_u16() == *code,
        (RetryOn::Grpc(name), Ok(r)) => r
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u8>().ok())
            .is_some_and(|code| grpc_code(name) == Some(code)),
        _ => false,
    })
}

/// gRPC status names (as in Envoy's `retry-on`) to codes.
fn grpc_code(name: &str) -> Option<u8> {
    Some(match name {
        "cancelled" => 1,
        "deadline-exceeded" => 4,
        "resource-exhausted" => 8,
        "internal" => 13,
        "unavailable" => 14,
        _ => return None,
    })
}

/// Exponential backoff with full jitter: uniform in `0..=min(max, base·2^(attempt-1))`, so
/// clients that failed together do not retry together.
pub(super) fn backoff(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .backoff_base
        .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16));
    let cap = exp.min(policy.backoff_max);
    cap.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            retry_on: vec![RetryOn::FiveXx],
            per_try_timeout: None,
            allow_non_idempotent: false,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(100),
        };
        for attempt in 1..40 {
            assert!(backoff(&p, attempt) <= Duration::from_millis(100));
        }
        assert!(backoff(&p, 1) <= Duration::from_millis(25));
    }
}
