//! Route validation: proto `Route` → domain `Route`, checking weights, regexes, duplicate
//! matches and timeouts rule by rule.

use mesh_proto::types::v1 as pb;

use super::route_match::{check_duplicate_matches, match_from};
use super::{
    Result, ValidationError, bounded, err, header_name, http_path, opt_text, permille,
    service_name, text, timeout_ms,
};
use crate::model::{
    Backend, Fault, HeaderOp, HeaderOpKind, Mirror, RateLimit, Redirect, RetryPolicy, Route,
    RouteRule,
};

/// Weights of a multi-backend rule are percentages of its traffic.
const WEIGHT_TOTAL: u32 = 100;

/// More than 10 attempts turns a brown-out into a retry storm; Envoy-style meshes cap lower.
const MAX_ATTEMPTS: u32 = 10;

/// Condition names a proxy understands in `retry_on` besides status codes and `grpc:<code>`.
const RETRY_ON: [&str; 5] = [
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
];

impl TryFrom<pb::Route> for Route {
    type Error = ValidationError;

    fn try_from(r: pb::Route) -> Result<Self> {
        let service = service_name("route.service", &r.service)?;
        if r.rules.is_empty() {
            return Err(err("route.rules", "at least one rule is required"));
        }
        bounded("route.rules", r.rules.len())?;
        let rules = r
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, rule)| rule_from(&format!("route.rules[{i}]"), rule))
            .collect::<Result<Vec<_>>>()?;
        check_duplicate_matches(&rules)?;
        Ok(Route { service, rules })
    }
}

/// Checks that the route's own service and every service it sends to exist.
pub fn check_services(route: &Route, known: impl Fn(&str) -> bool) -> Result<()> {
    if !known(&route.service) {
        return Err(unknown("route.service", &route.service));
    }
    for (i, rule) in route.rules.iter().enumerate() {
        for (j, b) in rule.backends.iter().enumerate() {
            if !known(&b.service) {
                return Err(unknown(
                    &format!("route.rules[{i}].backends[{j}].service"),
                    &b.service,
                ));
            }
        }
        if let Some(m) = &rule.mirror
            && !known(&m.service)
        {
            return Err(unknown(
                &format!("route.rules[{i}].mirror.service"),
                &m.service,
            ));
        }
    }
    Ok(())
}

pub(crate) fn unknown(field: &str, service: &str) -> ValidationError {
    err(
        field,
        format!("unknown service {service:?} (create it first, or start a proxy for it)"),
    )
}

fn rule_from(f: &str, r: pb::RouteRule) -> Result<RouteRule> {
    text(&format!("{f}.name"), &r.name)?;
    bounded(&format!("{f}.matches"), r.matches.len())?;
    let matches = r
        .matches
        .into_iter()
        .enumerate()
        .map(|(i, m)| match_from(&format!("{f}.matches[{i}]"), m))
        .collect::<Result<Vec<_>>>()?;
    let backends = backends_from(f, r.backends)?;
    let redirect = r
        .redirect
        .map(|rd| redirect_from(&format!("{f}.redirect"), rd))
        .transpose()?;
    let fault = r
        .fault
        .map(|ft| fault_from(&format!("{f}.fault"), ft))
        .transpose()?;
    let aborts = fault
        .as_ref()
        .is_some_and(|ft| ft.abort_status.is_some() && ft.abort_permille == 1000);
    if backends.is_empty() && redirect.is_none() && !aborts {
        return Err(err(
            format!("{f}.backends"),
            "a rule needs a backend, a redirect, or a fault aborting every request",
        ));
    }
    let rewrite_prefix = match r.rewrite_prefix.as_str() {
        "" => None,
        p => Some(http_path(&format!("{f}.rewrite_prefix"), p)?),
    };
    Ok(RouteRule {
        name: r.name,
        matches,
        backends,
        timeout: timeout_ms(&format!("{f}.timeout_ms"), r.timeout_ms)?,
        retry: r
            .retry
            .map(|rp| retry_from(&format!("{f}.retry"), rp))
            .transpose()?,
        request_headers: header_ops(&format!("{f}.request_headers"), r.request_headers)?,
        response_headers: header_ops(&format!("{f}.response_headers"), r.response_headers)?,
        rewrite_prefix,
        redirect,
        fault,
        mirror: r
            .mirror
            .map(|m| mirror_from(&format!("{f}.mirror"), m))
            .transpose()?,
        rate_limit: r
            .rate_limit
            .map(|rl| rate_limit_from(&format!("{f}.rate_limit"), rl))
            .transpose()?,
    })
}

fn backends_from(f: &str, bs: Vec<pb::WeightedBackend>) -> Result<Vec<Backend>> {
    bounded(&format!("{f}.backends"), bs.len())?;
    let many = bs.len() > 1;
    let mut sum = 0u32;
    let mut out = Vec::with_capacity(bs.len());
    for (j, b) in bs.into_iter().enumerate() {
        let bf = format!("{f}.backends[{j}]");
        let service = service_name(&format!("{bf}.service"), &b.service)?;
        let subset = opt_text(&format!("{bf}.subset"), &b.subset)?;
        if b.weight > WEIGHT_TOTAL {
            return Err(err(
                format!("{bf}.weight"),
                format!(
                    "{} is above {WEIGHT_TOTAL} (weights are percentages)",
                    b.weight
                ),
            ));
        }
        if !many && b.weight != 0 && b.weight != WEIGHT_TOTAL {
            return Err(err(
                format!("{bf}.weight"),
                format!(
                    "a single backend takes all traffic: weight must be 0 or {WEIGHT_TOTAL}, not {}",
                    b.weight
                ),
            ));
        }
        sum += b.weight;
        out.push(Backend {
            service,
            subset,
            weight: if many { b.weight } else { WEIGHT_TOTAL },
        });
    }
    if many && sum != WEIGHT_TOTAL {
        return Err(err(
            format!("{f}.backends[*].weight"),
            format!("weights add up to {sum}; they must add up to {WEIGHT_TOTAL}"),
        ));
    }
    Ok(out)
}

fn retry_from(f: &str, r: pb::RetryPolicy) -> Result<RetryPolicy> {
    if r.attempts > MAX_ATTEMPTS {
        return Err(err(
            format!("{f}.attempts"),
            format!("{} is out of range (at most {MAX_ATTEMPTS})", r.attempts),
        ));
    }
    bounded(&format!("{f}.retry_on"), r.retry_on.len())?;
    for (i, cond) in r.retry_on.iter().enumerate() {
        if !retry_condition_ok(cond) {
            return Err(err(
                format!("{f}.retry_on[{i}]"),
                format!(
                    "unknown condition {cond:?} (one of {}, a status code 100..=599, grpc:<code>)",
                    RETRY_ON.join(", ")
                ),
            ));
        }
    }
    let base = timeout_ms(&format!("{f}.backoff_base_ms"), r.backoff_base_ms)?;
    let max = timeout_ms(&format!("{f}.backoff_max_ms"), r.backoff_max_ms)?;
    if let (Some(b), Some(m)) = (base, max)
        && m < b
    {
        return Err(err(
            format!("{f}.backoff_max_ms"),
            "must not be below backoff_base_ms",
        ));
    }
    Ok(RetryPolicy {
        attempts: r.attempts,
        retry_on: r.retry_on,
        per_try_timeout: timeout_ms(&format!("{f}.per_try_timeout_ms"), r.per_try_timeout_ms)?,
        allow_non_idempotent: r.allow_non_idempotent,
        backoff_base: base,
        backoff_max: max,
    })
}

fn retry_condition_ok(c: &str) -> bool {
    if RETRY_ON.contains(&c) {
        return true;
    }
    if let Ok(code) = c.parse::<u16>() {
        return (100..=599).contains(&code);
    }
    c.strip_prefix("grpc:").is_some_and(|code| {
        !code.is_empty()
            && code.len() <= 32
            && code
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '-' || ch == '_')
    })
}

fn header_ops(f: &str, ops: Vec<pb::HeaderOp>) -> Result<Vec<HeaderOp>> {
    bounded(f, ops.len())?;
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| {
            let of = format!("{f}[{i}]");
            let kind = match pb::HeaderOpKind::try_from(op.kind) {
                Ok(pb::HeaderOpKind::Unspecified | pb::HeaderOpKind::Set) => HeaderOpKind::Set,
                Ok(pb::HeaderOpKind::Add) => HeaderOpKind::Add,
                Ok(pb::HeaderOpKind::Remove) => HeaderOpKind::Remove,
                Err(_) => {
                    return Err(err(
                        format!("{of}.kind"),
                        format!("unknown kind {}", op.kind),
                    ));
                }
            };
            let name = header_name(&format!("{of}.name"), &op.name)?;
            text(&format!("{of}.value"), &op.value)?;
            http::HeaderValue::from_str(&op.value)
                .map_err(|_| err(format!("{of}.value"), "not a valid header value"))?;
            Ok(HeaderOp {
                kind,
                name,
                value: op.value,
            })
        })
        .collect()
}

fn redirect_from(f: &str, r: pb::Redirect) -> Result<Redirect> {
    if !matches!(r.status, 301 | 302 | 303 | 307 | 308) {
        return Err(err(
            format!("{f}.status"),
            format!(
                "{} is not a redirect status (301, 302, 303, 307, 308)",
                r.status
            ),
        ));
    }
    if !matches!(r.scheme.as_str(), "" | "http" | "https") {
        return Err(err(format!("{f}.scheme"), "must be http or https"));
    }
    let path = match r.path.as_str() {
        "" => None,
        p => Some(http_path(&format!("{f}.path"), p)?),
    };
    if !r.host.is_empty() {
        http::uri::Authority::try_from(r.host.as_str())
            .map_err(|_| err(format!("{f}.host"), format!("{:?} is not a host", r.host)))?;
    }
    Ok(Redirect {
        scheme: opt_text(&format!("{f}.scheme"), &r.scheme)?,
        host: opt_text(&format!("{f}.host"), &r.host)?,
        path,
        status: r.status as u16,
    })
}

fn fault_from(f: &str, ft: pb::Fault) -> Result<Fault> {
    let abort_status = match ft.abort_status {
        0 => None,
        s @ 200..=599 => Some(s as u16),
        s => {
            return Err(err(
                format!("{f}.abort_status"),
                format!("{s} is not an HTTP status (200..=599)"),
            ));
        }
    };
    Ok(Fault {
        delay: timeout_ms(&format!("{f}.delay_ms"), ft.delay_ms)?,
        delay_permille: permille(&format!("{f}.delay_permille"), ft.delay_permille)?,
        abort_status,
        abort_permille: permille(&format!("{f}.abort_permille"), ft.abort_permille)?,
    })
}

fn mirror_from(f: &str, m: pb::Mirror) -> Result<Mirror> {
    Ok(Mirror {
        service: service_name(&format!("{f}.service"), &m.service)?,
        subset: opt_text(&format!("{f}.subset"), &m.subset)?,
        permille: permille(&format!("{f}.permille"), m.permille)?,
    })
}

fn rate_limit_from(f: &str, rl: pb::RateLimit) -> Result<RateLimit> {
    if rl.requests_per_second == 0 {
        return Err(err(format!("{f}.requests_per_second"), "must be above 0"));
    }
    if rl.per_source {
        // The bucket lives in each calling sidecar: it already limits one caller's proxy,
        // and no proxy keeps buckets per source identity.
        return Err(err(
            format!("{f}.per_source"),
            "not supported: every calling sidecar keeps its own bucket for the rule (the \
             limit applies per calling proxy); leave it false",
        ));
    }
    Ok(RateLimit {
        requests_per_second: rl.requests_per_second,
        // A burst below the rate would throttle under the configured rate; 0 means "= rate".
        burst: rl.burst.max(rl.requests_per_second),
        per_source: false,
    })
}
