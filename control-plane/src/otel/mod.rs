//! The control plane's own traces: a span per admin RPC and per discovery push, exported over OTLP/gRPC from a bounded queue that never blocks the caller.
//!
//! One [`Tracer`] per process ([`install`] at start-up, [`global`] everywhere else, disabled
//! until installed). Recording a span is a `try_send` into a bounded channel; a task batches
//! and exports. A full queue (collector slow or down) drops the span and counts it.

mod admin;
mod export;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use opentelemetry::KeyValue;
use tokio::sync::mpsc;

pub use admin::AdminSpans;
pub use export::ExportError;

/// Spans waiting for export: 2,048 covers a burst of pushes to ~500 proxies (four types each)
/// at a few hundred bytes per span; beyond that spans are dropped and counted.
const QUEUE: usize = 2048;

/// A finished control-plane span (always a root: admin calls and pushes start their own trace).
#[derive(Debug)]
pub struct SpanRecord {
    pub name: &'static str,
    pub server: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set when the operation failed (the status message).
    pub error: Option<String>,
}

/// Records spans when an exporter is configured; does nothing otherwise.
#[derive(Debug, Default)]
pub struct Tracer {
    tx: Option<mpsc::Sender<SpanRecord>>,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans handed to the collector.
    pub exported: AtomicU64,
}

static GLOBAL: OnceLock<Tracer> = OnceLock::new();

/// The installed tracer, or a disabled one.
pub fn global() -> &'static Tracer {
    static DISABLED: OnceLock<Tracer> = OnceLock::new();
    GLOBAL
        .get()
        .unwrap_or_else(|| DISABLED.get_or_init(Tracer::default))
}

/// Starts exporting to `endpoint` (OTLP gRPC, e.g. `http://127.0.0.1:4317`) with the control
/// plane's resource attributes; must run inside the tokio runtime. The first call wins.
pub fn install(endpoint: &str, instance: &str) -> Result<(), ExportError> {
    let resource = vec![
        KeyValue::new("service.name", "mesh-control-plane"),
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("service.instance.id", instance.to_owned()),
    ];
    let (tx, rx) = mpsc::channel(QUEUE);
    export::start(endpoint, resource, rx)?;
    let _ = GLOBAL.set(Tracer {
        tx: Some(tx),
        ..Tracer::default()
    });
    Ok(())
}

// === impl Tracer ===

impl Tracer {
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a span; drops and counts it when the queue is full. Never blocks.
    pub fn record(&self, span: SpanRecord) {
        if let Some(tx) = &self.tx
            && tx.try_send(span).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A span for one push of `count` resources of `type_url` at `version` to proxy `proxy`.
    pub fn push(&self, type_url: &str, count: u64, version: &str, proxy: &str, start: SystemTime) {
        if !self.enabled() {
            return;
        }
        self.record(SpanRecord {
            name: "discovery push",
            server: false,
            start,
            end: SystemTime::now(),
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", "mesh.discovery.v1.Discovery"),
                KeyValue::new("rpc.method", "DeltaStream"),
                KeyValue::new("mesh.type_url", type_url.to_owned()),
                KeyValue::new(
                    "mesh.resource_count",
                    i64::try_from(count).unwrap_or(i64::MAX),
                ),
                KeyValue::new("mesh.version", version.to_owned()),
                KeyValue::new("mesh.proxy.id", proxy.to_owned()),
            ],
            error: None,
        });
    }
}
