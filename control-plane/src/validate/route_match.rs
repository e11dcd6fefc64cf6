//! Route match validation: path/method/header/query matches of a rule, and the rule that no
//! two rules of a route carry the same match.

use std::collections::HashMap;

use mesh_proto::types::v1 as pb;

use super::{Result, bounded, err, header_name, http_path, regex, text};
use crate::model::{PathMatch, RouteMatch, RouteRule, ValueMatch, ValueMatchKind};

pub(super) fn match_from(f: &str, m: pb::RouteMatch) -> Result<RouteMatch> {
    let path = match m.path {
        None => None,
        Some(p) => {
            let pf = format!("{f}.path");
            match pb::PathMatchKind::try_from(p.kind) {
                Ok(pb::PathMatchKind::Unspecified) if p.value.is_empty() => None,
                Ok(pb::PathMatchKind::Unspecified) => {
                    return Err(err(format!("{pf}.kind"), "set EXACT, PREFIX or REGEX"));
                }
                Ok(pb::PathMatchKind::Exact) => Some(PathMatch::Exact(http_path(
                    &format!("{pf}.value"),
                    &p.value,
                )?)),
                Ok(pb::PathMatchKind::Prefix) => Some(PathMatch::Prefix(http_path(
                    &format!("{pf}.value"),
                    &p.value,
                )?)),
                Ok(pb::PathMatchKind::Regex) => {
                    Some(PathMatch::Regex(regex(&format!("{pf}.value"), &p.value)?))
                }
                Err(_) => {
                    return Err(err(
                        format!("{pf}.kind"),
                        format!("unknown kind {}", p.kind),
                    ));
                }
            }
        }
    };
    let method = match m.method.as_str() {
        "" => None,
        s => {
            http::Method::from_bytes(s.as_bytes()).map_err(|_| {
                err(
                    format!("{f}.method"),
                    format!("{s:?} is not an HTTP method"),
                )
            })?;
            Some(s.to_ascii_uppercase())
        }
    };
    Ok(RouteMatch {
        path,
        method,
        headers: value_matches(&format!("{f}.headers"), m.headers, true)?,
        query_params: value_matches(&format!("{f}.query_params"), m.query_params, false)?,
    })
}

fn value_matches(f: &str, ms: Vec<pb::KeyValueMatch>, header: bool) -> Result<Vec<ValueMatch>> {
    bounded(f, ms.len())?;
    ms.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mf = format!("{f}[{i}]");
            let name = if header {
                header_name(&format!("{mf}.name"), &m.name)?
            } else if m.name.is_empty() {
                return Err(err(format!("{mf}.name"), "must not be empty"));
            } else {
                text(&format!("{mf}.name"), &m.name)?;
                m.name
            };
            let kind = match pb::ValueMatchKind::try_from(m.kind) {
                Ok(pb::ValueMatchKind::Unspecified | pb::ValueMatchKind::Exact) => {
                    text(&format!("{mf}.value"), &m.value)?;
                    ValueMatchKind::Exact(m.value)
                }
                Ok(pb::ValueMatchKind::Regex) => {
                    ValueMatchKind::Regex(regex(&format!("{mf}.value"), &m.value)?)
                }
                Ok(pb::ValueMatchKind::Present) => ValueMatchKind::Present,
                Err(_) => {
                    return Err(err(
                        format!("{mf}.kind"),
                        format!("unknown kind {}", m.kind),
                    ));
                }
            };
            Ok(ValueMatch { name, kind })
        })
        .collect()
}

/// Two rules with the same match make the later one unreachable for that match: almost always
/// a copy-paste mistake, so it is rejected rather than silently shadowed.
pub(super) fn check_duplicate_matches(rules: &[RouteRule]) -> Result<()> {
    let catch_all = RouteMatch::default();
    let mut seen: HashMap<&RouteMatch, (usize, usize)> = HashMap::new();
    for (i, rule) in rules.iter().enumerate() {
        let ms: Vec<&RouteMatch> = if rule.matches.is_empty() {
            vec![&catch_all]
        } else {
            rule.matches.iter().collect()
        };
        for (j, m) in ms.into_iter().enumerate() {
            if let Some((pi, pj)) = seen.insert(m, (i, j)) {
                return Err(err(
                    format!("route.rules[{i}].matches[{j}]"),
                    format!("duplicate match: the same as route.rules[{pi}].matches[{pj}]"),
                ));
            }
        }
    }
    Ok(())
}
