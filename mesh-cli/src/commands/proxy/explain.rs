//! `explain`: evaluates a request against the route rules a proxy really holds, rule by rule,
//! saying why each rule did or did not match, then the backends and policies it would hit.

use mesh_proto::types::v1 as pb;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{ExplainArgs, Global};
use crate::commands::route::show;
use crate::error::{CliError, Result};
use crate::output::print_structured;

/// A request as `explain` sees it.
pub struct Req {
    pub method: String,
    pub host: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
}

/// The verdict for one rule.
#[derive(Debug, Serialize)]
pub struct RuleVerdict {
    pub index: usize,
    pub name: String,
    pub matched: bool,
    pub why: String,
}

#[derive(Serialize)]
struct Explanation {
    service: String,
    route_found: bool,
    rules: Vec<RuleVerdict>,
    chosen_rule: Option<String>,
    backends: String,
    actions: Vec<String>,
    cluster: Option<pb::Cluster>,
}

pub async fn explain(global: &Global, args: ExplainArgs) -> Result<()> {
    let req = request(&args)?;
    let dump = super::config_dump(&args.proxy).await?;
    let routes: Vec<pb::Route> = find(&dump, &|o| {
        o.contains_key("service") && o.contains_key("rules")
    });
    let clusters: Vec<pb::Cluster> = find(&dump, &|o| {
        o.contains_key("name") && o.contains_key("lb_policy")
    });
    // The host names a service directly (`api`, `api.ns`, `api.ns.svc.td`) or by its VIP.
    let service = clusters
        .iter()
        .find(|c| !c.vip.is_empty() && c.vip == req.host)
        .map(|c| c.name.clone())
        .unwrap_or_else(|| req.host.split('.').next().unwrap_or_default().to_string());
    let route = routes.into_iter().find(|r| r.service == service);
    let cluster = clusters.into_iter().find(|c| c.name == service);
    let rules = route
        .as_ref()
        .map(|r| evaluate(r, &req))
        .unwrap_or_default();
    let chosen = rules.iter().find(|v| v.matched).map(|v| v.index);
    let rule = chosen.and_then(|i| route.as_ref().map(|r| &r.rules[i]));
    let out = Explanation {
        service: service.clone(),
        route_found: route.is_some(),
        chosen_rule: rule.map(|r| r.name.clone()),
        backends: match (&route, rule) {
            (None, _) => format!("{service} (all endpoints: no route)"),
            (Some(_), None) => String::new(),
            (Some(_), Some(r)) => show::backends(&service, &r.backends),
        },
        actions: rule.map(show::actions).unwrap_or_default(),
        rules,
        cluster,
    };
    if print_structured(global.output, &out)? {
        return Ok(());
    }
    println!(
        "request: {} http://{}{} → service {service}",
        req.method, req.host, req.path
    );
    if !out.route_found {
        println!(
            "no route for {service} in the proxy's config: every endpoint of {service} is a candidate"
        );
    }
    for v in &out.rules {
        println!(
            "  rule {} {:?}: {} ({})",
            v.index,
            v.name,
            if v.matched { "MATCH" } else { "no match" },
            v.why
        );
        if v.matched {
            break;
        }
    }
    match (&out.chosen_rule, out.route_found) {
        (Some(name), _) => {
            println!("→ rule {name:?}: backends {}", out.backends);
            if !out.actions.is_empty() {
                println!("  actions: {}", out.actions.join(" "));
            }
        }
        (None, true) => {
            println!("→ no rule matches: the proxy answers 404 with x-mesh-error: no-route")
        }
        (None, false) => println!("→ backends {}", out.backends),
    }
    if let Some(c) = &out.cluster {
        let lb = pb::LbPolicy::try_from(c.lb_policy).map_or("?".into(), |l| format!("{l:?}"));
        let tls = pb::TlsMode::try_from(c.tls_mode).map_or("?".into(), |t| format!("{t:?}"));
        println!(
            "  cluster {}: lb {lb}, tls {tls}, request timeout {}ms (0 = none)",
            c.name, c.request_timeout_ms
        );
    }
    Ok(())
}

fn request(args: &ExplainArgs) -> Result<Req> {
    let url = if args.url.contains("://") {
        args.url.clone()
    } else {
        format!("http://{}", args.url)
    };
    let uri: http::Uri = url.parse().map_err(|e| {
        CliError::usage(format!(
            "{:?} is not a URL: {e} (like http://reviews:9080/api)",
            args.url
        ))
    })?;
    let host = uri
        .host()
        .ok_or_else(|| CliError::usage(format!("{:?} has no host", args.url)))?
        .to_string();
    let headers = args
        .headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .ok_or_else(|| CliError::usage(format!("-H {h:?}: write NAME:VALUE")))
        })
        .collect::<Result<_>>()?;
    let query = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|q| !q.is_empty())
        .map(|q| {
            q.split_once('=')
                .map_or((q.to_string(), String::new()), |(k, v)| {
                    (k.to_string(), v.to_string())
                })
        })
        .collect();
    Ok(Req {
        method: args.method.to_ascii_uppercase(),
        host,
        path: uri.path().to_string(),
        query,
        headers,
    })
}

/// Every JSON object in `v` that `want` accepts and that parses as `T`.
fn find<T: serde::de::DeserializeOwned>(
    v: &Value,
    want: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
) -> Vec<T> {
    let mut out = Vec::new();
    match v {
        Value::Object(o) => {
            if want(o)
                && let Ok(t) = serde_json::from_value(v.clone())
            {
                out.push(t);
                return out;
            }
            for child in o.values() {
                out.extend(find(child, want));
            }
        }
        Value::Array(a) => a.iter().for_each(|c| out.extend(find(c, want))),
        _ => {}
    }
    out
}

/// First-match-wins evaluation, as the proxy does; rules after the winner are not evaluated.
pub fn evaluate(route: &pb::Route, req: &Req) -> Vec<RuleVerdict> {
    let mut out = Vec::new();
    for (index, rule) in route.rules.iter().enumerate() {
        let (matched, why) = if rule.matches.is_empty() {
            (true, "no conditions: matches every request".to_string())
        } else {
            let results: Vec<Result<String, String>> =
                rule.matches.iter().map(|m| one(m, req)).collect();
            match results.iter().position(Result::is_ok) {
                Some(i) => (true, results[i].clone().unwrap_or_default()),
                None => (
                    false,
                    results
                        .into_iter()
                        .filter_map(|r| r.err())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            }
        };
        let stop = matched;
        out.push(RuleVerdict {
            index,
            name: rule.name.clone(),
            matched,
            why,
        });
        if stop {
            break;
        }
    }
    out
}

/// Ok(why it matched) or Err(the first condition that failed).
fn one(m: &pb::RouteMatch, req: &Req) -> Result<String, String> {
    let mut ok = Vec::new();
    if let Some(p) = &m.path {
        let (hit, what) = match pb::PathMatchKind::try_from(p.kind) {
            Ok(pb::PathMatchKind::Exact) => (req.path == p.value, "equals"),
            Ok(pb::PathMatchKind::Regex) => (
                regex::Regex::new(&format!("^(?:{})$", p.value))
                    .is_ok_and(|r| r.is_match(&req.path)),
                "matches regex",
            ),
            _ => (prefix_match(&req.path, &p.value), "has prefix"),
        };
        if !hit {
            return Err(format!(
                "path {} does not {} {}",
                req.path,
                what.replace("has", "have")
                    .replace("equals", "equal")
                    .replace("matches", "match"),
                p.value
            ));
        }
        ok.push(format!("path {what} {}", p.value));
    }
    if !m.method.is_empty() {
        if !m.method.eq_ignore_ascii_case(&req.method) {
            return Err(format!("method {} is not {}", req.method, m.method));
        }
        ok.push(format!("method {}", m.method));
    }
    for (what, kvs, have) in [
        ("header", &m.headers, &req.headers),
        ("query", &m.query_params, &req.query),
    ] {
        for kv in kvs {
            let value = have
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&kv.name))
                .map(|(_, v)| v.as_str());
            let hit = match (pb::ValueMatchKind::try_from(kv.kind), value) {
                (_, None) => return Err(format!("{what} {} is absent", kv.name)),
                (Ok(pb::ValueMatchKind::Present), Some(_)) => true,
                (Ok(pb::ValueMatchKind::Regex), Some(v)) => {
                    regex::Regex::new(&format!("^(?:{})$", kv.value)).is_ok_and(|r| r.is_match(v))
                }
                (_, Some(v)) => v == kv.value,
            };
            if !hit {
                return Err(format!(
                    "{what} {}={} is not {}",
                    kv.name,
                    value.unwrap_or_default(),
                    kv.value
                ));
            }
            ok.push(format!("{what} {} matches", kv.name));
        }
    }
    Ok(ok.join(", "))
}

/// The sidecar's semantics: a plain string prefix (`/api` also matches `/apix`).
fn prefix_match(path: &str, prefix: &str) -> bool {
    path.starts_with(prefix)
}

#[cfg(test)]
#[path = "explain_tests.rs"]
mod tests;
