//! Proto → domain conversion with validation; the only place in `state` that imports protos.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use mesh_proto::types::v1 as pb;
use regex::Regex;

use super::*;

/// Why a resource was rejected: which field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConvertError {
    /// Dotted path to the bad field, e.g. `rules[2].matches[0].path.value`.
    pub field: String,
    pub reason: String,
}

impl ConvertError {
    fn new(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// Prefixes the field path with the enclosing field.
    fn within(mut self, outer: impl std::fmt::Display) -> Self {
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

type Result<T> = std::result::Result<T, ConvertError>;

fn name(s: &str) -> Name {
    Name::from(s)
}

fn opt_name(s: &str) -> Option<Name> {
    (!s.is_empty()).then(|| name(s))
}

fn opt_ms(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

fn port(field: &str, p: u32) -> Result<u16> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConvertError::new(
            field,
            format!("port {p} not in 1..=65535"),
        )),
    }
}

fn ports(field: &str, ps: &[u32]) -> Result<Vec<u16>> {
    ps.iter()
        .enumerate()
        .map(|(i, &p)| port(&format!("{field}[{i}]"), p))
        .collect()
}

fn permille(field: &str, v: u32) -> Result<u16> {
    if v > 1000 {
        return Err(ConvertError::new(
            field,
            format!("{v} exceeds 1000 per-mille"),
        ));
    }
    Ok(v as u16)
}

/// Compiles an anchored regex: route regexes must match the whole path or value.
fn regex(field: &str, re: &str) -> Result<Regex> {
    // 1 MiB compiled-size cap: generous for any route, but stops a pathological pattern from
    // making the sidecar allocate without bound.
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ConvertError::new(field, format!("invalid regex: {e}")))
}

fn header_name(field: &str, s: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| ConvertError::new(field, format!("invalid header name {s:?}")))
}

fn header_value(field: &str, s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s)
        .map_err(|_| ConvertError::new(field, format!("invalid header value {s:?}")))
}

fn tls_mode(m: pb::TlsMode) -> TlsMode {
    match m {
        pb::TlsMode::Unspecified | pb::TlsMode::Strict => TlsMode::Strict,
        pb::TlsMode::Permissive => TlsMode::Permissive,
        pb::TlsMode::Disabled => TlsMode::Disabled,
    }
}

// === Listener ===

impl TryFrom<&pb::Listener> for Listener {
    type Error = ConvertError;
    fn try_from(l: &pb::Listener) -> Result<Self> {
        Ok(Self {
            name: name(&l.name),
            app_ports: ports("app_ports", &l.app_ports)?,
            opaque_ports: ports("opaque_ports", &l.opaque_ports)?,
            server_first_ports: ports("server_first_ports", &l.server_first_ports)?,
            detect_timeout: opt_ms(l.detect_timeout_ms),
            tls_mode: tls_mode(l.tls_mode()),
            max_connections: (l.max_connections != 0).then_some(l.max_connections),
        })
    }
}

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
        if backends.is_empty() && redirect.is_none() {
            return Err(ConvertError::new(
                "backends",
                "a rule needs a backend or a redirect",
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
            fault: r.fault.as_ref().map(fault).transpose()?.flatten(),
            mirror: r.mirror.as_ref().map(mirror).transpose()?.flatten(),
            rate_limit: r.rate_limit.as_ref().and_then(|rl| {
                (rl.requests_per_second != 0).then(|| RateLimit {
                    requests_per_second: rl.requests_per_second,
                    burst: rl.burst.max(1),
                    per_source: rl.per_source,
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

// === Cluster ===

impl TryFrom<&pb::Cluster> for Cluster {
    type Error = ConvertError;
    fn try_from(c: &pb::Cluster) -> Result<Self> {
        if c.name.is_empty() {
            return Err(ConvertError::new("name", "must not be empty"));
        }
        let lb = match c.lb_policy() {
            pb::LbPolicy::Unspecified | pb::LbPolicy::P2cEwma => LbPolicy::P2cEwma,
            pb::LbPolicy::RoundRobin => LbPolicy::RoundRobin,
            pb::LbPolicy::WeightedRoundRobin => LbPolicy::WeightedRoundRobin,
            pb::LbPolicy::RingHash => LbPolicy::RingHash,
            pb::LbPolicy::Maglev => LbPolicy::Maglev,
        };
        let hash_on = c.hash_on.as_ref().map(hash_on).transpose()?.flatten();
        let vip = if c.vip.is_empty() {
            None
        } else {
            Some(
                c.vip
                    .parse::<IpAddr>()
                    .map_err(|e| ConvertError::new("vip", format!("{:?}: {e}", c.vip)))?,
            )
        };
        let mut out = Cluster::with_defaults(name(&c.name));
        out.namespace = opt_name(&c.namespace);
        out.lb = lb;
        out.hash_on = hash_on;
        out.outlier = c.outlier_detection.as_ref().and_then(outlier);
        out.circuit_breakers = c
            .circuit_breakers
            .as_ref()
            .map(|b| {
                let nz = |v: u32| (v != 0).then_some(v);
                CircuitBreakers {
                    max_connections: nz(b.max_connections),
                    max_pending_requests: nz(b.max_pending_requests),
                    max_requests: nz(b.max_requests),
                    max_retries: nz(b.max_retries),
                }
            })
            .unwrap_or_default();
        out.health_check = c.health_check.as_ref().map(health_check).transpose()?;
        out.connect_timeout =
            opt_ms(c.connect_timeout_ms).unwrap_or(Cluster::DEFAULT_CONNECT_TIMEOUT);
        out.idle_timeout = opt_ms(c.idle_timeout_ms).unwrap_or(Cluster::DEFAULT_IDLE_TIMEOUT);
        out.tls_mode = tls_mode(c.tls_mode());
        out.protocol = match c.protocol() {
            pb::Protocol::Unspecified => Protocol::Detect,
            pb::Protocol::Http1 => Protocol::Http1,
            pb::Protocol::Http2 => Protocol::Http2,
            pb::Protocol::Grpc => Protocol::Grpc,
            pb::Protocol::Tcp => Protocol::Tcp,
        };
        out.retry_budget = match &c.retry_budget {
            Some(b) if b.ratio != 0.0 || b.min_retries_per_second != 0 => {
                if !(0.0..=1.0).contains(&b.ratio) {
                    return Err(ConvertError::new(
                        "retry_budget.ratio",
                        "must be within 0..=1",
                    ));
                }
                Some(RetryBudget {
                    ratio: b.ratio,
                    min_retries_per_second: b.min_retries_per_second,
                    // 10 s window: long enough to smooth bursts, short enough to react to an outage.
                    window: opt_ms(b.window_ms).unwrap_or(Duration::from_secs(10)),
                })
            }
            _ => None,
        };
        out.request_timeout = opt_ms(c.request_timeout_ms);
        out.vip = vip;
        out.ports = ports("ports", &c.ports)?;
        Ok(out)
    }
}

fn hash_on(h: &pb::HashOn) -> Result<Option<HashOn>> {
    use pb::hash_on::Key;
    let key = match &h.key {
        None | Some(Key::SourceIp(false)) => return Ok(None),
        Some(Key::Header(n)) => HashKey::Header(header_name("hash_on.header", n)?),
        Some(Key::Cookie(c)) if c.is_empty() => {
            return Err(ConvertError::new("hash_on.cookie", "must not be empty"));
        }
        Some(Key::Cookie(c)) => HashKey::Cookie(name(c)),
        Some(Key::SourceIp(true)) => HashKey::SourceIp,
    };
    Ok(Some(HashOn {
        key,
        generate_cookie: h.generate_cookie,
        cookie_ttl: (h.cookie_ttl_secs != 0).then(|| Duration::from_secs(h.cookie_ttl_secs)),
    }))
}

/// Outlier defaults follow Envoy's (5 consecutive 5xx, 10 s interval, 30 s base ejection,
/// 10 % max ejected): proven in production and familiar to operators.
fn outlier(o: &pb::OutlierDetection) -> Option<OutlierDetection> {
    if o.disabled {
        return None;
    }
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    Some(OutlierDetection {
        consecutive_5xx: or(o.consecutive_5xx, 5),
        consecutive_gateway_failures: or(o.consecutive_gateway_failures, 5),
        failure_percentage: o.failure_percentage.min(100),
        failure_percentage_min_requests: or(o.failure_percentage_min_requests, 50),
        interval: opt_ms(o.interval_ms).unwrap_or(Duration::from_secs(10)),
        base_ejection: opt_ms(o.base_ejection_ms).unwrap_or(Duration::from_secs(30)),
        max_ejection_percent: or(o.max_ejection_percent, 10).min(100),
    })
}

/// Health-check defaults: probe every 5 s with a 1 s timeout, 2 successes to recover and
/// 3 failures to mark unhealthy, so one lost probe never flaps an endpoint.
fn health_check(h: &pb::HealthCheck) -> Result<HealthCheck> {
    if !h.http_path.is_empty() && !h.http_path.starts_with('/') {
        return Err(ConvertError::new(
            "health_check.http_path",
            "must start with '/'",
        ));
    }
    let expected_status = match h.expected_status {
        0 => 200,
        s @ 100..=599 => s as u16,
        s => {
            return Err(ConvertError::new(
                "health_check.expected_status",
                format!("{s} is not an HTTP status"),
            ));
        }
    };
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    Ok(HealthCheck {
        http_path: opt_name(&h.http_path),
        expected_status,
        interval: opt_ms(h.interval_ms).unwrap_or(Duration::from_secs(5)),
        timeout: opt_ms(h.timeout_ms).unwrap_or(Duration::from_secs(1)),
        healthy_threshold: or(h.healthy_threshold, 2),
        unhealthy_threshold: or(h.unhealthy_threshold, 3),
    })
}

// === Endpoints ===

impl TryFrom<&pb::Endpoints> for Endpoints {
    type Error = ConvertError;
    fn try_from(e: &pb::Endpoints) -> Result<Self> {
        if e.service.is_empty() {
            return Err(ConvertError::new("service", "must not be empty"));
        }
        let endpoints = e
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| {
                Endpoint::try_from(ep).map_err(|err| err.within(format!("endpoints[{i}]")))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            service: name(&e.service),
            endpoints,
        })
    }
}

impl TryFrom<&pb::Endpoint> for Endpoint {
    type Error = ConvertError;
    fn try_from(e: &pb::Endpoint) -> Result<Self> {
        let addr: SocketAddr = e.address.parse().map_err(|err| {
            ConvertError::new("address", format!("{:?}: {err} (want ip:port)", e.address))
        })?;
        let app_port = match e.app_port {
            0 => 0,
            p => port("app_port", p)?,
        };
        let mut labels: Vec<(Name, Name)> =
            e.labels.iter().map(|(k, v)| (name(k), name(v))).collect();
        labels.sort_unstable();
        Ok(Self {
            addr,
            app_port,
            // Weight 0 means "unset" on the wire; the balancers need ≥ 1.
            weight: e.weight.max(1),
            zone: opt_name(&e.zone),
            labels,
            state: match e.state() {
                pb::EndpointState::Unspecified | pb::EndpointState::Healthy => {
                    EndpointState::Healthy
                }
                pb::EndpointState::Draining => EndpointState::Draining,
                pb::EndpointState::Unhealthy => EndpointState::Unhealthy,
            },
            identity: opt_name(&e.identity),
            source: name(&e.source),
        })
    }
}

// === AuthorizationPolicy ===

impl TryFrom<&pb::AuthorizationPolicy> for AuthorizationPolicy {
    type Error = ConvertError;
    fn try_from(p: &pb::AuthorizationPolicy) -> Result<Self> {
        let allow = p
            .allow
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let f = format!("allow[{i}]");
                let sources = r
                    .sources
                    .iter()
                    .enumerate()
                    .map(|(j, s)| source_match(&format!("{f}.sources[{j}]"), s))
                    .collect::<Result<_>>()?;
                Ok(AuthzRule {
                    sources,
                    ports: ports(&format!("{f}.ports"), &r.ports)?,
                    path_prefix: opt_name(&r.path_prefix),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            service: name(&p.service),
            default_action: match p.default_action() {
                pb::AuthzAction::Unspecified | pb::AuthzAction::Allow => AuthzAction::Allow,
                pb::AuthzAction::Deny => AuthzAction::Deny,
            },
            allow,
        })
    }
}

fn source_match(field: &str, s: &str) -> Result<SourceMatch> {
    if s == "*" {
        return Ok(SourceMatch::Any);
    }
    if !s.starts_with("spiffe://") {
        return Err(ConvertError::new(
            field,
            format!("{s:?} is not a SPIFFE ID or '*'"),
        ));
    }
    Ok(match s.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('/') => SourceMatch::Prefix(name(prefix)),
        Some(_) => {
            return Err(ConvertError::new(
                field,
                "'*' only as a whole last path segment",
            ));
        }
        None => SourceMatch::Exact(name(s)),
    })
}

// === Runtime ===

impl TryFrom<&pb::Runtime> for Runtime {
    type Error = ConvertError;
    fn try_from(r: &pb::Runtime) -> Result<Self> {
        for (field, v) in [
            ("trace_sampling_ratio", r.trace_sampling_ratio),
            ("access_log_ratio", r.access_log_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConvertError::new(field, format!("{v} not within 0..=1")));
            }
        }
        Ok(Self {
            trace_sampling_ratio: r.trace_sampling_ratio,
            trust_bundle_pem: r.trust_bundle_pem.iter().map(|p| name(p)).collect(),
            access_log_ratio: r.access_log_ratio,
        })
    }
}

#[cfg(test)]
mod tests;
