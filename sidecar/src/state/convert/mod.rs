//! Proto → domain conversion with validation; the only place in `state` that imports protos.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use mesh_proto::types::v1 as pb;
use regex::Regex;

use super::*;

pub(crate) mod cluster;
mod route;

/// Why a resource was rejected: which field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConvertError {
    /// Dotted path to the bad field, e.g. `rules[2].matches[0].path.value`.
    pub field: String,
    pub reason: String,
}

impl ConvertError {
    pub(super) fn new(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            reason: reason.to_string(),
        }
    }

    /// Prefixes the field path with the enclosing field.
    pub(super) fn within(mut self, outer: impl std::fmt::Display) -> Self {
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

pub(super) type Result<T> = std::result::Result<T, ConvertError>;

pub(super) fn name(s: &str) -> Name {
    Name::from(s)
}

pub(super) fn opt_name(s: &str) -> Option<Name> {
    (!s.is_empty()).then(|| name(s))
}

pub(super) fn opt_ms(ms: u64) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms))
}

pub(super) fn port(field: &str, p: u32) -> Result<u16> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(ConvertError::new(
            field,
            format!("port {p} not in 1..=65535"),
        )),
    }
}

pub(super) fn ports(field: &str, ps: &[u32]) -> Result<Vec<u16>> {
    ps.iter()
        .enumerate()
        .map(|(i, &p)| port(&format!("{field}[{i}]"), p))
        .collect()
}

pub(super) fn permille(field: &str, v: u32) -> Result<u16> {
    if v > 1000 {
        return Err(ConvertError::new(
            field,
            format!("{v} exceeds 1000 per-mille"),
        ));
    }
    Ok(v as u16)
}

/// Compiles an anchored regex: route regexes must match the whole path or value.
pub(super) fn regex(field: &str, re: &str) -> Result<Regex> {
    // 1 MiB compiled-size cap: generous for any route, but stops a pathological pattern from
    // making the sidecar allocate without bound.
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ConvertError::new(field, format!("invalid regex: {e}")))
}

pub(super) fn header_name(field: &str, s: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| ConvertError::new(field, format!("invalid header name {s:?}")))
}

pub(super) fn header_value(field: &str, s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s)
        .map_err(|_| ConvertError::new(field, format!("invalid header value {s:?}")))
}

pub(super) fn tls_mode(m: pb::TlsMode) -> TlsMode {
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
