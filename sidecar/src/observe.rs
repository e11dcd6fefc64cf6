//! Per-request observability around the HTTP data path: trace context, span, access-log entry and request metrics.
//!
//! One [`Observer`] per process, installed at start-up ([`install`]); the data path reaches it
//! through [`global`] like the metrics registry. Everything it touches per request is atomic
//! (sampler ratio, queues, counters): no locks. Attributes are only built for sampled spans.
//! The hop ends when the response body ends ([`ObservedBody`]), so spans and the duration
//! histogram cover streaming bodies, trailers included.

mod body;
mod counters;
mod endpoints;
mod hop;
mod metrics;
mod span;
mod upstream;

use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Method, Request, Response};
use opentelemetry::KeyValue;

use crate::accesslog::{AccessLog, Sink};
use crate::balance::LbEndpoint;
use crate::config::{AccessLogDest, Config};
use crate::proxy::{MESH_ERROR, ProxyBody};
use crate::resilience::{CallError, CallInfo};
use crate::state::{Name, StateHandle};
use crate::telemetry::Direction;
use crate::trace::{self, ExportConfig, Exporter, Format, Sampler, SpanRecord, TraceContext};

pub use body::ObservedBody;
pub use counters::{TcpConn, counters, watch_certificates};
pub use metrics::{RequestMetrics, prometheus_text};
pub use upstream::{Upstream, note};

use hop::{Head, Hop, Pending};

/// Tracing, access logging and the local workload's labels.
#[derive(Debug)]
pub struct Observer {
    pub sampler: Sampler,
    pub exporter: Exporter,
    pub access: AccessLog,
    /// The local workload's service and `version` label, for inbound metric labels.
    pub service: Name,
    pub version: Name,
    /// The local workload's namespace: short names in authorities resolve within it.
    pub namespace: Name,
    /// Outbound metrics name the destination service only when the snapshot knows it, so a
    /// client dialling arbitrary hosts cannot grow the label set.
    pub state: Option<StateHandle>,
}

static GLOBAL: OnceLock<Observer> = OnceLock::new();

/// Installs the process's observer; later calls are ignored (the first one wins).
pub fn install(o: Observer) {
    let _ = GLOBAL.set(o);
}

/// The installed observer, or a disabled one (no export, no access log) before [`install`].
pub fn global() -> &'static Observer {
    static DISABLED: OnceLock<Observer> = OnceLock::new();
    GLOBAL.get().unwrap_or_else(|| {
        DISABLED.get_or_init(|| Observer {
            sampler: Sampler::new(0.0),
            exporter: Exporter::disabled(),
            access: AccessLog::disabled(),
            service: metrics::empty(),
            version: metrics::empty(),
            namespace: Name::from(mesh_proto::names::DEFAULT_NAMESPACE),
            state: None,
        })
    })
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

/// Runs `inner` (one proxied request) inside a span of `direction`: continues or starts a
/// trace, injects this hop's span as the parent of the next one, and hands the response body
/// a [`Pending`] hop that records the span, an access-log entry and the request metrics when
/// the body ends. `peer_identity` is the caller's verified SPIFFE ID (inbound mTLS).
pub async fn observe<B, F, Fut>(
    direction: Direction,
    peer_identity: Option<Name>,
    mut req: Request<B>,
    inner: F,
) -> Response<ObservedBody>
where
    F: FnOnce(Request<B>) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
{
    // A CONNECT tunnel is opaque TCP, not a request to trace.
    if req.method() == Method::CONNECT {
        return inner(req).await.map(ObservedBody::plain);
    }
    let obs = global();
    let start = Instant::now();
    let wall = SystemTime::now();
    let incoming = trace::extract(req.headers());
    let hop = begin(&obs.sampler, incoming.as_ref());
    inject(&hop, incoming, req.headers_mut());
    let head = Head::of(&req);
    // Boxed: the forwarding future is several KiB, and the task-local scope and its pin would
    // otherwise copy it whole several times per request (~18k instructions of memcpy in the
    // callgrind profile); one allocation moves a pointer instead.
    let (rsp, upstream) = upstream::scoped(Box::pin(inner(req))).await;
    let pending = Pending {
        direction,
        start,
        wall,
        head_elapsed: start.elapsed(),
        hop,
        head,
        peer_identity,
        upstream,
        status: rsp.status().as_u16(),
        cause: cause_of(rsp.headers()),
        grpc_status: grpc_status(rsp.headers()),
        bytes_out: 0,
    };
    rsp.map(|b| ObservedBody::new(b, pending))
}

/// Notes what the retry driver did (attempts, last endpoint, budget) for the current hop;
/// `mtls`: this proxy speaks mTLS to endpoints that have an identity.
pub fn note_call<B>(
    result: &Result<Response<B>, CallError>,
    members: &[Arc<LbEndpoint>],
    mtls: bool,
) {
    let info = match result {
        Ok(rsp) => rsp.extensions().get::<CallInfo>().copied(),
        Err(e) => Some(e.info),
    };
    let Some(info) = info else {
        return;
    };
    note(|u| {
        u.attempts = info.attempts;
        u.budget_exhausted = info.budget_exhausted;
        if let Some(ep) = info.endpoint.and_then(|i| members.get(i)) {
            u.endpoint = Some(ep.endpoint.addr);
            u.version = ep
                .endpoint
                .label(crate::state::Endpoint::VERSION_LABEL)
                .cloned();
            u.identity = ep.endpoint.identity.clone().filter(|_| mtls);
        }
    });
}

/// Why tracing or access logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the access log {path}: {source}")]
    AccessLog {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        endpoint: String,
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// Builds and installs the process's observer from flags: the span exporter runs on the
/// control runtime `rt` (never competing with the data path), and a task there applies the
/// control plane's Runtime ratios.
pub fn start(
    cfg: &Config,
    state: &StateHandle,
    rt: &tokio::runtime::Handle,
) -> Result<(), StartError> {
    let version = cfg.labels.get("version").cloned().unwrap_or_default();
    let exporter = match &cfg.otlp_endpoint {
        None => Exporter::disabled(),
        Some(endpoint) => {
            let resource = vec![
                KeyValue::new("service.name", cfg.service.clone()),
                KeyValue::new("service.namespace", cfg.namespace.clone()),
                KeyValue::new("service.version", version.clone()),
                KeyValue::new("mesh.proxy.id", cfg.id.clone()),
            ];
            Exporter::start(ExportConfig::new(endpoint.clone(), resource), rt).map_err(
                |source| StartError::Exporter {
                    endpoint: endpoint.clone(),
                    source,
                },
            )?
        }
    };
    let access = match &cfg.access_log {
        AccessLogDest::Off => AccessLog::disabled(),
        AccessLogDest::Stdout => AccessLog::start(Sink::Stdout, cfg.access_log_sampling),
        AccessLogDest::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| StartError::AccessLog {
                    path: path.clone(),
                    source,
                })?;
            AccessLog::start(Sink::File(file), cfg.access_log_sampling)
        }
    };
    install(Observer {
        sampler: Sampler::new(cfg.trace_sampling),
        exporter,
        access,
        service: Name::from(cfg.service_key().as_str()),
        version: Name::from(version.as_str()),
        namespace: Name::from(cfg.namespace.as_str()),
        state: Some(state.clone()),
    });
    rt.spawn(follow_runtime(state.clone()));
    Ok(())
}

/// Parent-based sampling: an incoming decision is kept; a new trace asks the ratio.
fn begin(sampler: &Sampler, incoming: Option<&TraceContext>) -> Hop {
    let trace_id = incoming.map_or_else(SpanRecord::new_trace_id, |c| c.trace_id);
    Hop {
        sampled: sampler.should_sample(incoming.map(|c| c.sampled), &trace_id),
        trace_id,
        span_id: SpanRecord::new_span_id(),
        parent: incoming.map(|c| c.span_id),
    }
}

/// Replaces the caller's context with this hop's span, in the caller's format (B3 stays B3;
/// `traceparent` is always added).
fn inject(hop: &Hop, incoming: Option<TraceContext>, headers: &mut HeaderMap) {
    let (tracestate, format) = incoming.map_or((None, Format::W3c), |c| (c.tracestate, c.format));
    trace::inject(
        &TraceContext {
            trace_id: hop.trace_id,
            span_id: hop.span_id,
            sampled: hop.sampled,
            tracestate,
            format,
        },
        headers,
    );
}

/// The proxy's own `x-mesh-error` cause, as one of the bounded set of static names.
fn cause_of(h: &HeaderMap) -> Option<&'static str> {
    let v = h.get(MESH_ERROR)?.as_bytes();
    crate::proxy::Cause::from_name(std::str::from_utf8(v).ok()?)
}

/// `grpc-status` (headers of a trailers-only response, or trailers) as a static label value;
/// codes outside 0..=16 are not gRPC's and are ignored.
fn grpc_status(h: &HeaderMap) -> Option<&'static str> {
    const CODES: [&str; 17] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];
    let v = h.get("grpc-status")?.to_str().ok()?;
    CODES.iter().find(|c| **c == v).copied()
}

/// Applies the control plane's Runtime ratios whenever the snapshot changes; runs until the
/// state handle is dropped. Off the data path (control runtime).
pub async fn follow_runtime(state: StateHandle) {
    let mut changed = state.changed();
    let mut last: Option<(f64, f64)> = None;
    loop {
        let current = state
            .load()
            .runtime
            .as_ref()
            .map(|r| (r.trace_sampling_ratio, r.access_log_ratio));
        if let Some((t, a)) = current
            && current != last
        {
            let obs = global();
            obs.sampler.set_ratio(t);
            obs.access.set_ratio(a);
            tracing::info!(trace_sampling = t, access_log = a, "runtime ratios applied");
            last = current;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "observe/tests.rs"]
mod tests;
