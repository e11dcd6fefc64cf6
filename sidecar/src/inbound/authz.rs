//! Inbound authorization: the workload's own AuthorizationPolicy, evaluated against the caller's
//! verified SPIFFE identity (mTLS), the app port and the path.
//!
//! Semantics: no policy = allow. Otherwise a request is allowed when any allow rule matches
//! (a source pattern matches the caller, the port is listed or the list is empty, the
//! normalised path is under the prefix on a segment boundary or there is none); when none
//! matches, the policy's default applies. A plaintext caller has no identity: only a `*`
//! source admits it.
//!
//! Paths are normalised before matching (RFC 3986: percent-encoded unreserved characters
//! decoded, `.` and `..` segments removed, empty segments merged), so `/public/../admin`,
//! `/public/%2e%2e/admin` and `//admin` are judged as `/admin`; `/publicity` is not under
//! `/public`.

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
        (Some(p), Some(path)) => under(&normalize(path), p),
        // A path rule never admits opaque TCP: there is no path to check.
        (Some(_), None) => false,
    };
    source && port_ok && path_ok
}

/// Whether `path` is `prefix` or below it: a prefix names whole segments (`/public` covers
/// `/public` and `/public/x`, not `/publicity`); one ending in `/` covers what starts with it.
fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The path as a server would resolve it: `%XX` of unreserved characters decoded (other
/// escapes kept, upper-cased), empty segments merged, `.` and `..` removed (never above the
/// root). Allocation only when the path is not already normal.
fn normalize(path: &str) -> std::borrow::Cow<'_, str> {
    let plain = !path.contains('%')
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..");
    if plain {
        return std::borrow::Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(decoded.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() || (decoded.ends_with('/') && !out.is_empty()) {
        s.push('/');
    }
    std::borrow::Cow::Owned(s)
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            let c = h * 16 + l;
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                out.push(c as char);
            } else {
                out.push('%');
                out.push(char::from(b[i + 1].to_ascii_uppercase()));
                out.push(char::from(b[i + 2].to_ascii_uppercase()));
            }
            i += 3;
            continue;
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Name;

    #[test]
    fn paths_are_judged_as_the_server_resolves_them() {
        let public = rule(vec![SourceMatch::Any], vec![], Some("/public"));
        for ok in [
            "/public",
            "/public/",
            "/public/a",
            "/x/../public/a",
            "/public/./a",
        ] {
            assert!(rule_matches(&public, None, 80, Some(ok)), "{ok}");
        }
        for denied in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E%2E/admin",
            "/publicity",
            "//admin",
            "/public/../../admin",
            "/admin/public",
        ] {
            assert!(!rule_matches(&public, None, 80, Some(denied)), "{denied}");
        }
        assert_eq!(normalize("/a/%7euser/%2Fb"), "/a/~user/%2Fb");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("/.."), "/");
    }

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
