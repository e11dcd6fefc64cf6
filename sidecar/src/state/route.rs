//! Route domain types: ordered rules, their matches, weighted backends and actions.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

use super::Name;

/// The rules that steer traffic addressed to one service.
#[derive(Debug, Clone)]
pub struct Route {
    pub service: Name,
    /// Evaluated in order; the first rule with a matching [`RouteMatch`] wins.
    pub rules: Vec<Arc<RouteRule>>,
}

/// One rule: when any of `matches` applies (or there are none), its actions are taken.
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub name: Name,
    /// ORed; the conditions inside one match are ANDed. Empty = every request.
    pub matches: Vec<RouteMatch>,
    /// Never empty unless `redirect` is set (checked at conversion).
    pub backends: Vec<WeightedBackend>,
    /// Sum of `backends` weights, precomputed so a pick is one random draw.
    pub total_weight: u32,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub request_headers: Vec<HeaderOp>,
    pub response_headers: Vec<HeaderOp>,
    /// Replaces the matched path prefix (only meaningful with a prefix path match).
    pub rewrite_prefix: Option<Name>,
    pub redirect: Option<Redirect>,
    pub fault: Option<Fault>,
    pub mirror: Option<Mirror>,
    pub rate_limit: Option<RateLimit>,
}

/// Conditions that must all hold; absent conditions always hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub method: Option<Method>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<QueryMatch>,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(Name),
    /// Segment-unaware byte prefix, like Envoy's `prefix`.
    Prefix(Name),
    /// Anchored: the whole path must match.
    Regex(Regex),
}

#[derive(Debug, Clone)]
pub enum ValueMatch {
    Exact(Name),
    /// Anchored: the whole value must match.
    Regex(Regex),
    Present,
}

#[derive(Debug, Clone)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Debug, Clone)]
pub struct QueryMatch {
    pub name: Name,
    pub value: ValueMatch,
}

/// A destination: a service, optionally narrowed to endpoints whose `version` label is `subset`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WeightedBackend {
    pub service: Name,
    pub subset: Option<Name>,
    pub weight: u32,
}

#[derive(Debug, Clone)]
pub enum HeaderOp {
    Set(HeaderName, HeaderValue),
    Add(HeaderName, HeaderValue),
    Remove(HeaderName),
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub scheme: Option<Name>,
    pub host: Option<Name>,
    pub path: Option<Name>,
    /// One of 301, 302, 303, 307, 308.
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOn {
    FiveXx,
    GatewayError,
    Reset,
    ConnectFailure,
    Retriable4xx,
    Status(u16),
    /// A gRPC status name such as `unavailable`.
    Grpc(Name),
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total attempts including the first (≥ 2 when a policy exists).
    pub attempts: u32,
    pub retry_on: Vec<RetryOn>,
    pub per_try_timeout: Option<Duration>,
    pub allow_non_idempotent: bool,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub delay: Option<Duration>,
    /// Share of requests delayed, per-mille (0..=1000).
    pub delay_permille: u16,
    pub abort_status: Option<u16>,
    pub abort_permille: u16,
}

#[derive(Debug, Clone)]
pub struct Mirror {
    pub service: Name,
    pub subset: Option<Name>,
    pub permille: u16,
}

#[derive(Debug, Clone)]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
    pub per_source: bool,
    /// The rule's limiter. It lives with the converted rule, so it persists across snapshot
    /// updates that keep the Route and starts afresh when the Route changes.
    pub limiter: Arc<super::limiter::Gcra>,
}
