//! Route matching: picks the rule for a request and its weighted backend, and applies actions.
//!
//! Order: a Route's rules are tried in the order the control plane sent them and the first
//! rule with a matching [`RouteMatch`] wins (a rule without matches matches everything, so it
//! belongs last). Inside a rule the matches are ORed in order; inside a match every condition
//! (path, method, headers, query parameters) must hold. There is no implicit re-ordering by
//! specificity: the operator's order is the contract, as in Envoy and Gateway API's tie-breaks
//! being resolved by the control plane before it sends the rules. The authority is matched
//! by the route lookup itself (one Route per service name).

use std::sync::Arc;

use http::header::{HeaderMap, HeaderValue, LOCATION};
use http::{Method, StatusCode, Uri};

use crate::state::{
    HeaderOp, PathMatch, Redirect, Route, RouteMatch, RouteRule, ValueMatch, WeightedBackend,
};

/// The request facts routing looks at, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// The rule that won and what its path match consumed (for prefix rewrites).
#[derive(Debug, Clone, Copy)]
pub struct Selected<'r> {
    pub rule: &'r Arc<RouteRule>,
    /// The part of the path the winning match matched as a prefix (whole path for exact).
    pub matched: Matched<'r>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched<'r> {
    Prefix(&'r str),
    Exact,
    /// Regex or no path condition.
    Other,
}

impl<'a> RequestInfo<'a> {
    pub fn from_request<B>(req: &'a http::Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
        }
    }
}

/// First-match-wins selection (see the module docs for the order).
pub fn select<'r>(route: &'r Route, req: RequestInfo<'_>) -> Option<Selected<'r>> {
    route.rules.iter().find_map(|rule| {
        if rule.matches.is_empty() {
            return Some(Selected {
                rule,
                matched: Matched::Other,
            });
        }
        rule.matches
            .iter()
            .find_map(|m| matches(m, req))
            .map(|matched| Selected { rule, matched })
    })
}

/// `Some` when every condition of `m` holds.
pub fn matches<'r>(m: &'r RouteMatch, req: RequestInfo<'_>) -> Option<Matched<'r>> {
    if let Some(method) = &m.method
        && method != req.method
    {
        return None;
    }
    let path = req.uri.path();
    let matched = match &m.path {
        None => Matched::Other,
        Some(PathMatch::Exact(p)) => (path == &**p).then_some(Matched::Exact)?,
        Some(PathMatch::Prefix(p)) => path.starts_with(&**p).then_some(Matched::Prefix(p))?,
        Some(PathMatch::Regex(re)) => re.is_match(path).then_some(Matched::Other)?,
    };
    let headers_ok = m.headers.iter().all(|h| {
        let mut values = req.headers.get_all(&h.name).iter();
        match &h.value {
            ValueMatch::Present => values.next().is_some(),
            v => values.any(|hv| hv.to_str().is_ok_and(|s| value_matches(v, s))),
        }
    });
    if !headers_ok {
        return None;
    }
    let query = req.uri.query().unwrap_or("");
    let query_ok = m.query_params.iter().all(|q| {
        // Raw (not percent-decoded) comparison: no allocation, and operators match what
        // clients send; a decoded match can be written as a regex.
        query
            .split('&')
            .filter_map(|kv| match kv.split_once('=') {
                Some((k, v)) => Some((k, v)),
                None if !kv.is_empty() => Some((kv, "")),
                None => None,
            })
            .any(|(k, v)| k == &*q.name && value_matches(&q.value, v))
    });
    query_ok.then_some(matched)
}

fn value_matches(m: &ValueMatch, v: &str) -> bool {
    match m {
        ValueMatch::Exact(e) => **e == *v,
        ValueMatch::Regex(re) => re.is_match(v),
        ValueMatch::Present => true,
    }
}

/// Weighted pick: `draw` is uniform in `0..rule.total_weight` (callers pass a random number;
/// tests pass fixed ones). Backends with weight 0 are never picked while others have weight.
pub fn pick_backend(rule: &RouteRule, draw: u32) -> Option<&WeightedBackend> {
    let mut left = draw % rule.total_weight.max(1);
    for b in &rule.backends {
        if left < b.weight {
            return Some(b);
        }
        left -= b.weight;
    }
    rule.backends.first()
}

/// A random weighted pick.
pub fn pick_backend_random(rule: &RouteRule) -> Option<&WeightedBackend> {
    pick_backend(rule, rand::random_range(0..rule.total_weight.max(1)))
}

/// Applies header operations in order.
pub fn apply_header_ops(ops: &[HeaderOp], headers: &mut HeaderMap) {
    for op in ops {
        match op {
            HeaderOp::Set(n, v) => {
                headers.insert(n.clone(), v.clone());
            }
            HeaderOp::Add(n, v) => {
                headers.append(n.clone(), v.clone());
            }
            HeaderOp::Remove(n) => {
                headers.remove(n);
            }
        }
    }
}

/// The rewritten URI when the rule rewrites: the matched prefix (whole path for an exact
/// match, `/` otherwise) is replaced by `rewrite_prefix`; the query is kept.
pub fn rewrite(sel: &Selected<'_>, uri: &Uri) -> Option<Uri> {
    let to = sel.rule.rewrite_prefix.as_deref()?;
    let path = uri.path();
    let rest = match sel.matched {
        Matched::Prefix(p) => &path[p.len()..],
        Matched::Exact => "",
        Matched::Other => path.strip_prefix('/').unwrap_or(path),
    };
    // Avoid `//` when both the prefix ends and the rest starts with a slash.
    let rest = if to.ends_with('/') {
        rest.trim_start_matches('/')
    } else {
        rest
    };
    let mut pq = String::with_capacity(to.len() + rest.len() + 1 + uri.query().map_or(0, str::len));
    pq.push_str(to);
    pq.push_str(rest);
    if pq.is_empty() {
        pq.push('/');
    }
    if let Some(q) = uri.query() {
        pq.push('?');
        pq.push_str(q);
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The redirect response's status and `Location`, from the rule's overrides and the request.
pub fn redirect_target(
    r: &Redirect,
    uri: &Uri,
    host: Option<&str>,
) -> Option<(StatusCode, HeaderValue)> {
    let scheme = r.scheme.as_deref().or(uri.scheme_str()).unwrap_or("http");
    let host = r
        .host
        .as_deref()
        .or(host)
        .or(uri.authority().map(|a| a.as_str()))?;
    let path = r.path.as_deref().unwrap_or(uri.path());
    let mut loc = format!("{scheme}://{host}{path}");
    if r.path.is_none()
        && let Some(q) = uri.query()
    {
        loc.push('?');
        loc.push_str(q);
    }
    let status = StatusCode::from_u16(r.status).ok()?;
    Some((status, HeaderValue::try_from(loc).ok()?))
}

/// The `Location` header name, re-exported for callers building redirect responses.
pub const REDIRECT_HEADER: http::HeaderName = LOCATION;

#[cfg(test)]
#[path = "routing_tests.rs"]
mod tests;
