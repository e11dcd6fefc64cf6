//! Metric families and tracing setup.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, reload};

/// Which listener a request came through.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Labels of `mesh_requests_total`. `cause` is the `x-mesh-error` cause when the proxy made the
/// response itself, else empty; causes are a fixed vocabulary, so the series count stays bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: Direction,
    /// `2xx`, `5xx`, …; `none` when no HTTP status exists (opaque TCP, reset).
    pub status_class: &'static str,
    pub cause: &'static str,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, e: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        e.write_str(match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        })
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    type_url: &'static str,
}

/// Every metric the sidecar exports. Shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    discovery_connected: Gauge,
    discovery_reconnects: Counter,
    acks: Family<TypeLabel, Counter>,
    nacks: Family<TypeLabel, Counter>,
    last_ack_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_ack: parking_lot::Mutex<Option<Instant>>,
}

/// Exports the data path's process-wide error counts (`proxy::Cause`) at scrape time.
#[derive(Debug)]
struct ProxyErrors;

/// The process's metrics, for code that has no handle plumbed to it.
static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The process-wide instance (the binary's `/metrics`). Tests that need isolated counts
    /// use [`Metrics::new`].
    pub fn global() -> &'static Arc<Metrics> {
        GLOBAL.get_or_init(|| Arc::new(Metrics::new()))
    }

    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mesh");
        registry.register_collector(Box::new(ProxyErrors));
        crate::observe::RequestMetrics::register(&mut registry);
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests (HTTP) or connections (TCP) handled, by direction, status class and cause",
            requests.clone(),
        );
        let discovery_connected = Gauge::default();
        registry.register(
            "discovery_connected",
            "1 while the discovery stream to the control plane is up",
            discovery_connected.clone(),
        );
        let discovery_reconnects = Counter::default();
        registry.register(
            "discovery_reconnects",
            "Discovery stream (re)connection attempts after the first",
            discovery_reconnects.clone(),
        );
        let acks = Family::<TypeLabel, Counter>::default();
        registry.register(
            "discovery_acks",
            "Discovery responses applied and acknowledged",
            acks.clone(),
        );
        let nacks = Family::<TypeLabel, Counter>::default();
        registry.register(
            "discovery_nacks",
            "Discovery responses rejected (the previous config stayed in force)",
            nacks.clone(),
        );
        let last_ack_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "discovery_last_ack_age_seconds",
            "Seconds since the last ACK sent to the control plane; -1 before the first",
            last_ack_age.clone(),
        );
        Self {
            registry,
            requests,
            discovery_connected,
            discovery_reconnects,
            acks,
            nacks,
            last_ack_age,
            last_ack: parking_lot::Mutex::new(None),
        }
    }

    /// Counts one request or connection.
    pub fn request(&self, direction: Direction, status: Option<u16>, cause: &'static str) {
        let status_class = match status {
            Some(100..=199) => "1xx",
            Some(200..=299) => "2xx",
            Some(300..=399) => "3xx",
            Some(400..=499) => "4xx",
            Some(500..=599) => "5xx",
            _ => "none",
        };
        let labels = RequestLabels {
            direction,
            status_class,
            cause,
        };
        // The per-thread handles below belong to the global instance (tests build others).
        if !std::ptr::eq(self, &**Self::global()) {
            self.requests.get_or_create(&labels).inc();
            return;
        }
        // A per-thread list of counter handles for the few label sets seen (compared by
        // value, no hashing, no family lock); the family is asked only on a miss. Handles
        // share the family's counters.
        thread_local! {
            static HANDLES: std::cell::RefCell<Vec<(RequestLabels, Counter)>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        // 32 label sets: more than the usual handful (two directions × a few classes and
        // causes); beyond it the family lookup is used directly.
        const MAX_HANDLES: usize = 32;
        HANDLES.with_borrow_mut(|handles| {
            if let Some((_, c)) = handles.iter().find(|(l, _)| *l == labels) {
                c.inc();
                return;
            }
            let c = self.requests.get_or_create(&labels).clone();
            c.inc();
            if handles.len() < MAX_HANDLES {
                handles.push((labels, c));
            }
        });
    }

    pub fn set_discovery_connected(&self, up: bool) {
        self.discovery_connected.set(i64::from(up));
    }

    pub fn discovery_reconnect(&self) {
        self.discovery_reconnects.inc();
    }

    pub fn ack(&self, type_url: &'static str) {
        self.acks.get_or_create(&TypeLabel { type_url }).inc();
        *self.last_ack.lock() = Some(Instant::now());
    }

    pub fn nack(&self, type_url: &'static str) {
        self.nacks.get_or_create(&TypeLabel { type_url }).inc();
    }

    /// ACKs counted so far for `type_url` (for tests and the admin page).
    pub fn acks(&self, type_url: &'static str) -> u64 {
        self.acks.get_or_create(&TypeLabel { type_url }).get()
    }

    pub fn nacks(&self, type_url: &'static str) -> u64 {
        self.nacks.get_or_create(&TypeLabel { type_url }).get()
    }

    /// The Prometheus text exposition of every family.
    pub fn encode(&self) -> String {
        let age = self
            .last_ack
            .lock()
            .map_or(-1.0, |t| t.elapsed().as_secs_f64());
        self.last_ack_age.set(age);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Encoding into a String cannot fail; keep the page usable if it ever does.
            let _ = writeln!(out, "# encoding failed");
        }
        crate::observe::prometheus_text(&out)
    }
}

// === impl ProxyErrors ===

impl Collector for ProxyErrors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(
            "proxy_errors",
            "Responses and connections the proxy answered itself, by x-mesh-error cause",
            None,
            MetricType::Counter,
        )?;
        for (cause, n) in crate::proxy::Cause::counts() {
            let labels = [("cause", cause.as_str())];
            ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Changes the tracing filter of a running process (`/logging?level=`).
#[derive(Clone)]
pub struct LogControl {
    handle: Option<reload::Handle<EnvFilter, tracing_subscriber::Registry>>,
    current: Arc<parking_lot::Mutex<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("bad tracing filter {filter:?}: {reason}")]
    BadFilter { filter: String, reason: String },
    #[error("this process's tracing subscriber cannot be reloaded")]
    NotReloadable,
}

// === impl LogControl ===

impl LogControl {
    /// Installs the global subscriber (fmt to stderr) with a reloadable filter. When a global
    /// subscriber already exists (several sidecars in one test process) the returned control
    /// only records the filter.
    pub fn init(filter: &str) -> Result<Self, LogError> {
        let env_filter = parse_filter(filter)?;
        let (layer, handle) = reload::Layer::new(env_filter);
        let installed = tracing_subscriber::registry()
            .with(layer)
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init()
            .is_ok();
        Ok(Self {
            handle: installed.then_some(handle),
            current: Arc::new(parking_lot::Mutex::new(filter.to_string())),
        })
    }

    /// A control that changes nothing (embedding without a global subscriber).
    pub fn detached(filter: &str) -> Self {
        Self {
            handle: None,
            current: Arc::new(parking_lot::Mutex::new(filter.to_string())),
        }
    }

    /// The filter in force.
    pub fn current(&self) -> String {
        self.current.lock().clone()
    }

    /// Replaces the filter; a bad filter changes nothing.
    pub fn set(&self, filter: &str) -> Result<(), LogError> {
        let env_filter = parse_filter(filter)?;
        if let Some(handle) = &self.handle {
            handle
                .reload(env_filter)
                .map_err(|_| LogError::NotReloadable)?;
        }
        *self.current.lock() = filter.to_string();
        tracing::info!(filter, "log filter changed");
        Ok(())
    }
}

impl std::fmt::Debug for LogControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogControl")
            .field("current", &*self.current.lock())
            .field("reloadable", &self.handle.is_some())
            .finish()
    }
}

fn parse_filter(filter: &str) -> Result<EnvFilter, LogError> {
    let bad = |reason: String| LogError::BadFilter {
        filter: filter.to_string(),
        reason,
    };
    if filter.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    EnvFilter::try_new(filter).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exported() {
        let m = Metrics::new();
        m.request(Direction::Outbound, Some(503), "no-endpoints");
        m.request(Direction::Inbound, None, "");
        m.ack("mesh.types.v1.Listener");
        m.nack("mesh.types.v1.Route");
        m.set_discovery_connected(true);
        let text = m.encode();
        for needle in [
            "mesh_requests_total{direction=\"outbound\",status_class=\"5xx\",cause=\"no-endpoints\"} 1",
            "mesh_requests_total{direction=\"inbound\",status_class=\"none\",cause=\"\"} 1",
            "mesh_discovery_connected 1",
            "mesh_discovery_acks_total{type_url=\"mesh.types.v1.Listener\"} 1",
            "mesh_discovery_nacks_total{type_url=\"mesh.types.v1.Route\"} 1",
            "mesh_discovery_last_ack_age_seconds",
            "mesh_proxy_errors_total{cause=\"no-route\"}",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    #[test]
    fn bad_filter_changes_nothing() {
        let c = LogControl::detached("info");
        assert!(c.set("debug,[").is_err());
        assert_eq!(c.current(), "info");
        c.set("debug").unwrap();
        assert_eq!(c.current(), "debug");
    }
}
