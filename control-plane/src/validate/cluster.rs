//! Cluster policy validation: proto `Cluster` → domain `ClusterPolicy`.

use mesh_proto::types::v1 as pb;

use super::{
    Result, ValidationError, err, header_name, http_path, percent, ratio_ppm, service_name, text,
    timeout_ms,
};
use crate::model::{
    CircuitBreakers, ClusterPolicy, HashKey, HashOn, HealthCheck, LbPolicy, OutlierDetection,
    Protocol, RetryBudget, TlsMode,
};

impl TryFrom<pb::Cluster> for ClusterPolicy {
    type Error = ValidationError;

    /// `vip`, `ports` and `namespace` belong to the registry: values sent here are ignored, so
    /// a policy read with Get can be edited and stored again unchanged.
    fn try_from(c: pb::Cluster) -> Result<Self> {
        let lb_policy = match pb::LbPolicy::try_from(c.lb_policy) {
            Ok(pb::LbPolicy::Unspecified | pb::LbPolicy::P2cEwma) => LbPolicy::P2cEwma,
            Ok(pb::LbPolicy::RoundRobin) => LbPolicy::RoundRobin,
            Ok(pb::LbPolicy::WeightedRoundRobin) => LbPolicy::WeightedRoundRobin,
            Ok(pb::LbPolicy::RingHash) => LbPolicy::RingHash,
            Ok(pb::LbPolicy::Maglev) => LbPolicy::Maglev,
            Err(_) => return Err(unknown_enum("cluster.lb_policy", c.lb_policy)),
        };
        let hash_on = c.hash_on.map(hash_on_from).transpose()?;
        if hash_on.is_some() && !matches!(lb_policy, LbPolicy::RingHash | LbPolicy::Maglev) {
            return Err(err(
                "cluster.hash_on",
                "only used by RING_HASH or MAGLEV load balancing",
            ));
        }
        Ok(ClusterPolicy {
            service: service_name("cluster.name", &c.name)?,
            lb_policy,
            hash_on,
            outlier_detection: c.outlier_detection.map(outlier_from).transpose()?,
            circuit_breakers: c.circuit_breakers.map(circuit_breakers_from).transpose()?,
            health_check: c.health_check.map(health_check_from).transpose()?,
            connect_timeout: timeout_ms("cluster.connect_timeout_ms", c.connect_timeout_ms)?,
            idle_timeout: timeout_ms("cluster.idle_timeout_ms", c.idle_timeout_ms)?,
            tls_mode: tls_mode("cluster.tls_mode", c.tls_mode)?,
            protocol: match pb::Protocol::try_from(c.protocol) {
                Ok(pb::Protocol::Unspecified) => Protocol::Detect,
                Ok(pb::Protocol::Http1) => Protocol::Http1,
                Ok(pb::Protocol::Http2) => Protocol::Http2,
                Ok(pb::Protocol::Grpc) => Protocol::Grpc,
                Ok(pb::Protocol::Tcp) => Protocol::Tcp,
                Err(_) => return Err(unknown_enum("cluster.protocol", c.protocol)),
            },
            retry_budget: c
                .retry_budget
                .map(|rb| -> Result<RetryBudget> {
                    Ok(RetryBudget {
                        ratio_permille: ratio_ppm("cluster.retry_budget.ratio", rb.ratio)? / 1000,
                        min_retries_per_second: rb.min_retries_per_second,
                        window: timeout_ms("cluster.retry_budget.window_ms", rb.window_ms)?,
                    })
                })
                .transpose()?,
            request_timeout: timeout_ms("cluster.request_timeout_ms", c.request_timeout_ms)?,
        })
    }
}

pub(crate) fn tls_mode(field: &str, v: i32) -> Result<TlsMode> {
    match pb::TlsMode::try_from(v) {
        Ok(pb::TlsMode::Unspecified | pb::TlsMode::Strict) => Ok(TlsMode::Strict),
        Ok(pb::TlsMode::Permissive) => Ok(TlsMode::Permissive),
        Ok(pb::TlsMode::Disabled) => Ok(TlsMode::Disabled),
        Err(_) => Err(unknown_enum(field, v)),
    }
}

pub(crate) fn unknown_enum(field: &str, v: i32) -> ValidationError {
    err(field, format!("unknown value {v}"))
}

fn hash_on_from(h: pb::HashOn) -> Result<HashOn> {
    let key = match h.key {
        None => {
            return Err(err(
                "cluster.hash_on.key",
                "set header, cookie or source_ip",
            ));
        }
        Some(pb::hash_on::Key::Header(name)) => {
            HashKey::Header(header_name("cluster.hash_on.header", &name)?)
        }
        Some(pb::hash_on::Key::Cookie(name)) => {
            text("cluster.hash_on.cookie", &name)?;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != ';' && c != '=')
            {
                return Err(err(
                    "cluster.hash_on.cookie",
                    format!("{name:?} is not a cookie name"),
                ));
            }
            HashKey::Cookie(name)
        }
        Some(pb::hash_on::Key::SourceIp(true)) => HashKey::SourceIp,
        Some(pb::hash_on::Key::SourceIp(false)) => {
            return Err(err("cluster.hash_on.source_ip", "false selects no key"));
        }
    };
    Ok(HashOn {
        key,
        generate_cookie: h.generate_cookie,
        cookie_ttl: timeout_ms(
            "cluster.hash_on.cookie_ttl_secs",
            h.cookie_ttl_secs.saturating_mul(1000),
        )?,
    })
}

/// A field the proto carries but no proxy enforces: refused, so what is stored is what runs.
fn unsupported(field: &str, why: &str) -> ValidationError {
    err(field, format!("not supported: {why}; leave it 0"))
}

fn outlier_from(o: pb::OutlierDetection) -> Result<OutlierDetection> {
    let f = "cluster.outlier_detection";
    // The proxy's detector counts consecutive failures per endpoint and ejects on the one
    // that completes a streak: it keeps no failure rates and evaluates on no interval.
    let streaks = "outlier detection ejects on consecutive failures (consecutive_5xx, \
                   consecutive_gateway_failures) and keeps no failure rates";
    if o.failure_percentage != 0 {
        return Err(unsupported(&format!("{f}.failure_percentage"), streaks));
    }
    if o.failure_percentage_min_requests != 0 {
        return Err(unsupported(
            &format!("{f}.failure_percentage_min_requests"),
            streaks,
        ));
    }
    if o.interval_ms != 0 {
        return Err(unsupported(
            &format!("{f}.interval_ms"),
            "outlier detection has no evaluation interval: an endpoint is ejected by the \
             failure that completes its streak",
        ));
    }
    Ok(OutlierDetection {
        disabled: o.disabled,
        consecutive_5xx: o.consecutive_5xx,
        consecutive_gateway_failures: o.consecutive_gateway_failures,
        base_ejection: timeout_ms(&format!("{f}.base_ejection_ms"), o.base_ejection_ms)?,
        max_ejection_percent: percent(
            &format!("{f}.max_ejection_percent"),
            o.max_ejection_percent,
        )?,
    })
}

fn circuit_breakers_from(cb: pb::CircuitBreakers) -> Result<CircuitBreakers> {
    if cb.max_connections != 0 {
        return Err(unsupported(
            "cluster.circuit_breakers.max_connections",
            "requests to a peer sidecar share one multiplexed HTTP/2 connection; bound them \
             with max_requests and max_pending_requests",
        ));
    }
    Ok(CircuitBreakers {
        max_pending_requests: cb.max_pending_requests,
        max_requests: cb.max_requests,
        max_retries: cb.max_retries,
    })
}

fn health_check_from(h: pb::HealthCheck) -> Result<HealthCheck> {
    let f = "cluster.health_check";
    let http_path = match h.http_path.as_str() {
        "" => None,
        p => Some(http_path(&format!("{f}.http_path"), p)?),
    };
    let expected_status = match h.expected_status {
        0 => None,
        s @ 100..=599 => Some(s as u16),
        s => {
            return Err(err(
                format!("{f}.expected_status"),
                format!("{s} is not an HTTP status"),
            ));
        }
    };
    let interval = timeout_ms(&format!("{f}.interval_ms"), h.interval_ms)?;
    let timeout = timeout_ms(&format!("{f}.timeout_ms"), h.timeout_ms)?;
    if let (Some(i), Some(t)) = (interval, timeout)
        && t > i
    {
        return Err(err(
            format!("{f}.timeout_ms"),
            "must not exceed interval_ms (checks would overlap)",
        ));
    }
    Ok(HealthCheck {
        http_path,
        expected_status,
        interval,
        timeout,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
    })
}
