//! Turns `route set` flags into a `RouteRule` and merges it into a service's ordered rules.

use mesh_proto::types::v1 as pb;

use crate::cli::RouteSetArgs;
use crate::error::{CliError, Result};
use crate::spec::{self, MatchSpec};

/// Builds the rule; cross-flag checks (that clap cannot express) fail here, before any call.
pub fn build(args: &RouteSetArgs) -> Result<pb::RouteRule> {
    let service = &args.service;
    let backends = match &args.to {
        Some(b) => {
            b.0.iter()
                .map(|b| pb::WeightedBackend {
                    service: b.service.clone().unwrap_or_else(|| service.clone()),
                    subset: b.subset.clone(),
                    weight: b.weight,
                })
                .collect()
        }
        None => vec![pb::WeightedBackend {
            service: service.clone(),
            subset: String::new(),
            weight: 100,
        }],
    };
    let matches = if args.matches.is_empty() {
        Vec::new()
    } else {
        vec![route_match(&args.matches)?]
    };
    if let Some(prefix) = &args.rewrite_prefix {
        if !args
            .matches
            .iter()
            .any(|m| matches!(m, MatchSpec::PathPrefix(_)))
        {
            return Err(CliError::usage(
                "--rewrite-prefix replaces the matched prefix: add --match path-prefix=/…",
            ));
        }
        if !prefix.starts_with('/') {
            return Err(CliError::usage(format!(
                "--rewrite-prefix {prefix:?}: the prefix must start with /"
            )));
        }
    }
    let retry = args.retries.map(|n| pb::RetryPolicy {
        attempts: n + 1,
        retry_on: args
            .retry_on
            .clone()
            .map(|r| r.0)
            .unwrap_or_else(|| vec!["5xx".into(), "reset".into(), "connect-failure".into()]),
        per_try_timeout_ms: args.per_try_timeout.map_or(0, spec::millis),
        ..Default::default()
    });
    let set = |kvs: &[spec::KeyValue]| -> Vec<pb::HeaderOp> {
        kvs.iter()
            .map(|kv| pb::HeaderOp {
                kind: pb::HeaderOpKind::Set as i32,
                name: kv.key.clone(),
                value: kv.value.clone(),
            })
            .collect()
    };
    let fault = (args.fault_delay.is_some() || args.fault_abort.is_some()).then(|| pb::Fault {
        delay_ms: args.fault_delay.map_or(0, |d| spec::millis(d.delay)),
        delay_permille: args.fault_delay.map_or(0, |d| d.permille),
        abort_status: args.fault_abort.map_or(0, |a| a.status),
        abort_permille: args.fault_abort.map_or(0, |a| a.permille),
    });
    let mirror = args.mirror.as_ref().map(|m| pb::Mirror {
        service: m.service.clone().unwrap_or_else(|| service.clone()),
        subset: m.subset.clone(),
        permille: m.permille,
    });
    let name = match &args.rule_name {
        Some(n) => n.clone(),
        None if args.matches.is_empty() => "default".to_string(),
        None => args
            .matches
            .iter()
            .map(describe_match)
            .collect::<Vec<_>>()
            .join(","),
    };
    Ok(pb::RouteRule {
        name,
        matches,
        backends,
        timeout_ms: args.timeout.map_or(0, spec::millis),
        retry,
        request_headers: set(&args.set_header),
        response_headers: set(&args.set_response_header),
        rewrite_prefix: args.rewrite_prefix.clone().unwrap_or_default(),
        redirect: None,
        fault,
        mirror,
        rate_limit: None,
    })
}

/// ANDs the conditions into one `RouteMatch`; two conditions on the path or method conflict.
fn route_match(specs: &[MatchSpec]) -> Result<pb::RouteMatch> {
    let mut m = pb::RouteMatch::default();
    for s in specs {
        let kv = |name: &String, value: &Option<String>| pb::KeyValueMatch {
            name: name.clone(),
            kind: if value.is_some() {
                pb::ValueMatchKind::Exact
            } else {
                pb::ValueMatchKind::Present
            } as i32,
            value: value.clone().unwrap_or_default(),
        };
        let path = |kind: pb::PathMatchKind, v: &String| pb::PathMatch {
            kind: kind as i32,
            value: v.clone(),
        };
        let new_path = match s {
            MatchSpec::PathPrefix(v) => Some(path(pb::PathMatchKind::Prefix, v)),
            MatchSpec::Path(v) => Some(path(pb::PathMatchKind::Exact, v)),
            MatchSpec::PathRegex(v) => Some(path(pb::PathMatchKind::Regex, v)),
            MatchSpec::Header(k, v) => {
                m.headers.push(kv(k, v));
                None
            }
            MatchSpec::Query(k, v) => {
                m.query_params.push(kv(k, v));
                None
            }
            MatchSpec::Method(v) => {
                if !m.method.is_empty() {
                    return Err(CliError::usage(
                        "only one --match method=… per rule (a request has one method)",
                    ));
                }
                m.method = v.clone();
                None
            }
        };
        if let Some(p) = new_path {
            if m.path.is_some() {
                return Err(CliError::usage(
                    "only one path condition per rule (path-prefix, path or path-regex)",
                ));
            }
            m.path = Some(p);
        }
    }
    Ok(m)
}

fn describe_match(m: &MatchSpec) -> String {
    match m {
        MatchSpec::PathPrefix(v) => format!("path-prefix={v}"),
        MatchSpec::Path(v) => format!("path={v}"),
        MatchSpec::PathRegex(v) => format!("path-regex={v}"),
        MatchSpec::Header(k, Some(v)) => format!("header:{k}={v}"),
        MatchSpec::Header(k, None) => format!("header:{k}"),
        MatchSpec::Query(k, Some(v)) => format!("query:{k}={v}"),
        MatchSpec::Query(k, None) => format!("query:{k}"),
        MatchSpec::Method(v) => format!("method={v}"),
    }
}
