//! Unit tests for the retry decision.

use super::*;

fn status(s: u16) -> Outcome {
    Outcome::Response {
        status: s,
        grpc: None,
        retry_after: None,
    }
}

fn policy(retry_on: RetryOn, attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        retry_on,
        per_try_timeout: None,
        allow_non_idempotent: false,
        backoff_base: DEFAULT_BACKOFF_BASE,
        backoff_max: DEFAULT_BACKOFF_MAX,
    }
}

fn five_xx() -> RetryOn {
    RetryOn {
        server_error: true,
        ..Default::default()
    }
}

fn statuses(s: &[u16]) -> RetryOn {
    RetryOn {
        statuses: s.to_vec(),
        ..Default::default()
    }
}

#[test]
fn no_policy_retries_only_never_reached_app() {
    for m in [Method::GET, Method::POST] {
        for safe in [
            Cause::ConnectRefused,
            Cause::ConnectTimeout,
            Cause::TlsHandshake,
            Cause::RefusedStream,
        ] {
            assert!(
                matches!(
                    should_retry(None, &m, 1, &Outcome::Failed(safe), true),
                    Decision::Retry { .. }
                ),
                "{safe}"
            );
        }
        assert_eq!(
            should_retry(None, &m, 1, &status(503), true),
            Decision::Done(Stop::NotRetryable)
        );
        assert_eq!(
            should_retry(None, &m, 1, &Outcome::Failed(Cause::UpstreamReset), true),
            Decision::Done(Stop::NotRetryable)
        );
    }
    assert_eq!(
        should_retry(
            None,
            &Method::GET,
            DEFAULT_SAFE_ATTEMPTS,
            &Outcome::Failed(Cause::ConnectRefused),
            true
        ),
        Decision::Done(Stop::AttemptsExhausted)
    );
}

#[test]
fn status_retries_are_opt_in_and_idempotent_only() {
    let p = policy(five_xx(), 3);
    assert!(matches!(
        should_retry(Some(&p), &Method::GET, 1, &status(503), true),
        Decision::Retry { .. }
    ));
    assert_eq!(
        should_retry(Some(&p), &Method::POST, 1, &status(503), true),
        Decision::Done(Stop::NonIdempotent)
    );
    let mut allow = p.clone();
    allow.allow_non_idempotent = true;
    assert!(matches!(
        should_retry(Some(&allow), &Method::POST, 1, &status(503), true),
        Decision::Retry { .. }
    ));
    assert_eq!(
        should_retry(Some(&p), &Method::GET, 3, &status(503), true),
        Decision::Done(Stop::AttemptsExhausted)
    );
    assert_eq!(
        should_retry(Some(&p), &Method::GET, 1, &status(404), true),
        Decision::Done(Stop::NotRetryable)
    );
    assert_eq!(
        should_retry(Some(&p), &Method::GET, 1, &status(200), true),
        Decision::Done(Stop::NotRetryable)
    );
}

#[test]
fn overflowed_body_is_never_retried() {
    assert_eq!(
        should_retry(
            None,
            &Method::GET,
            1,
            &Outcome::Failed(Cause::ConnectRefused),
            false
        ),
        Decision::Done(Stop::NotReplayable)
    );
}

#[test]
fn conditions_match() {
    let gw = RetryOn {
        gateway_error: true,
        ..Default::default()
    };
    assert!(gw.matches(&status(502)) && gw.matches(&status(504)));
    assert!(!gw.matches(&status(500)));
    assert!(gw.matches(&Outcome::Failed(Cause::PerTryTimeout)));
    assert!(gw.matches(&Outcome::Failed(Cause::TlsHandshake)));
    assert!(!gw.matches(&Outcome::Failed(Cause::RateLimited)));

    let codes = RetryOn {
        statuses: vec![409],
        retriable_4xx: true,
        grpc_codes: vec![grpc_code("unavailable").unwrap()],
        ..Default::default()
    };
    assert!(codes.matches(&Outcome::Response {
        status: 200,
        grpc: Some(14),
        retry_after: None
    }));
    assert!(!codes.matches(&status(503)));

    let reset = RetryOn {
        reset: true,
        ..Default::default()
    };
    assert!(reset.matches(&Outcome::Failed(Cause::UpstreamReset)));
    assert!(!reset.matches(&status(503)));

    // An upstream failure matches a status condition by the status the client would get.
    assert!(statuses(&[502]).matches(&Outcome::Failed(Cause::UpstreamReset)));
    assert!(statuses(&[504]).matches(&Outcome::Failed(Cause::PerTryTimeout)));
    assert!(!statuses(&[503]).matches(&Outcome::Failed(Cause::UpstreamReset)));
}

#[test]
fn grpc_names() {
    assert_eq!(grpc_code("unavailable"), Some(14));
    assert_eq!(grpc_code("RESOURCE_EXHAUSTED"), Some(8));
    assert_eq!(grpc_code("nope"), None);
}

#[test]
fn backoff_is_bounded_full_jitter() {
    let (b, m) = (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX);
    assert_eq!(backoff(b, m, 1, 0.0), Duration::ZERO);
    assert_eq!(backoff(b, m, 1, 1.0), b);
    assert_eq!(backoff(b, m, 2, 1.0), b * 2);
    assert_eq!(backoff(b, m, 10, 1.0), m);
    assert_eq!(backoff(b, m, 1000, 1.0), m);
    for _ in 0..100 {
        let Decision::Retry { backoff } = should_retry(
            None,
            &Method::GET,
            2,
            &Outcome::Failed(Cause::ConnectRefused),
            true,
        ) else {
            panic!("expected retry")
        };
        assert!(backoff <= b * 2);
    }
}

#[test]
fn retry_after_is_honoured_and_capped() {
    let p = policy(statuses(&[503]), 3);
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", "1".parse().unwrap());
    let o = Outcome::from_response(503, &headers);
    assert_eq!(
        should_retry(Some(&p), &Method::GET, 1, &o, true),
        Decision::Retry {
            backoff: Duration::from_secs(1)
        }
    );
    headers.insert("retry-after", "120".parse().unwrap());
    let o = Outcome::from_response(503, &headers);
    assert_eq!(
        should_retry(Some(&p), &Method::GET, 1, &o, true),
        Decision::Done(Stop::RetryAfterTooLong)
    );
    headers.insert(
        "retry-after",
        "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
    );
    let Outcome::Response { retry_after, .. } = Outcome::from_response(503, &headers) else {
        unreachable!()
    };
    assert_eq!(retry_after, None);
}

#[test]
fn a_peers_app_unavailable_is_retried_like_a_connect_failure() {
    let mut headers = HeaderMap::new();
    headers.insert("x-mesh-error", "app-unavailable".parse().unwrap());
    let o = Outcome::from_response(503, &headers);
    assert_eq!(o, Outcome::Failed(Cause::AppUnavailable));
    // Never reached an app: retried without a policy, even for POST.
    assert!(matches!(
        should_retry(None, &Method::POST, 1, &o, true),
        Decision::Retry { .. }
    ));
    // Any other proxy error may have reached the app: not retried without a policy.
    headers.insert("x-mesh-error", "upstream-reset".parse().unwrap());
    let o = Outcome::from_response(503, &headers);
    assert_eq!(
        should_retry(None, &Method::POST, 1, &o, true),
        Decision::Done(Stop::NotRetryable)
    );
    // The cause alone, on another status, is not the peer's connect failure.
    headers.insert("x-mesh-error", "app-unavailable".parse().unwrap());
    assert!(matches!(
        Outcome::from_response(502, &headers),
        Outcome::Response { status: 502, .. }
    ));
}
