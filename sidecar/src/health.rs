//! Readiness and drain state shared by discovery (config applied), admin and shutdown.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use tokio::sync::watch;

/// Ready = a first config is applied, every added gate is open (e.g. a workload certificate is
/// loaded, once mTLS adds that gate), and the proxy is not draining.
#[derive(Debug)]
pub struct Health {
    config_applied: AtomicBool,
    /// Named conditions readiness still waits for.
    closed_gates: parking_lot::Mutex<BTreeSet<&'static str>>,
    draining: watch::Sender<bool>,
}

// === impl Health ===

impl Default for Health {
    fn default() -> Self {
        Self {
            config_applied: AtomicBool::new(false),
            closed_gates: parking_lot::Mutex::default(),
            draining: watch::channel(false).0,
        }
    }
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.config_applied() && self.closed_gates.lock().is_empty() && !self.is_draining()
    }

    /// Makes readiness wait for `what` too, until [`Health::open_gate`]. Add gates before the
    /// listeners start so readiness never flips to true early.
    pub fn add_gate(&self, what: &'static str) {
        self.closed_gates.lock().insert(what);
    }

    pub fn open_gate(&self, what: &'static str) {
        self.closed_gates.lock().remove(what);
    }

    /// Gates still closed, for the `/ready` body.
    pub fn closed_gates(&self) -> Vec<&'static str> {
        self.closed_gates.lock().iter().copied().collect()
    }

    pub fn config_applied(&self) -> bool {
        self.config_applied.load(SeqCst)
    }

    /// Records that a first complete config is in force (from the control plane, the snapshot
    /// file or a static config). Returns true the first time.
    pub fn set_config_applied(&self) -> bool {
        !self.config_applied.swap(true, SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Starts draining: readiness turns false and the inbound listener stops accepting.
    /// Idempotent; returns true the first time.
    pub fn drain(&self) -> bool {
        self.draining
            .send_if_modified(|d| !std::mem::replace(d, true))
    }

    /// Resolves once draining has started (at once if it already has).
    pub async fn drained(&self) {
        let mut rx = self.draining.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we borrow it.
        let _ = rx.wait_for(|d| *d).await;
    }

    /// A receiver that turns `true` when draining starts (for the data path's listeners).
    pub fn watch_draining(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ready_needs_config_and_no_drain() {
        let h = Health::default();
        assert!(!h.is_ready());
        assert!(h.set_config_applied());
        assert!(!h.set_config_applied());
        assert!(h.is_ready());
        h.add_gate("certificate");
        assert!(!h.is_ready());
        assert_eq!(h.closed_gates(), ["certificate"]);
        h.open_gate("certificate");
        assert!(h.is_ready());
        let mut rx = h.watch_draining();
        assert!(h.drain());
        assert!(!h.drain());
        assert!(!h.is_ready());
        assert!(*rx.borrow_and_update());
        h.drained().await;
    }
}
