//! Retry budget, always on: retries ≤ ratio × requests + min rate × window, over a sliding window of atomic buckets.
//!
//! A budget turns retries from a multiplier of load (3 attempts = 3× traffic when every
//! backend fails) into a bounded surcharge, so retries cannot start a storm. The window is
//! split into [`BUCKETS`] buckets of slot-stamped atomic counters; a bucket is recycled when
//! the clock reaches it again. No locks: the hot path is a few relaxed atomic adds and, for a retry,
//! a sum over the buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Retries as a share of requests: 20 % lets one in five requests retry once, enough to
/// hide a failing endpoint among several, while capping the extra load at 1.2×.
pub const DEFAULT_RATIO: f64 = 0.2;

/// Retries always allowed per second, so a low-traffic service (a few requests per minute)
/// can still retry at all.
pub const DEFAULT_MIN_PER_SECOND: u32 = 10;

/// Long enough to smooth bursts, short enough that the budget refills within seconds of a
/// recovery.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// Buckets per window: 1 s granularity at the default window.
pub const BUCKETS: usize = 10;

/// Budget parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BudgetConfig {
    pub ratio: f64,
    pub min_per_second: u32,
    pub window: Duration,
}

/// A bad budget.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BudgetError {
    #[error("retry budget ratio {0} must be within 0.0..=1.0 (0.2 = one retry per five requests)")]
    Ratio(f64),
    #[error("retry budget window must be at least {min:?}, got {0:?}", min = Duration::from_millis(BUCKETS as u64))]
    Window(Duration),
}

/// A retry budget shared by all requests to one cluster.
#[derive(Debug)]
pub struct RetryBudget {
    cfg: BudgetConfig,
    start: Instant,
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS],
    exhausted: AtomicU64,
}

#[derive(Debug, Default)]
struct Bucket {
    requests: Stamped,
    retries: Stamped,
}

/// A counter stamped with the slot (bucket-widths since `start`) it counts for, packed as
/// `slot << 32 | count`: recycling a bucket for a new slot and counting in it is one atomic
/// step, so no update is ever lost to a concurrent recycle.
#[derive(Debug, Default)]
struct Stamped(AtomicU64);

// === impl BudgetConfig ===

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            ratio: DEFAULT_RATIO,
            min_per_second: DEFAULT_MIN_PER_SECOND,
            window: DEFAULT_WINDOW,
        }
    }
}

impl BudgetConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), BudgetError> {
        if !(0.0..=1.0).contains(&self.ratio) {
            return Err(BudgetError::Ratio(self.ratio));
        }
        if self.window < Duration::from_millis(BUCKETS as u64) {
            return Err(BudgetError::Window(self.window));
        }
        Ok(())
    }
}

// === impl RetryBudget ===

impl RetryBudget {
    /// A budget with the given config (validated).
    pub fn new(cfg: BudgetConfig) -> Result<Self, BudgetError> {
        cfg.validate()?;
        Ok(RetryBudget {
            cfg,
            start: Instant::now(),
            bucket_ms: (cfg.window.as_millis() as u64 / BUCKETS as u64).max(1),
            buckets: Default::default(),
            exhausted: AtomicU64::new(0),
        })
    }

    /// Records one original request (not a retry).
    pub fn deposit(&self) {
        let slot = self.slot();
        self.bucket(slot).requests.incr(slot);
    }

    /// Takes one retry from the budget; `false` (and counted) when it is exhausted.
    pub fn try_withdraw(&self) -> bool {
        let slot = self.slot();
        let bucket = self.bucket(slot);
        // Count first, then check, then undo on refusal: concurrent retries cannot both slip
        // through on the last token.
        bucket.retries.incr(slot);
        let (requests, retries) = self.totals(slot);
        let window_secs = self.cfg.window.as_secs_f64();
        let allowed =
            self.cfg.ratio * requests as f64 + self.cfg.min_per_second as f64 * window_secs;
        if retries as f64 <= allowed {
            return true;
        }
        bucket.retries.decr(slot);
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// How many retries were refused so far.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// (requests, retries) within the window.
    pub fn totals_now(&self) -> (u64, u64) {
        self.totals(self.slot())
    }

    fn slot(&self) -> u64 {
        // Slot 0 is the "never used" marker of a fresh bucket, so slots start at 1.
        1 + self.start.elapsed().as_millis() as u64 / self.bucket_ms
    }

    fn bucket(&self, slot: u64) -> &Bucket {
        &self.buckets[(slot % BUCKETS as u64) as usize]
    }

    fn totals(&self, slot: u64) -> (u64, u64) {
        let oldest = slot.saturating_sub(BUCKETS as u64 - 1);
        self.buckets.iter().fold((0, 0), |(req, ret), b| {
            (
                req + b.requests.get(oldest, slot),
                ret + b.retries.get(oldest, slot),
            )
        })
    }
}

// === impl Stamped ===

impl Stamped {
    const COUNT: u64 = u32::MAX as u64;

    fn incr(&self, slot: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(if v >> 32 != slot {
                    slot << 32 | 1
                } else if v & Self::COUNT == Self::COUNT {
                    v // saturated: 4 billion events in one bucket
                } else {
                    v + 1
                })
            });
    }

    fn decr(&self, slot: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v >> 32 == slot && v & Self::COUNT > 0).then(|| v - 1)
            });
    }

    /// The count, if stamped with a slot in `oldest..=slot`.
    fn get(&self, oldest: u64, slot: u64) -> u64 {
        let v = self.0.load(Ordering::Acquire);
        if (oldest..=slot).contains(&(v >> 32)) {
            v & Self::COUNT
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min: u32) -> RetryBudget {
        RetryBudget::new(BudgetConfig {
            ratio,
            min_per_second: min,
            window: Duration::from_secs(10),
        })
        .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_bounds_retries() {
        let b = budget(0.2, 0);
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 20);
        assert_eq!(b.exhausted(), 80);
    }

    #[tokio::test(start_paused = true)]
    async fn min_rate_allows_retries_without_traffic() {
        let b = budget(0.2, 10);
        // 10/s over a 10 s window = 100 retries with no requests at all.
        let granted = (0..500).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let b = budget(0.5, 0);
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw()).count(), 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        // Still inside the window: requests and retries both still count.
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_secs(6)).await;
        // The bucket aged out: no requests in window, no retries either.
        assert_eq!(b.totals_now(), (0, 0));
        assert!(!b.try_withdraw());
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw()).count(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn buckets_recycle_after_a_full_window() {
        let b = budget(1.0, 0);
        b.deposit();
        tokio::time::advance(Duration::from_secs(20)).await;
        b.deposit();
        assert_eq!(b.totals_now(), (1, 0));
    }

    #[test]
    fn bad_config_is_an_error() {
        let mut c = BudgetConfig {
            ratio: 1.5,
            ..Default::default()
        };
        assert_eq!(c.validate(), Err(BudgetError::Ratio(1.5)));
        c.ratio = 0.2;
        c.window = Duration::ZERO;
        assert!(c.validate().is_err());
    }

    #[test]
    fn concurrent_withdrawals_never_exceed_the_budget() {
        let b = std::sync::Arc::new(budget(0.1, 0));
        for _ in 0..1000 {
            b.deposit();
        }
        let mut handles = Vec::new();
        for _ in 0..8 {
            let b = b.clone();
            handles.push(std::thread::spawn(move || {
                (0..100).filter(|_| b.try_withdraw()).count()
            }));
        }
        let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(granted, 100);
    }
}
