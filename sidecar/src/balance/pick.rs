//! `Subset`: one pool of endpoints and its picking policy (P2C, RR, WRR, ring hash, Maglev).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use super::endpoint::LbEndpoint;
use super::hash::{Maglev, Ring};
use super::stats::now_ns;
use crate::state::{EndpointState, LbPolicy};

/// A set of endpoints and how to choose among them.
///
/// The pool picks come from is the healthy endpoints; only when none is healthy does it fall
/// back to the unhealthy ones, and only when all are draining to the draining ones (better a
/// draining endpoint than certain failure). Outlier-ejected endpoints are skipped at pick time
/// while any pool member is not ejected.
#[derive(Debug)]
pub struct Subset {
    members: Vec<Arc<LbEndpoint>>,
    pool: Vec<Arc<LbEndpoint>>,
    policy: Policy,
    /// Every member is a peer sidecar (reached over HTTP/2), decided once per update so
    /// the request path need not scan the members.
    all_meshed: bool,
    /// Some member is a peer sidecar (the request head is then kept for a refused stream).
    any_meshed: bool,
}

#[derive(Debug)]
enum Policy {
    P2c,
    RoundRobin(AtomicUsize),
    /// Smooth weighted round robin, precomputed as a schedule of pool indexes.
    Weighted {
        schedule: Vec<u32>,
        next: AtomicUsize,
    },
    Ring(Ring),
    Maglev(Maglev),
}

/// A WRR schedule is at most this long; larger weight sums are scaled down. 10k entries is
/// 40 KiB per subset and keeps ratios exact to 0.01 %.
const MAX_SCHEDULE: u64 = 10_000;

// === impl Subset ===

impl Subset {
    pub(crate) fn new(members: Vec<Arc<LbEndpoint>>, lb: LbPolicy) -> Self {
        let by_state = |s: EndpointState| -> Vec<Arc<LbEndpoint>> {
            members
                .iter()
                .filter(|m| m.endpoint.state == s)
                .cloned()
                .collect()
        };
        let mut pool = by_state(EndpointState::Healthy);
        if pool.is_empty() {
            pool = by_state(EndpointState::Unhealthy);
        }
        if pool.is_empty() {
            pool = members.clone();
        }
        let ids: Vec<(Vec<u8>, u32)> = pool
            .iter()
            .map(|m| (m.endpoint.addr.to_string().into_bytes(), m.endpoint.weight))
            .collect();
        let policy = match lb {
            LbPolicy::P2cEwma => Policy::P2c,
            LbPolicy::RoundRobin => Policy::RoundRobin(AtomicUsize::new(0)),
            LbPolicy::WeightedRoundRobin => Policy::Weighted {
                schedule: smooth_wrr(&ids),
                next: AtomicUsize::new(0),
            },
            LbPolicy::RingHash => Policy::Ring(Ring::new(&ids)),
            LbPolicy::Maglev => Policy::Maglev(Maglev::new(&ids)),
        };
        Self {
            all_meshed: members.iter().all(|m| m.endpoint.is_meshed()),
            any_meshed: members.iter().any(|m| m.endpoint.is_meshed()),
            members,
            pool,
            policy,
        }
    }

    /// True when every member is a peer sidecar.
    pub fn all_meshed(&self) -> bool {
        self.all_meshed
    }

    /// True when some member is a peer sidecar.
    pub fn any_meshed(&self) -> bool {
        self.any_meshed
    }

    /// Every endpoint, whatever its state.
    pub fn members(&self) -> &[Arc<LbEndpoint>] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// True when the subset uses consistent hashing (the caller should supply a hash).
    pub fn is_hashed(&self) -> bool {
        matches!(self.policy, Policy::Ring(_) | Policy::Maglev(_))
    }

    /// Picks an endpoint for a new request. `hash` is used by ring hash / Maglev; without it
    /// they fall back to P2C. `None` only when the subset has no endpoints.
    pub fn pick(&self, hash: Option<u64>) -> Option<&Arc<LbEndpoint>> {
        let n = self.pool.len();
        if n <= 1 {
            return self.pool.first();
        }
        let now = now_ns();
        let idx = match (&self.policy, hash) {
            (Policy::RoundRobin(next), _) => self.probe(next.fetch_add(1, Relaxed) % n, now),
            (Policy::Weighted { schedule, next }, _) => {
                let at = next.fetch_add(1, Relaxed) % schedule.len();
                self.probe(schedule[at] as usize, now)
            }
            (Policy::Ring(ring), Some(h)) => self.first_available(ring.walk(h), now),
            (Policy::Maglev(table), Some(h)) => self.first_available(table.walk(h), now),
            _ => self.p2c(now),
        };
        Some(&self.pool[idx])
    }

    /// Power of two choices: two distinct random endpoints, the cheaper PeakEWMA cost wins.
    fn p2c(&self, now: u64) -> usize {
        let n = self.pool.len();
        let a = rand::random_range(0..n);
        let b = (a + rand::random_range(1..n)) % n;
        let (ea, eb) = (&self.pool[a], &self.pool[b]);
        match (ea.available(now), eb.available(now)) {
            (true, true) => {
                if eb.stats.cost(now) < ea.stats.cost(now) {
                    b
                } else {
                    a
                }
            }
            (true, false) => a,
            (false, true) => b,
            (false, false) => self.probe(a, now),
        }
    }

    /// `start` if available, else the next available endpoint after it, else `start`.
    fn probe(&self, start: usize, now: u64) -> usize {
        let n = self.pool.len();
        (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.pool[i].available(now))
            .unwrap_or(start)
    }

    /// The first available endpoint in a hash walk; the walk's owner if none is.
    fn first_available(&self, mut walk: impl Iterator<Item = usize>, now: u64) -> usize {
        let Some(owner) = walk.next() else { return 0 };
        if self.pool[owner].available(now) {
            return owner;
        }
        walk.find(|&i| self.pool[i].available(now)).unwrap_or(owner)
    }
}

/// Nginx's smooth weighted round robin unrolled into a schedule: every endpoint appears
/// `weight` times per cycle (after scaling), interleaved rather than in bursts.
fn smooth_wrr(ids: &[(Vec<u8>, u32)]) -> Vec<u32> {
    let total: u64 = ids.iter().map(|m| u64::from(m.1.max(1))).sum();
    let scale = (total as f64 / MAX_SCHEDULE as f64).max(1.0);
    let weights: Vec<i64> = ids
        .iter()
        .map(|m| ((f64::from(m.1.max(1)) / scale).round() as i64).max(1))
        .collect();
    let sum: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        schedule.push(best as u32);
    }
    schedule
}
