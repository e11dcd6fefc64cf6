//! The batching OTLP/gRPC export task behind the control plane's span queue.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
use tokio::sync::mpsc;

use super::SpanRecord;

/// Spans per export call: 256 keeps one OTLP request far below gRPC's 4 MiB default.
const BATCH: usize = 256;
/// Longest a span waits for its batch: 500 ms keeps traces fresh for an operator.
const INTERVAL: Duration = Duration::from_millis(500);
/// One export call's limit, so a hung collector cannot stall the task forever.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The OTLP exporter could not be built (bad endpoint).
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct ExportError(#[from] opentelemetry_otlp::ExporterBuildError);

/// Builds the exporter and spawns the batching task on the current runtime.
pub(super) fn start(
    endpoint: &str,
    resource: Vec<KeyValue>,
    rx: mpsc::Receiver<SpanRecord>,
) -> Result<(), ExportError> {
    let mut otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_owned())
        .with_timeout(TIMEOUT)
        .build()?;
    otlp.set_resource(&Resource::builder_empty().with_attributes(resource).build());
    tokio::spawn(run(otlp, rx));
    Ok(())
}

async fn run(otlp: opentelemetry_otlp::SpanExporter, mut rx: mpsc::Receiver<SpanRecord>) {
    let scope = InstrumentationScope::builder("mesh-control-plane").build();
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(to_span_data(first, &scope));
        let deadline = tokio::time::Instant::now() + INTERVAL;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(s)) => batch.push(to_span_data(s, &scope)),
                Ok(None) | Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match otlp.export(std::mem::take(&mut batch)).await {
            Ok(()) => {
                super::global().exported.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(error = %e, spans = n, "span export failed"),
        }
    }
}

fn random_id<const N: usize>() -> [u8; N] {
    loop {
        let id: [u8; N] = rand::random();
        if id != [0; N] {
            return id;
        }
    }
}

fn to_span_data(s: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(random_id()),
            SpanId::from_bytes(random_id()),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: SpanId::INVALID,
        parent_span_is_remote: false,
        span_kind: if s.server {
            SpanKind::Server
        } else {
            SpanKind::Producer
        },
        name: Cow::Borrowed(s.name),
        start_time: s.start,
        end_time: s.end,
        attributes: s.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: s.error.map_or(Status::Unset, Status::error),
        instrumentation_scope: scope.clone(),
    }
}
