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

/// One accepted connection of a proxy listener, within the Listener resource's connection
/// limit; `None` once drain begins. A refused connection is counted and dropped, a failed
/// accept (EMFILE and friends) backs off for 10 ms rather than spin.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    drain: &mut super::Drain,
    state: &crate::state::StateHandle,
    limit: &ConnLimit,
    side: &'static str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr, ConnPermit)> {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, side, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = drain.signaled() => return None,
        };
        let max = state
            .load()
            .listener
            .as_ref()
            .and_then(|l| l.max_connections);
        match limit.try_acquire(max) {
            Some(permit) => return Some((stream, peer, permit)),
            None => super::Cause::ConnectionLimit.record(&peer),
        }
    }
}
