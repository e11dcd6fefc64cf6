//! Route → Gateway API HTTPRoute, the inverse of `gateway::parse` for what HTTPRoute can say.

use mesh_proto::types::v1 as pb;
use serde_json::json;
use serde_norway::Value;

use super::gateway_yaml::{R, backend_name};

/// Renders a route as an HTTPRoute that `parse` turns back into the same route.
pub fn export(route: &pb::Route) -> R<Value> {
    let mut rules = Vec::new();
    for r in &route.rules {
        let why = |what: &str| {
            format!(
                "rule {:?} uses {what}, which HTTPRoute cannot express",
                r.name
            )
        };
        if r.retry.as_ref().is_some_and(|x| x.attempts > 1) {
            return Err(why("retries"));
        }
        if r.fault.is_some() {
            return Err(why("fault injection"));
        }
        if r.rate_limit.is_some() {
            return Err(why("a rate limit"));
        }
        let mut rule = json!({"name": r.name});
        let matches: Vec<_> = r.matches.iter().map(export_match).collect();
        if !matches.is_empty() {
            rule["matches"] = json!(matches);
        }
        let mut filters = Vec::new();
        for (key, ty, ops) in [
            (
                "requestHeaderModifier",
                "RequestHeaderModifier",
                &r.request_headers,
            ),
            (
                "responseHeaderModifier",
                "ResponseHeaderModifier",
                &r.response_headers,
            ),
        ] {
            if !ops.is_empty() {
                filters.push(json!({"type": ty, key: export_header_ops(ops)}));
            }
        }
        if !r.rewrite_prefix.is_empty() {
            filters.push(json!({"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": r.rewrite_prefix}}}));
        }
        if let Some(rd) = &r.redirect {
            let mut body = json!({"statusCode": rd.status});
            for (k, v) in [("scheme", &rd.scheme), ("hostname", &rd.host)] {
                if !v.is_empty() {
                    body[k] = json!(v);
                }
            }
            if !rd.path.is_empty() {
                body["path"] = json!({"type": "ReplaceFullPath", "replaceFullPath": rd.path});
            }
            filters.push(json!({"type": "RequestRedirect", "requestRedirect": body}));
        }
        if let Some(m) = &r.mirror {
            if !m.permille.is_multiple_of(10) {
                return Err(why("a sub-percent mirror share"));
            }
            let name = export_backend(&m.service, &m.subset).map_err(|e| why(&e))?;
            filters.push(json!({"type": "RequestMirror", "requestMirror": {"backendRef": {"name": name}, "percent": m.permille / 10}}));
        }
        if !filters.is_empty() {
            rule["filters"] = json!(filters);
        }
        let refs: Vec<_> = r
            .backends
            .iter()
            .map(|b| {
                Ok(json!({"name": export_backend(&b.service, &b.subset)?, "weight": b.weight}))
            })
            .collect::<R<_>>()
            .map_err(|e| why(&e))?;
        if !refs.is_empty() {
            rule["backendRefs"] = json!(refs);
        }
        if r.timeout_ms > 0 {
            rule["timeouts"] = json!({"request": format!("{}ms", r.timeout_ms)});
        }
        rules.push(rule);
    }
    let doc = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": route.service},
        "spec": {"hostnames": [route.service], "rules": rules},
    });
    serde_norway::to_value(doc).map_err(|e| e.to_string())
}

fn export_backend(service: &str, subset: &str) -> R<String> {
    if subset.is_empty() {
        return Ok(service.to_string());
    }
    let name = format!("{service}-{subset}");
    if backend_name(&name) == (service.to_string(), subset.to_string()) {
        Ok(name)
    } else {
        Err(format!(
            "subset {subset:?} (the backendRef convention needs v<digit>…)"
        ))
    }
}

fn export_match(m: &pb::RouteMatch) -> serde_json::Value {
    let mut out = json!({});
    if let Some(p) = &m.path {
        let ty = match pb::PathMatchKind::try_from(p.kind) {
            Ok(pb::PathMatchKind::Exact) => "Exact",
            Ok(pb::PathMatchKind::Regex) => "RegularExpression",
            _ => "PathPrefix",
        };
        out["path"] = json!({"type": ty, "value": p.value});
    }
    if !m.method.is_empty() {
        out["method"] = json!(m.method);
    }
    for (key, kvs) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
        if !kvs.is_empty() {
            let list: Vec<_> = kvs
                .iter()
                .map(|kv| {
                    let ty = if kv.kind == pb::ValueMatchKind::Regex as i32 {
                        "RegularExpression"
                    } else {
                        "Exact"
                    };
                    json!({"type": ty, "name": kv.name, "value": kv.value})
                })
                .collect();
            out[key] = json!(list);
        }
    }
    out
}

fn export_header_ops(ops: &[pb::HeaderOp]) -> serde_json::Value {
    let mut body = json!({});
    let pick = |k: pb::HeaderOpKind| -> Vec<&pb::HeaderOp> {
        ops.iter()
            .filter(|o| o.kind == k as i32 || (k == pb::HeaderOpKind::Set && o.kind == 0))
            .collect()
    };
    for (key, kind) in [
        ("set", pb::HeaderOpKind::Set),
        ("add", pb::HeaderOpKind::Add),
    ] {
        let l: Vec<_> = pick(kind)
            .iter()
            .map(|o| json!({"name": o.name, "value": o.value}))
            .collect();
        if !l.is_empty() {
            body[key] = json!(l);
        }
    }
    let rm: Vec<_> = pick(pb::HeaderOpKind::Remove)
        .iter()
        .map(|o| json!(o.name))
        .collect();
    if !rm.is_empty() {
        body["remove"] = json!(rm);
    }
    body
}
