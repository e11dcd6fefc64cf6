//! Retries, budgets and outlier detection against real misbehaving hyper backends, through `call_with_retries` and a real hyper client.

mod resilience_support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use mesh_sidecar::resilience::{
    CallInfo, CallPolicy, Cause, ClusterConfig, OutlierConfig, RetryOn, RetryPolicy,
};
use resilience_support::{Harness, Mode, eventually, within_hang};
use tokio::task::JoinSet;

fn policy(on: &[&str], attempts: u32) -> RetryPolicy {
    RetryPolicy::new(attempts, RetryOn::parse(on).unwrap())
}

#[tokio::test]
async fn post_to_a_503_backend_is_not_retried_by_default() {
    let h = Harness::new(3, ClusterConfig::default()).await;
    for b in &h.backends {
        b.set(Mode::Status503);
    }
    let resp = h
        .call(Method::POST, b"order=1", &CallPolicy::default())
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.extensions().get::<CallInfo>().unwrap().attempts, 1);
    let hits: u64 = h.backends.iter().map(|b| b.hits()).sum();
    assert_eq!(hits, 1, "exactly one POST reached an app");

    // Even an opted-in 5xx policy does not retry a POST unless the route allows it.
    let p = policy(&["5xx"], 3);
    let cp = CallPolicy {
        retry: Some(&p),
        ..Default::default()
    };
    let resp = h.call(Method::POST, b"order=2", &cp).await.unwrap();
    assert_eq!(resp.status(), 503);
    let hits: u64 = h.backends.iter().map(|b| b.hits()).sum();
    assert_eq!(hits, 2);
}

#[tokio::test]
async fn get_with_opt_in_5xx_retry_succeeds_on_a_healthy_endpoint() {
    let h = Harness::new(2, ClusterConfig::default()).await;
    h.backends[0].set(Mode::Status503);
    let p = policy(&["5xx"], 3);
    let cp = CallPolicy {
        retry: Some(&p),
        ..Default::default()
    };
    // Round robin starts at endpoint 0 (the failing one); the retry must avoid it.
    let resp = h.call(Method::GET, b"", &cp).await.unwrap();
    assert_eq!(resp.status(), 200);
    let info = *resp.extensions().get::<CallInfo>().unwrap();
    assert_eq!((info.attempts, info.endpoint), (2, Some(1)));
    assert_eq!((h.backends[0].hits(), h.backends[1].hits()), (1, 1));
}

#[tokio::test]
async fn all_backends_503_retries_stay_within_the_budget() {
    const REQUESTS: u64 = 1000;
    let h = Harness::new(3, ClusterConfig::default()).await;
    for b in &h.backends {
        b.set(Mode::Status503);
    }
    let mut set = JoinSet::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(20)); // 20 concurrent clients
    for _ in 0..REQUESTS {
        let (h, gate) = (h.clone(), gate.clone());
        set.spawn(async move {
            let _slot = gate.acquire_owned().await.unwrap();
            let p = policy(&["5xx"], 3);
            let cp = CallPolicy {
                retry: Some(&p),
                ..Default::default()
            };
            h.call(Method::GET, b"", &cp)
                .await
                .map(|r| r.status().as_u16())
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = within_hang(set.join_next()).await {
        statuses.push(r.unwrap().unwrap());
    }
    assert!(statuses.iter().all(|&s| s == 503));
    let attempts: u64 = h.backends.iter().map(|b| b.hits()).sum();
    // Default budget: 20 % of requests + 10/s × 10 s. Without it: 3 × 1000 attempts.
    let allowed = REQUESTS + REQUESTS / 5 + 100;
    println!(
        "requests={REQUESTS} attempts at backends={attempts} (budget allows ≤ {allowed}, \
         unbudgeted would be {}), retries refused={}",
        REQUESTS * 3,
        h.cluster.budget.exhausted()
    );
    assert!(attempts > REQUESTS, "some retries happened");
    assert!(
        attempts <= allowed,
        "{attempts} attempts exceed the budget {allowed}"
    );
    assert!(h.cluster.budget.exhausted() > 0);
}

#[tokio::test]
async fn killing_one_of_three_backends_keeps_success_and_ejects_it() {
    const REQUESTS: usize = 1500;
    const KILL_AT: usize = 500;
    let h = Harness::new(3, ClusterConfig::default()).await;
    let dead = 1;
    let start = tokio::time::Instant::now();
    let mut set = JoinSet::new();
    // ~500 requests/s for ~3 s: a steady, bounded load.
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut picks_at_kill = 0;
    let mut killed_at = None;
    let mut ejected_after = None;
    for i in 0..REQUESTS {
        tick.tick().await;
        if i == KILL_AT {
            picks_at_kill = h.picks(dead);
            h.backends[dead].kill();
            killed_at = Some(tokio::time::Instant::now());
        }
        if ejected_after.is_none() && killed_at.is_some() && h.cluster.outlier.is_ejected(dead) {
            ejected_after = killed_at.map(|k| k.elapsed());
        }
        let h = h.clone();
        set.spawn(async move {
            let p = policy(&["gateway-error", "reset"], 3);
            let cp = CallPolicy {
                retry: Some(&p),
                ..Default::default()
            };
            h.call(Method::GET, b"", &cp)
                .await
                .map(|r| r.status().as_u16())
        });
    }
    let mut ok = 0usize;
    let mut failed = Vec::new();
    while let Some(r) = within_hang(set.join_next()).await {
        match r.unwrap() {
            Ok(200) => ok += 1,
            other => failed.push(other.map_err(|e| e.cause)),
        }
    }
    let rate = ok as f64 / REQUESTS as f64;
    let attempts_at_dead = h.picks(dead) - picks_at_kill;
    println!(
        "{REQUESTS} requests in {:?}: success {:.2} %, failures {failed:?}, ejected {:?} after the \
         kill, attempts at the dead endpoint after the kill: {attempts_at_dead}",
        start.elapsed(),
        rate * 100.0,
        ejected_after
    );
    assert!(rate >= 0.999, "success rate {rate}");
    assert!(
        h.cluster.outlier.is_ejected(dead),
        "the dead endpoint is ejected"
    );
    assert_eq!(h.cluster.outlier.ejected_count(), 1);
    // Ejection after 3 consecutive gateway failures; concurrent requests may add a few more.
    assert!(
        attempts_at_dead <= 30,
        "{attempts_at_dead} attempts hit the dead endpoint"
    );
}

#[tokio::test]
async fn flapping_endpoint_is_ejected_then_readmitted() {
    let cfg = ClusterConfig {
        outlier: OutlierConfig {
            base_ejection: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    };
    let h = Harness::new(3, cfg).await;
    let p = policy(&["gateway-error", "reset"], 3);
    let cp = CallPolicy {
        retry: Some(&p),
        ..Default::default()
    };
    let flap = 0;
    let outlier = &h.cluster.outlier;

    // Down: resets until ejected; clients never notice (retried elsewhere).
    h.backends[flap].set(Mode::Reset);
    for _ in 0..50 {
        let resp = h.call(Method::GET, b"", &cp).await.unwrap();
        assert_eq!(resp.status(), 200);
        if outlier.is_ejected(flap) {
            break;
        }
    }
    assert!(outlier.is_ejected(flap));
    assert_eq!(outlier.ejections_total(), 1);

    // Still down when re-admitted: the first probe request fails and re-ejects at once.
    assert!(eventually(Duration::from_secs(5), || !outlier.is_ejected(flap)).await);
    let before = h.picks(flap);
    for _ in 0..50 {
        assert_eq!(h.call(Method::GET, b"", &cp).await.unwrap().status(), 200);
        if outlier.is_ejected(flap) {
            break;
        }
    }
    assert_eq!(h.picks(flap) - before, 1, "one probe, then ejected again");
    assert_eq!(outlier.ejections_total(), 2);

    // Up again: re-admitted after the (doubled) ejection time and serving traffic.
    h.backends[flap].set(Mode::Ok);
    assert!(eventually(Duration::from_secs(5), || !outlier.is_ejected(flap)).await);
    let hits_before = h.backends[flap].hits();
    for _ in 0..30 {
        assert_eq!(h.call(Method::GET, b"", &cp).await.unwrap().status(), 200);
    }
    assert!(
        h.backends[flap].hits() - hits_before >= 5,
        "re-admitted endpoint gets traffic"
    );
    assert!(!outlier.is_ejected(flap));
    assert_eq!(outlier.ejections_total(), 2);
}

#[tokio::test]
async fn connect_refused_is_retried_on_another_endpoint_even_for_post() {
    let h = Harness::new(2, ClusterConfig::default()).await;
    h.backends[0].kill();
    // Give the listener task a moment to drop the socket.
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(
            h.backends[0].addr
        )
        .is_err())
        .await
    );
    let resp = h
        .call(Method::POST, b"x", &CallPolicy::default())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.backends[1].hits(), 1);
    assert_eq!(resp.extensions().get::<CallInfo>().unwrap().attempts, 2);

    // A single dead endpoint: the retry-safe failure is retried, then reported by cause.
    let solo = Harness::new(1, ClusterConfig::default()).await;
    solo.backends[0].kill();
    assert!(
        eventually(Duration::from_secs(5), || std::net::TcpStream::connect(
            solo.backends[0].addr
        )
        .is_err())
        .await
    );
    let err = solo
        .call(Method::GET, b"", &CallPolicy::default())
        .await
        .unwrap_err();
    assert_eq!(err.cause, Cause::ConnectRefused);
    assert_eq!(err.info.attempts, 3);
}

/// A raw HTTP/2 server: refuses every stream with `REFUSED_STREAM`, or answers 200.
async fn h2_backend(refuse: bool) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(stream).await else {
                    return;
                };
                while let Some(Ok((_req, mut respond))) = conn.accept().await {
                    if refuse {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    } else {
                        counter.fetch_add(1, Ordering::AcqRel);
                        let _ = respond.send_response(http::Response::new(()), true);
                    }
                }
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn refused_stream_is_retried_on_another_endpoint_even_for_post() {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::client::legacy::{Client, connect::HttpConnector};
    use hyper_util::rt::TokioExecutor;
    use mesh_sidecar::resilience::{ClusterResilience, call_with_retries, classify_client_error};

    let (refusing, _) = h2_backend(true).await;
    let (serving, served) = h2_backend(false).await;
    let addrs = [refusing, serving];
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let cluster = ClusterResilience::new(&ClusterConfig::default(), 2).unwrap();
    let tried = parking_lot::Mutex::new(Vec::new());
    let req = http::Request::post("/orders")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let resp = within_hang(call_with_retries(
        &cluster,
        &CallPolicy::default(),
        req,
        |avoid| Ok(if avoid == Some(0) { 1 } else { 0 }),
        |ep, mut req| {
            tried.lock().push(ep);
            *req.uri_mut() = format!("http://{}/orders", addrs[ep]).parse().unwrap();
            let fut = client.request(req);
            async move { fut.await.map_err(|e| classify_client_error(&e)) }
        },
    ))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        *tried.lock(),
        [0, 1],
        "refused by endpoint 0, served by endpoint 1"
    );
    assert_eq!(served.load(std::sync::atomic::Ordering::Acquire), 1);

    // The same refusal is classified as such (and retried on the only endpoint, then reported).
    let solo = ClusterResilience::new(&ClusterConfig::default(), 1).unwrap();
    let req = http::Request::post("/orders")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let err = within_hang(call_with_retries(
        &solo,
        &CallPolicy::default(),
        req,
        |_| Ok(0),
        |_, mut req| {
            *req.uri_mut() = format!("http://{refusing}/orders").parse().unwrap();
            let fut = client.request(req);
            async move { fut.await.map_err(|e| classify_client_error(&e)) }
        },
    ))
    .await
    .unwrap_err();
    assert_eq!(err.cause, Cause::RefusedStream);
    assert_eq!(err.info.attempts, 3);
}
