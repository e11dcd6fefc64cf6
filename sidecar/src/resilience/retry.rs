//! Retry policy and the decision whether to retry an attempt: safe by default, status retries opt-in.

use std::time::Duration;

use http::{HeaderMap, Method};
use rand::Rng;

use crate::proxy::Cause;

/// Attempts (first included) for failures that never reached the app when no policy says
/// otherwise: the first try plus two retries lets a request route around two dead endpoints
/// (the retry avoids the endpoint that just failed) before giving up.
pub const DEFAULT_SAFE_ATTEMPTS: u32 = 3;

/// Envoy's default base interval: short enough to be invisible next to a connect failure,
/// long enough to spread a burst of retries over a few milliseconds.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// Ten times the base, as Envoy does: after three doublings the delay stops growing, so a
/// request with default attempts never waits more than a quarter second between tries.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// The longest `Retry-After` the proxy waits out itself. A longer requested pause is the
/// client's decision: the response (with its `Retry-After`) goes back unretried.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(1);

/// The set of conditions a route opts into (from `state::RetryOn`, see `wiring`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Any 5xx status, and upstream failures (the proxy answers them with a 5xx too).
    pub server_error: bool,
    /// 502, 503, 504, and upstream failures (answered 502, 503 or 504).
    pub gateway_error: bool,
    /// The upstream reset the stream or connection after the request was sent.
    pub reset: bool,
    /// Connect failures; always retried anyway (never reached the app), kept for completeness.
    pub connect_failure: bool,
    /// 409 Conflict: the canonical "try again" 4xx.
    pub retriable_4xx: bool,
    /// Specific statuses; an upstream failure matches by the status the proxy answers it
    /// with ([`Cause::status`]), the one the client would see.
    pub statuses: Vec<u16>,
    /// gRPC status codes (from a trailers-only response's `grpc-status` header).
    pub grpc_codes: Vec<u16>,
}

/// A route's retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first, for the opted-in conditions.
    pub attempts: u32,
    pub retry_on: RetryOn,
    /// Timeout of one attempt; `None` = only the request timeout applies.
    pub per_try_timeout: Option<Duration>,
    /// Also retry non-idempotent methods (POST, PATCH) on status conditions.
    pub allow_non_idempotent: bool,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// What one attempt produced, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with a status.
    Response {
        status: u16,
        /// `grpc-status` of a trailers-only gRPC response.
        grpc: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// The attempt failed without a response.
    Failed(Cause),
}

/// Whether to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Retry after this pause.
    Retry { backoff: Duration },
    /// Return this attempt's result to the client.
    Done(Stop),
}

/// Why the attempt's result is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Success, or a failure no condition matches.
    NotRetryable,
    AttemptsExhausted,
    /// A status condition matched, but the method is not idempotent and the route did not allow it.
    NonIdempotent,
    /// The request body overflowed the replay buffer.
    NotReplayable,
    /// The upstream asked for a longer pause than [`RETRY_AFTER_CAP`].
    RetryAfterTooLong,
}

// === impl RetryOn ===

impl RetryOn {
    /// True when the outcome matches one of the opted-in conditions.
    pub fn matches(&self, outcome: &Outcome) -> bool {
        match *outcome {
            Outcome::Response { status, grpc, .. } => {
                (self.server_error && status >= 500)
                    || (self.gateway_error && matches!(status, 502..=504))
                    || (self.retriable_4xx && status == 409)
                    || self.statuses.contains(&status)
                    || grpc.is_some_and(|g| self.grpc_codes.contains(&g))
            }
            Outcome::Failed(cause) => {
                let upstream = cause.is_upstream();
                (self.reset && cause == Cause::UpstreamReset)
                    || (self.connect_failure && cause.is_retry_safe())
                    || (upstream && self.server_error)
                    || (upstream && self.gateway_error)
                    || (upstream && self.statuses.contains(&cause.status().as_u16()))
            }
        }
    }
}

/// gRPC status code by its lower-case, dash-separated name.
pub(crate) fn grpc_code(name: &str) -> Option<u16> {
    const NAMES: [&str; 17] = [
        "ok",
        "cancelled",
        "unknown",
        "invalid-argument",
        "deadline-exceeded",
        "not-found",
        "already-exists",
        "permission-denied",
        "resource-exhausted",
        "failed-precondition",
        "aborted",
        "out-of-range",
        "unimplemented",
        "internal",
        "unavailable",
        "data-loss",
        "unauthenticated",
    ];
    let name = name.to_ascii_lowercase().replace('_', "-");
    NAMES.iter().position(|n| *n == name).map(|i| i as u16)
}

// === impl Outcome ===

impl Outcome {
    /// Reads status, `grpc-status` and `Retry-After` (delta-seconds form; an HTTP-date is
    /// ignored and the normal backoff applies) from a response head.
    ///
    /// A peer sidecar's `503` with `x-mesh-error: app-unavailable` says its app refused the
    /// connection (not listening yet, or gone): the request never reached an application, so
    /// it is that cause — retried on another endpoint for any method, like a connect failure
    /// this proxy saw itself.
    pub fn from_response(status: u16, headers: &HeaderMap) -> Self {
        // Pre-parsed names: a `&str` lookup parses the name on every response.
        const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
        const MESH_ERROR: http::HeaderName =
            http::HeaderName::from_static(crate::proxy::error::MESH_ERROR);
        if status == 503
            && headers
                .get(MESH_ERROR)
                .is_some_and(|v| v.as_bytes() == b"app-unavailable")
        {
            return Outcome::Failed(Cause::AppUnavailable);
        }
        let num = |name: http::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Outcome::Response {
            status,
            grpc: num(GRPC_STATUS).and_then(|g| u16::try_from(g).ok()),
            retry_after: num(http::header::RETRY_AFTER).map(Duration::from_secs),
        }
    }
}

/// Idempotent methods (RFC 9110 §9.2.2): sending them twice has the effect of sending once.
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Decides whether to retry after `attempts_made` attempts ended with `outcome`.
///
/// Without a policy only failures that provably never reached the app are retried (any
/// method). With a policy, its conditions also retry, but only idempotent methods unless the
/// route allows others. A body that overflowed the replay buffer is never retried.
pub fn should_retry(
    policy: Option<&RetryPolicy>,
    method: &Method,
    attempts_made: u32,
    outcome: &Outcome,
    replayable: bool,
) -> Decision {
    let safe = matches!(outcome, Outcome::Failed(c) if c.is_retry_safe());
    let opted_in = policy.is_some_and(|p| p.retry_on.matches(outcome));
    if !safe && !opted_in {
        return Decision::Done(Stop::NotRetryable);
    }
    if !replayable {
        return Decision::Done(Stop::NotReplayable);
    }
    let max_attempts = match policy {
        Some(p) if safe => p.attempts.max(DEFAULT_SAFE_ATTEMPTS),
        Some(p) => p.attempts,
        None => DEFAULT_SAFE_ATTEMPTS,
    };
    if attempts_made >= max_attempts {
        return Decision::Done(Stop::AttemptsExhausted);
    }
    if !safe && !is_idempotent(method) && !policy.is_some_and(|p| p.allow_non_idempotent) {
        return Decision::Done(Stop::NonIdempotent);
    }
    let (base, max) = policy.map_or((DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX), |p| {
        (p.backoff_base, p.backoff_max)
    });
    let jittered = backoff(base, max, attempts_made, rand::rng().random::<f64>());
    match outcome {
        Outcome::Response {
            retry_after: Some(ra),
            ..
        } => {
            if *ra > RETRY_AFTER_CAP {
                Decision::Done(Stop::RetryAfterTooLong)
            } else {
                Decision::Retry {
                    backoff: (*ra).max(jittered),
                }
            }
        }
        _ => Decision::Retry { backoff: jittered },
    }
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base × 2^(retry-1))]`,
/// where `retry` is 1 for the first retry and `unit` is a random number in `[0, 1)`.
/// Full jitter spreads synchronized retries best (AWS architecture blog, "Exponential
/// Backoff And Jitter").
pub fn backoff(base: Duration, max: Duration, retry: u32, unit: f64) -> Duration {
    let exp = retry.saturating_sub(1).min(20);
    let ceiling = base.saturating_mul(1u32 << exp).min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
