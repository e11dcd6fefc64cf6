//! Connection limit per listener (the Listener resource's `max_connections`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::AcqRel};

/// Counts a listener's open connections. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ConnLimit(Arc<AtomicUsize>);

/// One open connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnPermit(Arc<AtomicUsize>);

// === impl ConnLimit ===

impl ConnLimit {
    /// A slot for a new connection, or `None` when `max` connections are open. The limit is
    /// read per accept, so a config change applies to the next connection.
    pub fn try_acquire(&self, max: Option<u32>) -> Option<ConnPermit> {
        let before = self.0.fetch_add(1, AcqRel);
        if let Some(max) = max
            && before >= max as usize
        {
            self.0.fetch_sub(1, AcqRel);
            return None;
        }
        Some(ConnPermit(self.0.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, AcqRel);
    }
}
