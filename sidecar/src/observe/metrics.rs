//! Request latency histogram and the trace/access-log drop counters, registered into the sidecar's registry.

use std::sync::OnceLock;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::Direction;

/// Bounded labels only: no paths, no endpoints.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    direction: Direction,
    service: String,
    version: String,
    status_class: &'static str,
}

type Hist = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// Per-request metrics owned by the observe layer.
#[derive(Debug)]
pub struct RequestMetrics {
    duration: Hist,
}

impl RequestMetrics {
    pub fn global() -> &'static RequestMetrics {
        static GLOBAL: OnceLock<RequestMetrics> = OnceLock::new();
        GLOBAL.get_or_init(|| RequestMetrics {
            duration: Family::new_with_constructor(buckets as fn() -> Histogram),
        })
    }

    /// Registers the histogram and the drop counters into `registry` (prefix `mesh`).
    pub fn register(registry: &mut Registry) {
        registry.register(
            "request_duration_seconds",
            "Request duration until the response head, by direction, service, version and status class",
            Self::global().duration.clone(),
        );
        registry.register_collector(Box::new(Drops));
    }

    pub fn observe(
        &self,
        direction: Direction,
        service: &str,
        version: &str,
        status: u16,
        elapsed: Duration,
    ) {
        let class = status_class(status);
        let secs = elapsed.as_secs_f64();
        // The label set of nearly every request is one of a handful: look its histogram up in a
        // per-thread list by borrowed labels (no label Strings built, no hashing, no family
        // lock); the family is asked only on a miss. Handles share the family's histogram.
        HANDLES.with_borrow_mut(|handles| {
            if let Some((_, h)) = handles.iter().find(|(l, _)| {
                l.direction == direction
                    && l.status_class == class
                    && l.service == service
                    && l.version == version
            }) {
                h.observe(secs);
                return;
            }
            let labels = DurationLabels {
                direction,
                service: service.to_owned(),
                version: version.to_owned(),
                status_class: class,
            };
            let h = self.duration.get_or_create(&labels).clone();
            h.observe(secs);
            if handles.len() < MAX_HANDLES {
                handles.push((labels, h));
            }
        });
    }
}

/// Label sets remembered per thread. 32: a sidecar talks to a few services in a few status
/// classes; past that the linear scan would cost more than the family lookup it saves, so
/// further sets just use the family.
const MAX_HANDLES: usize = 32;

thread_local! {
    static HANDLES: std::cell::RefCell<Vec<(DurationLabels, Histogram)>> =
        const { std::cell::RefCell::new(Vec::new()) };
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
