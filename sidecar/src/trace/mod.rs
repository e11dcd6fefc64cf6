//! Distributed tracing: context propagation (W3C, B3), parent-based sampling, span records and
//! a bounded, never-blocking OTLP export queue.
//!
//! The data path builds a [`SpanRecord`] when a request finishes and hands it to
//! [`Exporter::record`], which never blocks: when the queue is full the span is dropped and
//! counted. A task on the control runtime batches records and exports them with
//! `opentelemetry-otlp` over gRPC.

mod export;
mod propagation;
mod sampler;
mod span;

pub use export::{ExportConfig, Exporter, ExporterStats};
pub use propagation::{Format, TraceContext, extract, hex as hex_id, inject};
pub use sampler::Sampler;
pub use span::{SpanKind, SpanRecord};
