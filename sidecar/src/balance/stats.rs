//! Per-endpoint live state: PeakEWMA latency, a fast-decaying error penalty, in-flight count,
//! ejection.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Decay time constant of the latency estimate. 10 s (Linkerd's default) forgets a slow spell
/// within seconds of recovery yet ignores one outlier response.
const DECAY: Duration = Duration::from_secs(10);
/// Estimate for an endpoint with no samples yet and the value an idle estimate decays back
/// to: 1 ms, a loopback/LAN round trip, so a new endpoint is tried soon but not flooded.
const NEUTRAL_RTT_NS: f64 = 1_000_000.0;
/// A 5xx or 429 adds this much to the endpoint's cost: 1 s makes a failing endpoint lose
/// every P2C comparison against a healthy millisecond-scale peer while the penalty is fresh, so
/// a fast-failing endpoint cannot attract traffic by looking quick.
const FAILURE_PENALTY_NS: f64 = 1_000_000_000.0;
/// Decay time constant of the penalty, kept apart from the latency's DECAY: a penalised
/// endpoint gets no traffic and so no new samples, so only time can clear it. With 1 s it
/// falls below a 1 ms peer's cost after ~7 s (ln 1000): one failed request (an app still
/// starting, one 503) benches an endpoint for seconds, not for a minute or more (at the 10 s
/// DECAY that same penalty would keep it out ~70 s), while an endpoint that keeps failing is
/// re-tried only every few seconds until outlier detection ejects it.
const PENALTY_DECAY: Duration = Duration::from_secs(1);

/// Nanoseconds since a process-wide base, so instants fit in an atomic.
pub(crate) fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    // Starting at 1 keeps 0 free to mean "never".
    base.elapsed().as_nanos() as u64 + 1
}

/// Shared across snapshot rebuilds for an endpoint address that stays, so history survives.
#[derive(Debug, Default)]
pub struct EndpointStats {
    in_flight: AtomicU32,
    /// f64 bits of the PeakEWMA latency estimate in ns; 0 = no sample yet.
    ewma_bits: AtomicU64,
    /// When `ewma_bits` was last written (`now_ns`).
    updated_ns: AtomicU64,
    /// f64 bits of the error penalty in ns at `penalized_ns`; 0 = none.
    penalty_bits: AtomicU64,
    /// When the last failure set the penalty (`now_ns`).
    penalized_ns: AtomicU64,
    /// Ejected until this instant (`now_ns`); 0 = not ejected.
    ejected_until_ns: AtomicU64,
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// Active health checking: consecutive probe results (positive: successes, negative:
    /// failures) and whether the endpoint is currently failing its checks.
    health_streak: AtomicI32,
    health_down: AtomicBool,
}

// === impl EndpointStats ===

impl EndpointStats {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// The latency estimate now, decayed towards neutral for the time since the last sample.
    pub fn ewma(&self) -> Duration {
        Duration::from_nanos(self.ewma_ns_at(now_ns()) as u64)
    }

    fn ewma_ns_at(&self, now: u64) -> f64 {
        let bits = self.ewma_bits.load(Relaxed);
        if bits == 0 {
            return NEUTRAL_RTT_NS;
        }
        let ewma = f64::from_bits(bits);
        let elapsed = now.saturating_sub(self.updated_ns.load(Relaxed)) as f64;
        let w = (-elapsed / DECAY.as_nanos() as f64).exp();
        ewma * w + NEUTRAL_RTT_NS * (1.0 - w)
    }

    /// The error penalty now: the last one, decayed for the time since.
    fn penalty_ns_at(&self, now: u64) -> f64 {
        let bits = self.penalty_bits.load(Relaxed);
        if bits == 0 {
            return 0.0;
        }
        let elapsed = now.saturating_sub(self.penalized_ns.load(Relaxed));
        // Past 30 time constants the penalty is below a femtosecond: skip the `exp` that every
        // P2C comparison would otherwise pay forever after an endpoint's first failure.
        if elapsed > 30 * PENALTY_DECAY.as_nanos() as u64 {
            return 0.0;
        }
        f64::from_bits(bits) * (-(elapsed as f64) / PENALTY_DECAY.as_nanos() as f64).exp()
    }

    /// PeakEWMA cost: latency estimate plus the recent-error penalty, scaled by the load the
    /// endpoint already carries.
    pub fn cost(&self, now: u64) -> f64 {
        (self.ewma_ns_at(now) + self.penalty_ns_at(now)) * f64::from(self.in_flight() + 1)
    }

    /// True while outlier detection has the endpoint ejected (for `/clusters`).
    pub fn ejected(&self) -> bool {
        self.is_ejected(now_ns())
    }

    /// True while active health checks report the endpoint down.
    pub fn health_down(&self) -> bool {
        self.health_down.load(Relaxed)
    }

    /// Records one probe: `unhealthy` consecutive failures take the endpoint down, `healthy`
    /// consecutive successes bring it back.
    pub(crate) fn health_result(&self, ok: bool, healthy: u32, unhealthy: u32) {
        let streak = self.health_streak.load(Relaxed);
        let streak = match (ok, streak) {
            (true, s) if s > 0 => s.saturating_add(1),
            (true, _) => 1,
            (false, s) if s < 0 => s.saturating_sub(1),
            (false, _) => -1,
        };
        self.health_streak.store(streak, Relaxed);
        if ok && streak >= healthy as i32 {
            self.health_down.store(false, Relaxed);
        } else if !ok && -streak >= unhealthy as i32 {
            self.health_down.store(true, Relaxed);
        }
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until_ns.load(Relaxed) > now
    }

    /// Ejects until `until_ns` (outlier detection or tests).
    pub fn eject_until(&self, until_ns: u64) {
        self.ejected_until_ns.store(until_ns, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        crate::observe::counters().outlier_ejection();
    }

    pub(crate) fn start(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// Feeds one response into the estimate. Racing writers may lose a sample; that is fine for
    /// an estimate and keeps the hot path free of locks and CAS loops.
    pub(crate) fn observe(&self, rtt: Duration, failed: bool, now: u64) {
        if failed {
            // A failure renews the full penalty (repeated failures do not stack: one fresh
            // penalty already loses every comparison). Its duration is no latency sample: a
            // fast refusal would make a broken endpoint look quick, and a slow one (a cold
            // connection's handshake plus the error) would stick as the peak for ~30 s.
            self.penalty_bits
                .store(FAILURE_PENALTY_NS.to_bits(), Relaxed);
            self.penalized_ns.store(now, Relaxed);
            return;
        }
        let sample = rtt.as_nanos() as f64;
        let current = self.ewma_ns_at(now);
        // Peak: a slower sample replaces the estimate at once; faster ones pull it down slowly.
        let next = if sample > current {
            sample
        } else {
            let elapsed = now.saturating_sub(self.updated_ns.load(Relaxed)) as f64;
            let w = (-elapsed / DECAY.as_nanos() as f64).exp();
            current * w + sample * (1.0 - w)
        };
        self.ewma_bits.store(next.max(1.0).to_bits(), Relaxed);
        self.updated_ns.store(now, Relaxed);
    }

    /// Counts a consecutive failure; returns the new count.
    pub(crate) fn failure(&self) -> u32 {
        self.consecutive_failures.fetch_add(1, Relaxed) + 1
    }

    pub(crate) fn success(&self) {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
    }

    pub(crate) fn ejection_count(&self) -> u32 {
        self.ejections.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SEC: u64 = 1_000 * MS;

    /// One failed request must not bench an endpoint for long: it gets no traffic while
    /// penalised, so nothing but time can clear the penalty. (At the latency's 10 s decay a
    /// single 503 kept a two-endpoint cluster on one endpoint for over a minute.)
    #[test]
    fn one_failure_loses_comparisons_for_seconds_not_a_minute() {
        let t0 = 100 * SEC;
        let healthy = EndpointStats::default();
        let failed = EndpointStats::default();
        healthy.observe(Duration::from_millis(2), false, t0);
        failed.observe(Duration::from_micros(300), true, t0);
        // Fresh: the failing endpoint loses, even though it answered faster.
        assert!(failed.cost(t0 + SEC) > healthy.cost(t0 + SEC));
        assert!(failed.cost(t0 + 3 * SEC) > healthy.cost(t0 + 3 * SEC));
        // Ten seconds on it competes again (the old scheme still charged it ~370 ms).
        assert!(failed.cost(t0 + 10 * SEC) < healthy.cost(t0 + 10 * SEC));
    }

    #[test]
    fn repeated_failures_renew_the_penalty() {
        let t0 = 100 * SEC;
        let healthy = EndpointStats::default();
        let failing = EndpointStats::default();
        healthy.observe(Duration::from_millis(2), false, t0);
        failing.observe(Duration::from_millis(1), true, t0);
        failing.observe(Duration::from_millis(1), true, t0 + 9 * SEC);
        assert!(failing.cost(t0 + 10 * SEC) > healthy.cost(t0 + 10 * SEC));
        // Successes do not clear it early: only time does.
        failing.observe(Duration::from_millis(1), false, t0 + 9 * SEC + MS);
        assert!(failing.cost(t0 + 10 * SEC) > healthy.cost(t0 + 10 * SEC));
    }
}
