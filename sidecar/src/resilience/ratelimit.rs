//! Local rate limiting and load shedding: a lock-free token bucket per route (or per source identity) with `Retry-After`, and a listener connection limiter.
//!
//! The bucket is GCRA (the "virtual scheduling" form of a token bucket): one atomic holds the
//! theoretical arrival time of the next request, so admitting a request is one CAS and the
//! exact wait until the next token falls out of the same arithmetic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::time::Instant;

/// Distinct source identities tracked per route. Identities are workload certificates from
/// the mesh CA, so the real set is bounded by the workloads; the cap (~100 B per entry,
/// about 1 MiB) guards against a misbehaving CA. Sources beyond it share one bucket.
pub const MAX_TRACKED_SOURCES: usize = 10_000;

/// Listener connection cap when the Listener sets none. Each proxied connection costs two
/// file descriptors and tens of KiB of buffers; 4096 stays far below a container's usual
/// descriptor limit while exceeding any sane connection count from one workload's peers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// A bad rate limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    #[error("rate limit requests_per_second must be positive (omit the rate limit to disable it)")]
    ZeroRate,
}

/// Token bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub requests_per_second: u32,
    /// Requests admitted at once after a quiet period; 0 = one second's worth.
    pub burst: u32,
    /// One bucket per source identity instead of one per route.
    pub per_source: bool,
}

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// A lock-free GCRA token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    start: Instant,
    /// Nanoseconds between tokens.
    emission: u64,
    /// How far ahead of now the schedule may run: burst × emission.
    tolerance: u64,
    /// Theoretical arrival time (ns since `start`) of the next conforming request.
    tat: AtomicU64,
}

/// A route's limiter: one bucket, or one per source identity.
#[derive(Debug)]
pub struct RateLimiter {
    cfg: RateLimitConfig,
    route: TokenBucket,
    sources: DashMap<Box<str>, TokenBucket>,
    refused: AtomicU64,
}

/// Caps concurrent connections on a listener; excess connections are refused and counted.
///
/// Atomic counters rather than a semaphore so the cap can follow the Listener resource at
/// runtime ([`ConnectionLimiter::set_max`]) without tracking forgotten permits.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    inner: Arc<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    active: AtomicUsize,
    max: AtomicUsize,
    refused: AtomicU64,
}

/// One admitted connection; releases its slot when dropped.
#[must_use = "the connection slot is released when the permit is dropped"]
#[derive(Debug)]
pub struct ConnPermit {
    inner: Arc<LimiterState>,
}

// === impl RetryAfter ===

impl RetryAfter {
    /// The `Retry-After` header value: whole seconds, rounded up, at least 1.
    pub fn header_secs(self) -> u64 {
        (self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)).max(1)
    }
}

// === impl TokenBucket ===

impl TokenBucket {
    /// A bucket refilling `rate` tokens per second, holding at most `burst` (0 = `rate`).
    pub fn new(rate: u32, burst: u32) -> Result<Self, RateLimitError> {
        if rate == 0 {
            return Err(RateLimitError::ZeroRate);
        }
        let emission = 1_000_000_000 / u64::from(rate);
        let burst = if burst == 0 { rate } else { burst };
        Ok(TokenBucket {
            start: Instant::now(),
            emission: emission.max(1),
            tolerance: emission.max(1) * u64::from(burst),
            tat: AtomicU64::new(0),
        })
    }

    /// Takes a token, or says how long until one is available.
    pub fn try_acquire(&self) -> Result<(), RetryAfter> {
        let now = self.start.elapsed().as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let next = tat.max(now) + self.emission;
            if next - now > self.tolerance {
                return Err(RetryAfter(Duration::from_nanos(
                    next - now - self.tolerance,
                )));
            }
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(actual) => tat = actual,
            }
        }
    }
}

// === impl RateLimiter ===

impl RateLimiter {
    /// A limiter for one route.
    pub fn new(cfg: RateLimitConfig) -> Result<Self, RateLimitError> {
        Ok(RateLimiter {
            cfg,
            route: TokenBucket::new(cfg.requests_per_second, cfg.burst)?,
            sources: DashMap::new(),
            refused: AtomicU64::new(0),
        })
    }

    /// Admits one request from `source` (the peer's identity, if known), or returns how long
    /// to wait. Per-source mode uses the route bucket for unknown sources and for sources
    /// beyond [`MAX_TRACKED_SOURCES`].
    pub fn check(&self, source: Option<&str>) -> Result<(), RetryAfter> {
        let result = match source {
            Some(id) if self.cfg.per_source => self.check_source(id),
            _ => self.route.try_acquire(),
        };
        if result.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn check_source(&self, id: &str) -> Result<(), RetryAfter> {
        if let Some(bucket) = self.sources.get(id) {
            return bucket.try_acquire();
        }
        if self.sources.len() >= MAX_TRACKED_SOURCES {
            return self.route.try_acquire();
        }
        // Validated in `new`, so building another bucket with the same numbers cannot fail.
        let Ok(bucket) = TokenBucket::new(self.cfg.requests_per_second, self.cfg.burst) else {
            return self.route.try_acquire();
        };
        self.sources
            .entry(id.into())
            .or_insert(bucket)
            .try_acquire()
    }

    /// Requests refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

// === impl ConnectionLimiter ===

impl ConnectionLimiter {
    /// A limiter admitting `max` concurrent connections (0 = [`DEFAULT_MAX_CONNECTIONS`]).
    pub fn new(max: usize) -> Self {
        let l = ConnectionLimiter {
            inner: Arc::new(LimiterState {
                active: AtomicUsize::new(0),
                max: AtomicUsize::new(0),
                refused: AtomicU64::new(0),
            }),
        };
        l.set_max(max);
        l
    }

    /// Changes the cap (0 = default). Connections above a lowered cap are not cut; new ones
    /// wait until the count drops below it.
    pub fn set_max(&self, max: usize) {
        let max = if max == 0 {
            DEFAULT_MAX_CONNECTIONS
        } else {
            max
        };
        self.inner.max.store(max, Ordering::Release);
    }

    /// A permit to keep for the connection's lifetime, or `None` (counted) when full: the
    /// caller closes the connection at once instead of queuing it.
    pub fn try_accept(&self) -> Option<ConnPermit> {
        let s = &self.inner;
        // Add, then check, then undo: two accepts can never both take the last slot.
        if s.active.fetch_add(1, Ordering::AcqRel) >= s.max.load(Ordering::Acquire) {
            s.active.fetch_sub(1, Ordering::AcqRel);
            s.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnPermit {
            inner: self.inner.clone(),
        })
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.inner.refused.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.inner.max.load(Ordering::Acquire)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_refills_at_rate() {
        let b = TokenBucket::new(10, 5).unwrap();
        assert_eq!((0..20).filter(|_| b.try_acquire().is_ok()).count(), 5);
        let RetryAfter(wait) = b.try_acquire().unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        advance(Duration::from_millis(100)).await;
        assert!(b.try_acquire().is_ok());
        assert!(b.try_acquire().is_err());
        // A quiet second refills to the burst, not beyond.
        advance(Duration::from_secs(10)).await;
        assert_eq!((0..20).filter(|_| b.try_acquire().is_ok()).count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn sustained_rate_matches_config() {
        let b = TokenBucket::new(100, 1).unwrap();
        let mut ok = 0;
        for _ in 0..1000 {
            advance(Duration::from_millis(1)).await;
            ok += usize::from(b.try_acquire().is_ok());
        }
        // One second at 100/s.
        assert_eq!(ok, 100);
    }

    #[test]
    fn retry_after_header_rounds_up() {
        assert_eq!(RetryAfter(Duration::from_millis(100)).header_secs(), 1);
        assert_eq!(RetryAfter(Duration::from_millis(1500)).header_secs(), 2);
        assert_eq!(RetryAfter(Duration::from_secs(3)).header_secs(), 3);
        assert_eq!(RetryAfter(Duration::ZERO).header_secs(), 1);
    }

    #[test]
    fn zero_rate_is_an_error() {
        assert_eq!(
            TokenBucket::new(0, 1).unwrap_err(),
            RateLimitError::ZeroRate
        );
    }

    #[tokio::test(start_paused = true)]
    async fn per_source_buckets_are_independent() {
        let rl = RateLimiter::new(RateLimitConfig {
            requests_per_second: 1,
            burst: 2,
            per_source: true,
        })
        .unwrap();
        for _ in 0..2 {
            assert!(rl.check(Some("spiffe://a")).is_ok());
        }
        assert!(rl.check(Some("spiffe://a")).is_err());
        assert!(rl.check(Some("spiffe://b")).is_ok());
        assert!(rl.check(None).is_ok());
        assert_eq!(rl.refused(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn per_route_bucket_is_shared() {
        let rl = RateLimiter::new(RateLimitConfig {
            requests_per_second: 1,
            burst: 1,
            per_source: false,
        })
        .unwrap();
        assert!(rl.check(Some("a")).is_ok());
        assert!(rl.check(Some("b")).is_err());
    }

    #[tokio::test]
    async fn connection_limiter_refuses_excess_and_counts() {
        let cl = ConnectionLimiter::new(2);
        let a = cl.try_accept().unwrap();
        let _b = cl.try_accept().unwrap();
        assert!(cl.try_accept().is_none());
        assert_eq!((cl.refused(), cl.active()), (1, 2));
        drop(a);
        assert!(cl.try_accept().is_some());
        assert_eq!(ConnectionLimiter::new(0).max(), DEFAULT_MAX_CONNECTIONS);
        // The cap follows config at runtime.
        cl.set_max(1);
        assert!(cl.try_accept().is_none(), "one open, cap lowered to one");
        assert_eq!(cl.refused(), 2);
        cl.set_max(3);
        let _c = cl.try_accept().unwrap();
        let _d = cl.try_accept().unwrap();
        assert_eq!(cl.active(), 3);
    }
}
