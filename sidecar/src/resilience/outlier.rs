//! Outlier detection, on by default: ejects endpoints after consecutive failures or a high failure share, re-admits them after a growing ejection time.
//!
//! Per-endpoint state is a handful of atomics indexed by the endpoint's position in the
//! cluster's endpoint list, so the balancer's `is_ejected(idx)` is one atomic load and a
//! clock read. Re-admission is lazy: the first check after the ejection time clears it and
//! puts the endpoint on probation (its next failure ejects it again, for longer), so the
//! next request is the probe. The failure-percentage window is swept by whichever report
//! first sees the interval roll over (one CAS winner, O(endpoints) once per interval).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::retry::Outcome;

/// Envoy's default: five failures in a row from one endpoint while its peers succeed is a
/// strong signal, yet an occasional 5xx burst of an overloaded app does not eject it.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;

/// Lower than the 5xx threshold: connect refused / reset / 502-504 say the endpoint (not
/// the request) is broken, and a healthy endpoint almost never produces three in a row; a
/// dead endpoint is out after three requests instead of five.
pub const DEFAULT_CONSECUTIVE_GATEWAY: u32 = 3;

/// Catches endpoints that fail most requests but succeed often enough to reset the
/// consecutive counters. 80 % keeps well clear of clusters having a bad day overall (which
/// the max-ejection cap protects too).
pub const DEFAULT_FAILURE_PERCENTAGE: u32 = 80;

/// Below 20 requests per interval a failure share is noise.
pub const DEFAULT_FAILURE_PERCENTAGE_MIN_REQUESTS: u32 = 20;

/// Envoy's default sweep interval for the failure-percentage window.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Envoy's default: long enough for a restarting pod to come back, short enough that a
/// transient failure costs half a minute of capacity.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);

/// Repeated ejections grow linearly (base × count) up to five minutes (Envoy's default).
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);

/// At most half of the endpoints are ejected, so a cluster-wide problem (a bad deploy, a
/// dependency outage) does not pile all traffic onto a few survivors.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 50;

/// Outlier detection parameters (per cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierConfig {
    pub enabled: bool,
    /// Consecutive failures (5xx or gateway) that eject; 0 = off.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures that eject; 0 = off.
    pub consecutive_gateway: u32,
    /// Failure share (percent) over an interval that ejects; 0 = off.
    pub failure_percentage: u32,
    pub failure_percentage_min_requests: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub max_ejection_percent: u32,
}

/// Outlier state of one cluster's endpoints.
#[derive(Debug)]
pub struct OutlierDetector {
    cfg: OutlierConfig,
    start: Instant,
    endpoints: Box<[EndpointStats]>,
    ejected: AtomicU32,
    /// The interval number the failure-percentage window belongs to.
    window: AtomicU64,
    ejections_total: AtomicU64,
    ejections_refused: AtomicU64,
}

#[derive(Debug, Default)]
struct EndpointStats {
    consecutive_failures: AtomicU32,
    consecutive_gateway: AtomicU32,
    window_requests: AtomicU32,
    window_failures: AtomicU32,
    /// Milliseconds since `start` (+1) until which the endpoint is ejected; 0 = not ejected.
    ejected_until: AtomicU64,
    /// Ejection multiplier: grows with each ejection, decays by one per healthy interval.
    ejections: AtomicU32,
}

// === impl OutlierConfig ===

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            enabled: true,
            consecutive_5xx: DEFAULT_CONSECUTIVE_5XX,
            consecutive_gateway: DEFAULT_CONSECUTIVE_GATEWAY,
            failure_percentage: DEFAULT_FAILURE_PERCENTAGE,
            failure_percentage_min_requests: DEFAULT_FAILURE_PERCENTAGE_MIN_REQUESTS,
            interval: DEFAULT_INTERVAL,
            base_ejection: DEFAULT_BASE_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
        }
    }
}

impl OutlierConfig {
    /// Detection switched off.
    pub fn disabled() -> Self {
        OutlierConfig {
            enabled: false,
            ..Default::default()
        }
    }
}

// === impl OutlierDetector ===

impl OutlierDetector {
    /// State for a cluster of `endpoints` endpoints, none ejected.
    pub fn new(cfg: OutlierConfig, endpoints: usize) -> Self {
        OutlierDetector {
            cfg,
            start: Instant::now(),
            endpoints: (0..endpoints).map(|_| EndpointStats::default()).collect(),
            ejected: AtomicU32::new(0),
            window: AtomicU64::new(0),
            ejections_total: AtomicU64::new(0),
            ejections_refused: AtomicU64::new(0),
        }
    }

    /// Number of endpoints tracked.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when no endpoints are tracked.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// True while endpoint `idx` is ejected. Cheap: one atomic load in the common case.
    pub fn is_ejected(&self, idx: usize) -> bool {
        let Some(ep) = self.endpoints.get(idx) else {
            return false;
        };
        let until = ep.ejected_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        let now = self.now_ms();
        if now < until {
            return true;
        }
        self.readmit(ep, until);
        false
    }

    /// Endpoints currently ejected.
    pub fn ejected_count(&self) -> u32 {
        self.ejected.load(Ordering::Acquire)
    }

    /// Ejections so far.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Ejections refused by the max-ejection cap.
    pub fn ejections_refused(&self) -> u64 {
        self.ejections_refused.load(Ordering::Relaxed)
    }

    /// Records the outcome of one attempt at endpoint `idx`.
    pub fn report(&self, idx: usize, outcome: &Outcome) {
        if !self.cfg.enabled {
            return;
        }
        let Some(ep) = self.endpoints.get(idx) else {
            return;
        };
        let now = self.now_ms();
        self.maybe_sweep(now);
        ep.window_requests.fetch_add(1, Ordering::Relaxed);
        if !outcome.is_failure() {
            // Stores only when needed: a healthy endpoint's counters stay in shared cache state.
            if ep.consecutive_failures.load(Ordering::Relaxed) != 0 {
                ep.consecutive_failures.store(0, Ordering::Relaxed);
            }
            if ep.consecutive_gateway.load(Ordering::Relaxed) != 0 {
                ep.consecutive_gateway.store(0, Ordering::Relaxed);
            }
            return;
        }
        ep.window_failures.fetch_add(1, Ordering::Relaxed);
        let failures = ep.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        let gateway = if outcome.is_gateway_failure() {
            ep.consecutive_gateway.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            ep.consecutive_gateway.store(0, Ordering::Relaxed);
            0
        };
        let hit = |threshold: u32, n: u32| threshold != 0 && n >= threshold;
        if hit(self.cfg.consecutive_5xx, failures) || hit(self.cfg.consecutive_gateway, gateway) {
            self.eject(ep, now);
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// How many endpoints may be ejected at once: the percentage of the cluster, at least
    /// one, but never all of them.
    fn max_ejected(&self) -> u32 {
        let n = self.endpoints.len() as u32;
        if n <= 1 || self.cfg.max_ejection_percent == 0 {
            return 0;
        }
        (n * self.cfg.max_ejection_percent / 100).clamp(1, n - 1)
    }

    fn eject(&self, ep: &EndpointStats, now: u64) {
        loop {
            let cur = ep.ejected_until.load(Ordering::Acquire);
            if cur != 0 && now < cur {
                return; // already ejected
            }
            // An expired ejection not yet re-admitted still holds its slot in the count.
            let needs_slot = cur == 0;
            if needs_slot && !self.claim_slot() {
                self.ejections_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let multiplier = ep.ejections.load(Ordering::Acquire).saturating_add(1);
            let time = self
                .cfg
                .base_ejection
                .saturating_mul(multiplier)
                .min(self.cfg.max_ejection);
            let until = now + (time.as_millis() as u64).max(1);
            match ep
                .ejected_until
                .compare_exchange(cur, until, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    ep.ejections.store(multiplier, Ordering::Release);
                    ep.consecutive_failures.store(0, Ordering::Relaxed);
                    ep.consecutive_gateway.store(0, Ordering::Relaxed);
                    self.ejections_total.fetch_add(1, Ordering::Relaxed);
                    crate::observe::counters().outlier_ejection();
                    tracing::debug!(ejections = multiplier, ?time, "endpoint ejected");
                    return;
                }
                Err(_) if needs_slot => {
                    self.ejected.fetch_sub(1, Ordering::AcqRel);
                }
                Err(_) => {}
            }
        }
    }

    fn claim_slot(&self) -> bool {
        let max = self.max_ejected();
        self.ejected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Clears an expired ejection (once, by CAS) and puts the endpoint on probation: its
    /// counters sit one below the thresholds, so one more failure ejects it again.
    fn readmit(&self, ep: &EndpointStats, until: u64) {
        if ep
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.ejected.fetch_sub(1, Ordering::AcqRel);
            let below = |t: u32| t.saturating_sub(1);
            ep.consecutive_failures
                .store(below(self.cfg.consecutive_5xx), Ordering::Relaxed);
            ep.consecutive_gateway
                .store(below(self.cfg.consecutive_gateway), Ordering::Relaxed);
            tracing::debug!("endpoint re-admitted on probation");
        }
    }

    /// Once per interval: failure-percentage ejections, expired ejections re-admitted, and
    /// the ejection multiplier of endpoints that had a clean interval decays.
    fn maybe_sweep(&self, now: u64) {
        let interval_ms = (self.cfg.interval.as_millis() as u64).max(1);
        let current = now / interval_ms;
        let seen = self.window.load(Ordering::Acquire);
        if seen >= current
            || self
                .window
                .compare_exchange(seen, current, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        for ep in self.endpoints.iter() {
            let requests = ep.window_requests.swap(0, Ordering::AcqRel);
            let failures = ep.window_failures.swap(0, Ordering::AcqRel);
            let until = ep.ejected_until.load(Ordering::Acquire);
            if until != 0 && now >= until {
                self.readmit(ep, until);
            }
            let pct = self.cfg.failure_percentage;
            if pct != 0
                && requests >= self.cfg.failure_percentage_min_requests.max(1)
                && u64::from(failures) * 100 >= u64::from(pct) * u64::from(requests)
            {
                self.eject(ep, now);
            } else if failures == 0 && ep.ejected_until.load(Ordering::Acquire) == 0 {
                let _ = ep
                    .ejections
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |m| m.checked_sub(1));
            }
        }
    }
}

#[cfg(test)]
#[path = "outlier_tests.rs"]
mod tests;
