//! SPIFFE workload identities (`spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`) and trust domains: the identity format every mesh component reads and writes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The SPIFFE spec caps an ID at 2048 bytes; longer input is refused before any other check.
const MAX_ID_LEN: usize = 2048;
/// A trust domain is a DNS-like name; 255 is the DNS name limit.
const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// Namespaces and service accounts follow Kubernetes object names (DNS subdomain, 253 chars).
const MAX_SEGMENT_LEN: usize = 253;

/// Why a string is not an acceptable SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("SPIFFE ID must start with spiffe:// (got {0:?})")]
    Scheme(String),
    #[error("invalid trust domain {0:?}: use lowercase letters, digits, '.', '-' and '_'")]
    TrustDomain(String),
    #[error("SPIFFE ID path must be /ns/<namespace>/sa/<service-account> (got {0:?})")]
    Path(String),
    #[error(
        "invalid {what} {value:?}: use letters, digits, '.', '-' and '_' (1..={MAX_SEGMENT_LEN} chars)"
    )]
    Segment { what: &'static str, value: String },
}

/// A validated trust domain, e.g. `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

/// A validated workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    /// The full URI; kept so `as_str` and comparisons need no formatting.
    uri: String,
    /// Byte ranges of the parts inside `uri`.
    td_end: usize,
    ns: (usize, usize),
    sa: (usize, usize),
}

// === impl TrustDomain ===

impl TrustDomain {
    pub fn new(name: &str) -> Result<Self, SpiffeError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_TRUST_DOMAIN_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-_".contains(&b));
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(SpiffeError::TrustDomain(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identity of `service_account` in `namespace` within this trust domain.
    pub fn workload(
        &self,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeError> {
        SpiffeId::new(self, namespace, service_account)
    }
}

impl Default for TrustDomain {
    /// `cluster.local`, the Kubernetes default cluster domain, so IDs look familiar.
    fn default() -> Self {
        Self("cluster.local".to_owned())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = SpiffeError;
    fn try_from(s: String) -> Result<Self, SpiffeError> {
        Self::new(&s)
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> String {
        td.0
    }
}

// === impl SpiffeId ===

impl SpiffeId {
    pub fn new(
        td: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeError> {
        check_segment("namespace", namespace)?;
        check_segment("service account", service_account)?;
        Self::parse(&format!(
            "spiffe://{td}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// Parses and validates `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn parse(s: &str) -> Result<Self, SpiffeError> {
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeError::TooLong);
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeError::Scheme(s.to_owned()))?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        TrustDomain::new(td)?;
        let parts: Vec<&str> = path.split('/').collect();
        let [ns_key, ns, sa_key, sa] = parts.as_slice() else {
            return Err(SpiffeError::Path(format!("/{path}")));
        };
        if *ns_key != "ns" || *sa_key != "sa" {
            return Err(SpiffeError::Path(format!("/{path}")));
        }
        check_segment("namespace", ns)?;
        check_segment("service account", sa)?;
        let td_end = "spiffe://".len() + td.len();
        let ns_start = td_end + "/ns/".len();
        let sa_start = ns_start + ns.len() + "/sa/".len();
        Ok(Self {
            uri: s.to_owned(),
            td_end,
            ns: (ns_start, ns_start + ns.len()),
            sa: (sa_start, sa_start + sa.len()),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn trust_domain(&self) -> &str {
        &self.uri["spiffe://".len()..self.td_end]
    }

    pub fn namespace(&self) -> &str {
        &self.uri[self.ns.0..self.ns.1]
    }

    pub fn service_account(&self) -> &str {
        &self.uri[self.sa.0..self.sa.1]
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;
    fn from_str(s: &str) -> Result<Self, SpiffeError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeError;
    fn try_from(s: String) -> Result<Self, SpiffeError> {
        Self::parse(&s)
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> String {
        id.uri
    }
}

/// SPIFFE path segments: non-empty, not `.`/`..`, characters `[A-Za-z0-9._-]`.
fn check_segment(what: &'static str, value: &str) -> Result<(), SpiffeError> {
    let ok = !value.is_empty()
        && value.len() <= MAX_SEGMENT_LEN
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(SpiffeError::Segment {
            what,
            value: value.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_parts() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/cart").unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "shop");
        assert_eq!(id.service_account(), "cart");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/cart");
        let built = TrustDomain::default().workload("shop", "cart").unwrap();
        assert_eq!(built, id);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "http://cluster.local/ns/a/sa/b",
            "spiffe://",
            "spiffe://Cluster.local/ns/a/sa/b",
            "spiffe://cluster.local",
            "spiffe://cluster.local/ns/a",
            "spiffe://cluster.local/ns/a/sa/",
            "spiffe://cluster.local/ns//sa/b",
            "spiffe://cluster.local/ns/a/sa/b/extra",
            "spiffe://cluster.local/namespace/a/sa/b",
            "spiffe://cluster.local/ns/../sa/b",
            "spiffe://cluster.local/ns/a b/sa/b",
            "spiffe://cluster.local/ns/a/sa/b?x=1",
            "spiffe://user@cluster.local/ns/a/sa/b",
            "spiffe://cluster.local:8080/ns/a/sa/b",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(
            SpiffeId::parse(&format!("spiffe://a/ns/{}/sa/b", "x".repeat(3000))),
            Err(SpiffeError::TooLong)
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let id = SpiffeId::parse("spiffe://td/ns/a/sa/b").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"spiffe://td/ns/a/sa/b\"");
        assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<SpiffeId>("\"spiffe://td/x\"").is_err());
    }
}
