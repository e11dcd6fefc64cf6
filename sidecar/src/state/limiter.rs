//! `Gcra`: a lock-free rate limiter (generic cell rate algorithm) for a route's rate limit.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Admits `rate` requests per second with bursts of `burst`, using one atomic: the
/// theoretical arrival time (TAT) of the next request. Equivalent to a token bucket, but a
/// check is one compare-and-swap instead of a lock.
#[derive(Debug)]
pub struct Gcra {
    /// Nanoseconds between requests at the sustained rate.
    interval_ns: u64,
    /// How far ahead of now the TAT may run: `(burst - 1)` intervals.
    tolerance_ns: u64,
    tat_ns: AtomicU64,
}

fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

// === impl Gcra ===

impl Gcra {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        let interval_ns =
            (Duration::from_secs(1).as_nanos() as u64) / u64::from(rate_per_sec.max(1));
        Self {
            interval_ns,
            tolerance_ns: interval_ns * u64::from(burst.max(1) - 1),
            tat_ns: AtomicU64::new(0),
        }
    }

    /// True when a request is admitted now.
    pub fn try_acquire(&self) -> bool {
        self.try_acquire_at(now_ns())
    }

    fn try_acquire_at(&self, now: u64) -> bool {
        let mut tat = self.tat_ns.load(Ordering::Acquire);
        loop {
            let start = tat.max(now);
            if start - now > self.tolerance_ns {
                return false;
            }
            match self.tat_ns.compare_exchange_weak(
                tat,
                start + self.interval_ns,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_burst_then_rate() {
        let g = Gcra::new(10, 3);
        // A burst of 3 at t=0, then nothing until one interval (100 ms) has passed.
        assert!((0..3).all(|_| g.try_acquire_at(0)));
        assert!(!g.try_acquire_at(0));
        assert!(!g.try_acquire_at(99_000_000));
        assert!(g.try_acquire_at(100_000_000));
        assert!(!g.try_acquire_at(100_000_000));
    }
}
