//! Small real HTTP pieces for scenarios: a labelled echo app and a client that goes through a
//! sidecar's outbound listener.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An app that answers every request with `x-app: <name>` and a body naming itself and the
/// path it saw, so tests can tell which backend (version) served a request.
pub struct EchoApp {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoApp {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind echo app");
        let addr = listener.local_addr().expect("local addr");
        let hits = Arc::new(AtomicU64::new(0));
        let name: Arc<str> = name.into();
        let h = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let name = name.clone();
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let name = name.clone();
                        h.fetch_add(1, Ordering::Relaxed);
                        async move {
                            let body = format!("{name} {}", req.uri().path());
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            resp.headers_mut()
                                .insert("x-app", name.parse().expect("header value"));
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
        EchoApp { addr, hits, task }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A single request's limit in scenarios: far above any healthy latency on loopback, so it only
/// turns a hang into a clear failure.
pub const REQUEST_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Response of [`get_via`]: status, `x-app` (which backend answered), body, headers.
pub type Reply = (u16, Option<String>, String, http::HeaderMap);

/// One HTTP/1.1 request sent to `proxy` (a sidecar outbound listener) with `Host: authority`.
pub async fn get_via(
    proxy: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    tokio::time::timeout(
        REQUEST_LIMIT,
        get_via_inner(proxy, authority, path, headers),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no response within {REQUEST_LIMIT:?}"))?
}

async fn get_via_inner(
    proxy: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(proxy).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", authority);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Full::new(Bytes::new()))?)
        .await?;
    let status = resp.status().as_u16();
    let app = resp
        .headers()
        .get("x-app")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((
        status,
        app,
        String::from_utf8_lossy(&body).into_owned(),
        headers,
    ))
}
