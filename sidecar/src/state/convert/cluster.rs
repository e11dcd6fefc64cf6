//! Cluster conversion: LB policy, hashing, outlier detection, health checks, timeouts.

use std::net::IpAddr;
use std::time::Duration;

use mesh_proto::types::v1 as pb;

use super::*;

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
        // On by default: a cluster without the message gets the default detection.
        let od = c.outlier_detection.unwrap_or_default();
        refuse_rates(&od)?;
        out.outlier = outlier(&od);
        out.circuit_breakers = match &c.circuit_breakers {
            Some(b) if b.max_connections != 0 => {
                return Err(ConvertError::new(
                    "circuit_breakers.max_connections",
                    "not supported: a peer's requests share one HTTP/2 connection; bound them \
                     with max_requests and max_pending_requests",
                ));
            }
            Some(b) => {
                let nz = |v: u32| (v != 0).then_some(v);
                CircuitBreakers {
                    max_pending_requests: nz(b.max_pending_requests),
                    max_requests: nz(b.max_requests),
                    max_retries: nz(b.max_retries),
                }
            }
            None => CircuitBreakers::default(),
        };
        out.health_check = c.health_check.as_ref().map(health_check).transpose()?;
        out.connect_timeout = opt_ms(c.connect_timeout_ms);
        out.idle_timeout = opt_ms(c.idle_timeout_ms).unwrap_or(Cluster::DEFAULT_IDLE_TIMEOUT);
        out.tls_mode = tls_mode(c.tls_mode());
        out.identities = c.identities.iter().map(|i| name(i)).collect();
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

/// The detector ejects on consecutive failures and keeps no failure rates: the proto's
/// failure-percentage fields and evaluation interval are refused rather than ignored (the
/// control plane refuses them too, so only a static config can carry them).
fn refuse_rates(o: &pb::OutlierDetection) -> Result<()> {
    for (field, v) in [
        ("failure_percentage", u64::from(o.failure_percentage)),
        (
            "failure_percentage_min_requests",
            u64::from(o.failure_percentage_min_requests),
        ),
        ("interval_ms", o.interval_ms),
    ] {
        if v != 0 {
            return Err(ConvertError::new(
                format!("outlier_detection.{field}"),
                "not supported: outlier detection ejects on consecutive failures only",
            ));
        }
    }
    Ok(())
}

/// Outlier defaults follow Envoy's (5 consecutive 5xx, 30 s base ejection, 10 % max
/// ejected): proven in production and familiar to operators.
pub(crate) fn outlier(o: &pb::OutlierDetection) -> Option<OutlierDetection> {
    if o.disabled {
        return None;
    }
    let or = |v: u32, d: u32| if v == 0 { d } else { v };
    Some(OutlierDetection {
        consecutive_5xx: or(o.consecutive_5xx, 5),
        consecutive_gateway_failures: or(o.consecutive_gateway_failures, 5),
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
