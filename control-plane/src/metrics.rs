//! Control-plane metrics (Prometheus text via prometheus-client): proxies, pushes, NACKs,
//! change→ACK latency and store operations.

use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TypeLabels {
    pub type_url: &'static str,
}

/// Why a discovery stream was refused: `unauthenticated` (no mesh certificate),
/// `not_bound` (the identity may not serve the service), `address_owned` (another proxy's
/// endpoint address), `revoked` (the identity was revoked).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DeniedLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StoreLabels {
    pub op: &'static str,
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connected_proxies: Gauge,
    pub pushes: Family<TypeLabels, Counter>,
    pub resources_pushed: Family<TypeLabels, Counter>,
    pub nacks: Family<TypeLabels, Counter>,
    pub push_latency: Histogram,
    pub store_ops: Family<StoreLabels, Counter>,
    pub announces_denied: Family<DeniedLabels, Counter>,
}

// === impl Metrics ===

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh_cp");
        let connected_proxies = Gauge::default();
        registry.register(
            "connected_proxies",
            "Discovery streams currently open",
            connected_proxies.clone(),
        );
        let pushes = Family::<TypeLabels, Counter>::default();
        registry.register("pushes", "Discovery responses sent", pushes.clone());
        let resources_pushed = Family::<TypeLabels, Counter>::default();
        registry.register(
            "resources_pushed",
            "Resources (updated or removed) carried by discovery responses",
            resources_pushed.clone(),
        );
        let nacks = Family::<TypeLabels, Counter>::default();
        registry.register("nacks", "Responses rejected by proxies", nacks.clone());
        // Every type at 0 from the start: the families exist (and `increase()` sees the first
        // push or NACK) before anything happened.
        for type_url in mesh_proto::type_url::ALL {
            for family in [&pushes, &resources_pushed, &nacks] {
                let _ = family.get_or_create(&TypeLabels { type_url });
            }
        }
        // 1 ms doubling to ~16 s: covers the coalescing window (tens of ms) up to a proxy
        // that is stuck applying config.
        let push_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "push_duration_seconds",
            "Time from a configuration change to the proxy's ACK of it",
            push_latency.clone(),
        );
        let store_ops = Family::<StoreLabels, Counter>::default();
        registry.register("store_ops", "Durable store transactions", store_ops.clone());
        let announces_denied = Family::<DeniedLabels, Counter>::default();
        registry.register(
            "announces_denied",
            "Discovery streams refused before registering anything, by reason",
            announces_denied.clone(),
        );
        for reason in ["unauthenticated", "not_bound", "address_owned", "revoked"] {
            let _ = announces_denied.get_or_create(&DeniedLabels { reason });
        }
        registry.register_collector(Box::new(SpanDrops));
        Self {
            registry,
            connected_proxies,
            pushes,
            resources_pushed,
            nacks,
            push_latency,
            store_ops,
            announces_denied,
        }
    }

    pub fn denied(&self, reason: &'static str) {
        self.announces_denied
            .get_or_create(&DeniedLabels { reason })
            .inc();
    }

    pub fn store_op(&self, op: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.store_ops
            .get_or_create(&StoreLabels { op, result })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        prometheus_text(&out)
    }
}

/// Control-plane spans dropped because the export queue was full (crate::otel).
#[derive(Debug)]
struct SpanDrops;

impl Collector for SpanDrops {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let n = crate::otel::global().dropped.load(Ordering::Relaxed);
        let m = encoder.encode_descriptor(
            "trace_spans_dropped",
            "Control-plane spans dropped because the export queue was full",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(n).encode(m)
    }
}

/// Names counter families the way the Prometheus text format (and `promtool check metrics`)
/// expects: OpenMetrics puts `# HELP`/`# TYPE` on `x` while the samples are `x_total`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let (name, tail) = line.strip_prefix(prefix)?.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
