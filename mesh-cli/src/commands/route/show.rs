//! Human-readable rendering of route rules (tables and `explain`).

use mesh_proto::types::v1 as pb;

use crate::output::Table;

/// One line per rule: service, rule name, matches, backends, actions.
pub fn table(routes: &[(pb::Route, String)]) -> Table {
    let mut t = Table::new(&[
        "SERVICE", "VERSION", "#", "RULE", "MATCH", "BACKENDS", "ACTIONS",
    ]);
    for (route, version) in routes {
        for (i, r) in route.rules.iter().enumerate() {
            t.row(vec![
                route.service.clone(),
                short(version),
                i.to_string(),
                r.name.clone(),
                matches(r),
                backends(&route.service, &r.backends),
                actions(r).join(" "),
            ]);
        }
    }
    t
}

/// Versions are content hashes: the first 12 characters identify them in a table.
pub fn short(v: &str) -> String {
    v.chars().take(12).collect()
}

pub fn matches(r: &pb::RouteRule) -> String {
    if r.matches.is_empty() {
        return "*".to_string();
    }
    r.matches
        .iter()
        .map(one_match)
        .collect::<Vec<_>>()
        .join(" | ")
}

pub fn one_match(m: &pb::RouteMatch) -> String {
    let mut parts = Vec::new();
    if let Some(p) = &m.path {
        let kind = match pb::PathMatchKind::try_from(p.kind) {
            Ok(pb::PathMatchKind::Exact) => "path",
            Ok(pb::PathMatchKind::Regex) => "path-regex",
            _ => "path-prefix",
        };
        parts.push(format!("{kind}={}", p.value));
    }
    if !m.method.is_empty() {
        parts.push(format!("method={}", m.method));
    }
    for (what, kvs) in [("header", &m.headers), ("query", &m.query_params)] {
        for kv in kvs {
            parts.push(match pb::ValueMatchKind::try_from(kv.kind) {
                Ok(pb::ValueMatchKind::Present) => format!("{what}:{}", kv.name),
                Ok(pb::ValueMatchKind::Regex) => format!("{what}:{}~{}", kv.name, kv.value),
                _ => format!("{what}:{}={}", kv.name, kv.value),
            });
        }
    }
    if parts.is_empty() {
        "*".to_string()
    } else {
        parts.join(",")
    }
}

pub fn backends(service: &str, b: &[pb::WeightedBackend]) -> String {
    b.iter()
        .map(|b| {
            let target = match (b.service == service, b.subset.is_empty()) {
                (true, true) => "*".to_string(),
                (true, false) => b.subset.clone(),
                (false, _) => format!("{}:{}", b.service, b.subset),
            };
            format!("{target}={}", b.weight)
        })
        .collect::<Vec<_>>()
        .join(",")
}

pub fn actions(r: &pb::RouteRule) -> Vec<String> {
    let mut a = Vec::new();
    if r.timeout_ms > 0 {
        a.push(format!("timeout={}ms", r.timeout_ms));
    }
    if let Some(retry) = r.retry.as_ref().filter(|r| r.attempts > 1) {
        a.push(format!(
            "retries={}({})",
            retry.attempts - 1,
            retry.retry_on.join(",")
        ));
    }
    for h in &r.request_headers {
        a.push(format!("set-header={}:{}", h.name, h.value));
    }
    for h in &r.response_headers {
        a.push(format!("set-response-header={}:{}", h.name, h.value));
    }
    if !r.rewrite_prefix.is_empty() {
        a.push(format!("rewrite-prefix={}", r.rewrite_prefix));
    }
    if let Some(rd) = &r.redirect {
        a.push(format!(
            "redirect={}{}{}({})",
            rd.scheme, rd.host, rd.path, rd.status
        ));
    }
    if let Some(f) = &r.fault {
        if f.delay_permille > 0 {
            a.push(format!(
                "fault-delay={}ms@{}%",
                f.delay_ms,
                permille(f.delay_permille)
            ));
        }
        if f.abort_permille > 0 {
            a.push(format!(
                "fault-abort={}@{}%",
                f.abort_status,
                permille(f.abort_permille)
            ));
        }
    }
    if let Some(m) = &r.mirror {
        a.push(format!(
            "mirror={}:{}@{}%",
            m.service,
            m.subset,
            permille(m.permille)
        ));
    }
    a
}

fn permille(p: u32) -> String {
    if p.is_multiple_of(10) {
        (p / 10).to_string()
    } else {
        format!("{}.{}", p / 10, p % 10)
    }
}
