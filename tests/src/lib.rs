//! Shared helpers for end-to-end scenarios: locate and spawn the real binaries, wait for them.

pub mod admin;
pub mod http;
pub mod netns;
pub mod process;

pub use process::{ControlPlane, Sidecar, SidecarOpts, bin_path};

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
///
/// The limit only bounds a hang; tests never assert on how long something took.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        // 50 ms keeps polling cheap while reacting well within a human-noticeable delay.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
