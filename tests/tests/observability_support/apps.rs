//! The apps behind the sidecars in the observability scenarios: one echoing the trace headers it received, one relaying calls onward with the context (an instrumented app mid-chain), one holding its response body back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An app that answers 503 on `/fail`, 200 elsewhere, and echoes the trace headers it
/// received as `x-seen-*` response headers.
pub struct TraceApp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TraceApp {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let status = if req.uri().path() == "/fail" {
                            503
                        } else {
                            200
                        };
                        let mut rsp = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *rsp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                        for (from, to) in [
                            ("traceparent", "x-seen-traceparent"),
                            ("b3", "x-seen-b3"),
                            ("x-b3-traceid", "x-seen-b3-traceid"),
                        ] {
                            if let Some(v) = req.headers().get(from) {
                                rsp.headers_mut().insert(to, v.clone());
                            }
                        }
                        Ok::<_, Infallible>(rsp)
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        TraceApp { addr, task }
    }
}

impl Drop for TraceApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Trace headers an instrumented app copies from the request it serves to the calls it makes.
const PROPAGATED: [&str; 6] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
];

/// An ordinary instrumented app in the middle of a call chain: for each request it calls
/// `next` (same path) through its own sidecar's outbound listener, copying the incoming trace
/// headers, and answers with the downstream status and the downstream's `x-seen-*` headers,
/// plus `x-relay-seen-traceparent` (what it received itself).
pub struct RelayApp {
    pub addr: SocketAddr,
    proxy: Arc<std::sync::OnceLock<SocketAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl RelayApp {
    pub async fn start(next: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("local addr");
        let proxy: Arc<std::sync::OnceLock<SocketAddr>> = Arc::default();
        let shared = proxy.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let proxy = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let proxy = proxy.clone();
                        async move { Ok::<_, Infallible>(relay(proxy.get().copied(), next, req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        RelayApp { addr, proxy, task }
    }

    /// Where outgoing calls go: the relay's own sidecar's outbound listener.
    pub fn set_proxy(&self, outbound: SocketAddr) {
        let _ = self.proxy.set(outbound);
    }
}

async fn relay(
    proxy: Option<SocketAddr>,
    next: &str,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::new()));
    let Some(proxy) = proxy else {
        *rsp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        return rsp;
    };
    let forwarded: Vec<(&str, String)> = PROPAGATED
        .iter()
        .filter_map(|h| Some((*h, req.headers().get(*h)?.to_str().ok()?.to_owned())))
        .collect();
    let headers: Vec<(&str, &str)> = forwarded.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match mesh_tests::http::get_via(proxy, next, req.uri().path(), &headers).await {
        Ok((status, _, _, h)) => {
            *rsp.status_mut() = http::StatusCode::from_u16(status).expect("status");
            for (k, v) in &h {
                if k.as_str().starts_with("x-seen-") {
                    rsp.headers_mut().insert(k.clone(), v.clone());
                }
            }
        }
        Err(_) => *rsp.status_mut() = http::StatusCode::BAD_GATEWAY,
    }
    if let Some(v) = req.headers().get("traceparent") {
        rsp.headers_mut()
            .insert("x-relay-seen-traceparent", v.clone());
    }
    rsp
}

impl Drop for RelayApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An app whose responses stream: the head and a first chunk at once, the last chunk only
/// after the test opens the gate (one permit per response).
pub struct GateApp {
    pub addr: SocketAddr,
    gate: Arc<tokio::sync::Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

impl GateApp {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gate app");
        let addr = listener.local_addr().expect("local addr");
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let shared = gate.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let gate = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        let gate = gate.clone();
                        async move {
                            // Two frames: the channel never holds more.
                            let (tx, rx) = tokio::sync::mpsc::channel(2);
                            tokio::spawn(async move {
                                let frame = |b: &'static [u8]| {
                                    Ok::<_, Infallible>(hyper::body::Frame::data(
                                        Bytes::from_static(b),
                                    ))
                                };
                                let _ = tx.send(frame(b"first")).await;
                                if let Ok(p) = gate.acquire().await {
                                    p.forget();
                                }
                                let _ = tx.send(frame(b"last")).await;
                            });
                            let body = http_body_util::StreamBody::new(
                                tokio_stream::wrappers::ReceiverStream::new(rx),
                            );
                            Ok::<_, Infallible>(Response::new(body))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        GateApp { addr, gate, task }
    }

    /// Lets one response finish.
    pub fn open(&self) {
        self.gate.add_permits(1);
    }

    /// Takes back permits no response used (requests that never reached the app).
    pub fn close(&self) {
        self.gate.forget_permits(self.gate.available_permits());
    }
}

impl Drop for GateApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
