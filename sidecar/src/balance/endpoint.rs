//! A balanced endpoint (config + live stats) and the RAII guard that counts a request on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use super::stats::{EndpointStats, now_ns};
use crate::state::{Cluster, Endpoint, OutlierDetection};

/// An endpoint as the balancers see it.
#[derive(Debug)]
pub struct LbEndpoint {
    pub endpoint: Endpoint,
    /// `addr` as a URI authority, built once so requests only clone it.
    pub authority: http::uri::Authority,
    pub stats: Arc<EndpointStats>,
    pub(crate) outlier: Option<Arc<Outlier>>,
    /// Requests in flight on the whole service (for the `max_requests` circuit breaker).
    service_in_flight: Arc<AtomicU32>,
    /// The cluster in force for the endpoint's service: how it is dialled (connect and idle
    /// timeouts, pending limit) by paths that hold only the endpoint.
    cluster: Arc<Cluster>,
}

/// Outlier-detection settings of a service and the stats of all its endpoints (to cap ejections).
#[derive(Debug)]
pub struct Outlier {
    pub cfg: OutlierDetection,
    members: Vec<Arc<EndpointStats>>,
}

/// How a request on an endpoint ended, for the latency estimate and outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status arrived.
    Status(u16),
    /// Connect failure or reset: a gateway error.
    Failed,
}

/// Counts one request in flight on an endpoint; dropping it without [`InFlight::finish`]
/// (a cancelled request) just releases the count.
#[derive(Debug)]
#[must_use = "dropping the guard ends the request at once"]
pub struct InFlight {
    ep: Arc<LbEndpoint>,
    started_ns: u64,
}

// === impl LbEndpoint ===

impl LbEndpoint {
    pub(crate) fn new(
        endpoint: Endpoint,
        stats: Arc<EndpointStats>,
        outlier: Option<Arc<Outlier>>,
        service_in_flight: Arc<AtomicU32>,
        cluster: Arc<Cluster>,
    ) -> Self {
        // A socket address always formats as a valid authority (`ip:port`, `[v6]:port`).
        let authority = http::uri::Authority::try_from(endpoint.addr.to_string())
            .unwrap_or_else(|_| http::uri::Authority::from_static("invalid"));
        Self {
            endpoint,
            authority,
            stats,
            outlier,
            service_in_flight,
            cluster,
        }
    }

    /// The cluster of the endpoint's service.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Starts a request on this endpoint.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.stats.start();
        self.service_in_flight.fetch_add(1, Relaxed);
        InFlight {
            ep: self.clone(),
            started_ns: now_ns(),
        }
    }

    /// True when this endpoint may take new requests right now: not ejected by outlier
    /// detection and not failing active health checks.
    pub fn available(&self, now: u64) -> bool {
        !self.stats.is_ejected(now) && !self.stats.health_down()
    }
}

// === impl Outlier ===

impl Outlier {
    pub(crate) fn new(cfg: OutlierDetection, members: Vec<Arc<EndpointStats>>) -> Self {
        Self { cfg, members }
    }

    fn record(&self, stats: &EndpointStats, outcome: Outcome, now: u64) {
        let gateway = matches!(outcome, Outcome::Failed | Outcome::Status(502..=504));
        let server_error = matches!(outcome, Outcome::Failed | Outcome::Status(500..=599));
        if !server_error {
            stats.success();
            return;
        }
        let n = stats.failure();
        let limit = if gateway {
            self.cfg
                .consecutive_gateway_failures
                .min(self.cfg.consecutive_5xx)
        } else {
            self.cfg.consecutive_5xx
        };
        if n < limit || stats.is_ejected(now) {
            return;
        }
        // Never eject past max_ejection_percent (at least one may go): the rest must carry the
        // load. Counting is O(endpoints) but only runs when a failure streak hits the limit.
        let total = self.members.len() as u32;
        let cap = (total * self.cfg.max_ejection_percent / 100).max(1);
        let ejected = self.members.iter().filter(|m| m.is_ejected(now)).count() as u32;
        if ejected >= cap {
            return;
        }
        // Ejection time grows with each ejection of the same endpoint (capped at 10×), like
        // Envoy's, so a flapping endpoint stays out longer.
        let times = u64::from(stats.ejection_count() + 1).min(10);
        stats.eject_until(now + self.cfg.base_ejection.as_nanos() as u64 * times);
        stats.success();
    }
}

// === impl InFlight ===

impl InFlight {
    pub fn endpoint(&self) -> &Arc<LbEndpoint> {
        &self.ep
    }

    /// Records how the request ended: latency, error penalty (5xx, 429, failures), outliers.
    pub fn finish(self, outcome: Outcome) {
        let now = now_ns();
        let failed = matches!(outcome, Outcome::Failed | Outcome::Status(429 | 500..=599));
        let rtt = Duration::from_nanos(now.saturating_sub(self.started_ns));
        self.ep.stats.observe(rtt, failed, now);
        if let Some(o) = &self.ep.outlier {
            o.record(&self.ep.stats, outcome, now);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.ep.stats.end();
        self.ep.service_in_flight.fetch_sub(1, Relaxed);
    }
}
