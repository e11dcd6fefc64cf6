//! Inbound authorization: the workload's own AuthorizationPolicy, evaluated against the caller's
//! verified SPIFFE identity (mTLS), the app port and the path.
//!
//! Semantics: no policy = allow. Otherwise a request is allowed when any allow rule matches
//! (a source pattern matches the caller, the port is listed or the list is empty, the path
//! starts with the prefix or there is none); when none matches, the policy's default applies.
//! A plaintext caller has no identity: only a `*` source admits it.

use super::InboundCtx;
use crate::state::{AuthzAction, AuthzRule, SourceMatch};

/// Why a request was denied, for the response body and the log.
#[derive(Debug)]
pub(super) struct Denied(String);

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decides one request (path `None` for opaque TCP), counted by decision.
pub(super) fn check(
    ctx: &InboundCtx,
    identity: Option<&str>,
    port: u16,
    path: Option<&str>,
) -> Result<(), Denied> {
    let decision = decide(ctx, identity, port, path);
    crate::observe::counters().authz(decision.is_ok());
    decision
}

fn decide(
    ctx: &InboundCtx,
    identity: Option<&str>,
    port: u16,
    path: Option<&str>,
) -> Result<(), Denied> {
    let Some(service) = ctx.inner.cfg.service.as_deref() else {
        return Ok(());
    };
    let snapshot = ctx.inner.state.load();
    let Some(policy) = snapshot.authz.get(service) else {
        return Ok(());
    };
    if policy
        .allow
        .iter()
        .any(|r| rule_matches(r, identity, port, path))
    {
        return Ok(());
    }
    match policy.default_action {
        AuthzAction::Allow => Ok(()),
        AuthzAction::Deny => Err(Denied(format!(
            "{} is not allowed to call {service} on port {port}",
            identity.unwrap_or("an unauthenticated caller")
        ))),
    }
}

fn rule_matches(r: &AuthzRule, identity: Option<&str>, port: u16, path: Option<&str>) -> bool {
    let source = r.sources.iter().any(|s| match (s, identity) {
        (SourceMatch::Any, _) => true,
        (s, Some(id)) => s.matches(id),
        (_, None) => false,
    });
    let port_ok = r.ports.is_empty() || r.ports.contains(&port);
    let path_ok = match (&r.path_prefix, path) {
        (None, _) => true,
        (Some(p), Some(path)) => path.starts_with(&**p),
        // A path rule never admits opaque TCP: there is no path to check.
        (Some(_), None) => false,
    };
    source && port_ok && path_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Name;

    fn rule(sources: Vec<SourceMatch>, ports: Vec<u16>, path: Option<&str>) -> AuthzRule {
        AuthzRule {
            sources,
            ports,
            path_prefix: path.map(Name::from),
        }
    }

    #[test]
    fn rules_match_source_port_and_path() {
        let web = "spiffe://cluster.local/ns/default/sa/web";
        let exact = rule(vec![SourceMatch::Exact(web.into())], vec![], None);
        assert!(rule_matches(&exact, Some(web), 80, Some("/")));
        assert!(!rule_matches(
            &exact,
            Some("spiffe://cluster.local/ns/default/sa/x"),
            80,
            None
        ));
        assert!(!rule_matches(&exact, None, 80, None));
        let ns = rule(
            vec![SourceMatch::Prefix(
                "spiffe://cluster.local/ns/default/".into(),
            )],
            vec![8080],
            Some("/api"),
        );
        assert!(rule_matches(&ns, Some(web), 8080, Some("/api/x")));
        assert!(!rule_matches(&ns, Some(web), 9090, Some("/api/x")));
        assert!(!rule_matches(&ns, Some(web), 8080, Some("/admin")));
        assert!(!rule_matches(&ns, Some(web), 8080, None));
        let any = rule(vec![SourceMatch::Any], vec![], None);
        assert!(rule_matches(&any, None, 1, None));
    }
}
