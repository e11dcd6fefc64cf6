//! Request counter and latency histogram (bounded labels) and the trace/access-log drop counters, registered into the sidecar's registry.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::Name;
use crate::telemetry::Direction;

/// A label value sharing the snapshot's interned name: building a label set clones
/// reference counts, never strings.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Label(pub Name);

impl EncodeLabelValue for Label {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        std::fmt::Write::write_str(e, &self.0)
    }
}

/// The empty label value (no route matched, no version label), shared.
pub fn empty() -> Name {
    static EMPTY: OnceLock<Name> = OnceLock::new();
    EMPTY.get_or_init(|| Name::from("")).clone()
}

/// The `service` of outbound requests to hosts the mesh does not know.
pub fn external() -> Name {
    static EXTERNAL: OnceLock<Name> = OnceLock::new();
    EXTERNAL.get_or_init(|| Name::from("external")).clone()
}

/// Labels of `mesh_requests_total`. Bounded: services and routes come from the config
/// snapshot (unknown hosts are `external`), causes and gRPC codes are fixed vocabularies; no
/// paths, no endpoints.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    service: Label,
    route: Label,
    version: Label,
    /// `2xx`, `5xx`, …
    status_class: &'static str,
    /// The `x-mesh-error` cause when the proxy answered itself, else empty.
    cause: &'static str,
    /// The gRPC status code for gRPC requests, else empty.
    grpc_status: &'static str,
}

/// Labels of `mesh_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    direction: Direction,
    service: Label,
    route: Label,
    version: Label,
    status_class: &'static str,
}

type Hist = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// One finished request, as the metrics see it.
#[derive(Debug)]
pub struct Request {
    pub direction: Direction,
    /// Inbound: the local service; outbound: the destination service (or `external`).
    pub service: Name,
    pub route: Name,
    /// Inbound: the local workload's version; outbound: the chosen endpoint's.
    pub version: Name,
    pub status: u16,
    pub cause: &'static str,
    pub grpc_status: &'static str,
}

/// Per-request metrics owned by the observe layer.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Hist,
}

impl RequestMetrics {
    pub fn global() -> &'static RequestMetrics {
        static GLOBAL: OnceLock<RequestMetrics> = OnceLock::new();
        GLOBAL.get_or_init(|| RequestMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(buckets as fn() -> Histogram),
        })
    }

    /// Registers the families, the drop counters and the process-wide counters into
    /// `registry` (prefix `mesh`).
    pub fn register(registry: &mut Registry) {
        registry.register(
            "requests",
            "HTTP requests handled, by direction, service, route, version, status class, cause and gRPC status",
            Self::global().requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request duration until the response body ends, by direction, service, route, version and status class",
            Self::global().duration.clone(),
        );
        registry.register_collector(Box::new(Drops));
        super::counters::register(registry);
        registry.register_collector(Box::new(super::endpoints::Endpoints));
    }

    pub fn observe(&self, r: &Request, elapsed: Duration) {
        let status_class = status_class(r.status);
        let found = HANDLES.with_borrow(|cached| {
            cached
                .iter()
                .find(|c| c.matches(r, status_class))
                .map(|c| (c.counter.clone(), c.hist.clone()))
        });
        let (counter, hist) = match found {
            Some(handles) => handles,
            None => {
                let handles = self.handles(r, status_class);
                HANDLES.with_borrow_mut(|cached| {
                    if cached.len() < CACHED {
                        cached.push(Cached {
                            direction: r.direction,
                            service: r.service.clone(),
                            route: r.route.clone(),
                            version: r.version.clone(),
                            status_class,
                            cause: r.cause,
                            grpc_status: r.grpc_status,
                            counter: handles.0.clone(),
                            hist: handles.1.clone(),
                        });
                    }
                });
                handles
            }
        };
        counter.inc();
        hist.observe(elapsed.as_secs_f64());
    }

    /// The families' counter and histogram for `r`'s label sets (hashed, under each family's lock).
    fn handles(&self, r: &Request, status_class: &'static str) -> (Counter, Histogram) {
        let counter = self
            .requests
            .get_or_create(&RequestLabels {
                direction: r.direction,
                service: Label(r.service.clone()),
                route: Label(r.route.clone()),
                version: Label(r.version.clone()),
                status_class,
                cause: r.cause,
                grpc_status: r.grpc_status,
            })
            .clone();
        let hist = self
            .duration
            .get_or_create(&DurationLabels {
                direction: r.direction,
                service: Label(r.service.clone()),
                route: Label(r.route.clone()),
                version: Label(r.version.clone()),
                status_class,
            })
            .clone();
        (counter, hist)
    }
}

/// A thread keeps at most this many label sets' handles; label sets are bounded (see
/// [`RequestLabels`]), and 64 covers a sidecar's usual services × routes × versions × status
/// classes. Beyond it a request asks the families, as without the cache.
const CACHED: usize = 64;

thread_local! {
    /// Handles of the label sets this thread has used: a request finds its counter and
    /// histogram by comparing borrowed labels (interned names compare by pointer first)
    /// instead of building two label sets, SipHashing them and taking each family's lock.
    /// The handles share their values with the families (`Arc`s), so `/metrics` sees every
    /// increment.
    static HANDLES: RefCell<Vec<Cached>> = const { RefCell::new(Vec::new()) };
}

/// One cached label set of [`RequestLabels`] (the duration labels are a subset of it).
struct Cached {
    direction: Direction,
    service: Name,
    route: Name,
    version: Name,
    status_class: &'static str,
    cause: &'static str,
    grpc_status: &'static str,
    counter: Counter,
    hist: Histogram,
}

impl Cached {
    fn matches(&self, r: &Request, status_class: &'static str) -> bool {
        fn same(a: &Name, b: &Name) -> bool {
            std::sync::Arc::ptr_eq(a, b) || a == b
        }
        self.direction == r.direction
            && self.status_class == status_class
            && self.cause == r.cause
            && self.grpc_status == r.grpc_status
            && same(&self.service, &r.service)
            && same(&self.route, &r.route)
            && same(&self.version, &r.version)
    }
}

/// 1 ms doubling to ~16 s: covers loopback hops through slow upstreams and timeouts.
fn buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// Spans and access-log entries dropped because their bounded queue was full.
#[derive(Debug)]
struct Drops;

impl Collector for Drops {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let obs = super::global();
        for (name, help, n) in [
            (
                "trace_spans_dropped",
                "Spans dropped because the export queue was full",
                obs.exporter.stats().dropped.load(Relaxed),
            ),
            (
                "trace_spans_export_failed",
                "Spans lost because their export call failed (collector down or refusing)",
                obs.exporter.stats().failed.load(Relaxed),
            ),
            (
                "access_log_dropped",
                "Access-log entries dropped because the writer queue was full",
                obs.access.dropped.load(Relaxed),
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(n).encode(metric)?;
        }
        Ok(())
    }
}

/// Names counter families the way the Prometheus text format (and `promtool check metrics`)
/// expects: OpenMetrics puts `# HELP`/`# TYPE` on `x` while the samples are `x_total`, which
/// promtool reports as "no help text". Only HELP/TYPE lines of counters change.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}
