//! Proto → domain conversion with validation: every `TryFrom<proto>` lives here, and every
//! failure names the offending field (`route.rules[1].backends[0].weight: ...`).

mod authz;
mod cluster;
mod endpoint;
mod route;
mod route_match;
mod runtime;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use endpoint::{DEFAULT_NAMESPACE, node_from_proto, service_decl};
pub use route::check_services;
pub(crate) use route::unknown;

/// A rejected input: which field, and why. Displayed as `field: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

pub type Result<T, E = ValidationError> = std::result::Result<T, E>;

/// The longest timeout any config may carry. Anything longer is almost surely a unit mistake
/// (seconds typed as milliseconds times 1000) and would pin connections for hours.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Bounds on list sizes so one request cannot make the control plane build huge resources.
/// Generous for hand-written config (a route with 256 rules is already unreadable).
pub const MAX_ITEMS: usize = 256;

/// Longest accepted string for names, values and regexes (a DNS name is at most 253 bytes).
pub const MAX_STRING: usize = 1024;

/// Compiled-program size limit for a regex (1 MiB): rejects patterns that would blow up the
/// proxy's memory when compiled there, such as large bounded repetitions.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub(crate) fn err(field: impl Into<String>, reason: impl Into<String>) -> ValidationError {
    ValidationError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A service name: 1..=253 bytes of `[A-Za-z0-9._-]`, starting with an alphanumeric.
pub fn service_name(field: &str, s: &str) -> Result<String> {
    if s.is_empty() {
        return Err(err(field, "must not be empty"));
    }
    if s.len() > 253 {
        return Err(err(field, "longer than 253 bytes"));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(err(
            field,
            format!("{s:?} must start with a letter or digit"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(err(field, format!("{s:?} contains {c:?}")));
    }
    Ok(s.to_string())
}

/// Milliseconds on the wire → `None` for 0 (unset), else a bounded duration.
pub(crate) fn timeout_ms(field: &str, ms: u64) -> Result<Option<Duration>> {
    if ms == 0 {
        return Ok(None);
    }
    let d = Duration::from_millis(ms);
    if d > MAX_TIMEOUT {
        return Err(err(
            field,
            format!(
                "{ms} ms is out of range (at most {} ms)",
                MAX_TIMEOUT.as_millis()
            ),
        ));
    }
    Ok(Some(d))
}

pub(crate) fn port(field: &str, p: u32) -> Result<u16> {
    match u16::try_from(p) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(err(field, format!("{p} is not a port (1..=65535)"))),
    }
}

pub(crate) fn ports(field: &str, ps: &[u32]) -> Result<Vec<u16>> {
    bounded(field, ps.len())?;
    ps.iter()
        .enumerate()
        .map(|(i, p)| port(&format!("{field}[{i}]"), *p))
        .collect()
}

pub(crate) fn permille(field: &str, v: u32) -> Result<u16> {
    if v > 1000 {
        return Err(err(
            field,
            format!("{v} is out of range (per-mille, 0..=1000)"),
        ));
    }
    Ok(v as u16)
}

pub(crate) fn percent(field: &str, v: u32) -> Result<u32> {
    if v > 100 {
        return Err(err(
            field,
            format!("{v} is out of range (percent, 0..=100)"),
        ));
    }
    Ok(v)
}

/// A ratio 0..=1 → parts per million.
pub(crate) fn ratio_ppm(field: &str, v: f64) -> Result<u32> {
    if !v.is_finite() || !(0.0..=1.0).contains(&v) {
        return Err(err(field, format!("{v} is out of range (0..=1)")));
    }
    Ok((v * 1_000_000.0).round() as u32)
}

pub(crate) fn bounded(field: &str, len: usize) -> Result<()> {
    if len > MAX_ITEMS {
        return Err(err(field, format!("{len} items; at most {MAX_ITEMS}")));
    }
    Ok(())
}

pub(crate) fn text(field: &str, s: &str) -> Result<()> {
    if s.len() > MAX_STRING {
        return Err(err(field, format!("longer than {MAX_STRING} bytes")));
    }
    Ok(())
}

/// Empty → `None`; otherwise bounded text.
pub(crate) fn opt_text(field: &str, s: &str) -> Result<Option<String>> {
    text(field, s)?;
    Ok((!s.is_empty()).then(|| s.to_string()))
}

pub(crate) fn regex(field: &str, s: &str) -> Result<String> {
    text(field, s)?;
    regex::RegexBuilder::new(s)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| err(field, format!("bad regex: {e}")))?;
    Ok(s.to_string())
}

pub(crate) fn header_name(field: &str, s: &str) -> Result<String> {
    text(field, s)?;
    http::HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| err(field, format!("{s:?} is not a valid header name")))?;
    Ok(s.to_ascii_lowercase())
}

pub(crate) fn http_path(field: &str, s: &str) -> Result<String> {
    text(field, s)?;
    if !s.starts_with('/') {
        return Err(err(field, format!("{s:?} must start with '/'")));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(field, format!("{s:?} contains whitespace")));
    }
    Ok(s.to_string())
}

/// A SPIFFE ID: `spiffe://<trust-domain>/<path>`, the path made of non-empty segments.
pub fn identity(field: &str, s: &str) -> Result<String> {
    spiffe(field, s, false)
}

/// A SPIFFE ID, or a pattern: `*` or `spiffe://<td>/ns/<namespace>/*`.
pub(crate) fn identity_pattern(field: &str, s: &str) -> Result<String> {
    if s == "*" {
        return Ok(s.to_string());
    }
    spiffe(field, s, true)
}

fn spiffe(field: &str, s: &str, allow_ns_wildcard: bool) -> Result<String> {
    text(field, s)?;
    let bad = |why: &str| err(field, format!("{s:?} is not a SPIFFE ID: {why}"));
    let rest = s
        .strip_prefix("spiffe://")
        .ok_or_else(|| bad("must start with spiffe://"))?;
    let (td, path) = rest
        .split_once('/')
        .ok_or_else(|| bad("missing path after the trust domain"))?;
    if td.is_empty()
        || !td
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    {
        return Err(bad("trust domain must be non-empty [a-z0-9.-_]"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if allow_ns_wildcard && i == last && *seg == "*" {
            if segments.len() != 3 || segments[0] != "ns" {
                return Err(bad(
                    "a wildcard is only allowed as spiffe://<td>/ns/<namespace>/*",
                ));
            }
            continue;
        }
        if seg.is_empty() || *seg == "." || *seg == ".." {
            return Err(bad("empty or dot path segment"));
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(bad("path segments must be [A-Za-z0-9.-_]"));
        }
    }
    Ok(s.to_string())
}
