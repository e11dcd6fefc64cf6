//! Exponential reconnect backoff with jitter.

use std::time::Duration;

use rand::Rng as _;

/// Delays between reconnect attempts: doubling from `base` up to `cap`, each drawn uniformly
/// from the upper half of the current step ("equal jitter"), so proxies that lost the control
/// plane together do not return in lockstep, yet never retry in a tight loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    step: u32,
}

/// First retry soon: most disconnects are a control-plane restart or a rolling deploy.
pub const DEFAULT_BASE: Duration = Duration::from_millis(200);
/// Bounds how stale a proxy stays after the control plane returns (≤ 15 s), while 10,000
/// proxies retrying at the cap give it ≤ ~900 connection attempts per second to absorb.
pub const DEFAULT_CAP: Duration = Duration::from_secs(15);

// === impl Backoff ===

impl Default for Backoff {
    fn default() -> Self {
        Self::new(DEFAULT_BASE, DEFAULT_CAP)
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            step: 0,
        }
    }

    /// The delay before the next attempt; each call doubles the ceiling until the cap.
    pub fn next_delay(&mut self) -> Duration {
        // 2^20 × base exceeds any sane cap; stop shifting before it can overflow.
        let ceiling = self
            .base
            .saturating_mul(1 << self.step.min(20))
            .min(self.cap);
        self.step = self.step.saturating_add(1);
        let half = ceiling / 2;
        let jitter_ns = rand::rng().random_range(0..=half.as_nanos() as u64);
        half + Duration::from_nanos(jitter_ns)
    }

    /// Back to the first step, after a stream that worked.
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
        for ms in ceilings {
            let d = b.next_delay();
            let ceiling = Duration::from_millis(ms);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in upper half of {ceiling:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::default();
        for _ in 0..1000 {
            assert!(b.next_delay() <= DEFAULT_CAP);
        }
    }
}
