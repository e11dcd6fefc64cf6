//! Who may register what (secure naming): a proxy's identity comes from its verified
//! workload certificate, never from its request; the identity must be bound to the service
//! it announces; a revoked identity gets nothing.

use std::collections::BTreeSet;

use mesh_proto::names::qualified;

use super::{Core, CoreError};
use crate::model::ProxyNode;
use crate::registry::AddressOwned;
use crate::store::{Op, Table};
use crate::validate::identity;

/// Why a discovery stream registers nothing.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error(
        "no mesh client certificate: a proxy opens discovery with its workload certificate (obtained with a join token); anonymous proxies need `mesh-control-plane --allow-anonymous-proxies`"
    )]
    Unauthenticated,
    #[error(
        "identity {identity} may not serve service {service:?} (bound: {bound}); bind it with `mesh-cli service create {service} --identity …`"
    )]
    NotBound {
        identity: String,
        service: String,
        bound: String,
    },
    #[error("identity {0} was revoked")]
    Revoked(String),
    #[error(transparent)]
    AddressOwned(#[from] AddressOwned),
}

// === impl Denied ===

impl Denied {
    /// The `reason` label of `mesh_cp_announces_denied_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::Unauthenticated => "unauthenticated",
            Denied::NotBound { .. } => "not_bound",
            Denied::Revoked(_) => "revoked",
            Denied::AddressOwned(_) => "address_owned",
        }
    }
}

// === impl Core ===

impl Core {
    /// Replaces what the node says about itself with what its certificate proves (`peer`:
    /// the verified SPIFFE ID, `None` without a certificate), then checks the identity may
    /// serve the node's service. Counts every refusal.
    pub fn admit(&self, node: &mut ProxyNode, peer: Option<&str>) -> Result<(), Denied> {
        let res = self.check_admission(node, peer);
        if let Err(e) = &res {
            self.metrics.denied(e.reason());
            tracing::warn!(
                proxy = %node.id, service = %node.service, peer = peer.unwrap_or("(none)"),
                error = %e, "discovery stream refused"
            );
        }
        res
    }

    fn check_admission(&self, node: &mut ProxyNode, peer: Option<&str>) -> Result<(), Denied> {
        let Some(id) = peer else {
            if !self.config.allow_anonymous_proxies {
                return Err(Denied::Unauthenticated);
            }
            // An anonymous proxy claims no identity, whatever its node says.
            node.identity = None;
            node.service = qualified(&node.service, &node.namespace);
            return Ok(());
        };
        if self.is_revoked(id) {
            return Err(Denied::Revoked(id.to_string()));
        }
        if let Ok(spiffe) = mesh_proto::spiffe::SpiffeId::parse(id) {
            node.namespace = spiffe.namespace().to_string();
            node.service_account = spiffe.service_account().to_string();
        }
        node.identity = Some(id.to_string());
        // The service is named within the proxy's (proven) namespace.
        node.service = qualified(&node.service, &node.namespace);
        let bound = self.state.lock().bound_identities(&node.service);
        if !bound.iter().any(|b| b == id) {
            return Err(Denied::NotBound {
                identity: id.to_string(),
                service: node.service.clone(),
                bound: bound.join(", "),
            });
        }
        Ok(())
    }

    pub fn is_revoked(&self, identity: &str) -> bool {
        self.state.lock().revoked.contains(identity)
    }

    /// Revokes a workload identity: its renewals are refused and its discovery streams
    /// closed now (the caller closes them). Returns whether it was newly revoked.
    pub fn revoke_identity(&self, raw: &str) -> Result<(String, bool), CoreError> {
        let td = &self.config.trust_domain;
        let full = match raw.split('/').collect::<Vec<_>>()[..] {
            _ if raw.starts_with("spiffe://") => raw.to_string(),
            [ns, sa] => format!("spiffe://{td}/ns/{ns}/sa/{sa}"),
            _ => format!("spiffe://{td}/{raw}"),
        };
        let id = identity("identity", &full)?;
        let mut st = self.state.lock();
        if st.revoked.contains(&id) {
            return Ok((id, false));
        }
        let now = super::now_unix_ms() / 1000;
        self.persist("put_revoked", vec![Op::put(Table::Revoked, &id, &now)])?;
        st.revoked.insert(id.clone());
        drop(st);
        for p in self.proxies.iter() {
            if p.node.identity.as_deref() == Some(id.as_str()) {
                p.close.notify_one();
            }
        }
        Ok((id, true))
    }

    pub fn revoked_identities(&self) -> BTreeSet<String> {
        self.state.lock().revoked.clone()
    }
}
