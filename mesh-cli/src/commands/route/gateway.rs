//! Gateway API HTTPRoute/GRPCRoute ↔ mesh `Route`, for the subset the mesh implements.
//!
//! Anything outside the subset is refused with the field's path, so an `apply` never silently
//! drops a behaviour the author asked for. Subset convention: a backendRef named
//! `<service>-v<digit>…` (e.g. `reviews-v2`) is subset `v2` of `reviews`.

use mesh_proto::types::v1 as pb;
use serde_norway::Value;

use super::gateway_yaml::{R, backend_name, mapping, only, seq, str_at};
use crate::spec;

/// Parses every HTTPRoute/GRPCRoute document; other kinds are refused by name.
pub fn parse(text: &str) -> R<Vec<pb::Route>> {
    let docs = crate::inject::parse_documents(text).map_err(|e| e.to_string())?;
    docs.iter()
        .enumerate()
        .map(|(i, d)| route(d).map_err(|e| format!("document {i}: {e}")))
        .collect()
}

fn route(doc: &Value) -> R<pb::Route> {
    let kind = str_at(doc, "kind", "")?;
    let grpc = match kind.as_str() {
        "HTTPRoute" => false,
        "GRPCRoute" => true,
        other => {
            return Err(format!(
                "kind: {other:?} is not supported (only HTTPRoute and GRPCRoute)"
            ));
        }
    };
    let api = str_at(doc, "apiVersion", "")?;
    if !api.starts_with("gateway.networking.k8s.io/") {
        return Err(format!("apiVersion: {api:?} is not a Gateway API version"));
    }
    let spec_v = doc.get("spec").ok_or("spec: missing")?;
    let spec_m = mapping(spec_v, "spec")?;
    only(spec_m, "spec", &["parentRefs", "hostnames", "rules"])?;
    let service = match seq(spec_v.get("hostnames"), "spec.hostnames")?.first() {
        Some(h) => h
            .as_str()
            .and_then(|h| h.split('.').next())
            .ok_or("spec.hostnames[0]: not a string")?
            .to_string(),
        None => str_at(
            doc.get("metadata").ok_or("metadata: missing")?,
            "name",
            "metadata.",
        )?,
    };
    let service = spec::name(&service, "service").map_err(|e| format!("spec.hostnames[0]: {e}"))?;
    let rules = seq(spec_v.get("rules"), "spec.rules")?
        .iter()
        .enumerate()
        .map(|(i, r)| rule(r, &format!("spec.rules[{i}]"), i, &service, grpc))
        .collect::<R<Vec<_>>>()?;
    Ok(pb::Route { service, rules })
}

fn rule(v: &Value, at: &str, index: usize, service: &str, grpc: bool) -> R<pb::RouteRule> {
    let m = mapping(v, at)?;
    only(
        m,
        at,
        &["name", "matches", "filters", "backendRefs", "timeouts"],
    )?;
    let mut r = pb::RouteRule {
        name: match v.get("name") {
            Some(n) => n
                .as_str()
                .ok_or(format!("{at}.name: not a string"))?
                .to_string(),
            None => format!("rule-{index}"),
        },
        ..Default::default()
    };
    for (j, mv) in seq(v.get("matches"), &format!("{at}.matches"))?
        .iter()
        .enumerate()
    {
        r.matches
            .push(route_match(mv, &format!("{at}.matches[{j}]"), grpc)?);
    }
    for (k, f) in seq(v.get("filters"), &format!("{at}.filters"))?
        .iter()
        .enumerate()
    {
        super::gateway_filter::filter(f, &format!("{at}.filters[{k}]"), &mut r)?;
    }
    let mut raw = Vec::new();
    for (l, b) in seq(v.get("backendRefs"), &format!("{at}.backendRefs"))?
        .iter()
        .enumerate()
    {
        let bat = format!("{at}.backendRefs[{l}]");
        only(
            mapping(b, &bat)?,
            &bat,
            &["name", "weight", "port", "kind", "group", "namespace"],
        )?;
        if let Some(k) = b
            .get("kind")
            .and_then(Value::as_str)
            .filter(|k| *k != "Service")
        {
            return Err(format!("{bat}.kind: {k} is not supported (only Service)"));
        }
        let (svc, subset) = backend_name(&str_at(b, "name", &format!("{bat}."))?);
        let weight = match b.get("weight") {
            None => 1,
            Some(w) => w
                .as_u64()
                .and_then(|w| u32::try_from(w).ok())
                .ok_or(format!("{bat}.weight: not a whole number"))?,
        };
        raw.push(pb::WeightedBackend {
            service: svc,
            subset,
            weight,
        });
    }
    if raw.is_empty() && r.redirect.is_none() {
        raw.push(pb::WeightedBackend {
            service: service.to_string(),
            subset: String::new(),
            weight: 1,
        });
    }
    r.backends = normalize(raw).map_err(|e| format!("{at}.backendRefs: {e}"))?;
    if let Some(t) = v.get("timeouts") {
        only(
            mapping(t, &format!("{at}.timeouts"))?,
            &format!("{at}.timeouts"),
            &["request"],
        )?;
        let d = str_at(t, "request", &format!("{at}.timeouts."))?;
        r.timeout_ms =
            spec::millis(spec::duration(&d).map_err(|e| format!("{at}.timeouts.request: {e}"))?);
    }
    Ok(r)
}

fn route_match(v: &Value, at: &str, grpc: bool) -> R<pb::RouteMatch> {
    let m = mapping(v, at)?;
    let mut out = pb::RouteMatch::default();
    if grpc {
        only(m, at, &["method", "headers"])?;
        if let Some(mv) = v.get("method") {
            let mat = format!("{at}.method");
            only(mapping(mv, &mat)?, &mat, &["type", "service", "method"])?;
            if let Some(t) = mv
                .get("type")
                .and_then(Value::as_str)
                .filter(|t| *t != "Exact")
            {
                return Err(format!("{mat}.type: {t} is not supported (only Exact)"));
            }
            let svc = mv
                .get("service")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let method = mv.get("method").and_then(Value::as_str).unwrap_or_default();
            out.path = Some(match (svc, method) {
                ("", _) => return Err(format!("{mat}.service: required by the mesh")),
                (s, "") => pb::PathMatch {
                    kind: pb::PathMatchKind::Prefix as i32,
                    value: format!("/{s}/"),
                },
                (s, m) => pb::PathMatch {
                    kind: pb::PathMatchKind::Exact as i32,
                    value: format!("/{s}/{m}"),
                },
            });
        }
    } else {
        only(m, at, &["path", "headers", "queryParams", "method"])?;
        if let Some(p) = v.get("path") {
            let pat = format!("{at}.path");
            only(mapping(p, &pat)?, &pat, &["type", "value"])?;
            let kind = match p
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("PathPrefix")
            {
                "PathPrefix" => pb::PathMatchKind::Prefix,
                "Exact" => pb::PathMatchKind::Exact,
                "RegularExpression" => pb::PathMatchKind::Regex,
                t => return Err(format!("{pat}.type: {t} is not supported")),
            };
            let value = p
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string();
            out.path = Some(pb::PathMatch {
                kind: kind as i32,
                value,
            });
        }
        if let Some(method) = v.get("method") {
            out.method = method
                .as_str()
                .ok_or(format!("{at}.method: not a string"))?
                .to_string();
        }
        out.query_params = kv_matches(v.get("queryParams"), &format!("{at}.queryParams"))?;
    }
    out.headers = kv_matches(v.get("headers"), &format!("{at}.headers"))?;
    Ok(out)
}

fn kv_matches(v: Option<&Value>, at: &str) -> R<Vec<pb::KeyValueMatch>> {
    seq(v, at)?
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let hat = format!("{at}[{i}]");
            only(mapping(h, &hat)?, &hat, &["type", "name", "value"])?;
            let kind = match h.get("type").and_then(Value::as_str).unwrap_or("Exact") {
                "Exact" => pb::ValueMatchKind::Exact,
                "RegularExpression" => pb::ValueMatchKind::Regex,
                t => return Err(format!("{hat}.type: {t} is not supported")),
            };
            Ok(pb::KeyValueMatch {
                name: str_at(h, "name", &format!("{hat}."))?,
                kind: kind as i32,
                value: str_at(h, "value", &format!("{hat}."))?,
            })
        })
        .collect()
}

/// Gateway API weights are relative; the mesh's are percentages. Largest-remainder rounding
/// keeps the sum exactly 100 and leaves weights already summing to 100 unchanged.
fn normalize(mut b: Vec<pb::WeightedBackend>) -> R<Vec<pb::WeightedBackend>> {
    let total: u64 = b.iter().map(|b| u64::from(b.weight)).sum();
    if b.is_empty() {
        return Ok(b);
    }
    if total == 0 {
        return Err("every weight is 0: no traffic could flow".into());
    }
    let exact: Vec<u64> = b.iter().map(|x| u64::from(x.weight) * 100).collect();
    let mut given: Vec<u64> = exact.iter().map(|e| e / total).collect();
    let mut rest = 100 - given.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..b.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exact[i] % total));
    for &i in order.iter().cycle().take(b.len() * 2) {
        if rest == 0 {
            break;
        }
        given[i] += 1;
        rest -= 1;
    }
    for (x, g) in b.iter_mut().zip(given) {
        x.weight = g as u32;
    }
    Ok(b)
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
