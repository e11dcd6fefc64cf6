//! Proto enum numbers → names in JSON/YAML output (`"lb_policy": "ring-hash"`, not `4`).
//!
//! The wire types serialize enums as their numbers; output for people and scripts should not
//! need the .proto file to read. The field name (and for `kind`, the field holding it) says
//! which enum a number belongs to.

use mesh_proto::types::v1 as pb;
use serde_json::Value;

/// Rewrites every known enum field of `v` in place.
pub fn name_enums(v: &mut Value) {
    walk(v, None);
}

fn walk(v: &mut Value, parent: Option<&str>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if let Some(n) = x.as_i64().and_then(|n| i32::try_from(n).ok())
                    && let Some(name) = name(k, parent, n)
                {
                    *x = Value::String(name);
                } else {
                    walk(x, Some(k.as_str()));
                }
            }
        }
        // Items of a list take the list's field name as their context.
        Value::Array(a) => a.iter_mut().for_each(|x| walk(x, parent)),
        _ => {}
    }
}

fn name(key: &str, parent: Option<&str>, n: i32) -> Option<String> {
    let (raw, prefix) = match (key, parent) {
        ("lb_policy", _) => (pb::LbPolicy::try_from(n).ok()?.as_str_name(), "LB_POLICY_"),
        ("tls_mode", _) => (pb::TlsMode::try_from(n).ok()?.as_str_name(), "TLS_MODE_"),
        ("protocol", _) => (pb::Protocol::try_from(n).ok()?.as_str_name(), "PROTOCOL_"),
        ("state", _) => (
            pb::EndpointState::try_from(n).ok()?.as_str_name(),
            "ENDPOINT_STATE_",
        ),
        ("default_action", _) => (
            pb::AuthzAction::try_from(n).ok()?.as_str_name(),
            "AUTHZ_ACTION_",
        ),
        ("kind", Some("path")) => (
            pb::PathMatchKind::try_from(n).ok()?.as_str_name(),
            "PATH_MATCH_KIND_",
        ),
        ("kind", Some("headers" | "query_params")) => (
            pb::ValueMatchKind::try_from(n).ok()?.as_str_name(),
            "VALUE_MATCH_KIND_",
        ),
        ("kind", Some("request_headers" | "response_headers")) => (
            pb::HeaderOpKind::try_from(n).ok()?.as_str_name(),
            "HEADER_OP_KIND_",
        ),
        _ => return None,
    };
    Some(
        raw.trim_start_matches(prefix)
            .to_ascii_lowercase()
            .replace('_', "-"),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn names_by_field_and_context() {
        let mut v = json!({
            "lb_policy": 4,
            "rules": [{"matches": [{"path": {"kind": 2, "value": "/a"}, "headers": [{"kind": 3}]}],
                       "request_headers": [{"kind": 0}]}],
            "other": {"kind": 1},
        });
        super::name_enums(&mut v);
        assert_eq!(v["lb_policy"], "ring-hash");
        assert_eq!(v["rules"][0]["matches"][0]["path"]["kind"], "prefix");
        assert_eq!(v["rules"][0]["matches"][0]["headers"][0]["kind"], "present");
        assert_eq!(v["rules"][0]["request_headers"][0]["kind"], "unspecified");
        // Unknown contexts stay numbers.
        assert_eq!(v["other"]["kind"], 1);
    }
}
