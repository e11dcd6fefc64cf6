//! A finished span as the data path records it: plain data, cheap to build and to queue.

use std::time::SystemTime;

use opentelemetry::KeyValue;

/// Server (inbound) or client (outbound) side of a hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    Server,
    Client,
    Internal,
}

#[derive(Clone, Debug)]
pub struct SpanRecord {
    pub name: &'static str,
    pub kind: SpanKind,
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// All zero for a root span.
    pub parent_span_id: [u8; 8],
    pub parent_is_remote: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set when the proxy generated an error (the `x-mesh-error` cause) or the status is 5xx.
    pub error: Option<String>,
}

impl SpanRecord {
    /// A fresh random span id (never all zero).
    pub fn new_span_id() -> [u8; 8] {
        loop {
            let id: [u8; 8] = rand::random();
            if id != [0; 8] {
                return id;
            }
        }
    }

    /// A fresh random trace id (never all zero).
    pub fn new_trace_id() -> [u8; 16] {
        loop {
            let id: [u8; 16] = rand::random();
            if id != [0; 16] {
                return id;
            }
        }
    }
}
