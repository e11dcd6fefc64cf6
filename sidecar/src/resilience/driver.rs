//! The request driver: sends a request through per-try and request timeouts, retry policy, retry budget, backoff and circuit breaker, avoiding the endpoint that just failed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::budget::{BudgetConfig, BudgetError, RetryBudget};
use super::circuit::{CircuitBreaker, CircuitLimits, Permit, Resource};
use super::replay::{BoxError, DEFAULT_REPLAY_LIMIT, ReplayBody};
use super::retry::{Decision, Outcome, RetryPolicy, should_retry};
use super::timeouts::{attempt_limit, within};
use crate::proxy::Cause;

/// Resilience settings of one cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterConfig {
    pub circuit: CircuitLimits,
    pub budget: BudgetConfig,
}

/// The shared resilience state of one cluster (`wiring::ClusterRegistry` keeps it across
/// requests). Outlier detection and health flags are the balancer's (`crate::balance`).
#[derive(Debug)]
pub struct ClusterResilience {
    pub budget: RetryBudget,
    pub circuit: Arc<CircuitBreaker>,
}

/// What one request's route asks for.
#[derive(Debug, Clone, Copy)]
pub struct CallPolicy<'a> {
    /// `None`: only failures that never reached the app are retried.
    pub retry: Option<&'a RetryPolicy>,
    pub request_timeout: Option<Duration>,
    /// Overrides the retry policy's per-try timeout.
    pub per_try_timeout: Option<Duration>,
    pub replay_limit: usize,
}

/// Attached to responses (as an extension) and failures: what the driver did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallInfo {
    pub attempts: u32,
    /// The endpoint of the last attempt, if any was made.
    pub endpoint: Option<usize>,
    /// A retry was wanted but the budget was empty (`mesh_retry_budget_exhausted_total`).
    pub budget_exhausted: bool,
}

/// The request failed without a response to pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{cause} after {} attempt(s)", info.attempts)]
pub struct CallError {
    pub cause: Cause,
    pub info: CallInfo,
}

/// A response body holding the cluster's concurrent-request permit until it is dropped, so
/// a streaming response counts against `max_requests` for as long as it streams.
#[derive(Debug)]
pub struct GuardedBody<B> {
    inner: B,
    _permit: Permit,
}

// === impl ClusterResilience ===

impl ClusterResilience {
    /// State for a cluster with these settings.
    pub fn new(cfg: &ClusterConfig) -> Result<Self, BudgetError> {
        Ok(ClusterResilience {
            budget: RetryBudget::new(cfg.budget)?,
            circuit: CircuitBreaker::new(cfg.circuit),
        })
    }
}

// === impl CallPolicy ===

impl Default for CallPolicy<'_> {
    fn default() -> Self {
        CallPolicy {
            retry: None,
            request_timeout: None,
            per_try_timeout: None,
            replay_limit: DEFAULT_REPLAY_LIMIT,
        }
    }
}

/// A failed attempt: its cause, and the request itself when it provably never left the proxy
/// (the connect failed), so it can be sent again without the driver having kept a copy.
#[derive(Debug)]
pub struct Failed<B> {
    pub cause: Cause,
    pub unsent: Option<Request<ReplayBody<B>>>,
}

/// Sends `req` to the cluster with retries (see the module docs of `resilience`).
///
/// `pick(avoid)` chooses an endpoint, avoiding the one that just failed when possible;
/// `send(endpoint, request)` performs one attempt. The request head is moved into the attempt
/// rather than copied, unless a retry policy may replay a request that reached an endpoint or
/// the caller asks for a copy (`keep_head`: some path of `send` cannot hand a request back).
/// Without a policy only failures that never reached the app are retried, and for those
/// `send` hands the request back in [`Failed::unsent`]; a retry-safe failure without it ends
/// the call.
pub async fn call_reclaiming<B, RB, P, S, Fut>(
    cluster: &ClusterResilience,
    policy: &CallPolicy<'_>,
    req: Request<B>,
    pick: P,
    send: S,
    keep_head: bool,
) -> Result<Response<GuardedBody<RB>>, CallError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    P: FnMut(Option<usize>) -> Result<usize, Cause>,
    S: FnMut(usize, Request<ReplayBody<B>>) -> Fut,
    Fut: Future<Output = Result<Response<RB>, Failed<B>>>,
{
    let keep_head = keep_head || policy.retry.is_some();
    drive(cluster, policy, req, pick, send, keep_head).await
}

/// The retry loop; `keep_head`: copy the request head for every attempt (else move it, and
/// rely on [`Failed::unsent`] for retries).
async fn drive<B, RB, P, S, Fut>(
    cluster: &ClusterResilience,
    policy: &CallPolicy<'_>,
    req: Request<B>,
    mut pick: P,
    mut send: S,
    keep_head: bool,
) -> Result<Response<GuardedBody<RB>>, CallError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
    P: FnMut(Option<usize>) -> Result<usize, Cause>,
    S: FnMut(usize, Request<ReplayBody<B>>) -> Fut,
    Fut: Future<Output = Result<Response<RB>, Failed<B>>>,
{
    let finish = |result: Result<Response<RB>, Cause>, info, permit| match result {
        Ok(mut resp) => {
            resp.extensions_mut().insert(info);
            Ok(resp.map(|inner| GuardedBody {
                inner,
                _permit: permit,
            }))
        }
        Err(cause) => Err(CallError { cause, info }),
    };
    let mut info = CallInfo {
        attempts: 0,
        endpoint: None,
        budget_exhausted: false,
    };
    let fail = |cause, info| Err(CallError { cause, info });
    let request_permit = match cluster.circuit.try_acquire(Resource::Request) {
        Ok(p) => p,
        Err(cause) => return fail(cause, info),
    };
    cluster.budget.deposit();
    let deadline = policy.request_timeout.map(|d| Instant::now() + d);
    let per_try = policy
        .per_try_timeout
        .or(policy.retry.and_then(|r| r.per_try_timeout));

    let (parts, body) = req.into_parts();
    // Standard methods are an enum: no allocation.
    let method = parts.method.clone();
    // Without a kept head nothing is replayed from the buffer (an unsent request travels
    // whole), so nothing is buffered either.
    let limit = if keep_head { policy.replay_limit } else { 0 };
    let body = ReplayBody::new(body, limit);
    // A never-polled clone: the source of every later replay (only when a head is kept).
    let replay = if keep_head { body.try_replay() } else { None };
    let mut head = Some(parts);
    let mut next = Some(body);
    let mut unsent: Option<Request<ReplayBody<B>>> = None;
    let mut _retry_permit = None;
    let mut endpoint = match pick(None) {
        Ok(e) => e,
        Err(cause) => return fail(cause, info),
    };

    loop {
        let req = match unsent.take() {
            Some(req) => req,
            None => {
                let body = next
                    .take()
                    .or_else(|| replay.as_ref().and_then(|r| r.try_replay()));
                let parts = if keep_head { head.clone() } else { head.take() };
                let (Some(parts), Some(body)) = (parts, body) else {
                    // Unreachable in practice: retries are only decided while replayable.
                    return fail(Cause::UpstreamReset, info);
                };
                Request::from_parts(parts, body)
            }
        };
        info.attempts += 1;
        info.endpoint = Some(endpoint);
        let limit = attempt_limit(Instant::now(), deadline, per_try);
        let result = match within(limit, send(endpoint, req)).await {
            Ok(Ok(rsp)) => Ok(rsp),
            Ok(Err(failed)) => {
                unsent = failed.unsent;
                Err(failed.cause)
            }
            Err(cause) => Err(cause),
        };
        let outcome = match &result {
            Ok(resp) => Outcome::from_response(resp.status().as_u16(), resp.headers()),
            Err(cause) => Outcome::Failed(*cause),
        };
        if outcome == Outcome::Failed(Cause::RequestTimeout) {
            return fail(Cause::RequestTimeout, info);
        }
        let replayable = unsent.is_some() || replay.as_ref().is_some_and(|r| !r.overflowed());
        let backoff = match should_retry(policy.retry, &method, info.attempts, &outcome, replayable)
        {
            Decision::Retry { backoff } => backoff,
            Decision::Done(stop) => {
                tracing::trace!(?stop, attempts = info.attempts, "attempt final");
                return finish(result, info, request_permit);
            }
        };
        if deadline.is_some_and(|d| Instant::now() + backoff >= d) {
            // No time left for another try: the failure at hand is the honest answer.
            return finish(result, info, request_permit);
        }
        // Chosen before the failed result is released, so that when no other endpoint is
        // left the client still gets the original failure rather than `no-endpoints`.
        let Ok(next_endpoint) = pick(Some(endpoint)) else {
            return finish(result, info, request_permit);
        };
        // The permit for the coming retry; the previous retry's is released here.
        _retry_permit = match cluster.circuit.try_acquire(Resource::Retry) {
            Ok(p) => Some(p),
            Err(_) => return finish(result, info, request_permit),
        };
        if !cluster.budget.try_withdraw() {
            info.budget_exhausted = true;
            tracing::debug!(
                attempts = info.attempts,
                "retry refused: retry budget exhausted"
            );
            return finish(result, info, request_permit);
        }
        // Release the failed response's connection before waiting.
        drop(result);
        tokio::time::sleep(backoff).await;
        endpoint = next_endpoint;
    }
}

// === impl GuardedBody ===

impl<B: Body + Unpin> Body for GuardedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
