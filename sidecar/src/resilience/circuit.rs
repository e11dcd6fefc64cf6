//! Per-cluster circuit breakers: caps on concurrent requests, concurrent retries and attempts waiting for a new connection, with RAII permits; overflow fails fast with `circuit-open`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::proxy::Cause;

/// Envoy's default for active requests: far above what one workload sends one service in
/// normal operation, so hitting it means the destination is already drowning and queuing
/// more would only add latency.
pub const DEFAULT_MAX: u32 = 1024;

/// Concurrent retries: a quarter of the request cap. The retry budget bounds retries as a
/// share over time; this bounds them at one instant, catching the latency spike in which
/// slow retries pile up before the budget's window notices.
pub const DEFAULT_MAX_RETRIES: u32 = 256;

/// Attempts waiting for a new upstream connection at once: Envoy's default for pending
/// requests. A healthy endpoint connects in microseconds, so only a destination that stopped
/// answering SYNs fills it; then each further attempt would only wait out its connect timeout.
pub const DEFAULT_MAX_PENDING: u32 = 1024;

/// What a permit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// One request, from its first attempt until its response body is dropped.
    Request,
    /// One retry in flight.
    Retry,
    /// One attempt waiting for a new upstream connection, for as long as its connect lasts.
    Pending,
}

/// Limits of one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitLimits {
    pub max_requests: u32,
    pub max_retries: u32,
    pub max_pending: u32,
}

/// The counters of one cluster.
#[derive(Debug)]
pub struct CircuitBreaker {
    limits: CircuitLimits,
    /// Held and refused counts, one slot per [`Resource`] (by [`Resource::index`]).
    active: [AtomicU32; 3],
    overflows: [AtomicU64; 3],
}

/// Holds one unit of a resource until dropped.
#[must_use = "the resource is released when the permit is dropped"]
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    resource: Resource,
}

// === impl Resource ===

impl Resource {
    const fn index(self) -> usize {
        match self {
            Resource::Request => 0,
            Resource::Retry => 1,
            Resource::Pending => 2,
        }
    }
}

// === impl CircuitLimits ===

impl Default for CircuitLimits {
    fn default() -> Self {
        CircuitLimits {
            max_requests: DEFAULT_MAX,
            max_retries: DEFAULT_MAX_RETRIES,
            max_pending: DEFAULT_MAX_PENDING,
        }
    }
}

impl CircuitLimits {
    fn get(&self, r: Resource) -> u32 {
        match r {
            Resource::Request => self.max_requests,
            Resource::Retry => self.max_retries,
            Resource::Pending => self.max_pending,
        }
    }
}

// === impl CircuitBreaker ===

impl CircuitBreaker {
    /// A breaker with these limits.
    pub fn new(limits: CircuitLimits) -> Arc<Self> {
        Arc::new(CircuitBreaker {
            limits,
            active: Default::default(),
            overflows: Default::default(),
        })
    }

    /// Takes one unit of `resource`, or fails fast with [`Cause::CircuitOpen`].
    pub fn try_acquire(self: &Arc<Self>, resource: Resource) -> Result<Permit, Cause> {
        let i = resource.index();
        let limit = self.limits.get(resource);
        // Add, then check, then undo: concurrent callers can never both take the last unit.
        if self.active[i].fetch_add(1, Ordering::AcqRel) >= limit {
            self.active[i].fetch_sub(1, Ordering::AcqRel);
            self.overflows[i].fetch_add(1, Ordering::Relaxed);
            return Err(Cause::CircuitOpen);
        }
        Ok(Permit {
            breaker: self.clone(),
            resource,
        })
    }

    /// Units of `resource` held now.
    pub fn active(&self, resource: Resource) -> u32 {
        self.active[resource.index()].load(Ordering::Acquire)
    }

    /// Times `resource` was full.
    pub fn overflows(&self, resource: Resource) -> u64 {
        self.overflows[resource.index()].load(Ordering::Relaxed)
    }

    /// The configured limits.
    pub fn limits(&self) -> &CircuitLimits {
        &self.limits
    }
}

// === impl Permit ===

impl Permit {
    /// What this permit holds.
    pub fn resource(&self) -> Resource {
        self.resource
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.breaker.active[self.resource.index()].fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_resource_and_releases_on_drop() {
        let cb = CircuitBreaker::new(CircuitLimits {
            max_requests: 2,
            max_retries: 0,
            max_pending: 1,
        });
        let a = cb.try_acquire(Resource::Request).unwrap();
        let _b = cb.try_acquire(Resource::Request).unwrap();
        assert_eq!(
            cb.try_acquire(Resource::Request).unwrap_err(),
            Cause::CircuitOpen
        );
        assert_eq!(cb.overflows(Resource::Request), 1);
        assert_eq!(cb.active(Resource::Request), 2);
        drop(a);
        assert_eq!(cb.active(Resource::Request), 1);
        let _c = cb.try_acquire(Resource::Request).unwrap();
        // Independent resources.
        assert!(cb.try_acquire(Resource::Retry).is_err());
        let pending = cb.try_acquire(Resource::Pending).unwrap();
        assert!(cb.try_acquire(Resource::Pending).is_err());
        drop(pending);
        assert_eq!(cb.active(Resource::Pending), 0);
        assert_eq!(cb.active(Resource::Request), 2);
    }

    #[test]
    fn concurrent_acquires_never_exceed_the_limit() {
        let cb = CircuitBreaker::new(CircuitLimits {
            max_requests: 10,
            ..Default::default()
        });
        // Holders counted independently of the breaker's own (transiently over-counted) state.
        let holders = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (cb, holders, peak) = (cb.clone(), holders.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        if let Ok(p) = cb.try_acquire(Resource::Request) {
                            let n = holders.fetch_add(1, Ordering::AcqRel) + 1;
                            peak.fetch_max(n, Ordering::AcqRel);
                            holders.fetch_sub(1, Ordering::AcqRel);
                            drop(p);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 10);
        assert_eq!(cb.active(Resource::Request), 0);
    }
}
