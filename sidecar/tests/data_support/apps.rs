//! Test apps: an HTTP echo server (HTTP/1.1 + HTTP/2, trailers, upgrades), TCP echo,
//! and a server-speaks-first TCP server.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counters an app exposes to its test.
#[derive(Debug, Default)]
pub struct AppStats {
    pub requests: AtomicUsize,
}

/// Echoes the request body back, then sends trailers (`grpc-status: 0`), gRPC style.
pub struct EchoBody {
    inner: Incoming,
    done: bool,
}

impl Body for EchoBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.done = true;
                let mut t = HeaderMap::new();
                t.insert("grpc-status", HeaderValue::from_static("0"));
                t.insert("x-trailer", HeaderValue::from_static("yes"));
                Poll::Ready(Some(Ok(Frame::trailers(t))))
            }
            // Only data is echoed; request trailers are dropped.
            Poll::Ready(Some(Ok(f))) if f.is_trailers() => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            other => other,
        }
    }
}

type AppBody = http_body_util::Either<http_body_util::Full<Bytes>, EchoBody>;

/// The HTTP app: `name` identifies the instance in the body (`<name> <METHOD> <path> <version>`),
/// every request header `x-*` is echoed back as `echo-x-*`, `/echo` streams the body back
/// with trailers, `/slow` waits `delay` first, `/ws` upgrades and echoes bytes, `/flaky`
/// answers 503 to every odd-numbered request.
pub async fn http_app(name: &'static str, delay: Duration) -> (SocketAddr, Arc<AppStats>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let stats = Arc::new(AppStats::default());
    let st = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let st = st.clone();
                    async move { Ok::<_, Infallible>(app_handle(name, delay, &st, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, stats)
}

async fn app_handle(
    name: &'static str,
    delay: Duration,
    stats: &AppStats,
    mut req: Request<Incoming>,
) -> Response<AppBody> {
    let n = stats.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let mut echo = HeaderMap::new();
    for (k, v) in req.headers() {
        if (k.as_str().starts_with("x-") || k == http::header::HOST)
            && let Ok(n) = http::HeaderName::try_from(format!("echo-{}", k.as_str()))
        {
            echo.append(n, v.clone());
        }
    }
    let path = req.uri().path().to_owned();
    if path == "/slow" {
        tokio::time::sleep(delay).await;
    }
    if path == "/ws" {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let mut io = TokioIo::new(up);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut rsp = Response::new(AppBody::Left(Default::default()));
        *rsp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        rsp.headers_mut()
            .insert("connection", HeaderValue::from_static("upgrade"));
        rsp.headers_mut()
            .insert("upgrade", HeaderValue::from_static("websocket"));
        return rsp;
    }
    if path == "/flaky" && n % 2 == 1 {
        // Every other request fails: retries turn it into a success.
        let mut rsp = Response::new(AppBody::Left("flaky".into()));
        *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return rsp;
    }
    let line = format!("{name} {} {} {:?}", req.method(), req.uri(), req.version());
    let mut rsp = if path == "/echo" {
        Response::new(AppBody::Right(EchoBody {
            inner: req.into_body(),
            done: false,
        }))
    } else {
        Response::new(AppBody::Left(line.into()))
    };
    rsp.headers_mut().extend(echo);
    rsp.headers_mut()
        .insert("x-app", HeaderValue::from_static(name));
    rsp
}

/// Echoes every byte back.
pub async fn tcp_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Server speaks first: greets every connection with `220 hello\r\n`, then echoes.
pub async fn server_first() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if s.write_all(b"220 hello\r\n").await.is_ok() {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}
