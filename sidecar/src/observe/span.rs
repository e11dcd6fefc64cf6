//! A finished hop as a span: OTel HTTP (and gRPC) semantic-convention attributes plus the mesh's own.

use std::time::SystemTime;

use http::Version;
use opentelemetry::KeyValue;

use super::body::End;
use super::hop::Pending;
use crate::telemetry::Direction;
use crate::trace::{SpanKind, SpanRecord};

/// The span of `p`, ended at `end_time`. `service` is the metric's service label.
pub(super) fn record(p: &Pending, service: &str, end: End, end_time: SystemTime) -> SpanRecord {
    let (name, kind) = match p.direction {
        Direction::Inbound => ("inbound", SpanKind::Server),
        Direction::Outbound => ("outbound", SpanKind::Client),
    };
    let error = match (p.cause, end) {
        (Some(c), _) => Some(c.to_owned()),
        (None, End::Failed) => Some("response body failed".to_owned()),
        (None, End::Cancelled) => Some("cancelled by the client".to_owned()),
        (None, End::Complete) if p.status >= 500 => Some(format!("HTTP {}", p.status)),
        (None, End::Complete) => None,
    };
    SpanRecord {
        name,
        kind,
        trace_id: p.hop.trace_id,
        span_id: p.hop.span_id,
        parent_span_id: p.hop.parent.unwrap_or([0; 8]),
        parent_is_remote: p.hop.parent.is_some(),
        start: p.wall,
        end: end_time,
        attributes: attributes(p, service),
        error,
    }
}

/// Semantic-convention names: <https://opentelemetry.io/docs/specs/semconv/http/http-spans/>
/// and `rpc.*` for gRPC; `mesh.*` for what only the mesh knows.
fn attributes(p: &Pending, service: &str) -> Vec<KeyValue> {
    let head = &p.head;
    let protocol = match head.version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    let authority = head.authority();
    let (host, port) = split_authority(authority);
    // 8 always, up to 8 mesh/server ones and 4 rpc ones: sized once.
    let mut a = Vec::with_capacity(20);
    a.extend([
        KeyValue::new("http.request.method", head.method.as_str().to_owned()),
        KeyValue::new("url.path", head.uri.path().to_owned()),
        KeyValue::new("http.response.status_code", i64::from(p.status)),
        KeyValue::new("server.address", host.to_owned()),
        KeyValue::new("network.protocol.name", "http"),
        KeyValue::new("network.protocol.version", protocol),
        KeyValue::new("mesh.tls", p.tls()),
        KeyValue::new(
            "mesh.retries",
            i64::from(p.upstream.attempts.saturating_sub(1)),
        ),
    ]);
    if let Some(port) = port {
        a.push(KeyValue::new("server.port", i64::from(port)));
    }
    if p.direction == Direction::Outbound {
        a.push(KeyValue::new("mesh.service", service.to_owned()));
    }
    if let Some(route) = &p.upstream.route {
        a.push(KeyValue::new("mesh.route", route.to_string()));
    }
    if let Some(backend) = &p.upstream.backend {
        a.push(KeyValue::new("mesh.backend", backend.to_string()));
    }
    if let Some(ep) = p.upstream.endpoint {
        a.push(KeyValue::new("mesh.endpoint", ep.to_string()));
    }
    if let Some(id) = p.peer() {
        a.push(KeyValue::new("mesh.peer_identity", id.to_string()));
    }
    if let Some(c) = p.cause {
        a.push(KeyValue::new("mesh.error", c));
        a.push(KeyValue::new("error.type", c));
    }
    if head.grpc {
        a.push(KeyValue::new("rpc.system", "grpc"));
        // `/package.Service/Method`
        let mut parts = head.uri.path().trim_start_matches('/').splitn(2, '/');
        if let (Some(svc), Some(method)) = (parts.next(), parts.next()) {
            a.push(KeyValue::new("rpc.service", svc.to_owned()));
            a.push(KeyValue::new("rpc.method", method.to_owned()));
        }
        if let Some(code) = p.grpc_status.and_then(|c| c.parse::<i64>().ok()) {
            a.push(KeyValue::new("rpc.grpc.status_code", code));
        }
    }
    a
}

/// `host:port` → (`host`, port); bracketed IPv6 literals keep their brackets off.
fn split_authority(a: &str) -> (&str, Option<u16>) {
    match a.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse().ok(),
        ),
        _ => (a.trim_start_matches('[').trim_end_matches(']'), None),
    }
}

#[cfg(test)]
mod tests {
    use super::split_authority;

    #[test]
    fn authorities_split_into_host_and_port() {
        assert_eq!(split_authority("api:8080"), ("api", Some(8080)));
        assert_eq!(split_authority("api"), ("api", None));
        assert_eq!(split_authority("[::1]:15001"), ("::1", Some(15001)));
        assert_eq!(split_authority("[::1]"), ("::1", None));
        assert_eq!(split_authority(""), ("", None));
    }
}
