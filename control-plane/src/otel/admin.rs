//! A span per admin API call: wraps the admin gRPC service and records method, outcome and gRPC status code.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::SystemTime;

use opentelemetry::KeyValue;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use super::SpanRecord;

/// The admin service `S` with a span per call. Unary calls carry their error status in the
/// response headers (trailers-only) and success in trailers, so "no `grpc-status` in the
/// head" means OK.
#[derive(Debug, Clone)]
pub struct AdminSpans<S> {
    inner: S,
}

impl<S> AdminSpans<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: NamedService> NamedService for AdminSpans<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, RB> Service<http::Request<B>> for AdminSpans<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let tracer = super::global();
        if !tracer.enabled() {
            let fut = self.inner.call(req);
            return Box::pin(async move { fut.await.map_err(|e| match e {}) });
        }
        let start = SystemTime::now();
        // `/mesh.admin.v1.Admin/SetRoute` → service and method.
        let path = req.uri().path().to_owned();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let rsp = fut.await?;
            let code = rsp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            let message = rsp
                .headers()
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let (service, method) = path
                .trim_start_matches('/')
                .split_once('/')
                .unwrap_or(("", path.as_str()));
            tracer.record(SpanRecord {
                name: "admin call",
                server: true,
                start,
                end: SystemTime::now(),
                attributes: vec![
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", service.to_owned()),
                    KeyValue::new("rpc.method", method.to_owned()),
                    KeyValue::new("rpc.grpc.status_code", code),
                    KeyValue::new("mesh.outcome", if code == 0 { "ok" } else { "error" }),
                ],
                error: (code != 0).then(|| format!("gRPC status {code}: {message}")),
            });
            Ok(rsp)
        })
    }
}
