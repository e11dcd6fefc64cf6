//! Spans recorded by the sidecar reach a real OTLP collector (rotel-agent) with their ids and
//! resource attributes; with the collector down, recording never blocks and drops are counted.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use mesh_sidecar::trace::{ExportConfig, Exporter, SpanKind, SpanRecord};
use opentelemetry::KeyValue;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn span(trace_id: [u8; 16], parent: [u8; 8]) -> SpanRecord {
    let now = SystemTime::now();
    SpanRecord {
        name: "inbound",
        kind: SpanKind::Server,
        trace_id,
        span_id: SpanRecord::new_span_id(),
        parent_span_id: parent,
        parent_is_remote: true,
        start: now,
        end: now + Duration::from_millis(1),
        attributes: vec![KeyValue::new("http.request.method", "GET")],
        error: None,
    }
}

#[test]
fn spans_reach_a_real_collector() {
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
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rotel-agent");
    let lines = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let lines = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().push(l);
            }
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = ExportConfig::new(
        format!("http://127.0.0.1:{port}"),
        vec![KeyValue::new("service.name", "trace-test-svc")],
    );
    cfg.interval = Duration::from_millis(100);
    let exporter = Exporter::start(cfg, rt.handle()).expect("exporter");
    let trace_id = SpanRecord::new_trace_id();
    let trace_hex: String = trace_id.iter().map(|b| format!("{b:02x}")).collect();
    // The collector may need a moment to bind: re-send the span (same trace) until it shows,
    // bounded at 100 tries.
    let mut seen = false;
    for _ in 0..100 {
        exporter.record(span(trace_id, [7; 8]));
        std::thread::sleep(Duration::from_millis(200));
        let text = lines.lock().join("\n");
        if text.contains(&trace_hex) {
            assert!(
                text.contains("trace-test-svc"),
                "resource attribute missing:\n{text}"
            );
            seen = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen, "span never reached the collector: {:?}", lines.lock());
    assert!(exporter.stats().exported.load(Ordering::Relaxed) >= 1);
}

#[test]
fn collector_down_never_blocks_and_counts_drops() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = ExportConfig::new(format!("http://127.0.0.1:{}", free_port()), vec![]);
    cfg.queue = 16;
    let exporter = Exporter::start(cfg, rt.handle()).expect("exporter");
    // 10,000 records into a 16-slot queue with nothing listening: returns at once, drops counted.
    for _ in 0..10_000 {
        exporter.record(span(SpanRecord::new_trace_id(), [0; 8]));
    }
    let s = exporter.stats();
    assert!(s.dropped.load(Ordering::Relaxed) > 9_000, "{s:?}");
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|p| p.exists())
    })
}
