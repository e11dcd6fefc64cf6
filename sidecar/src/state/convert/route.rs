//! Route conversion: rules, matches, backends and actions.

use std::time::Duration;

use http::Method;
use mesh_proto::types::v1 as pb;

use super::*;

// === Route ===

impl TryFrom<&pb::Route> for Route {
    type Error = ConvertError;
    fn try_from(r: &pb::Route) -> Result<Self> {
        if r.service.is_empty() {
            return Err(ConvertError::new("service", "must not be empty"));
        }
        let rules = r
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                RouteRule::try_from(rule)
                    .map(std::sync::Arc::new)
                    .map_err(|e| e.within(format!("rules[{i}]")))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            service: name(&r.service),
            rules,
        })
    }
}

impl TryFrom<&pb::RouteRule> for RouteRule {
    type Error = ConvertError;
    fn try_from(r: &pb::RouteRule) -> Result<Self> {
        let matches = r
            .matches
            .iter()
            .enumerate()
            .map(|(i, m)| RouteMatch::try_from(m).map_err(|e| e.within(format!("matches[{i}]"))))
            .collect::<Result<Vec<_>>>()?;
        let mut backends = Vec::with_capacity(r.backends.len());
        let mut total_weight: u32 = 0;
        for (i, b) in r.backends.iter().enumerate() {
            let field = format!("backends[{i}]");
            if b.service.is_empty() {
                return Err(ConvertError::new(
                    format!("{field}.service"),
                    "must not be empty",
                ));
            }
            total_weight = total_weight.checked_add(b.weight).ok_or_else(|| {
                ConvertError::new(format!("{field}.weight"), "weights overflow u32")
            })?;
            backends.push(WeightedBackend {
                service: name(&b.service),
                subset: opt_name(&b.subset),
                weight: b.weight,
            });
        }
        // A single backend without a weight means "all traffic"; several all at 0 share evenly.
        if total_weight == 0 {
            for b in &mut backends {
                b.weight = 1;
            }
            total_weight = backends.len() as u32;
        }
        let redirect = r.redirect.as_ref().map(redirect).transpose()?;
        let fault = r.fault.as_ref().map(fault).transpose()?.flatten();
        // The control plane accepts a rule that aborts every request without a backend (the
        // abort answers before any backend is picked), so the proxy must too.
        let aborts_all = fault
            .as_ref()
            .is_some_and(|f| f.abort_status.is_some() && f.abort_permille >= 1000);
        if backends.is_empty() && redirect.is_none() && !aborts_all {
            return Err(ConvertError::new(
                "backends",
                "a rule needs a backend, a redirect, or a fault aborting every request",
            ));
        }
        let rewrite_prefix = opt_name(&r.rewrite_prefix);
        if let Some(p) = &rewrite_prefix
            && !p.starts_with('/')
        {
            return Err(ConvertError::new("rewrite_prefix", "must start with '/'"));
        }
        Ok(Self {
            name: name(&r.name),
            matches,
            backends,
            total_weight,
            timeout: opt_ms(r.timeout_ms),
            retry: r.retry.as_ref().map(retry).transpose()?.flatten(),
            request_headers: header_ops("request_headers", &r.request_headers)?,
            response_headers: header_ops("response_headers", &r.response_headers)?,
            rewrite_prefix,
            redirect,
            fault,
            mirror: r.mirror.as_ref().map(mirror).transpose()?.flatten(),
            rate_limit: r.rate_limit.as_ref().and_then(|rl| {
                (rl.requests_per_second != 0).then(|| RateLimit {
                    requests_per_second: rl.requests_per_second,
                    burst: rl.burst.max(1),
                    per_source: rl.per_source,
                    limiter: std::sync::Arc::new(crate::state::Gcra::new(
                        rl.requests_per_second,
                        rl.burst.max(1),
                    )),
                })
            }),
        })
    }
}

impl TryFrom<&pb::RouteMatch> for RouteMatch {
    type Error = ConvertError;
    fn try_from(m: &pb::RouteMatch) -> Result<Self> {
        let mut out = path_none(m)?;
        out.path = match &m.path {
            None => None,
            Some(p) => match p.kind() {
                pb::PathMatchKind::Unspecified if p.value.is_empty() => None,
                pb::PathMatchKind::Exact | pb::PathMatchKind::Unspecified => {
                    Some(PathMatch::Exact(name(&p.value)))
                }
                pb::PathMatchKind::Prefix => Some(PathMatch::Prefix(name(&p.value))),
                pb::PathMatchKind::Regex => Some(PathMatch::Regex(regex("path.value", &p.value)?)),
            },
        };
        Ok(out)
    }
}

/// Everything of a match except its path.
fn path_none(m: &pb::RouteMatch) -> Result<RouteMatch> {
    let method = if m.method.is_empty() {
        None
    } else {
        Some(
            Method::from_bytes(m.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
                ConvertError::new("method", format!("invalid method {:?}", m.method))
            })?,
        )
    };
    let headers = m
        .headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let f = format!("headers[{i}]");
            Ok(HeaderMatch {
                name: header_name(&format!("{f}.name"), &h.name)?,
                value: value_match(&f, h)?,
            })
        })
        .collect::<Result<_>>()?;
    let query_params = m
        .query_params
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let f = format!("query_params[{i}]");
            if q.name.is_empty() {
                return Err(ConvertError::new(format!("{f}.name"), "must not be empty"));
            }
            Ok(QueryMatch {
                name: name(&q.name),
                value: value_match(&f, q)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(RouteMatch {
        path: None,
        method,
        headers,
        query_params,
    })
}

fn value_match(field: &str, kv: &pb::KeyValueMatch) -> Result<ValueMatch> {
    Ok(match kv.kind() {
        pb::ValueMatchKind::Unspecified | pb::ValueMatchKind::Exact => {
            ValueMatch::Exact(name(&kv.value))
        }
        pb::ValueMatchKind::Regex => {
            ValueMatch::Regex(regex(&format!("{field}.value"), &kv.value)?)
        }
        pb::ValueMatchKind::Present => ValueMatch::Present,
    })
}

fn header_ops(field: &str, ops: &[pb::HeaderOp]) -> Result<Vec<HeaderOp>> {
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let f = format!("{field}[{i}]");
            let n = header_name(&format!("{f}.name"), &op.name)?;
            Ok(match op.kind() {
                pb::HeaderOpKind::Remove => HeaderOp::Remove(n),
                pb::HeaderOpKind::Add => {
                    HeaderOp::Add(n, header_value(&format!("{f}.value"), &op.value)?)
                }
                pb::HeaderOpKind::Set | pb::HeaderOpKind::Unspecified => {
                    HeaderOp::Set(n, header_value(&format!("{f}.value"), &op.value)?)
                }
            })
        })
        .collect()
}

fn redirect(r: &pb::Redirect) -> Result<Redirect> {
    let status = match r.status {
        0 => 302,
        s @ (301 | 302 | 303 | 307 | 308) => s as u16,
        s => {
            return Err(ConvertError::new(
                "redirect.status",
                format!("{s} is not a redirect status"),
            ));
        }
    };
    if !r.scheme.is_empty() && r.scheme != "http" && r.scheme != "https" {
        return Err(ConvertError::new(
            "redirect.scheme",
            "must be http or https",
        ));
    }
    if !r.path.is_empty() && !r.path.starts_with('/') {
        return Err(ConvertError::new("redirect.path", "must start with '/'"));
    }
    if !r.host.is_empty() {
        http::uri::Authority::try_from(r.host.as_str())
            .map_err(|e| ConvertError::new("redirect.host", e))?;
    }
    Ok(Redirect {
        scheme: opt_name(&r.scheme),
        host: opt_name(&r.host),
        path: opt_name(&r.path),
        status,
    })
}

fn retry(r: &pb::RetryPolicy) -> Result<Option<RetryPolicy>> {
    if r.attempts <= 1 {
        return Ok(None);
    }
    let retry_on = r
        .retry_on
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(match c.as_str() {
                "5xx" => RetryOn::FiveXx,
                "gateway-error" => RetryOn::GatewayError,
                "reset" => RetryOn::Reset,
                "connect-failure" => RetryOn::ConnectFailure,
                "retriable-4xx" => RetryOn::Retriable4xx,
                s if s.starts_with("grpc:") => RetryOn::Grpc(name(&s[5..])),
                s => match s.parse::<u16>() {
                    Ok(code @ 100..=599) => RetryOn::Status(code),
                    _ => {
                        return Err(ConvertError::new(
                            format!("retry.retry_on[{i}]"),
                            format!("unknown retry condition {s:?}"),
                        ));
                    }
                },
            })
        })
        .collect::<Result<_>>()?;
    // Defaults: 25 ms first backoff and a 250 ms cap, Envoy's, keep a retry storm from
    // piling onto an overloaded upstream while adding little latency to a single retry.
    let backoff_base = opt_ms(r.backoff_base_ms).unwrap_or(Duration::from_millis(25));
    let backoff_max = opt_ms(r.backoff_max_ms).unwrap_or(backoff_base * 10);
    Ok(Some(RetryPolicy {
        attempts: r.attempts,
        retry_on,
        per_try_timeout: opt_ms(r.per_try_timeout_ms),
        allow_non_idempotent: r.allow_non_idempotent,
        backoff_base,
        backoff_max,
    }))
}

fn fault(f: &pb::Fault) -> Result<Option<Fault>> {
    let abort_status = match f.abort_status {
        0 => None,
        s @ 200..=599 => Some(s as u16),
        s => {
            return Err(ConvertError::new(
                "fault.abort_status",
                format!("{s} is not an HTTP status"),
            ));
        }
    };
    let out = Fault {
        delay: opt_ms(f.delay_ms),
        delay_permille: permille("fault.delay_permille", f.delay_permille)?,
        abort_status,
        abort_permille: permille("fault.abort_permille", f.abort_permille)?,
    };
    let active = (out.delay.is_some() && out.delay_permille > 0)
        || (out.abort_status.is_some() && out.abort_permille > 0);
    Ok(active.then_some(out))
}

fn mirror(m: &pb::Mirror) -> Result<Option<Mirror>> {
    if m.service.is_empty() {
        return Ok(None);
    }
    Ok(Some(Mirror {
        service: name(&m.service),
        subset: opt_name(&m.subset),
        permille: permille("mirror.permille", m.permille)?,
    }))
}
