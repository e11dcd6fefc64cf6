//! Join tokens: one-time-shown secrets bound to one identity, stored only as SHA-256 hashes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use parking_lot::Mutex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::spiffe::SpiffeId;

/// 32 random bytes: 256 bits, beyond any guessing.
const TOKEN_BYTES: usize = 32;
/// The id is the first 8 bytes of the hash, hex: 64 bits is unique among any realistic number
/// of tokens, and revealing it (in lists, logs) reveals nothing about the secret.
const ID_BYTES: usize = 8;
/// Default lifetime of a token: a day to bring a workload up.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest lifetime: a year, for long-running workloads that renew with their token.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The secret itself; shown once at creation. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

/// What is stored about a token: never the secret, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    /// SHA-256 of the token string, hex.
    pub hash: String,
    pub identity: SpiffeId,
    pub created_unix: i64,
    pub expires_unix: i64,
    pub revoked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("join token is not recognised")]
    Unknown,
    #[error("join token {0} was revoked")]
    Revoked(String),
    #[error("join token {0} expired; create a new one with `mesh-cli token create`")]
    Expired(String),
    #[error("token lifetime must be between 1 s and {} days", MAX_TOKEN_TTL.as_secs() / 86400)]
    BadTtl,
    #[error("join token {0} was already used as often as it may be (--max-uses)")]
    UsedUp(String),
    #[error("token store: {0}")]
    Store(String),
}

/// Persistence of token records; the store owner implements it over the real database.
pub trait TokenStore: Send + Sync {
    fn insert(&self, record: TokenRecord) -> Result<(), TokenError>;
    fn get(&self, id: &str) -> Result<Option<TokenRecord>, TokenError>;
    /// Marks the token revoked; `Ok(false)` when no such token exists.
    fn revoke(&self, id: &str) -> Result<bool, TokenError>;
    fn list(&self) -> Result<Vec<TokenRecord>, TokenError>;
    /// Counts one use of a verified token; refuses one whose uses are spent. Stores without
    /// use limits accept every use.
    fn consume(&self, _id: &str) -> Result<(), TokenError> {
        Ok(())
    }
}

/// Token records in a map; lost on restart.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    records: Mutex<BTreeMap<String, TokenRecord>>,
}

/// Creates, verifies and revokes join tokens over a `TokenStore`.
#[derive(Clone)]
pub struct JoinTokens {
    store: Arc<dyn TokenStore>,
}

// === impl JoinToken ===

impl JoinToken {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

// === impl JoinTokens ===

impl JoinTokens {
    pub fn new(store: Arc<dyn TokenStore>) -> Self {
        Self { store }
    }

    pub fn in_memory() -> Self {
        Self::new(Arc::new(MemoryTokenStore::default()))
    }

    /// A new token for `identity`; `ttl` `None` means the default day.
    pub fn create(
        &self,
        identity: SpiffeId,
        ttl: Option<Duration>,
    ) -> Result<(JoinToken, TokenRecord), TokenError> {
        self.create_at(identity, ttl, SystemTime::now())
    }

    pub fn create_at(
        &self,
        identity: SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<(JoinToken, TokenRecord), TokenError> {
        let ttl = ttl.unwrap_or(DEFAULT_TOKEN_TTL);
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(TokenError::BadTtl);
        }
        let mut secret = [0u8; TOKEN_BYTES];
        rand::rng().fill_bytes(&mut secret);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let hash = Sha256::digest(token.as_bytes());
        let created = unix(now);
        let record = TokenRecord {
            id: hex::encode(&hash[..ID_BYTES]),
            hash: hex::encode(hash),
            identity,
            created_unix: created,
            expires_unix: created.saturating_add(ttl.as_secs() as i64),
            revoked: false,
        };
        self.store.insert(record.clone())?;
        Ok((JoinToken(token), record))
    }

    /// The identity `token` is bound to, if it is known, unrevoked and unexpired.
    pub fn verify(&self, token: &str) -> Result<SpiffeId, TokenError> {
        self.verify_at(token, SystemTime::now())
    }

    pub fn verify_at(&self, token: &str, now: SystemTime) -> Result<SpiffeId, TokenError> {
        let hash = Sha256::digest(token.trim().as_bytes());
        let id = hex::encode(&hash[..ID_BYTES]);
        let record = self.store.get(&id)?.ok_or(TokenError::Unknown)?;
        if !constant_time_eq(record.hash.as_bytes(), hex::encode(hash).as_bytes()) {
            return Err(TokenError::Unknown);
        }
        if record.revoked {
            return Err(TokenError::Revoked(record.id));
        }
        if unix(now) >= record.expires_unix {
            return Err(TokenError::Expired(record.id));
        }
        self.store.consume(&record.id)?;
        Ok(record.identity)
    }

    pub fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        self.store.revoke(id)
    }

    pub fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        self.store.list()
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Compares without an early exit, so timing does not reveal how much of a hash matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// === impl MemoryTokenStore ===

impl TokenStore for MemoryTokenStore {
    fn insert(&self, record: TokenRecord) -> Result<(), TokenError> {
        self.records.lock().insert(record.id.clone(), record);
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<TokenRecord>, TokenError> {
        Ok(self.records.lock().get(id).cloned())
    }

    fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        Ok(self
            .records
            .lock()
            .get_mut(id)
            .map(|r| r.revoked = true)
            .is_some())
    }

    fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.records.lock().values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).unwrap()
    }

    #[test]
    fn create_verify_revoke() {
        let tokens = JoinTokens::in_memory();
        let (token, record) = tokens.create(id("a"), None).unwrap();
        assert_eq!(
            token.as_str().len(),
            43,
            "32 bytes base64url without padding"
        );
        assert!(!record.hash.contains(token.as_str()));
        assert_eq!(tokens.verify(token.as_str()).unwrap(), id("a"));
        assert_eq!(format!("{token:?}"), "JoinToken(<redacted>)");

        assert!(tokens.revoke(&record.id).unwrap());
        assert_eq!(
            tokens.verify(token.as_str()),
            Err(TokenError::Revoked(record.id.clone()))
        );
        assert!(!tokens.revoke("nope").unwrap());
        assert!(tokens.list().unwrap()[0].revoked);
    }

    #[test]
    fn unknown_and_expired() {
        let tokens = JoinTokens::in_memory();
        assert_eq!(tokens.verify("garbage"), Err(TokenError::Unknown));
        assert_eq!(tokens.verify(""), Err(TokenError::Unknown));
        let now = SystemTime::now();
        let (token, record) = tokens
            .create_at(id("a"), Some(Duration::from_secs(60)), now)
            .unwrap();
        assert!(
            tokens
                .verify_at(token.as_str(), now + Duration::from_secs(59))
                .is_ok()
        );
        assert_eq!(
            tokens.verify_at(token.as_str(), now + Duration::from_secs(60)),
            Err(TokenError::Expired(record.id))
        );
        assert_eq!(
            tokens.create(id("a"), Some(Duration::ZERO)).unwrap_err(),
            TokenError::BadTtl
        );
    }

    #[test]
    fn tokens_are_distinct() {
        let tokens = JoinTokens::in_memory();
        let (a, _) = tokens.create(id("a"), None).unwrap();
        let (b, _) = tokens.create(id("b"), None).unwrap();
        assert_ne!(a, b);
        assert_eq!(tokens.verify(b.as_str()).unwrap(), id("b"));
    }
}
