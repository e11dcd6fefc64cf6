//! `stat`: golden metrics per service and version from sidecars' Prometheus `/metrics`.
//!
//! Two scrapes `--interval` apart; rates and percentiles come from the counter and histogram
//! deltas, summed over every proxy given. Metric families are recognised by shape: a
//! `*request*_total` counter and a `*duration*`/`*latency*` histogram, labelled with the
//! destination service and version (`service`/`dst_service`, `version`/`dst_version`/`subset`;
//! series without a service count for the proxy that exported them) and a status
//! (`status`/`status_code`/`code`/`status_class`). With a `direction` label only outbound series
//! count (the callers' view, which sees every version of a destination).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::cli::{Global, StatArgs};
use crate::error::{CliError, Result};
use crate::output::{Table, print_structured};
use crate::proxy_http;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

type Key = (String, String);

/// Counters summed over all proxies, keyed by (service, version).
#[derive(Debug, Default, Clone)]
pub struct Totals {
    requests: BTreeMap<Key, f64>,
    failures: BTreeMap<Key, f64>,
    /// (service, version) → upper bound in ms → cumulative count.
    buckets: BTreeMap<Key, BTreeMap<u64, f64>>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Row {
    pub service: String,
    pub version: String,
    pub rps: f64,
    pub success_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

pub async fn stat(global: &Global, args: StatArgs) -> Result<()> {
    let mut before = scrape(&args.proxies).await?;
    loop {
        tokio::time::sleep(args.interval).await;
        let after = scrape(&args.proxies).await?;
        let mut rows = rows(&before, &after, args.interval);
        if let Some(s) = &args.service {
            rows.retain(|r| &r.service == s);
        }
        if !print_structured(global.output, &rows)? {
            let mut t = Table::new(&["SERVICE", "VERSION", "RPS", "SUCCESS", "P50", "P95", "P99"]);
            let ms = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}ms"));
            for r in &rows {
                t.row(vec![
                    r.service.clone(),
                    r.version.clone(),
                    format!("{:.1}", r.rps),
                    format!("{:.2}%", r.success_rate * 100.0),
                    ms(r.p50_ms),
                    ms(r.p95_ms),
                    ms(r.p99_ms),
                ]);
            }
            t.print();
        }
        if !args.watch {
            return Ok(());
        }
        println!();
        before = after;
    }
}

async fn scrape(proxies: &[String]) -> Result<Totals> {
    let mut totals = Totals::default();
    let mut recognised = false;
    for p in proxies {
        let text = proxy_http::get(p, "/metrics").await?;
        recognised |= add(&mut totals, &parse(&text), p);
    }
    if !recognised {
        return Err(CliError::server(format!(
            "no request metrics in /metrics of {} (expected a *request*_total counter and a *duration* histogram)",
            proxies.join(", ")
        )));
    }
    Ok(totals)
}

/// Parses Prometheus text exposition; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(sample)
        .collect()
}

fn sample(line: &str) -> Option<Sample> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let mut it = line.split_whitespace();
            let name = it.next()?;
            return Some(Sample {
                name: name.into(),
                labels: BTreeMap::new(),
                value: it.next()?.parse().ok()?,
            });
        }
    };
    let mut labels = BTreeMap::new();
    let mut s = rest;
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(after) = s.strip_prefix('}') {
            let value = after.split_whitespace().next()?.parse().ok()?;
            return Some(Sample {
                name: name.into(),
                labels,
                value,
            });
        }
        let (k, v) = s.split_once("=\"")?;
        let mut val = String::new();
        let mut chars = v.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                (i, '"') => break i,
                (_, c) => val.push(c),
            }
        };
        labels.insert(k.trim().to_string(), val);
        s = &v[end + 1..];
    }
}

fn label<'a>(l: &'a BTreeMap<String, String>, keys: &[&str]) -> Option<&'a str> {
    keys.iter().find_map(|k| l.get(*k)).map(String::as_str)
}

/// Adds one proxy's samples; true if any request metric was recognised. Series without a
/// service label are attributed to the proxy itself (`proxy:<addr>`).
fn add(t: &mut Totals, samples: &[Sample], proxy: &str) -> bool {
    let own = format!("proxy:{proxy}");
    let mut any = false;
    for s in samples {
        if label(&s.labels, &["direction"]).is_some_and(|d| d != "outbound") {
            continue;
        }
        let service = label(
            &s.labels,
            &["service", "dst_service", "destination_service"],
        )
        .unwrap_or(&own);
        let version = label(
            &s.labels,
            &["version", "dst_version", "subset", "destination_version"],
        )
        .unwrap_or("");
        let key = (service.to_string(), version.to_string());
        let n = &s.name;
        if n.ends_with("_total") && n.contains("request") {
            any = true;
            *t.requests.entry(key.clone()).or_default() += s.value;
            let failed = label(
                &s.labels,
                &["status", "status_code", "code", "status_class"],
            )
            .is_some_and(|c| c.starts_with('5'))
                || label(&s.labels, &["classification", "outcome", "result"])
                    .is_some_and(|c| c.contains("fail") || c == "error");
            if failed {
                *t.failures.entry(key).or_default() += s.value;
            }
        } else if n.ends_with("_bucket") && (n.contains("duration") || n.contains("latency")) {
            let Some(le) = s.labels.get("le") else {
                continue;
            };
            let scale = if n.contains("seconds") { 1000.0 } else { 1.0 };
            let bound = if le == "+Inf" {
                u64::MAX
            } else {
                le.parse::<f64>()
                    .map_or(u64::MAX, |v| (v * scale * 1000.0) as u64)
            };
            *t.buckets.entry(key).or_default().entry(bound).or_default() += s.value;
        }
    }
    any
}

/// Rows from the deltas between two scrapes.
pub fn rows(before: &Totals, after: &Totals, window: Duration) -> Vec<Row> {
    let secs = window.as_secs_f64().max(0.001);
    let delta = |a: &BTreeMap<Key, f64>, b: &BTreeMap<Key, f64>, k: &Key| {
        (b.get(k).copied().unwrap_or(0.0) - a.get(k).copied().unwrap_or(0.0)).max(0.0)
    };
    after
        .requests
        .keys()
        .map(|k| {
            let reqs = delta(&before.requests, &after.requests, k);
            let fails = delta(&before.failures, &after.failures, k);
            let empty = BTreeMap::new();
            let b0 = before.buckets.get(k).unwrap_or(&empty);
            let hist: Vec<(u64, f64)> = after
                .buckets
                .get(k)
                .unwrap_or(&empty)
                .iter()
                .map(|(le, c)| (*le, (c - b0.get(le).copied().unwrap_or(0.0)).max(0.0)))
                .collect();
            Row {
                service: k.0.clone(),
                version: k.1.clone(),
                rps: reqs / secs,
                success_rate: if reqs > 0.0 { 1.0 - fails / reqs } else { 1.0 },
                p50_ms: quantile(&hist, 0.50),
                p95_ms: quantile(&hist, 0.95),
                p99_ms: quantile(&hist, 0.99),
            }
        })
        .collect()
}

/// Quantile from cumulative buckets (bounds in µs), interpolating linearly inside the bucket
/// like Prometheus' `histogram_quantile`.
fn quantile(hist: &[(u64, f64)], q: f64) -> Option<f64> {
    let total = hist.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0u64, 0.0);
    for &(le, count) in hist {
        if count >= rank {
            if le == u64::MAX {
                return Some(lo as f64 / 1000.0);
            }
            let frac = if count > below {
                (rank - below) / (count - below)
            } else {
                1.0
            };
            return Some((lo as f64 + (le - lo) as f64 * frac) / 1000.0);
        }
        (lo, below) = (le, count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"
# TYPE mesh_requests_total counter
mesh_requests_total{direction="outbound",service="api",version="v1",status="200"} 100
mesh_requests_total{direction="inbound",service="api",version="v1",status="200"} 999
mesh_request_duration_seconds_bucket{direction="outbound",service="api",version="v1",le="0.01"} 50
mesh_request_duration_seconds_bucket{direction="outbound",service="api",version="v1",le="0.1"} 100
mesh_request_duration_seconds_bucket{direction="outbound",service="api",version="v1",le="+Inf"} 100
"#;
    const AFTER: &str = r#"
mesh_requests_total{direction="outbound",service="api",version="v1",status="200"} 280
mesh_requests_total{direction="outbound",service="api",version="v1",status="503"} 20
mesh_request_duration_seconds_bucket{direction="outbound",service="api",version="v1",le="0.01"} 150
mesh_request_duration_seconds_bucket{direction="outbound",service="api",version="v1",le="0.1"} 300
mesh_request_duration_seconds_bucket{direction="outbound",service="api",version="v1",le="+Inf"} 300
"#;

    #[test]
    fn rates_success_and_percentiles_from_deltas() {
        let (mut a, mut b) = (Totals::default(), Totals::default());
        assert!(add(&mut a, &parse(BEFORE), "p"));
        assert!(add(&mut b, &parse(AFTER), "p"));
        let r = rows(&a, &b, Duration::from_secs(2));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].rps, 100.0);
        assert!((r[0].success_rate - 0.9).abs() < 1e-9);
        // 200 new requests: 100 under 10 ms, 100 between 10 and 100 ms.
        assert_eq!(r[0].p50_ms, Some(10.0));
        assert_eq!(r[0].p99_ms, Some(98.2));
    }

    #[test]
    fn sidecar_series_without_service_count_per_proxy() {
        let text = "mesh_requests_total{direction=\"outbound\",status_class=\"2xx\",cause=\"\"} 9\n\
                    mesh_requests_total{direction=\"outbound\",status_class=\"5xx\",cause=\"no-route\"} 1\n";
        let (a, mut b) = (Totals::default(), Totals::default());
        assert!(add(&mut b, &parse(text), "127.0.0.1:15000"));
        let r = rows(&a, &b, Duration::from_secs(1));
        assert_eq!(r[0].service, "proxy:127.0.0.1:15000");
        assert_eq!(r[0].rps, 10.0);
        assert!((r[0].success_rate - 0.9).abs() < 1e-9);
        assert_eq!(r[0].p50_ms, None);
    }

    #[test]
    fn label_escapes() {
        let s = parse(r#"x_total{a="q\"uote",b="c"} 3"#);
        assert_eq!(s[0].labels["a"], "q\"uote");
        assert_eq!(s[0].value, 3.0);
    }
}
