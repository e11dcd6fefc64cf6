//! Circuit breakers, timeouts, rate and connection limits and health checks against real hyper servers and clients on 127.0.0.1.

mod resilience_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_sidecar::resilience::replay::BoxError;
use mesh_sidecar::resilience::{
    CallPolicy, Cause, CheckKind, CircuitLimits, ClusterConfig, ClusterResilience,
    ConnectionLimiter, HealthCheckConfig, HealthChecker, RateLimitConfig, RateLimiter, RoundRobin,
    StandardProbe, TimeoutBody, TimeoutKind, X_MESH_ERROR, call_with_retries,
    classify_client_error, error_response, timeouts,
};
use resilience_support::{Backend, HANG, Harness, Mode, eventually, within_hang};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

#[tokio::test]
async fn circuit_breaker_fails_fast_with_circuit_open() {
    let cfg = ClusterConfig {
        circuit: CircuitLimits {
            max_requests: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let h = Harness::new(1, cfg).await;
    h.backends[0].set(Mode::Gate); // the backend holds every request until released
    let mut set = JoinSet::new();
    for _ in 0..10 {
        let h = h.clone();
        set.spawn(async move { h.call(Method::GET, b"", &CallPolicy::default()).await });
    }
    // While the gate is closed, the 8 over the limit complete: they failed fast.
    let mut open = 0;
    for _ in 0..8 {
        let r = within_hang(set.join_next()).await.unwrap().unwrap();
        assert_eq!(r.unwrap_err().cause, Cause::CircuitOpen);
        open += 1;
    }
    assert_eq!(open, 8);
    assert!(eventually(HANG, || h.backends[0].in_flight() == 2).await);
    h.backends[0].gate.add_permits(2);
    while let Some(r) = within_hang(set.join_next()).await {
        assert_eq!(r.unwrap().unwrap().status(), 200);
    }
    assert_eq!(h.backends[0].hits(), 2);
    assert_eq!(
        h.backends[0]
            .peak_in_flight
            .load(std::sync::atomic::Ordering::Acquire),
        2
    );
    // The breaker closes as soon as permits come back.
    h.backends[0].set(Mode::Ok);
    let resp = h
        .call(Method::GET, b"", &CallPolicy::default())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn per_try_and_request_timeouts_fire_with_their_cause() {
    let h = Harness::new(1, ClusterConfig::default()).await;
    h.backends[0].set(Mode::Delay); // answers after 200 ms
    let per_try = CallPolicy {
        per_try_timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let err = h.call(Method::GET, b"", &per_try).await.unwrap_err();
    assert_eq!(err.cause, Cause::Timeout(TimeoutKind::PerTry));
    assert_eq!(err.cause.as_str(), "timeout:per-try");
    assert_eq!(
        err.info.attempts, 1,
        "a timed-out try may have reached the app: not retried"
    );

    let request = CallPolicy {
        request_timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let err = h.call(Method::GET, b"", &request).await.unwrap_err();
    assert_eq!(err.cause, Cause::Timeout(TimeoutKind::Request));
    assert_eq!(err.cause.status(), 504);
}

#[tokio::test]
async fn idle_and_deadline_timeouts_fire_on_a_stalled_body() {
    let h = Harness::new(1, ClusterConfig::default()).await;
    h.backends[0].set(Mode::StallBody);
    let cause_of = |e: BoxError| *e.downcast::<Cause>().expect("a Cause");

    let resp = h
        .call(Method::GET, b"", &CallPolicy::default())
        .await
        .unwrap();
    let body = TimeoutBody::new(resp.into_body(), Some(Duration::from_millis(100)), None);
    let err = within_hang(body.collect()).await.unwrap_err();
    assert_eq!(cause_of(err), Cause::Timeout(TimeoutKind::Idle));

    let resp = h
        .call(Method::GET, b"", &CallPolicy::default())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    let body = TimeoutBody::new(resp.into_body(), None, Some(deadline));
    let err = within_hang(body.collect()).await.unwrap_err();
    assert_eq!(cause_of(err), Cause::Timeout(TimeoutKind::Request));
}

/// A listener whose accept queue is full: further SYNs are dropped, so connects hang.
async fn black_hole() -> Option<(SocketAddr, Vec<tokio::net::TcpStream>)> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .ok()?;
    sock.listen(0).ok()?;
    let addr = sock.local_addr().ok()?.as_socket()?;
    let mut fillers = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => fillers.push(s),
            _ => {
                // Keep the listener alive as long as the fillers.
                std::mem::forget(sock);
                return Some((addr, fillers));
            }
        }
    }
    None
}

#[tokio::test]
async fn connect_timeout_fires_with_its_cause_and_is_retried() {
    let Some((addr, _fillers)) = black_hole().await else {
        println!("skipped: this kernel never filled the accept queue, so connects cannot hang");
        return;
    };
    assert_eq!(
        timeouts::connect(addr, Duration::from_millis(100))
            .await
            .unwrap_err(),
        Cause::CONNECT_TIMEOUT
    );
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_millis(100)));
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let cluster = ClusterResilience::new(&ClusterConfig::default(), 1).unwrap();
    let req = Request::get("/").body(Full::new(Bytes::new())).unwrap();
    let err = within_hang(call_with_retries(
        &cluster,
        &CallPolicy::default(),
        req,
        |_| Ok(0),
        |_, mut req| {
            *req.uri_mut() = format!("http://{addr}/").parse().unwrap();
            let fut = client.request(req);
            async move { fut.await.map_err(|e| classify_client_error(&e)) }
        },
    ))
    .await
    .unwrap_err();
    assert_eq!(err.cause, Cause::CONNECT_TIMEOUT);
    assert_eq!(err.cause.as_str(), "connect-timeout");
    assert_eq!(
        err.info.attempts, 3,
        "never reached the app: retried by default"
    );
}

#[tokio::test]
async fn upstream_reset_is_classified_and_not_retried_by_default() {
    let h = Harness::new(2, ClusterConfig::default()).await;
    for b in &h.backends {
        b.set(Mode::Reset);
    }
    let err = h
        .call(Method::POST, b"x", &CallPolicy::default())
        .await
        .unwrap_err();
    assert_eq!(err.cause, Cause::UpstreamReset);
    assert_eq!(err.info.attempts, 1);
    assert_eq!(h.backends.iter().map(|b| b.hits()).sum::<u64>(), 1);
}

type EdgeBody = BoxBody<Bytes, hyper::Error>;

/// A minimal proxy edge: rate limit, then the driver to the backends.
async fn rate_limited_edge(h: Arc<Harness>, limiter: Arc<RateLimiter>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (h, limiter) = (h.clone(), limiter.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let (h, limiter) = (h.clone(), limiter.clone());
                    async move {
                        if let Err(wait) = limiter.check(None) {
                            return Ok::<_, Infallible>(error_response::<EdgeBody>(
                                Cause::RateLimited,
                                Some(wait),
                            ));
                        }
                        Ok(
                            match h.call(Method::GET, b"", &CallPolicy::default()).await {
                                Ok(resp) => resp.map(|b| b.boxed()),
                                Err(e) => error_response(e.cause, None),
                            },
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn rate_limiter_returns_429_with_retry_after() {
    let h = Harness::new(1, ClusterConfig::default()).await;
    let limiter = Arc::new(
        RateLimiter::new(RateLimitConfig {
            requests_per_second: 1,
            burst: 3,
            per_source: false,
        })
        .unwrap(),
    );
    let edge = rate_limited_edge(h.clone(), limiter.clone()).await;
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..10 {
        let uri = format!("http://{edge}/").parse().unwrap();
        let resp = within_hang(client.get(uri)).await.unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(resp.headers()[X_MESH_ERROR], "rate-limited");
                assert_eq!(resp.headers()[http::header::RETRY_AFTER], "1");
                limited += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    println!("10 requests at 1/s with burst 3: {ok} allowed, {limited} limited");
    assert!(ok >= 3, "the burst is allowed");
    assert!(limited >= 5, "the excess is limited");
    assert_eq!(
        h.backends[0].hits(),
        ok,
        "limited requests never reach the backend"
    );
    assert_eq!(limiter.refused(), limited);
}

#[tokio::test]
async fn connection_limiter_refuses_excess_while_allowed_traffic_works() {
    const LIMIT: usize = 5;
    let limiter = ConnectionLimiter::new(LIMIT);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accept_limiter = limiter.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Excess connections are closed at once; the permit lives as long as the connection.
            let Some(permit) = accept_limiter.try_accept() else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                drop(permit);
            });
        }
    });

    async fn open(
        addr: SocketAddr,
    ) -> Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
        let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        let ok = get(&mut send).await;
        ok.then_some(send)
    }
    async fn get(send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> bool {
        let req = Request::get("/")
            .header("host", "edge")
            .body(Empty::new())
            .unwrap();
        matches!(within_hang(send.send_request(req)).await, Ok(r) if r.status() == 200)
    }

    // Ten times the limit, each connection held open.
    let mut allowed = Vec::new();
    let mut refused = 0;
    for _ in 0..LIMIT * 10 {
        match within_hang(open(addr)).await {
            Some(send) => allowed.push(send),
            None => refused += 1,
        }
    }
    assert_eq!(allowed.len(), LIMIT);
    assert_eq!(refused, LIMIT * 9);
    assert_eq!(limiter.refused(), (LIMIT * 9) as u64);
    // The admitted connections keep being served.
    for send in &mut allowed {
        assert!(get(send).await);
    }
    // Closing one frees a slot for a new connection.
    allowed.pop();
    assert!(eventually(HANG, || limiter.active() < LIMIT).await);
    assert!(within_hang(open(addr)).await.is_some());
}

#[tokio::test]
async fn health_checks_mark_dead_and_failing_endpoints_and_picks_skip_them() {
    let backends = [
        Backend::start().await,
        Backend::start().await,
        Backend::start().await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let fast = |kind| HealthCheckConfig {
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        healthy_threshold: 2,
        unhealthy_threshold: 2,
        ..HealthCheckConfig::new(kind)
    };
    let tcp = HealthChecker::spawn(
        fast(CheckKind::Tcp),
        addrs.clone(),
        Arc::new(StandardProbe(CheckKind::Tcp)),
    );
    let http_kind = CheckKind::Http {
        path: "/healthz".into(),
        expected_status: 200,
    };
    let http = HealthChecker::spawn(
        fast(http_kind.clone()),
        addrs,
        Arc::new(StandardProbe(http_kind)),
    );

    backends[2].kill();
    backends[0].set(Mode::Status503);
    assert!(eventually(HANG, || !tcp.status().is_healthy(2)).await);
    assert!(
        eventually(HANG, || !http.status().is_healthy(0)
            && !http.status().is_healthy(2))
        .await
    );
    assert!(tcp.status().is_healthy(0) && tcp.status().is_healthy(1));
    assert!(http.status().is_healthy(1));

    let cluster = ClusterResilience::new(&ClusterConfig::default(), 3)
        .unwrap()
        .with_health(http.status().clone());
    let rr = RoundRobin::default();
    for _ in 0..10 {
        assert_eq!(rr.pick(3, None, |i| cluster.is_available(i)), Ok(1));
    }

    // Recovery: two good probes in a row bring it back.
    backends[0].set(Mode::Ok);
    assert!(eventually(HANG, || http.status().is_healthy(0)).await);
    assert!(!http.status().is_healthy(2));
}
