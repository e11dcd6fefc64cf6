//! The per-try and request timeouts of one attempt: which ends first, and running an attempt within it as `timeout:per-try` / `timeout:request`.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::proxy::Cause;

/// The time left for one attempt and the cause its expiry is: the per-try timeout
/// ([`Cause::PerTryTimeout`]) or what remains of the request deadline
/// ([`Cause::RequestTimeout`]), whichever ends first (a tie is the request's).
pub fn attempt_limit(
    now: Instant,
    request_deadline: Option<Instant>,
    per_try: Option<Duration>,
) -> Option<(Duration, Cause)> {
    let remaining = request_deadline.map(|d| d.saturating_duration_since(now));
    match (remaining, per_try) {
        (Some(r), Some(p)) if p < r => Some((p, Cause::PerTryTimeout)),
        (Some(r), _) => Some((r, Cause::RequestTimeout)),
        (None, Some(p)) => Some((p, Cause::PerTryTimeout)),
        (None, None) => None,
    }
}

/// Runs `fut` for at most `limit`; expiry is the limit's cause.
pub async fn within<F: Future>(
    limit: Option<(Duration, Cause)>,
    fut: F,
) -> Result<F::Output, Cause> {
    match limit {
        None => Ok(fut.await),
        Some((d, cause)) => tokio::time::timeout(d, fut).await.map_err(|_| cause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_limit_picks_the_earlier() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(attempt_limit(now, None, None), None);
        assert_eq!(
            attempt_limit(now, None, Some(s(1))),
            Some((s(1), Cause::PerTryTimeout))
        );
        assert_eq!(
            attempt_limit(now, Some(now + s(5)), Some(s(1))),
            Some((s(1), Cause::PerTryTimeout))
        );
        assert_eq!(
            attempt_limit(now, Some(now + s(1)), Some(s(5))),
            Some((s(1), Cause::RequestTimeout))
        );
        assert_eq!(
            attempt_limit(now + s(9), Some(now + s(1)), None),
            Some((Duration::ZERO, Cause::RequestTimeout))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn within_maps_expiry_to_its_cause() {
        let slow = tokio::time::sleep(Duration::from_secs(10));
        let r = within(Some((Duration::from_secs(1), Cause::PerTryTimeout)), slow).await;
        assert_eq!(r, Err(Cause::PerTryTimeout));
        assert_eq!(within(None, async { 7 }).await, Ok(7));
    }
}
