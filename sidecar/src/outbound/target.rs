//! Waiting for discovery to know the service a request or connection is for.

use std::sync::Arc;
use std::time::Duration;

use crate::state::{Snapshot, StateHandle};

/// The current snapshot once it knows `service` (or `wait` has passed): asks the discovery
/// client for unknown services and waits for its answer.
pub async fn known(state: &StateHandle, service: &str, wait: Duration) -> Arc<Snapshot> {
    let snap = state.snapshot();
    if snap.knows(service) {
        return snap;
    }
    // Subscribe before asking, so an answer arriving in between is not missed.
    let mut changed = state.changed();
    state.want(service);
    let _ = tokio::time::timeout(wait, async {
        while changed.changed().await.is_ok() {
            if state.load().knows(service) {
                break;
            }
        }
    })
    .await;
    state.snapshot()
}
