//! Authorization policy evaluation: which source identities may reach a service (exact, namespace wildcard, any).
//!
//! Semantics (matching `mesh.types.v1.AuthorizationPolicy`):
//! - a request is allowed if it matches any `allow` rule; otherwise the default action applies;
//! - a rule matches when its sources, ports and path prefix all match (an empty list or prefix
//!   matches everything);
//! - sources are exact SPIFFE IDs, `spiffe://<td>/ns/<namespace>/*`, or `*` (any *authenticated*
//!   peer). A plaintext peer (permissive mode) has no identity and matches only a rule with no
//!   sources, or the default action;
//! - a rule with a path prefix never matches opaque TCP (there is no path).
//!
//! Denials are answered by the caller: 403 with `x-mesh-error: authz-denied` (HTTP) or a closed
//! connection (TCP), counted by cause.

use super::spiffe::SpiffeId;

/// What happens to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

/// One accepted source pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `*`: any authenticated peer.
    AnyAuthenticated,
    /// `spiffe://<td>/ns/<namespace>/*`.
    Namespace {
        trust_domain: String,
        namespace: String,
    },
    Exact(SpiffeId),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// Empty = any peer, authenticated or not.
    pub sources: Vec<Source>,
    /// Empty = every port.
    pub ports: Vec<u16>,
    /// `None` = every path.
    pub path_prefix: Option<String>,
}

/// A service's policy. The default policy (no resource) allows everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthzPolicy {
    pub default_action: Action,
    pub allow: Vec<Rule>,
}

/// What is known about a request when deciding.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// The verified peer identity; `None` for plaintext.
    pub peer: Option<&'a SpiffeId>,
    /// The local app port the request targets.
    pub port: u16,
    /// The HTTP path; `None` for opaque TCP.
    pub path: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authorization policy {field}: {reason}")]
pub struct AuthzError {
    pub field: String,
    pub reason: String,
}

// === impl Source ===

impl Source {
    /// Parses `*`, `spiffe://<td>/ns/<ns>/*` or an exact SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Source::AnyAuthenticated);
        }
        if let Some(prefix) = s.strip_suffix("/*") {
            // Validate through a full ID with a placeholder service account.
            let id = SpiffeId::parse(&format!("{prefix}/sa/x")).map_err(|e| {
                format!("{s:?} is not spiffe://<trust-domain>/ns/<namespace>/*: {e}")
            })?;
            return Ok(Source::Namespace {
                trust_domain: id.trust_domain().to_owned(),
                namespace: id.namespace().to_owned(),
            });
        }
        SpiffeId::parse(s)
            .map(Source::Exact)
            .map_err(|e| e.to_string())
    }

    fn matches(&self, peer: &SpiffeId) -> bool {
        match self {
            Source::AnyAuthenticated => true,
            Source::Namespace {
                trust_domain,
                namespace,
            } => peer.trust_domain() == trust_domain && peer.namespace() == namespace,
            Source::Exact(id) => id == peer,
        }
    }
}

// === impl Rule ===

impl Rule {
    fn matches(&self, req: &AuthzRequest<'_>) -> bool {
        let source_ok = self.sources.is_empty()
            || req
                .peer
                .is_some_and(|p| self.sources.iter().any(|s| s.matches(p)));
        let port_ok = self.ports.is_empty() || self.ports.contains(&req.port);
        let path_ok = match (&self.path_prefix, req.path) {
            (None, _) => true,
            (Some(prefix), Some(path)) => path.starts_with(prefix.as_str()),
            (Some(_), None) => false,
        };
        source_ok && port_ok && path_ok
    }
}

// === impl AuthzPolicy ===

impl AuthzPolicy {
    pub fn check(&self, req: &AuthzRequest<'_>) -> Action {
        if self.allow.iter().any(|r| r.matches(req)) {
            Action::Allow
        } else {
            self.default_action
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, sa: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")).unwrap()
    }

    fn req<'a>(peer: Option<&'a SpiffeId>, port: u16, path: Option<&'a str>) -> AuthzRequest<'a> {
        AuthzRequest { peer, port, path }
    }

    #[test]
    fn exact_namespace_and_any() {
        let policy = AuthzPolicy {
            default_action: Action::Deny,
            allow: vec![Rule {
                sources: vec![
                    Source::parse("spiffe://cluster.local/ns/shop/sa/cart").unwrap(),
                    Source::parse("spiffe://cluster.local/ns/ops/*").unwrap(),
                ],
                ..Rule::default()
            }],
        };
        let (cart, pay, ops) = (id("shop", "cart"), id("shop", "pay"), id("ops", "anything"));
        assert_eq!(
            policy.check(&req(Some(&cart), 80, Some("/"))),
            Action::Allow
        );
        assert_eq!(policy.check(&req(Some(&ops), 80, None)), Action::Allow);
        assert_eq!(policy.check(&req(Some(&pay), 80, Some("/"))), Action::Deny);
        assert_eq!(policy.check(&req(None, 80, Some("/"))), Action::Deny);

        let any = AuthzPolicy {
            default_action: Action::Deny,
            allow: vec![Rule {
                sources: vec![Source::parse("*").unwrap()],
                ..Rule::default()
            }],
        };
        assert_eq!(any.check(&req(Some(&pay), 80, None)), Action::Allow);
        assert_eq!(
            any.check(&req(None, 80, None)),
            Action::Deny,
            "* means authenticated"
        );
    }

    #[test]
    fn ports_paths_and_default() {
        let cart = id("shop", "cart");
        let policy = AuthzPolicy {
            default_action: Action::Deny,
            allow: vec![Rule {
                sources: vec![],
                ports: vec![8080],
                path_prefix: Some("/public".to_owned()),
            }],
        };
        assert_eq!(
            policy.check(&req(None, 8080, Some("/public/x"))),
            Action::Allow
        );
        assert_eq!(
            policy.check(&req(Some(&cart), 8080, Some("/admin"))),
            Action::Deny
        );
        assert_eq!(
            policy.check(&req(Some(&cart), 9090, Some("/public"))),
            Action::Deny
        );
        assert_eq!(
            policy.check(&req(Some(&cart), 8080, None)),
            Action::Deny,
            "TCP has no path"
        );
        assert_eq!(
            AuthzPolicy::default().check(&req(None, 1, None)),
            Action::Allow
        );
    }

    #[test]
    fn bad_sources() {
        for bad in [
            "",
            "spiffe://cluster.local/ns/*",
            "spiffe://cluster.local/*",
            "cart",
            "spiffe://x/ns/a/sa/*/*",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad:?}");
        }
    }
}
