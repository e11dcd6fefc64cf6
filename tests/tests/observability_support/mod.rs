//! Helpers for the observability scenarios: a real rotel-agent collector and its parsed span dump (ids, kinds, attributes, resources), the apps behind the sidecars, /metrics scraping and promtool.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod apps;

pub use apps::{GateApp, RelayApp, TraceApp};

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
