//! Returning the heap freed by configuration updates to the operating system.
//!
//! Decoding a discovery response or a static config builds the protos, the domain snapshot and
//! the balancers, then frees the protos and the replaced snapshot. glibc keeps those freed
//! chunks in its arenas (it only trims the top of the heap), so an idle sidecar would keep
//! the peak of its last update resident: 1.4 MiB of the 6.6 MiB private memory with 100
//! routes and 1,000 endpoints. `malloc_trim(0)` releases every whole free page.

use std::time::Duration;

use crate::state::StateHandle;

/// Wait after a change before trimming: a burst of updates (start-up, a rollout) is trimmed
/// once, after it. 1 s is far below any memory-pressure timescale and far above the gap
/// between the responses of one discovery burst.
const SETTLE: Duration = Duration::from_secs(1);

/// Trims the heap after every settled snapshot change until the state handle is dropped.
/// Runs on the control runtime: the trim walks the arenas (well under a millisecond for a few
/// MiB) and takes each arena's lock briefly, so it happens only after configuration changes,
/// never per request.
pub async fn trim_after_updates(state: StateHandle) {
    let mut changed = state.changed();
    loop {
        trim();
        if changed.changed().await.is_err() {
            return;
        }
        // Coalesce a burst: keep waiting while changes keep coming.
        loop {
            match tokio::time::timeout(SETTLE, changed.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return,
                Err(_) => break,
            }
        }
    }
}

/// Releases free heap pages to the OS; a no-op where the allocator is not glibc's.
#[allow(
    unsafe_code,
    reason = "one libc call with no preconditions, see SAFETY"
)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only inspects and releases the allocator's own free memory; it is
    // thread-safe (it locks each arena) and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
