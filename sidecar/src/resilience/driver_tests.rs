//! Unit tests for the request driver with scripted attempts on the paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::resilience::retry::{DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, RetryOn};
use http::HeaderValue;
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;

type Resp = Response<()>;

fn cluster() -> ClusterResilience {
    ClusterResilience::new(&ClusterConfig::default()).unwrap()
}

fn status(s: u16) -> Result<Resp, Cause> {
    let mut r = Response::new(());
    *r.status_mut() = http::StatusCode::from_u16(s).unwrap();
    Ok(r)
}

fn req(method: http::Method, body: &'static [u8]) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri("/x")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
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

fn on_5xx() -> RetryOn {
    RetryOn {
        server_error: true,
        ..Default::default()
    }
}

fn on_gateway_error() -> RetryOn {
    RetryOn {
        gateway_error: true,
        ..Default::default()
    }
}

/// The next of `n` endpoints in turn, skipping `avoid` (the balancer's part in production).
#[derive(Default)]
struct Turns(AtomicUsize);

impl Turns {
    fn pick(&self, n: usize, avoid: Option<usize>) -> Result<usize, Cause> {
        let i = self.0.fetch_add(1, Ordering::Relaxed) % n;
        Ok(if Some(i) == avoid { (i + 1) % n } else { i })
    }
}

/// The driver with a kept request head, each attempt answered by `send` (a failure hands
/// nothing back, so every retry is sent from the kept copy).
async fn call<P, S, Fut>(
    c: &ClusterResilience,
    p: &CallPolicy<'_>,
    r: Request<Full<Bytes>>,
    pick: P,
    mut send: S,
) -> Result<Response<GuardedBody<()>>, CallError>
where
    P: FnMut(Option<usize>) -> Result<usize, Cause>,
    S: FnMut(usize, Request<ReplayBody<Full<Bytes>>>) -> Fut,
    Fut: Future<Output = Result<Resp, Cause>>,
{
    let send = |ep, req| {
        let attempt = send(ep, req);
        async move {
            attempt.await.map_err(|cause| Failed {
                cause,
                unsent: None,
            })
        }
    };
    call_reclaiming(c, p, r, pick, send, true).await
}

/// Runs the driver over `n` endpoints in turn; `script(endpoint, attempt_no)` answers.
async fn drive(
    c: &ClusterResilience,
    n: usize,
    p: &CallPolicy<'_>,
    r: Request<Full<Bytes>>,
    script: impl Fn(usize, u32) -> Result<Resp, Cause>,
) -> (Result<Response<GuardedBody<()>>, CallError>, Vec<usize>) {
    let turns = Turns::default();
    let tried = Mutex::new(Vec::new());
    let out = call(
        c,
        p,
        r,
        |avoid| turns.pick(n, avoid),
        |ep, req| {
            tried.lock().push(ep);
            let attempt = tried.lock().len() as u32;
            let answer = script(ep, attempt);
            async move {
                let _ = req.into_body().collect().await;
                answer
            }
        },
    )
    .await;
    (out, tried.into_inner())
}

#[tokio::test(start_paused = true)]
async fn post_503_is_not_retried_by_default() {
    let c = cluster();
    let (out, tried) = drive(
        &c,
        3,
        &CallPolicy::default(),
        req(http::Method::POST, b"x"),
        |_, _| status(503),
    )
    .await;
    assert_eq!(out.unwrap().status(), 503);
    assert_eq!(tried.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn connect_refused_is_retried_elsewhere_even_for_post() {
    let c = cluster();
    let (out, tried) = drive(
        &c,
        3,
        &CallPolicy::default(),
        req(http::Method::POST, b"x"),
        |ep, _| {
            if ep == 0 {
                Err(Cause::ConnectRefused)
            } else {
                status(200)
            }
        },
    )
    .await;
    let resp = out.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(tried, [0, 1]);
    assert_eq!(resp.extensions().get::<CallInfo>().unwrap().attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_handshake_is_retried_and_keeps_its_cause() {
    let c = cluster();
    let (out, tried) = drive(
        &c,
        2,
        &CallPolicy::default(),
        req(http::Method::POST, b"x"),
        |_, _| Err(Cause::TlsHandshake),
    )
    .await;
    let err = out.unwrap_err();
    assert_eq!(err.cause, Cause::TlsHandshake);
    assert_eq!(
        tried,
        [0, 1, 0],
        "never reached an app: retried elsewhere, for POST too"
    );
}

#[tokio::test(start_paused = true)]
async fn opt_in_5xx_retry_for_get() {
    let c = cluster();
    let p = policy(on_5xx(), 3);
    let cp = CallPolicy {
        retry: Some(&p),
        ..Default::default()
    };
    let (out, tried) = drive(&c, 2, &cp, req(http::Method::GET, b""), |ep, _| {
        status(if ep == 0 { 503 } else { 200 })
    })
    .await;
    assert_eq!(out.unwrap().status(), 200);
    assert_eq!(tried, [0, 1]);
}

#[tokio::test(start_paused = true)]
async fn budget_exhaustion_returns_the_original_failure() {
    let cfg = ClusterConfig {
        budget: BudgetConfig {
            ratio: 0.0,
            min_per_second: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = ClusterResilience::new(&cfg).unwrap();
    let (out, tried) = drive(
        &c,
        2,
        &CallPolicy::default(),
        req(http::Method::GET, b""),
        |_, _| Err(Cause::ConnectRefused),
    )
    .await;
    let err = out.unwrap_err();
    assert_eq!(err.cause, Cause::ConnectRefused);
    assert!(err.info.budget_exhausted);
    assert_eq!(tried.len(), 1);
    assert_eq!(c.budget.exhausted(), 1);
}

#[tokio::test(start_paused = true)]
async fn circuit_open_fails_before_any_attempt() {
    let cfg = ClusterConfig {
        circuit: CircuitLimits {
            max_requests: 0,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = ClusterResilience::new(&cfg).unwrap();
    let (out, tried) = drive(
        &c,
        1,
        &CallPolicy::default(),
        req(http::Method::GET, b""),
        |_, _| status(200),
    )
    .await;
    assert_eq!(out.unwrap_err().cause, Cause::CircuitOpen);
    assert!(tried.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_streaming_response_holds_its_request_permit() {
    let cfg = ClusterConfig {
        circuit: CircuitLimits {
            max_requests: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let c = ClusterResilience::new(&cfg).unwrap();
    let (held, _) = drive(
        &c,
        1,
        &CallPolicy::default(),
        req(http::Method::GET, b""),
        |_, _| status(200),
    )
    .await;
    let held = held.unwrap();
    let (second, tried) = drive(
        &c,
        1,
        &CallPolicy::default(),
        req(http::Method::GET, b""),
        |_, _| status(200),
    )
    .await;
    assert_eq!(second.unwrap_err().cause, Cause::CircuitOpen);
    assert!(tried.is_empty());
    drop(held);
    let (third, _) = drive(
        &c,
        1,
        &CallPolicy::default(),
        req(http::Method::GET, b""),
        |_, _| status(200),
    )
    .await;
    assert_eq!(third.unwrap().status(), 200);
}

async fn slow(send_for: Duration) -> Result<Resp, Cause> {
    tokio::time::sleep(send_for).await;
    status(200)
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_fires_and_is_retried_only_when_opted_in() {
    let c = cluster();
    let hang = |_ep, _req| slow(Duration::from_secs(10));
    let cp = CallPolicy {
        per_try_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let err = call(&c, &cp, req(http::Method::GET, b""), |_| Ok(0), hang)
        .await
        .unwrap_err();
    assert_eq!(err.cause, Cause::PerTryTimeout);
    assert_eq!(err.info.attempts, 1);

    let p = policy(on_gateway_error(), 3);
    let cp = CallPolicy {
        retry: Some(&p),
        ..cp
    };
    let err = call(&c, &cp, req(http::Method::GET, b""), |_| Ok(1), hang)
        .await
        .unwrap_err();
    assert_eq!(err.cause, Cause::PerTryTimeout);
    assert_eq!(err.info.attempts, 3);
}

#[tokio::test(start_paused = true)]
async fn request_timeout_bounds_all_attempts() {
    let c = cluster();
    let p = policy(on_gateway_error(), 10);
    let cp = CallPolicy {
        retry: Some(&p),
        request_timeout: Some(Duration::from_millis(2500)),
        per_try_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let start = Instant::now();
    let err = call(
        &c,
        &cp,
        req(http::Method::GET, b""),
        |_| Ok(0),
        |_, _| slow(Duration::from_secs(10)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.cause, Cause::RequestTimeout);
    assert_eq!(err.info.attempts, 3);
    assert_eq!(start.elapsed(), Duration::from_millis(2500));
}

#[tokio::test(start_paused = true)]
async fn body_is_replayed_on_retry_and_big_bodies_are_not_retried() {
    let c = cluster();
    let seen = Mutex::new(Vec::new());
    let resp = call(
        &c,
        &CallPolicy::default(),
        req(http::Method::POST, b"payload"),
        |avoid| Ok(if avoid == Some(0) { 1 } else { 0 }),
        |ep, req| {
            let seen = &seen;
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                seen.lock().push(body);
                if ep == 0 {
                    Err(Cause::RefusedStream)
                } else {
                    status(200)
                }
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(*seen.lock(), ["payload", "payload"]);

    let cp = CallPolicy {
        replay_limit: 4,
        ..Default::default()
    };
    let (out, tried) = drive(&c, 2, &cp, req(http::Method::GET, b"too big"), |_, _| {
        Err(Cause::ConnectRefused)
    })
    .await;
    assert_eq!(out.unwrap_err().cause, Cause::ConnectRefused);
    assert_eq!(tried.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_waited_out() {
    let c = cluster();
    let p = policy(
        RetryOn {
            statuses: vec![503],
            ..Default::default()
        },
        2,
    );
    let cp = CallPolicy {
        retry: Some(&p),
        ..Default::default()
    };
    let start = Instant::now();
    let (out, _) = drive(&c, 2, &cp, req(http::Method::GET, b""), |_, attempt| {
        if attempt == 1 {
            let mut r = Response::new(());
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut().insert("retry-after", HeaderValue::from(1));
            Ok(r)
        } else {
            status(200)
        }
    })
    .await;
    assert_eq!(out.unwrap().status(), 200);
    assert!(start.elapsed() >= Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn no_endpoint_left_for_the_retry_returns_the_original_failure() {
    let c = cluster();
    let p = policy(on_5xx(), 3);
    let cp = CallPolicy {
        retry: Some(&p),
        ..Default::default()
    };
    let resp = call(
        &c,
        &cp,
        req(http::Method::GET, b""),
        |avoid| match avoid {
            None => Ok(0),
            Some(_) => Err(Cause::NoEndpoints),
        },
        |_, _| async { status(503) },
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.extensions().get::<CallInfo>().unwrap().attempts, 1);
}

/// `call_reclaiming` without a kept head: a failed connect hands the request back and the
/// same request (body included) goes to another endpoint; `hand_back` false: nothing to
/// resend, so the retry-safe failure is final.
async fn reclaiming(
    hand_back: bool,
    keep_head: bool,
) -> (
    Result<Response<GuardedBody<()>>, CallError>,
    Vec<usize>,
    Vec<Bytes>,
) {
    let c = cluster();
    let turns = Turns::default();
    let tried = Mutex::new(Vec::new());
    let bodies = Mutex::new(Vec::new());
    let out = call_reclaiming(
        &c,
        &CallPolicy::default(),
        req(http::Method::POST, b"payload"),
        |avoid| turns.pick(3, avoid),
        |ep, req: Request<ReplayBody<Full<Bytes>>>| {
            tried.lock().push(ep);
            let first = tried.lock().len() == 1;
            let bodies = &bodies;
            async move {
                if first {
                    let unsent = hand_back.then_some(req);
                    return Err(Failed {
                        cause: Cause::ConnectRefused,
                        unsent,
                    });
                }
                let body = req.into_body().collect().await.unwrap().to_bytes();
                bodies.lock().push(body);
                status(200).map_err(|cause| Failed {
                    cause,
                    unsent: None,
                })
            }
        },
        keep_head,
    )
    .await;
    (out, tried.into_inner(), bodies.into_inner())
}

#[tokio::test(start_paused = true)]
async fn reclaimed_request_is_resent_after_a_failed_connect() {
    let (out, tried, bodies) = reclaiming(true, false).await;
    assert_eq!(out.unwrap().status(), 200);
    assert_eq!(tried.len(), 2);
    assert_ne!(tried[0], tried[1]);
    assert_eq!(bodies, vec![Bytes::from_static(b"payload")]);
}

#[tokio::test(start_paused = true)]
async fn without_kept_head_or_handed_back_request_the_failure_is_final() {
    let (out, tried, _) = reclaiming(false, false).await;
    assert_eq!(out.unwrap_err().cause, Cause::ConnectRefused);
    assert_eq!(tried.len(), 1);
    // With a kept head the same failure is retried from the copy.
    let (out, tried, bodies) = reclaiming(false, true).await;
    assert_eq!(out.unwrap().status(), 200);
    assert_eq!(tried.len(), 2);
    assert_eq!(bodies, vec![Bytes::from_static(b"payload")]);
}
