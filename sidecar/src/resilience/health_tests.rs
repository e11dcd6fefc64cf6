//! Unit tests for active health checks: thresholds on the paused clock, real TCP/HTTP probes on loopback.

use super::*;
use std::convert::Infallible;
use std::time::Duration;

use http_body_util::Full;
use tokio::time::sleep;

/// Answers from a switchable table; `hang` makes probes never finish.
struct Scripted {
    up: Vec<AtomicBool>,
    hang: AtomicBool,
}

impl Prober for Arc<Scripted> {
    fn probe(&self, addr: SocketAddr) -> ProbeFuture {
        let ok = self.up[usize::from(addr.port())].load(Ordering::Acquire);
        let hang = self.hang.load(Ordering::Acquire);
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            ok
        })
    }
}

fn scripted(n: usize) -> (Arc<Scripted>, Vec<SocketAddr>) {
    let s = Arc::new(Scripted {
        up: (0..n).map(|_| AtomicBool::new(true)).collect(),
        hang: AtomicBool::new(false),
    });
    // The "port" is the endpoint index, so the scripted prober can look itself up.
    let addrs = (0..n as u16)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], i)))
        .collect();
    (s, addrs)
}

#[tokio::test(start_paused = true)]
async fn thresholds_flip_the_flag() {
    let (script, addrs) = scripted(3);
    let checker = HealthChecker::spawn(
        HealthCheckConfig::new(CheckKind::Tcp),
        addrs,
        Arc::new(script.clone()),
    );
    let status = checker.status().clone();
    assert!(status.is_healthy(1), "endpoints start healthy");
    script.up[1].store(false, Ordering::Release);
    // Rounds at 0 s and 5 s: two failures, still below the threshold of three.
    sleep(Duration::from_millis(5_001)).await;
    assert!(status.is_healthy(1));
    sleep(Duration::from_secs(5)).await; // third failed round at 10 s
    assert!(!status.is_healthy(1));
    assert!(status.is_healthy(0) && status.is_healthy(2));

    script.up[1].store(true, Ordering::Release);
    sleep(Duration::from_secs(5)).await; // one good round
    assert!(!status.is_healthy(1));
    sleep(Duration::from_secs(5)).await; // two good rounds
    assert!(status.is_healthy(1));
    assert_eq!(status.transitions(), 2);
    assert_eq!(status.probes(), 5 * 3);
    assert!(status.is_healthy(99), "unknown endpoints are not blocked");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_probe_fails_by_timeout() {
    let (script, addrs) = scripted(1);
    script.hang.store(true, Ordering::Release);
    let checker = HealthChecker::spawn(
        HealthCheckConfig::new(CheckKind::Tcp),
        addrs,
        Arc::new(script.clone()),
    );
    sleep(Duration::from_secs(12)).await;
    assert!(!checker.status().is_healthy(0));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_checker_stops_probing() {
    let (script, addrs) = scripted(1);
    let checker = HealthChecker::spawn(
        HealthCheckConfig::new(CheckKind::Tcp),
        addrs,
        Arc::new(script),
    );
    let status = checker.status().clone();
    sleep(Duration::from_millis(1)).await;
    drop(checker);
    let before = status.probes();
    sleep(Duration::from_secs(60)).await;
    assert_eq!(status.probes(), before);
}

async fn http_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let status = if req.uri().path() == "/healthz" {
                        200
                    } else {
                        500
                    };
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::new()))
                            .unwrap(),
                    )
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
async fn standard_probes_on_real_sockets() {
    let addr = http_server().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let http = |path: &str, expected_status| {
        StandardProbe(CheckKind::Http {
            path: path.into(),
            expected_status,
        })
    };
    let t = Duration::from_secs(10);
    let run = |f: ProbeFuture| async move { tokio::time::timeout(t, f).await.unwrap() };
    assert!(run(StandardProbe(CheckKind::Tcp).probe(addr)).await);
    assert!(!run(StandardProbe(CheckKind::Tcp).probe(closed)).await);
    assert!(run(http("/healthz", 200).probe(addr)).await);
    assert!(!run(http("/other", 200).probe(addr)).await);
    assert!(run(http("/other", 500).probe(addr)).await);
    assert!(!run(http("/healthz", 200).probe(closed)).await);
}
