//! HTTPRoute filters → rule actions: header modifiers, URL rewrite, redirect, mirror.

use mesh_proto::types::v1 as pb;
use serde_norway::Value;

use super::gateway_yaml::{R, backend_name, mapping, only, seq, str_at};

/// Applies one `filters[]` entry to the rule; any other filter type is refused by path.
pub(super) fn filter(f: &Value, at: &str, r: &mut pb::RouteRule) -> R<()> {
    let ty = str_at(f, "type", &format!("{at}."))?;
    let key = match ty.as_str() {
        "RequestHeaderModifier" => "requestHeaderModifier",
        "ResponseHeaderModifier" => "responseHeaderModifier",
        "URLRewrite" => "urlRewrite",
        "RequestRedirect" => "requestRedirect",
        "RequestMirror" => "requestMirror",
        other => return Err(format!("{at}.type: {other} is not supported")),
    };
    only(mapping(f, at)?, at, &["type", key])?;
    let body = f.get(key).ok_or(format!("{at}.{key}: missing"))?;
    let bat = format!("{at}.{key}");
    match key {
        "requestHeaderModifier" | "responseHeaderModifier" => {
            only(mapping(body, &bat)?, &bat, &["set", "add", "remove"])?;
            let ops = if key == "requestHeaderModifier" {
                &mut r.request_headers
            } else {
                &mut r.response_headers
            };
            for (op, kind) in [
                ("set", pb::HeaderOpKind::Set),
                ("add", pb::HeaderOpKind::Add),
            ] {
                for (i, h) in seq(body.get(op), &format!("{bat}.{op}"))?
                    .iter()
                    .enumerate()
                {
                    let hat = format!("{bat}.{op}[{i}].");
                    ops.push(pb::HeaderOp {
                        kind: kind as i32,
                        name: str_at(h, "name", &hat)?,
                        value: str_at(h, "value", &hat)?,
                    });
                }
            }
            for (i, h) in seq(body.get("remove"), &format!("{bat}.remove"))?
                .iter()
                .enumerate()
            {
                let name = h
                    .as_str()
                    .ok_or(format!("{bat}.remove[{i}]: not a string"))?
                    .to_string();
                ops.push(pb::HeaderOp {
                    kind: pb::HeaderOpKind::Remove as i32,
                    name,
                    value: String::new(),
                });
            }
        }
        "urlRewrite" => {
            only(mapping(body, &bat)?, &bat, &["path"])?;
            let p = body.get("path").ok_or(format!("{bat}.path: missing"))?;
            only(
                mapping(p, &format!("{bat}.path"))?,
                &format!("{bat}.path"),
                &["type", "replacePrefixMatch"],
            )?;
            let t = str_at(p, "type", &format!("{bat}.path."))?;
            if t != "ReplacePrefixMatch" {
                return Err(format!(
                    "{bat}.path.type: {t} is not supported (only ReplacePrefixMatch)"
                ));
            }
            r.rewrite_prefix = str_at(p, "replacePrefixMatch", &format!("{bat}.path."))?;
        }
        "requestRedirect" => {
            only(
                mapping(body, &bat)?,
                &bat,
                &["scheme", "hostname", "statusCode", "path"],
            )?;
            let get = |k: &str| {
                body.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let path = match body.get("path") {
                None => String::new(),
                Some(p) => {
                    only(
                        mapping(p, &format!("{bat}.path"))?,
                        &format!("{bat}.path"),
                        &["type", "replaceFullPath"],
                    )?;
                    if p.get("type").and_then(Value::as_str) != Some("ReplaceFullPath") {
                        return Err(format!(
                            "{bat}.path.type: only ReplaceFullPath is supported"
                        ));
                    }
                    str_at(p, "replaceFullPath", &format!("{bat}.path."))?
                }
            };
            let status = body
                .get("statusCode")
                .and_then(Value::as_u64)
                .unwrap_or(302);
            r.redirect = Some(pb::Redirect {
                scheme: get("scheme"),
                host: get("hostname"),
                path,
                status: status as u32,
            });
        }
        _ => {
            only(mapping(body, &bat)?, &bat, &["backendRef", "percent"])?;
            let b = body
                .get("backendRef")
                .ok_or(format!("{bat}.backendRef: missing"))?;
            only(
                mapping(b, &format!("{bat}.backendRef"))?,
                &format!("{bat}.backendRef"),
                &["name", "port", "kind", "group", "namespace"],
            )?;
            let (svc, subset) = backend_name(&str_at(b, "name", &format!("{bat}.backendRef."))?);
            let percent = body
                .get("percent")
                .map_or(Some(100), Value::as_u64)
                .filter(|p| *p <= 100);
            let percent = percent.ok_or(format!("{bat}.percent: a whole number from 0 to 100"))?;
            r.mirror = Some(pb::Mirror {
                service: svc,
                subset,
                permille: percent as u32 * 10,
            });
        }
    }
    Ok(())
}
