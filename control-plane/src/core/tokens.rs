//! Join tokens: created through the admin API, shown once, stored only as a SHA-256 hash.

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Core, CoreError};
use crate::store::{Op, Table};
use crate::validate::{err, identity, service_name};

/// A token lives a day unless asked otherwise: long enough to start a workload by hand,
/// short enough that a leaked one expires soon.
const DEFAULT_TTL_SECS: u64 = 24 * 3600;
/// A year at most: long-running workloads outside an orchestrator are started from one token
/// and then renew with their certificate; a longer-lived secret is a standing credential.
const MAX_TTL_SECS: u64 = 365 * 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub identity: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub created_unix: i64,
    pub expires_unix: i64,
    pub revoked: bool,
    /// Services the identity may serve because of this token (until it is revoked).
    #[serde(default)]
    pub services: Vec<String>,
    /// How many certificates the token may obtain; 0 = any number until it expires.
    #[serde(default)]
    pub max_uses: u32,
    #[serde(default)]
    pub uses: u32,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

impl Core {
    /// Returns the token (the only time it is visible) and its record.
    pub fn create_token(
        &self,
        namespace: &str,
        service_account: &str,
        ttl_secs: u64,
        services: &[String],
        max_uses: u32,
    ) -> Result<(String, TokenRecord), CoreError> {
        let ns = service_name("namespace", namespace)?;
        let sa = service_name("service_account", service_account)?;
        let ttl = match ttl_secs {
            0 => DEFAULT_TTL_SECS,
            t if t > MAX_TTL_SECS => {
                return Err(err(
                    "ttl_secs",
                    format!("{t} is out of range (at most {MAX_TTL_SECS})"),
                )
                .into());
            }
            t => t,
        };
        let id_field = format!("spiffe://{}/ns/{ns}/sa/{sa}", self.config.trust_domain);
        let ident = identity("identity", &id_field)?;
        crate::validate::bounded("services", services.len())?;
        let mut serves = services
            .iter()
            .enumerate()
            .map(|(i, s)| service_name(&format!("services[{i}]"), s))
            .collect::<Result<Vec<_>, _>>()?;
        // The token binds its identity to the service named like its service account (the
        // operator creating it says so, as a Kubernetes Deployment runs under its own account),
        // plus whatever else it names.
        serves.push(sa.clone());
        // Bare names are services of the token's namespace.
        let mut serves: Vec<String> = serves
            .iter()
            .map(|s| mesh_proto::names::qualified(s, &ns))
            .collect();
        serves.sort();
        serves.dedup();
        // 32 random bytes: unguessable; 8 for the id: unique enough to name a token.
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let mut id = [0u8; 8];
        rand::rng().fill_bytes(&mut id);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let now = super::now_unix_ms() / 1000;
        let rec = TokenRecord {
            id: hex::encode(id),
            identity: ident,
            hash: hash_token(&token),
            created_unix: now,
            expires_unix: now + ttl as i64,
            revoked: false,
            services: serves,
            max_uses,
            uses: 0,
        };
        let mut st = self.state.lock();
        self.persist("put_token", vec![Op::put(Table::Tokens, &rec.id, &rec)])?;
        st.tokens.insert(rec.id.clone(), rec.clone());
        drop(st);
        // The bound identities of those services changed: their Cluster resources say so.
        let now = tokio::time::Instant::now();
        self.rebuild(
            rec.services
                .iter()
                .map(|s| ((crate::snapshot::Kind::Cluster, s.as_str().into()), now)),
        );
        Ok((token, rec))
    }

    pub fn list_tokens(&self) -> Vec<TokenRecord> {
        self.state.lock().tokens.values().cloned().collect()
    }

    /// Counts one certificate obtained with token `id`; `false` (nothing counted) when its
    /// uses are spent. Persisted before it counts, so a restart cannot hand out extra uses.
    pub fn use_token(&self, id: &str) -> Result<bool, CoreError> {
        let mut st = self.state.lock();
        let Some(mut rec) = st.tokens.get(id).cloned() else {
            return Ok(false);
        };
        if rec.max_uses > 0 && rec.uses >= rec.max_uses {
            return Ok(false);
        }
        rec.uses = rec.uses.saturating_add(1);
        self.persist("put_token", vec![Op::put(Table::Tokens, id, &rec)])?;
        st.tokens.insert(id.to_string(), rec);
        Ok(true)
    }

    /// Marks a token revoked (kept, so listing shows it was revoked rather than forgotten).
    pub fn revoke_token(&self, id: &str) -> Result<bool, CoreError> {
        let mut st = self.state.lock();
        let Some(mut rec) = st.tokens.get(id).cloned() else {
            return Ok(false);
        };
        rec.revoked = true;
        self.persist("put_token", vec![Op::put(Table::Tokens, id, &rec)])?;
        let services = rec.services.clone();
        st.tokens.insert(id.to_string(), rec);
        drop(st);
        let now = tokio::time::Instant::now();
        self.rebuild(
            services
                .iter()
                .map(|s| ((crate::snapshot::Kind::Cluster, s.as_str().into()), now)),
        );
        Ok(true)
    }
}
