//! Route domain types: ordered rules that steer a service's requests to weighted backends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The traffic rules of one service (the authority the client called).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub service: String,
    pub rules: Vec<RouteRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRule {
    pub name: String,
    /// Any match applies; empty = every request.
    pub matches: Vec<RouteMatch>,
    pub backends: Vec<Backend>,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub request_headers: Vec<HeaderOp>,
    pub response_headers: Vec<HeaderOp>,
    pub rewrite_prefix: Option<String>,
    pub redirect: Option<Redirect>,
    pub fault: Option<Fault>,
    pub mirror: Option<Mirror>,
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
    /// Checked to compile when converted; kept as text so it can be stored and sent on.
    Regex(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RouteMatch {
    pub path: Option<PathMatch>,
    pub method: Option<String>,
    pub headers: Vec<ValueMatch>,
    pub query_params: Vec<ValueMatch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ValueMatch {
    pub name: String,
    pub kind: ValueMatchKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ValueMatchKind {
    Exact(String),
    Regex(String),
    Present,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub service: String,
    /// Endpoint subset selected by the `version` label; `None` = every endpoint.
    pub subset: Option<String>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub retry_on: Vec<String>,
    pub per_try_timeout: Option<Duration>,
    pub allow_non_idempotent: bool,
    pub backoff_base: Option<Duration>,
    pub backoff_max: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeaderOpKind {
    Set,
    Add,
    Remove,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderOp {
    pub kind: HeaderOpKind,
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub delay: Option<Duration>,
    /// Per-mille of requests delayed (0..=1000).
    pub delay_permille: u16,
    pub abort_status: Option<u16>,
    pub abort_permille: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mirror {
    pub service: String,
    pub subset: Option<String>,
    pub permille: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
    pub per_source: bool,
}

// === impl Route ===

impl Route {
    /// Every service this route sends traffic to (backends and mirrors), for existence checks.
    pub fn referenced_services(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().flat_map(|r| {
            r.backends
                .iter()
                .map(|b| b.service.as_str())
                .chain(r.mirror.iter().map(|m| m.service.as_str()))
        })
    }
}
