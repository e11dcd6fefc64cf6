//! Per-request observability around the HTTP data path: trace context, span, access-log entry and request metrics.
//!
//! One [`Observer`] per process, installed at start-up ([`install`]); the data path reaches it
//! through [`global`] like the metrics registry. Everything it touches per request is atomic
//! (sampler ratio, queues, counters): no locks. Attributes are only built for sampled spans.

mod metrics;

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime};

use http::{HeaderMap, Method, Request, Response, Uri, Version};
use opentelemetry::KeyValue;

use crate::accesslog::{self, AccessLog, Entry, Sink};
use crate::config::{AccessLogDest, Config};
use crate::proxy::{MESH_ERROR, ProxyBody};
use crate::state::StateHandle;
use crate::telemetry::{Direction, Metrics};
use crate::trace::{
    self, ExportConfig, Exporter, Format, Sampler, SpanKind, SpanRecord, TraceContext,
};

pub use metrics::{RequestMetrics, prometheus_text};

/// Tracing, access logging and the local workload's labels.
#[derive(Debug)]
pub struct Observer {
    pub sampler: Sampler,
    pub exporter: Exporter,
    pub access: AccessLog,
    /// The local workload's service and `version` label, for inbound metric labels.
    pub service: String,
    pub version: String,
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
            service: String::new(),
            version: String::new(),
            state: None,
        })
    })
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

/// What the request looked like before it was forwarded (cheap clones: `Bytes`-backed).
struct Head {
    method: Method,
    uri: Uri,
    authority: Option<http::HeaderValue>,
    version: Version,
}

/// The span this hop creates and the context it continues.
struct Hop {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    sampled: bool,
}

/// Runs `inner` (one proxied request) inside a span of `direction`: continues or starts a
/// trace, injects this hop's span as the parent of the next one, then records the span, an
/// access-log entry and the request metrics once the response head is known.
pub async fn observe<B, F, Fut>(
    direction: Direction,
    peer_identity: Option<&str>,
    mut req: Request<B>,
    inner: F,
) -> Response<ProxyBody>
where
    F: FnOnce(Request<B>) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
{
    // A CONNECT tunnel is opaque TCP, not a request to trace.
    if req.method() == Method::CONNECT {
        return inner(req).await;
    }
    let obs = global();
    let start = Instant::now();
    let wall = SystemTime::now();
    let incoming = trace::extract(req.headers());
    let hop = begin(&obs.sampler, incoming.as_ref());
    inject(&hop, incoming, req.headers_mut());
    let head = Head {
        method: req.method().clone(),
        uri: req.uri().clone(),
        authority: req.headers().get(http::header::HOST).cloned(),
        version: req.version(),
    };
    let rsp = inner(req).await;
    let elapsed = start.elapsed();
    let status = rsp.status().as_u16();
    let cause = cause_of(rsp.headers());
    let service = metric_service(obs, direction, &head);
    RequestMetrics::global().observe(
        direction,
        &service,
        if direction == Direction::Inbound {
            &obs.version
        } else {
            ""
        },
        status,
        elapsed,
    );
    Metrics::global().request(direction, Some(status), cause.unwrap_or(""));
    if hop.sampled && obs.exporter.enabled() {
        obs.exporter.record(span(
            direction,
            &hop,
            &head,
            &service,
            status,
            cause,
            peer_identity,
            wall,
        ));
    }
    if obs.access.wants(status, cause) {
        obs.access.log(Entry {
            time: accesslog::rfc3339(wall),
            trace_id: trace::hex_id(&hop.trace_id),
            span_id: trace::hex_id(&hop.span_id),
            direction: dir_str(direction),
            method: head.method.as_str().to_owned(),
            authority: authority(&head).to_owned(),
            path: head.uri.path().to_owned(),
            status,
            cause,
            duration_ms: elapsed.as_secs_f64() * 1e3,
            upstream: service.into_owned(),
            peer_identity: peer_identity.unwrap_or_default().to_owned(),
            tls: peer_identity.is_some(),
            ..Entry::default()
        });
    }
    rsp
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
        service: cfg.service.clone(),
        version,
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
    // Pre-parsed: a `&str` lookup parses the name on every response.
    const NAME: http::HeaderName = http::HeaderName::from_static(MESH_ERROR);
    let v = h.get(NAME)?.as_bytes();
    crate::proxy::Cause::from_name(std::str::from_utf8(v).ok()?)
}

fn authority(head: &Head) -> &str {
    head.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| head.authority.as_ref().and_then(|v| v.to_str().ok()))
        .unwrap_or("")
}

/// The `service` label: the local service inbound; outbound the destination service when
/// the snapshot knows it, else `external` (bounded cardinality either way). Borrowed: the
/// label is only copied when a span or log entry keeps it.
fn metric_service<'a>(obs: &'a Observer, direction: Direction, head: &'a Head) -> Cow<'a, str> {
    if direction == Direction::Inbound {
        return Cow::Borrowed(&obs.service);
    }
    let name = crate::outbound::service_name(authority(head));
    match &obs.state {
        Some(s) if s.load().service_key(&name).is_some() => name,
        _ => Cow::Borrowed("external"),
    }
}

fn dir_str(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

/// The finished span with OTel HTTP semantic-convention and mesh attributes.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site, all facts of one request"
)]
fn span(
    direction: Direction,
    hop: &Hop,
    head: &Head,
    service: &str,
    status: u16,
    cause: Option<&'static str>,
    peer_identity: Option<&str>,
    start: SystemTime,
) -> SpanRecord {
    let protocol = match head.version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let mut attributes = vec![
        KeyValue::new("http.request.method", head.method.as_str().to_owned()),
        KeyValue::new("url.path", head.uri.path().to_owned()),
        KeyValue::new("http.response.status_code", i64::from(status)),
        KeyValue::new("server.address", authority(head).to_owned()),
        KeyValue::new("network.protocol.version", protocol),
        KeyValue::new("mesh.tls", peer_identity.is_some()),
    ];
    if direction == Direction::Outbound {
        attributes.push(KeyValue::new("mesh.backend.service", service.to_owned()));
    }
    if let Some(id) = peer_identity {
        attributes.push(KeyValue::new("mesh.peer.identity", id.to_owned()));
    }
    if let Some(c) = cause {
        attributes.push(KeyValue::new("mesh.error.cause", c));
    }
    let (name, kind) = match direction {
        Direction::Inbound => ("inbound", SpanKind::Server),
        Direction::Outbound => ("outbound", SpanKind::Client),
    };
    SpanRecord {
        name,
        kind,
        trace_id: hop.trace_id,
        span_id: hop.span_id,
        parent_span_id: hop.parent.unwrap_or([0; 8]),
        parent_is_remote: hop.parent.is_some(),
        start,
        end: SystemTime::now(),
        attributes,
        error: (status >= 500 || cause.is_some()).then(|| cause.unwrap_or("5xx").to_owned()),
    }
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
