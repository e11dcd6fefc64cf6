//! Benchmark upstream `mesh-bench-echo ADDR`: answers every HTTP/1.1 or h2c request with 1 KiB
//! (a gRPC unary answer with `grpc-status: 0` trailers when the request is gRPC).
//!
//! Deliberately minimal (one thread, no routing, no logging) so the benchmark measures the proxy
//! in front of it, not the upstream. Used only by `tests/bench/bench.py`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::stream;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

/// 1 KiB body: the response size the benchmark scenarios are specified with.
const BODY: &[u8] = &[b'x'; 1024];

/// The gRPC answer: a 5-byte length prefix (uncompressed, 1,019 bytes) then 1,019 bytes of
/// message, 1 KiB in all like the HTTP answer. The load generator only checks the status and
/// the trailers, so the message does not need to decode as any particular protobuf type.
const GRPC_BODY: &[u8] = &{
    let mut b = [b'x'; 1024];
    let len = (1024u32 - 5).to_be_bytes();
    b[0] = 0;
    b[1] = len[0];
    b[2] = len[1];
    b[3] = len[2];
    b[4] = len[3];
    b
};

type EchoBody = UnsyncBoxBody<Bytes, Infallible>;

fn main() -> anyhow::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".to_owned())
        .parse()?;
    // One thread: the echo shares the load generator's core, as every scenario pins it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                Ok::<_, Infallible>(answer(req).await)
            });
            // Connection errors (client resets at the end of a run) are expected: ignore them.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// 1 KiB for HTTP; for gRPC the request body is read first (a unary call completes its
/// request before the answer), then one message and `grpc-status: 0`.
async fn answer(req: Request<hyper::body::Incoming>) -> Response<EchoBody> {
    let grpc = req
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return Response::new(Full::new(Bytes::from_static(BODY)).boxed_unsync());
    }
    // A broken request body only shortens the call: the answer is the same.
    let _ = req.into_body().collect().await;
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok(Frame::data(Bytes::from_static(GRPC_BODY))),
        Ok(Frame::trailers(trailers)),
    ];
    let mut rsp = Response::new(StreamBody::new(stream::iter(frames)).boxed_unsync());
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    rsp
}
