//! The keep-alive pool of upstream HTTP/1.1 connections, one slot per endpoint address.
//!
//! A connection is parked in its endpoint's slot as soon as its response head arrives (it is
//! still busy while the body streams) and checked out again once hyper reports it ready, i.e.
//! the previous exchange is complete. No key is built or SipHashed per request: the caller
//! names the endpoint by its `SocketAddr`, looked up with foldhash, and keeps the slot handle
//! to park the connection again. A connection that failed, answered `Connection: close` or
//! switched protocols is never parked; one the server closed is dropped at the next checkout.
//! Each parked connection carries its own idle limit (its service's `idle_timeout`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;

use super::body::ProxyBody;

/// A map keyed by data the control plane or the proxy itself chose (endpoint addresses), never
/// by request bytes, so a fast non-DoS-resistant hasher is enough.
pub type FastMap<K, V> = DashMap<K, V, foldhash::fast::RandomState>;

/// At most this many connections are kept per endpoint. Parked connections include the ones
/// still streaming a response, so this is the concurrency to one endpoint that keeps reusing
/// connections: 256 covers the benchmark's heaviest load (16 × 16 h2load streams, 64 wrk
/// connections) with room to spare, while a burst beyond it cannot leave thousands of sockets
/// and their hyper buffers (~16 KiB each) open for the idle timeout.
pub const MAX_PER_ENDPOINT: usize = 256;

/// Sweeps run every `IDLE_TICK`, the unit idle timeouts are kept to: 1 s makes a service's
/// `idle_timeout` exact to a second (a few-second timeout is honoured, not rounded up to a
/// much coarser sweep), while one pass over the pools per second costs nothing measurable.
/// A server that closes first (nginx after 75 s, Node.js after 5 s) is seen as a closed
/// connection at checkout, not used. Counting sweeps instead of reading the clock keeps a
/// clock read off every request.
pub const IDLE_TICK: Duration = Duration::from_secs(1);

/// The sweeps a connection may stay unused for `idle`: whole ticks rounded up, plus the one
/// in progress when it was parked, so it is closed between `idle` (rounded up to a whole
/// tick) and one tick later, never sooner.
pub fn idle_ticks(idle: Duration) -> u64 {
    let ticks = idle.as_nanos().div_ceil(IDLE_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
}

/// The HTTP/1.1 connections of every endpoint.
#[derive(Debug, Default)]
pub struct H1Pool {
    slots: FastMap<SocketAddr, Arc<Slot>>,
}

/// One endpoint's parked connections, newest last. A mutex held only for a push, or for a
/// scan of the parked connections' ready flags (atomics) on checkout: uncontended with one
/// data-path worker, and short with several.
#[derive(Debug, Default)]
pub struct Slot {
    conns: Mutex<Vec<Parked>>,
}

#[derive(Debug)]
struct Parked {
    tx: SendRequest<ProxyBody>,
    /// The sweep count from which it is closed: when parked plus its idle limit in sweeps.
    expires: u64,
}

// === impl H1Pool ===

impl H1Pool {
    /// The slot of the endpoint at `addr`, created on first use.
    pub fn slot(&self, addr: SocketAddr) -> Arc<Slot> {
        if let Some(s) = self.slots.get(&addr) {
            return s.clone();
        }
        self.slots.entry(addr).or_default().clone()
    }

    /// One sweep (sweep count `now`): closes connections parked past their idle limit or
    /// closed by the server, and forgets endpoints with nothing parked and no request holding
    /// their slot.
    pub fn sweep(&self, now: u64) {
        self.slots.retain(|_, slot| {
            let mut conns = slot.conns.lock();
            conns.retain(|c| !c.tx.is_closed() && now < c.expires);
            !conns.is_empty() || Arc::strong_count(slot) > 1
        });
    }

    /// Connections parked across all endpoints (for tests and diagnostics).
    pub fn parked(&self) -> usize {
        self.slots.iter().map(|s| s.conns.lock().len()).sum()
    }
}

// === impl Slot ===

impl Slot {
    /// A parked connection ready for the next request, newest first (warm, and lets the old
    /// ones idle out); closed ones met on the way are dropped.
    pub fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        let mut conns = self.conns.lock();
        let mut i = conns.len();
        while i > 0 {
            i -= 1;
            let c = &conns[i];
            if c.tx.is_ready() {
                return Some(conns.swap_remove(i).tx);
            }
            if c.tx.is_closed() {
                // The last element (already looked at) moves to `i`: nothing is skipped.
                conns.swap_remove(i);
            }
        }
        None
    }

    /// Parks `tx` (at sweep count `tick`, closed after `idle_ticks` sweeps unused) for reuse
    /// once its exchange completes; drops it when the slot is full (hyper then closes the
    /// connection after the exchange).
    pub fn park(&self, tx: SendRequest<ProxyBody>, tick: u64, idle_ticks: u64) {
        let mut conns = self.conns.lock();
        if conns.len() < MAX_PER_ENDPOINT {
            let expires = tick.saturating_add(idle_ticks);
            conns.push(Parked { tx, expires });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_limit_is_never_cut_short() {
        // Parked just before a sweep, a connection must still see `idle` pass before the
        // sweep that closes it: whole ticks rounded up, plus the one in progress.
        assert_eq!(idle_ticks(Duration::from_secs(1)), 2);
        assert_eq!(idle_ticks(Duration::from_millis(1_500)), 3);
        assert_eq!(idle_ticks(Duration::from_secs(90)), 91);
        assert_eq!(idle_ticks(Duration::ZERO), 1);
        assert_eq!(idle_ticks(Duration::MAX), u64::MAX);
    }
}
