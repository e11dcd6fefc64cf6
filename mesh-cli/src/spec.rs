//! Parsers for flag values (durations, weights, matches, faults): strict, with a fix-it message.
//!
//! They run as clap value parsers, so bad input is refused before anything reaches the server.

use std::time::Duration;

/// A `--to` entry: subset of the route's service (or of `service` when written `svc:subset=W`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub service: Option<String>,
    pub subset: String,
    pub weight: u32,
}

/// `--to v1=90,v2=10`: weights must sum to 100 so the split is what it reads as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backends(pub Vec<BackendSpec>);

/// One `--match` condition; several are ANDed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchSpec {
    PathPrefix(String),
    Path(String),
    PathRegex(String),
    Header(String, Option<String>),
    Query(String, Option<String>),
    Method(String),
}

/// `100ms@10%`: delay and share in per-mille.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultDelay {
    pub delay: Duration,
    pub permille: u32,
}

/// `503@5%`: status and share in per-mille.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAbort {
    pub status: u32,
    pub permille: u32,
}

/// `v3=10%` or `svc:v3=10%`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    pub service: Option<String>,
    pub subset: String,
    pub permille: u32,
}

/// `name=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// Retry conditions the proxy understands (see `RetryPolicy.retry_on` in types.proto).
const RETRY_ON: [&str; 5] = [
    "5xx",
    "gateway-error",
    "reset",
    "connect-failure",
    "retriable-4xx",
];

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// `100ms`, `2s`, `1.5s`, `1m`, `1h`: a number and a unit, nothing else.
pub fn duration(s: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "{s:?} is not a duration: write a number and a unit (ms, s, m, h), like 100ms, 2s or 1m"
        )
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    // A day bounds every timeout we configure; anything longer is a typo.
    let secs = n * secs_per_unit;
    if !secs.is_finite() || secs > 86_400.0 {
        return Err(format!("{s:?} is too long: durations are at most 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Milliseconds for the protos, rounding sub-millisecond durations up so `0.5ms` is not `none`.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// `10%`, `0.5%` → per-mille (the protos' unit, for sub-percent precision).
pub fn percent(s: &str) -> Result<u32, String> {
    let err = || {
        format!(
            "{s:?} is not a percentage: write a number from 0 to 100 followed by %, like 10% or 0.5%"
        )
    };
    let n: f64 = s
        .strip_suffix('%')
        .ok_or_else(err)?
        .parse()
        .map_err(|_| err())?;
    if !(0.0..=100.0).contains(&n) {
        return Err(err());
    }
    let permille = (n * 10.0).round();
    if (permille - n * 10.0).abs() > 1e-6 {
        return Err(format!("{s:?} is finer than 0.1%: round it to one decimal"));
    }
    // In 0..=1000 by the range check above.
    Ok(permille as u32)
}

/// `v1=90,v2=10`, `other:v1=100`, `other:=100` (all endpoints of `other`).
pub fn backends(s: &str) -> Result<Backends, String> {
    let mut out: Vec<BackendSpec> = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (target, weight) = part.rsplit_once('=').ok_or_else(|| {
            format!("{part:?} has no weight: write subset=weight, like v1=90,v2=10")
        })?;
        let weight: u32 =
            weight.parse().ok().filter(|w| *w <= 100).ok_or_else(|| {
                format!("{part:?}: the weight must be a whole number from 0 to 100")
            })?;
        let (service, subset) = match target.split_once(':') {
            Some((svc, subset)) => (Some(name(svc, "service")?), subset.to_string()),
            None => (None, target.to_string()),
        };
        if service.is_none() || !subset.is_empty() {
            name(&subset, "subset")?;
        }
        let spec = BackendSpec {
            service,
            subset,
            weight,
        };
        if out
            .iter()
            .any(|b| b.service == spec.service && b.subset == spec.subset)
        {
            return Err(format!("{part:?} appears twice in --to"));
        }
        out.push(spec);
    }
    let sum: u32 = out.iter().map(|b| b.weight).sum();
    if sum != 100 {
        return Err(format!(
            "the weights in {s:?} sum to {sum}; they must sum to 100, like v1=90,v2=10"
        ));
    }
    Ok(Backends(out))
}

/// One `--match` condition.
pub fn route_match(s: &str) -> Result<MatchSpec, String> {
    let hint = "write path-prefix=/api, path=/x, path-regex=RE, header:NAME=VALUE, header:NAME, query:NAME=VALUE or method=GET";
    if let Some(rest) = s.strip_prefix("header:") {
        let (k, v) = split_opt(rest);
        return Ok(MatchSpec::Header(header_name(k)?, v));
    }
    if let Some(rest) = s.strip_prefix("query:") {
        let (k, v) = split_opt(rest);
        if k.is_empty() {
            return Err(format!("{s:?}: the query parameter name is empty; {hint}"));
        }
        return Ok(MatchSpec::Query(k.to_string(), v));
    }
    let (kind, value) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not a match: {hint}"))?;
    let path = |v: &str| -> Result<String, String> {
        if v.starts_with('/') {
            Ok(v.to_string())
        } else {
            Err(format!("{s:?}: a path must start with /"))
        }
    };
    match kind {
        "path-prefix" => Ok(MatchSpec::PathPrefix(path(value)?)),
        "path" => Ok(MatchSpec::Path(path(value)?)),
        "path-regex" if !value.is_empty() => Ok(MatchSpec::PathRegex(value.to_string())),
        "method" => {
            let m = value.to_ascii_uppercase();
            if METHODS.contains(&m.as_str()) {
                Ok(MatchSpec::Method(m))
            } else {
                Err(format!(
                    "{s:?}: unknown method; use one of {}",
                    METHODS.join(", ")
                ))
            }
        }
        _ => Err(format!("{s:?} is not a match: {hint}")),
    }
}

/// `--fault-delay 100ms@10%`.
pub fn fault_delay(s: &str) -> Result<FaultDelay, String> {
    let (d, p) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: write DELAY@PERCENT, like 100ms@10%"))?;
    Ok(FaultDelay {
        delay: duration(d)?,
        permille: percent(p)?,
    })
}

/// `--fault-abort 503@5%`.
pub fn fault_abort(s: &str) -> Result<FaultAbort, String> {
    let (st, p) = s
        .split_once('@')
        .ok_or_else(|| format!("{s:?}: write STATUS@PERCENT, like 503@5%"))?;
    let status: u32 = st
        .parse()
        .ok()
        .filter(|c| (200..=599).contains(c))
        .ok_or_else(|| format!("{s:?}: the status must be an HTTP status from 200 to 599"))?;
    Ok(FaultAbort {
        status,
        permille: percent(p)?,
    })
}

/// `--mirror v3=10%` or `--mirror svc:v3=10%`.
pub fn mirror(s: &str) -> Result<MirrorSpec, String> {
    let (target, p) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("{s:?}: write SUBSET=PERCENT, like v3=10%"))?;
    let (service, subset) = match target.split_once(':') {
        Some((svc, subset)) => (Some(name(svc, "service")?), subset.to_string()),
        None => (None, name(target, "subset")?),
    };
    Ok(MirrorSpec {
        service,
        subset,
        permille: percent(p)?,
    })
}

/// `--set-header name=value`.
pub fn header_kv(s: &str) -> Result<KeyValue, String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: write NAME=VALUE, like x-env=canary"))?;
    Ok(KeyValue {
        key: header_name(k)?,
        value: v.to_string(),
    })
}

/// `--retry-on 5xx,reset` (a newtype: clap would read `Option<Vec<_>>` as a repeated flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOn(pub Vec<String>);

/// `--retry-on 5xx,reset`.
pub fn retry_on(s: &str) -> Result<RetryOn, String> {
    s.split(',')
        .map(str::trim)
        .map(|c| {
            let ok = RETRY_ON.contains(&c)
                || c.parse::<u16>().is_ok_and(|n| (100..=599).contains(&n))
                || c.strip_prefix("grpc:").is_some_and(|n| !n.is_empty());
            if ok {
                Ok(c.to_string())
            } else {
                Err(format!(
                    "{c:?} is not a retry condition: use {}, a status like 503, or grpc:<code>",
                    RETRY_ON.join(", ")
                ))
            }
        })
        .collect::<Result<_, _>>()
        .map(RetryOn)
}

fn split_opt(s: &str) -> (&str, Option<String>) {
    match s.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (s, None),
    }
}

/// HTTP header names are tokens; we also lowercase them as HTTP/2 requires.
fn header_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{s:?} is not a valid header name"))
    }
}

/// Service and subset names: DNS-label-like, so they are safe in resource names and metrics.
pub fn name(s: &str, what: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a valid {what} name (letters, digits, '-', '_', '.'; at most 253)"
        ))
    }
}

#[cfg(test)]
mod tests;
