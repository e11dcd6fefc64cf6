//! Domain → proto conversion, used when building discovery resources and admin responses.

use std::time::Duration;

use mesh_proto::types::v1 as pb;

use crate::model::*;

fn ms(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| d.as_millis() as u64)
}

fn s(o: &Option<String>) -> String {
    o.clone().unwrap_or_default()
}

pub fn route(r: &Route) -> pb::Route {
    pb::Route {
        service: r.service.clone(),
        rules: r.rules.iter().map(rule).collect(),
    }
}

fn rule(r: &RouteRule) -> pb::RouteRule {
    pb::RouteRule {
        name: r.name.clone(),
        matches: r.matches.iter().map(route_match).collect(),
        backends: r
            .backends
            .iter()
            .map(|b| pb::WeightedBackend {
                service: b.service.clone(),
                subset: s(&b.subset),
                weight: b.weight,
            })
            .collect(),
        timeout_ms: ms(r.timeout),
        retry: r.retry.as_ref().map(|rp| pb::RetryPolicy {
            attempts: rp.attempts,
            retry_on: rp.retry_on.clone(),
            per_try_timeout_ms: ms(rp.per_try_timeout),
            allow_non_idempotent: rp.allow_non_idempotent,
            backoff_base_ms: ms(rp.backoff_base),
            backoff_max_ms: ms(rp.backoff_max),
        }),
        request_headers: r.request_headers.iter().map(header_op).collect(),
        response_headers: r.response_headers.iter().map(header_op).collect(),
        rewrite_prefix: s(&r.rewrite_prefix),
        redirect: r.redirect.as_ref().map(|rd| pb::Redirect {
            scheme: s(&rd.scheme),
            host: s(&rd.host),
            path: s(&rd.path),
            status: u32::from(rd.status),
        }),
        fault: r.fault.as_ref().map(|f| pb::Fault {
            delay_ms: ms(f.delay),
            delay_permille: u32::from(f.delay_permille),
            abort_status: f.abort_status.map_or(0, u32::from),
            abort_permille: u32::from(f.abort_permille),
        }),
        mirror: r.mirror.as_ref().map(|m| pb::Mirror {
            service: m.service.clone(),
            subset: s(&m.subset),
            permille: u32::from(m.permille),
        }),
        rate_limit: r.rate_limit.as_ref().map(|rl| pb::RateLimit {
            requests_per_second: rl.requests_per_second,
            burst: rl.burst,
            per_source: rl.per_source,
        }),
    }
}

fn route_match(m: &RouteMatch) -> pb::RouteMatch {
    pb::RouteMatch {
        path: m.path.as_ref().map(|p| {
            let (kind, value) = match p {
                PathMatch::Exact(v) => (pb::PathMatchKind::Exact, v),
                PathMatch::Prefix(v) => (pb::PathMatchKind::Prefix, v),
                PathMatch::Regex(v) => (pb::PathMatchKind::Regex, v),
            };
            pb::PathMatch {
                kind: kind as i32,
                value: value.clone(),
            }
        }),
        method: s(&m.method),
        headers: m.headers.iter().map(value_match).collect(),
        query_params: m.query_params.iter().map(value_match).collect(),
    }
}

fn value_match(v: &ValueMatch) -> pb::KeyValueMatch {
    let (kind, value) = match &v.kind {
        ValueMatchKind::Exact(s) => (pb::ValueMatchKind::Exact, s.clone()),
        ValueMatchKind::Regex(s) => (pb::ValueMatchKind::Regex, s.clone()),
        ValueMatchKind::Present => (pb::ValueMatchKind::Present, String::new()),
    };
    pb::KeyValueMatch {
        name: v.name.clone(),
        kind: kind as i32,
        value,
    }
}

fn header_op(h: &HeaderOp) -> pb::HeaderOp {
    let kind = match h.kind {
        HeaderOpKind::Set => pb::HeaderOpKind::Set,
        HeaderOpKind::Add => pb::HeaderOpKind::Add,
        HeaderOpKind::Remove => pb::HeaderOpKind::Remove,
    };
    pb::HeaderOp {
        kind: kind as i32,
        name: h.name.clone(),
        value: h.value.clone(),
    }
}

pub fn tls_mode(t: TlsMode) -> i32 {
    (match t {
        TlsMode::Strict => pb::TlsMode::Strict,
        TlsMode::Permissive => pb::TlsMode::Permissive,
        TlsMode::Disabled => pb::TlsMode::Disabled,
    }) as i32
}

/// The policy part of a Cluster; the caller fills `vip`, `ports`, `namespace`, `identities`.
pub fn cluster_policy(c: &ClusterPolicy) -> pb::Cluster {
    let lb = match c.lb_policy {
        LbPolicy::P2cEwma => pb::LbPolicy::P2cEwma,
        LbPolicy::RoundRobin => pb::LbPolicy::RoundRobin,
        LbPolicy::WeightedRoundRobin => pb::LbPolicy::WeightedRoundRobin,
        LbPolicy::RingHash => pb::LbPolicy::RingHash,
        LbPolicy::Maglev => pb::LbPolicy::Maglev,
    };
    let protocol = match c.protocol {
        Protocol::Detect => pb::Protocol::Unspecified,
        Protocol::Http1 => pb::Protocol::Http1,
        Protocol::Http2 => pb::Protocol::Http2,
        Protocol::Grpc => pb::Protocol::Grpc,
        Protocol::Tcp => pb::Protocol::Tcp,
    };
    pb::Cluster {
        name: c.service.clone(),
        lb_policy: lb as i32,
        hash_on: c.hash_on.as_ref().map(|h| pb::HashOn {
            key: Some(match &h.key {
                HashKey::Header(n) => pb::hash_on::Key::Header(n.clone()),
                HashKey::Cookie(n) => pb::hash_on::Key::Cookie(n.clone()),
                HashKey::SourceIp => pb::hash_on::Key::SourceIp(true),
            }),
            generate_cookie: h.generate_cookie,
            cookie_ttl_secs: h.cookie_ttl.map_or(0, |d| d.as_secs()),
        }),
        outlier_detection: c.outlier_detection.as_ref().map(|o| pb::OutlierDetection {
            disabled: o.disabled,
            consecutive_5xx: o.consecutive_5xx,
            consecutive_gateway_failures: o.consecutive_gateway_failures,
            // Refused by validation: the proxy ejects on consecutive failures only.
            failure_percentage: 0,
            failure_percentage_min_requests: 0,
            interval_ms: 0,
            base_ejection_ms: ms(o.base_ejection),
            max_ejection_percent: o.max_ejection_percent,
        }),
        circuit_breakers: c.circuit_breakers.as_ref().map(|cb| pb::CircuitBreakers {
            // Refused by validation: a peer's requests share one HTTP/2 connection.
            max_connections: 0,
            max_pending_requests: cb.max_pending_requests,
            max_requests: cb.max_requests,
            max_retries: cb.max_retries,
        }),
        health_check: c.health_check.as_ref().map(|h| pb::HealthCheck {
            http_path: s(&h.http_path),
            expected_status: h.expected_status.map_or(0, u32::from),
            interval_ms: ms(h.interval),
            timeout_ms: ms(h.timeout),
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
        }),
        connect_timeout_ms: ms(c.connect_timeout),
        idle_timeout_ms: ms(c.idle_timeout),
        tls_mode: tls_mode(c.tls_mode),
        protocol: protocol as i32,
        retry_budget: c.retry_budget.as_ref().map(|rb| pb::RetryBudget {
            ratio: f64::from(rb.ratio_permille) / 1000.0,
            min_retries_per_second: rb.min_retries_per_second,
            window_ms: ms(rb.window),
        }),
        request_timeout_ms: ms(c.request_timeout),
        vip: String::new(),
        ports: Vec::new(),
        namespace: String::new(),
        identities: Vec::new(),
    }
}

pub fn endpoint(e: &Endpoint) -> pb::Endpoint {
    let state = match e.state {
        EndpointState::Healthy => pb::EndpointState::Healthy,
        EndpointState::Draining => pb::EndpointState::Draining,
        EndpointState::Unhealthy => pb::EndpointState::Unhealthy,
    };
    pb::Endpoint {
        address: e.address.to_string(),
        weight: e.weight,
        zone: s(&e.zone),
        labels: e
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        state: state as i32,
        identity: s(&e.identity),
        app_port: e.app_port.map_or(0, u32::from),
        source: match &e.source {
            EndpointSource::Proxy(id) => format!("proxy:{id}"),
            EndpointSource::Static => "static".to_string(),
        },
    }
}

pub fn authz(p: &AuthzPolicy) -> pb::AuthorizationPolicy {
    pb::AuthorizationPolicy {
        service: p.service.clone(),
        default_action: (match p.default_action {
            AuthzAction::Allow => pb::AuthzAction::Allow,
            AuthzAction::Deny => pb::AuthzAction::Deny,
        }) as i32,
        allow: p
            .allow
            .iter()
            .map(|r| pb::AuthzRule {
                sources: r.sources.clone(),
                ports: r.ports.iter().copied().map(u32::from).collect(),
                path_prefix: s(&r.path_prefix),
            })
            .collect(),
    }
}

pub fn runtime(r: &Runtime) -> pb::Runtime {
    pb::Runtime {
        trace_sampling_ratio: r.trace_sampling_ratio(),
        trust_bundle_pem: r.trust_bundle_pem.clone(),
        access_log_ratio: r.access_log_ratio(),
    }
}

pub fn listener(l: &ListenerConfig) -> pb::Listener {
    let ports = |v: &[u16]| v.iter().copied().map(u32::from).collect();
    pb::Listener {
        name: l.name.clone(),
        app_ports: ports(&l.app_ports),
        opaque_ports: ports(&l.opaque_ports),
        server_first_ports: ports(&l.server_first_ports),
        detect_timeout_ms: l.detect_timeout_ms,
        tls_mode: tls_mode(l.tls_mode),
        max_connections: l.max_connections,
    }
}
