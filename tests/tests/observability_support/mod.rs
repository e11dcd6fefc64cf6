//! Helpers for the observability scenarios: a real rotel-agent collector and its span dump, an app that echoes trace headers, /metrics scraping and promtool.

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|p| p.exists())
    })
}

/// One span as printed by rotel-agent's detailed debug log.
#[derive(Debug, Clone, Default)]
pub struct Span {
    pub trace: String,
    pub parent: String,
    pub id: String,
    pub kind: String,
    pub name: String,
    /// Attributes of the span (`-> key: Type(value)` lines after the span), values unwrapped.
    pub attrs: Vec<(String, String)>,
    /// Resource attributes of the batch the span came in.
    pub resource: Vec<(String, String)>,
}

impl Span {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn resource(&self, key: &str) -> Option<&str> {
        self.resource
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_client(&self) -> bool {
        self.kind.to_lowercase().contains("client")
    }

    pub fn is_server(&self) -> bool {
        self.kind.to_lowercase().contains("server")
    }
}

/// A rotel-agent receiving OTLP/gRPC and printing every span; killed on drop.
pub struct Collector {
    child: Child,
    port: u16,
    lines: Arc<tokio::sync::Mutex<Vec<String>>>,
}

impl Collector {
    pub fn start() -> Self {
        let Some(agent) = which("rotel-agent") else {
            panic!("rotel-agent not on PATH: run deploy/scripts/setup.sh (installs PyPI rotel)");
        };
        let port = free_port();
        let mut child = Command::new(agent)
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{port}"),
            ])
            .args([
                "--otlp-http-endpoint",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["--exporter", "blackhole", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rotel-agent");
        let lines = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        for pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                    lines.blocking_lock().push(l);
                }
            });
        }
        Collector { child, port, lines }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn text(&self) -> String {
        self.lines.lock().await.join("\n")
    }

    /// Waits until some printed span satisfies `pred`; returns every span printed so far.
    pub async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Span) -> bool,
    ) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let text = self.text().await;
            let spans = parse_spans(&text);
            if spans.iter().any(&pred) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no span {what} reached the collector:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until at least `n` spans of trace `trace` were printed; returns them.
    pub async fn wait_for_spans(&self, trace: &str, n: usize, limit: Duration) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let text = self.text().await;
            let spans: Vec<Span> = parse_spans(&text)
                .into_iter()
                .filter(|s| s.trace == trace)
                .collect();
            if spans.len() >= n {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} spans of {trace} reached the collector:\n{text}",
                spans.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses rotel's detailed debug output: `Resource attributes:` then `-> k: Str(v)` lines
/// open a batch; `Trace ID : …`, `Parent ID : …`, `ID : …`, `Kind : …` start and describe a
/// span, and the `-> k: v` lines after them are its attributes.
pub fn parse_spans(text: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut resource: Vec<(String, String)> = Vec::new();
    // True between "Resource attributes:" and the batch's first span.
    let mut in_resource = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("ResourceSpans #") {
            resource.clear();
            in_resource = false;
            continue;
        }
        if trimmed.starts_with("Resource attributes") {
            resource.clear();
            in_resource = true;
            continue;
        }
        if let Some(kv) = trimmed.strip_prefix("-> ") {
            let Some((k, v)) = kv.split_once(':') else {
                continue;
            };
            let pair = (k.trim().to_owned(), unwrap_value(v.trim()));
            if in_resource {
                resource.push(pair);
            } else if let Some(s) = spans.last_mut() {
                s.attrs.push(pair);
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        let value = value.trim().to_owned();
        match key.trim() {
            "Trace ID" => {
                in_resource = false;
                spans.push(Span {
                    trace: value,
                    resource: resource.clone(),
                    ..Span::default()
                });
            }
            "Parent ID" => {
                if let Some(s) = spans.last_mut() {
                    s.parent = value;
                }
            }
            "ID" => {
                if let Some(s) = spans.last_mut() {
                    s.id = value;
                }
            }
            "Kind" => {
                if let Some(s) = spans.last_mut() {
                    s.kind = value;
                }
            }
            "Name" => {
                if let Some(s) = spans.last_mut() {
                    s.name = value;
                }
            }
            _ => {}
        }
    }
    spans
}

/// `Str(web)` → `web`, `Int(200)` → `200`, `Bool(true)` → `true`; anything else as is.
fn unwrap_value(v: &str) -> String {
    match v.split_once('(') {
        Some((ty, rest)) if !ty.is_empty() && ty.chars().all(char::is_alphabetic) => {
            rest.strip_suffix(')').unwrap_or(rest).to_owned()
        }
        _ => v.to_owned(),
    }
}

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

/// `GET /metrics` from an admin/HTTP listener; the body as text.
pub async fn metrics_text(addr: SocketAddr) -> String {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: metrics\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf).into_owned())
    };
    let rsp = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("metrics within 10 s")
        .expect("metrics fetched");
    let (head, body) = rsp.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.contains(" 200 "), "{head}");
    body.to_owned()
}

/// The value of the sample line starting with `series` (0 when absent).
pub fn counter(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `promtool check metrics` on `text`; fails with a clear message when promtool is missing.
pub fn promtool_check(what: &str, text: &str) {
    let Some(promtool) = which("promtool") else {
        panic!("promtool not on PATH: run deploy/scripts/setup.sh (installs Prometheus tools)");
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write metrics");
    }
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool check metrics failed on the {what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
