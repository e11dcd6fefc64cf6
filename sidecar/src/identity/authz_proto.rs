//! Conversion of the `AuthorizationPolicy` resource into the domain policy; bad input is an error naming the field.

use mesh_proto::types::v1 as pb;

use super::authz::{Action, AuthzError, AuthzPolicy, Rule, Source};

impl TryFrom<&pb::AuthorizationPolicy> for AuthzPolicy {
    type Error = AuthzError;

    fn try_from(p: &pb::AuthorizationPolicy) -> Result<Self, AuthzError> {
        let default_action = match pb::AuthzAction::try_from(p.default_action) {
            Ok(pb::AuthzAction::Unspecified | pb::AuthzAction::Allow) => Action::Allow,
            Ok(pb::AuthzAction::Deny) => Action::Deny,
            Err(_) => {
                return Err(err(
                    "default_action",
                    format!("unknown value {}", p.default_action),
                ));
            }
        };
        let allow = p
            .allow
            .iter()
            .enumerate()
            .map(|(i, r)| rule(i, r))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            default_action,
            allow,
        })
    }
}

fn rule(i: usize, r: &pb::AuthzRule) -> Result<Rule, AuthzError> {
    let sources = r
        .sources
        .iter()
        .enumerate()
        .map(|(j, s)| Source::parse(s).map_err(|e| err(&format!("allow[{i}].sources[{j}]"), e)))
        .collect::<Result<_, _>>()?;
    let ports = r
        .ports
        .iter()
        .enumerate()
        .map(|(j, p)| match u16::try_from(*p) {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(err(
                &format!("allow[{i}].ports[{j}]"),
                format!("{p} is not a port (1-65535)"),
            )),
        })
        .collect::<Result<_, _>>()?;
    let path_prefix = match r.path_prefix.as_str() {
        "" => None,
        p if p.starts_with('/') => Some(p.to_owned()),
        p => {
            return Err(err(
                &format!("allow[{i}].path_prefix"),
                format!("{p:?} must start with '/'"),
            ));
        }
    };
    Ok(Rule {
        sources,
        ports,
        path_prefix,
    })
}

fn err(field: &str, reason: impl Into<String>) -> AuthzError {
    AuthzError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_and_names_bad_fields() {
        let mut p = pb::AuthorizationPolicy {
            service: "cart".into(),
            default_action: pb::AuthzAction::Deny as i32,
            allow: vec![pb::AuthzRule {
                sources: vec!["spiffe://cluster.local/ns/shop/*".into()],
                ports: vec![8080],
                path_prefix: "/api".into(),
            }],
        };
        let policy = AuthzPolicy::try_from(&p).unwrap();
        assert_eq!(policy.default_action, Action::Deny);
        assert_eq!(policy.allow[0].ports, vec![8080]);

        p.allow[0].ports = vec![70000];
        let e = AuthzPolicy::try_from(&p).unwrap_err();
        assert_eq!(e.field, "allow[0].ports[0]");
        p.allow[0].ports = vec![];
        p.allow[0].sources.push("nope".into());
        assert_eq!(
            AuthzPolicy::try_from(&p).unwrap_err().field,
            "allow[0].sources[1]"
        );
        p.allow[0].sources.pop();
        p.allow[0].path_prefix = "api".into();
        assert_eq!(
            AuthzPolicy::try_from(&p).unwrap_err().field,
            "allow[0].path_prefix"
        );
        p.allow.clear();
        p.default_action = 42;
        assert_eq!(
            AuthzPolicy::try_from(&p).unwrap_err().field,
            "default_action"
        );
        p.default_action = 0;
        assert_eq!(
            AuthzPolicy::try_from(&p).unwrap().default_action,
            Action::Allow
        );
    }
}
