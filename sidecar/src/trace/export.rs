//! The span export queue: bounded, never blocking the data path, batched OTLP/gRPC export.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use tokio::sync::mpsc;

use super::span::{SpanKind, SpanRecord};

/// Where and how to export.
#[derive(Clone, Debug)]
pub struct ExportConfig {
    /// OTLP gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Resource attributes: service.name, service.namespace, service.version, mesh.proxy.id.
    pub resource: Vec<KeyValue>,
    /// Spans waiting for export. 4,096 holds ~4 s of spans at 1,000 rps if the collector
    /// stalls, at ~1 KiB each a few MiB at most; beyond that spans are dropped and counted.
    pub queue: usize,
    /// Spans per export call: 512 keeps one OTLP request well under gRPC's 4 MiB default.
    pub batch: usize,
    /// Longest a span waits in the queue: 500 ms keeps traces fresh for operators while
    /// still batching at any real request rate.
    pub interval: Duration,
    /// One export call's limit: 5 s, so a hung collector cannot stall the exporter forever.
    pub timeout: Duration,
}

impl ExportConfig {
    pub fn new(endpoint: impl Into<String>, resource: Vec<KeyValue>) -> Self {
        ExportConfig {
            endpoint: endpoint.into(),
            resource,
            queue: 4096,
            batch: 512,
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(5),
        }
    }
}

/// Counters describing the exporter, for `/metrics`.
#[derive(Debug, Default)]
pub struct ExporterStats {
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full (collector slow or down).
    pub dropped: AtomicU64,
    /// Spans lost because an export call failed.
    pub failed: AtomicU64,
}

/// Cheap to clone; `record` never blocks and never allocates beyond the record itself.
#[derive(Clone, Debug)]
pub struct Exporter {
    tx: Option<mpsc::Sender<SpanRecord>>,
    stats: Arc<ExporterStats>,
}

impl Exporter {
    /// An exporter that records nothing (no collector configured).
    pub fn disabled() -> Self {
        Exporter {
            tx: None,
            stats: Arc::default(),
        }
    }

    /// Builds the OTLP exporter and spawns the batching task on `rt` (the control runtime).
    pub fn start(
        cfg: ExportConfig,
        rt: &tokio::runtime::Handle,
    ) -> Result<Self, opentelemetry_otlp::ExporterBuildError> {
        let _enter = rt.enter();
        let mut otlp = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.endpoint.clone())
            .with_timeout(cfg.timeout)
            .build()?;
        otlp.set_resource(
            &Resource::builder_empty()
                .with_attributes(cfg.resource.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let stats = Arc::new(ExporterStats::default());
        rt.spawn(run(otlp, rx, cfg, stats.clone()));
        Ok(Exporter {
            tx: Some(tx),
            stats,
        })
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues a finished span; drops (and counts) it when the queue is full.
    pub fn record(&self, span: SpanRecord) {
        if let Some(tx) = &self.tx
            && tx.try_send(span).is_err()
        {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn stats(&self) -> &ExporterStats {
        &self.stats
    }
}

async fn run(
    otlp: opentelemetry_otlp::SpanExporter,
    mut rx: mpsc::Receiver<SpanRecord>,
    cfg: ExportConfig,
    stats: Arc<ExporterStats>,
) {
    let scope = InstrumentationScope::builder("mesh").build();
    let mut batch = Vec::with_capacity(cfg.batch);
    loop {
        let first = match rx.recv().await {
            Some(s) => s,
            None => return,
        };
        batch.push(to_span_data(first, &scope));
        let deadline = tokio::time::Instant::now() + cfg.interval;
        while batch.len() < cfg.batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(to_span_data(s, &scope)),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match otlp.export(std::mem::take(&mut batch)).await {
            Ok(()) => stats.exported.fetch_add(n, Ordering::Relaxed),
            Err(e) => {
                tracing::debug!(error = %e, spans = n, "span export failed");
                stats.failed.fetch_add(n, Ordering::Relaxed)
            }
        };
    }
}

fn to_span_data(s: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let status = match s.error {
        Some(msg) => Status::error(msg),
        None => Status::Unset,
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(s.trace_id),
            SpanId::from_bytes(s.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::from_bytes(s.parent_span_id),
        parent_span_is_remote: s.parent_is_remote,
        span_kind: match s.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Client => OtelKind::Client,
            SpanKind::Internal => OtelKind::Internal,
        },
        name: Cow::Borrowed(s.name),
        start_time: s.start,
        end_time: s.end,
        attributes: s.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}
