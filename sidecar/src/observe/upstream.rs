//! What the routing layer decided for one request (rule, backend, endpoint, attempts), noted for the span, log and metrics of the hop.
//!
//! The observe layer runs the request inside a tokio task-local scope holding an [`Upstream`];
//! the outbound forwarder fills it in with [`note`] as it decides. A task-local costs no
//! allocation and keeps the forwarder's signature free of observability types; outside a scope
//! (tests calling the forwarder directly) a note is a no-op.

use std::cell::RefCell;
use std::net::SocketAddr;

use crate::state::Name;

/// The routing outcome of one request; every field stays empty until decided.
#[derive(Debug, Default, Clone)]
pub struct Upstream {
    /// The name of the route rule that matched.
    pub route: Option<Name>,
    /// The backend service (cluster) the rule picked.
    pub backend: Option<Name>,
    /// The endpoint of the last attempt.
    pub endpoint: Option<SocketAddr>,
    /// The endpoint's `version` label (the outbound metric's `version`).
    pub version: Option<Name>,
    /// The SPIFFE ID the endpoint must present: set = the hop used mTLS.
    pub identity: Option<Name>,
    /// Attempts made (1 = no retry; 0 = none, the proxy answered itself).
    pub attempts: u32,
    /// A retry was wanted but the retry budget refused it.
    pub budget_exhausted: bool,
}

tokio::task_local! {
    static UPSTREAM: RefCell<Upstream>;
}

/// Runs `fut` with an empty [`Upstream`] to note into; returns its output and the notes.
pub async fn scoped<F: Future>(fut: F) -> (F::Output, Upstream) {
    let scoped = UPSTREAM.scope(RefCell::new(Upstream::default()), fut);
    let mut scoped = std::pin::pin!(scoped);
    let out = (&mut scoped).await;
    let noted = scoped
        .as_mut()
        .take_value()
        .map(RefCell::into_inner)
        .unwrap_or_default();
    (out, noted)
}

/// Records part of the routing outcome of the current request (no-op outside [`scoped`]).
pub fn note(f: impl FnOnce(&mut Upstream)) {
    let _ = UPSTREAM.try_with(|u| f(&mut u.borrow_mut()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_inside_the_scope_come_back_and_outside_are_ignored() {
        note(|u| u.attempts = 9);
        let ((), u) = scoped(async {
            note(|u| u.route = Some("canary".into()));
            tokio::task::yield_now().await;
            note(|u| u.attempts = 2);
        })
        .await;
        assert_eq!(u.route.as_deref(), Some("canary"));
        assert_eq!(u.attempts, 2);
    }
}
