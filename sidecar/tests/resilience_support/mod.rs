//! Test support for the resilience integration tests: real hyper apps on 127.0.0.1 that misbehave on command, behind the real sidecars.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Bounds any single await in these tests; only a hang ever reaches it.
pub const HANG: Duration = Duration::from_secs(20);

/// What a backend does with each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Ok = 0,
    Status503 = 1,
    /// Close the connection without a response (the client sees a reset).
    Reset = 2,
    /// Answer 200 after 200 ms.
    Delay = 3,
    /// Hold the request until the test adds a permit to the gate.
    Gate = 4,
}

/// A hyper HTTP/1 backend on 127.0.0.1:0.
pub struct Backend {
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    pub hits: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    pub peak_in_flight: Arc<AtomicU64>,
    pub gate: Arc<Semaphore>,
    kill: watch::Sender<bool>,
}

type RespBody = BoxBody<Bytes, Infallible>;

impl Backend {
    pub async fn start() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (kill, killed) = watch::channel(false);
        let b = Backend {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(AtomicU8::new(Mode::Ok as u8)),
            hits: Arc::default(),
            in_flight: Arc::default(),
            peak_in_flight: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            kill,
        };
        let (mode, hits, in_flight, peak, gate) = (
            b.mode.clone(),
            b.hits.clone(),
            b.in_flight.clone(),
            b.peak_in_flight.clone(),
            b.gate.clone(),
        );
        tokio::spawn(async move {
            let mut stop = killed.clone();
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                    _ = stop.changed() => return, // drops the listener: connects are refused
                };
                let (mode, hits, in_flight, peak, gate) = (
                    mode.clone(),
                    hits.clone(),
                    in_flight.clone(),
                    peak.clone(),
                    gate.clone(),
                );
                let mut stop = killed.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (mode, hits, in_flight, peak, gate) = (
                            mode.clone(),
                            hits.clone(),
                            in_flight.clone(),
                            peak.clone(),
                            gate.clone(),
                        );
                        async move {
                            hits.fetch_add(1, Ordering::AcqRel);
                            let n = in_flight.fetch_add(1, Ordering::AcqRel) + 1;
                            peak.fetch_max(n, Ordering::AcqRel);
                            let _ = req.into_body().collect().await;
                            let r = respond(mode.load(Ordering::Acquire), &gate).await;
                            in_flight.fetch_sub(1, Ordering::AcqRel);
                            r
                        }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stop.changed() => {} // drops the connection: a reset for the peer
                    }
                });
            }
        });
        b
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Release);
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Acquire)
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Stops listening and closes every connection: later connects are refused.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }
}

async fn respond(mode: u8, gate: &Semaphore) -> Result<Response<RespBody>, std::io::Error> {
    let full = |status: u16, body: &'static str| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
            .unwrap()
    };
    match mode {
        m if m == Mode::Status503 as u8 => Ok(full(503, "unavailable")),
        m if m == Mode::Reset as u8 => Err(std::io::Error::other("reset on command")),
        m if m == Mode::Delay as u8 => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(full(200, "slow"))
        }
        m if m == Mode::Gate as u8 => {
            gate.acquire().await.expect("gate open").forget();
            Ok(full(200, "gated"))
        }
        _ => Ok(full(200, "ok")),
    }
}

/// Awaits `fut`, failing the test only if it hangs.
pub async fn within_hang<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(HANG, fut).await.expect("hung")
}

/// Polls `cond` every 10 ms until true; false if `limit` passes first.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
