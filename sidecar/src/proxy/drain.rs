//! Graceful drain: a signal every listener and connection watches, and a wait for them all.

use tokio::sync::watch;

/// Held by listeners and connections; tells them to stop accepting / finish gracefully.
#[derive(Debug, Clone)]
pub struct Drain(watch::Receiver<bool>);

/// Owned by whoever shuts down; signals and then waits until every [`Drain`] is dropped.
#[derive(Debug)]
pub struct DrainTrigger(watch::Sender<bool>);

pub fn channel() -> (DrainTrigger, Drain) {
    let (tx, rx) = watch::channel(false);
    (DrainTrigger(tx), Drain(rx))
}

// === impl Drain ===

impl Drain {
    /// Resolves once draining has begun (or the trigger is gone).
    pub async fn signaled(&mut self) {
        let _ = self.0.wait_for(|d| *d).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }
}

// === impl DrainTrigger ===

impl DrainTrigger {
    /// Starts draining and waits until every listener and connection has finished. Callers
    /// bound this with their grace period.
    pub async fn drain(self) {
        let _ = self.0.send(true);
        self.0.closed().await;
    }

    /// Starts draining without waiting.
    pub fn signal(&self) {
        let _ = self.0.send(true);
    }

    /// Waits until every `Drain` is dropped.
    pub async fn closed(&self) {
        self.0.closed().await;
    }
}
