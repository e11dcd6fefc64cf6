//! The durable store: a small byte-oriented `Store` trait (so an etcd backend can be added
//! later) plus typed JSON helpers. Every `apply` is one transaction, durable when it returns.

mod redb;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::redb::RedbStore;

/// Every durable table. Keys are strings; values are JSON of the domain types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    Routes,
    ClusterPolicies,
    AuthzPolicies,
    /// Services declared through the admin API.
    Services,
    /// Static endpoints (with their drain state), keyed `service|address`.
    StaticEndpoints,
    /// Join tokens, hashed, keyed by token id.
    Tokens,
    /// Singletons: the runtime settings.
    Runtime,
    /// Service → allocated VIP, so a service keeps its VIP across restarts.
    Vips,
    /// CA material (root/intermediate keys and certificates), written by the identity service.
    Ca,
    /// Revoked workload identities (SPIFFE ID → revocation time): no renewal, no discovery.
    Revoked,
}

/// One write inside a transaction.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend: {0}")]
    Backend(String),
    #[error("stored value in {table:?}/{key} is corrupt: {source}")]
    Corrupt {
        table: Table,
        key: String,
        source: serde_json::Error,
    },
}

/// Durable key-value storage in named tables.
pub trait Store: Send + Sync + 'static {
    /// Applies every op in one transaction; when this returns `Ok` the writes survive a crash.
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

// === impl Table ===

impl Table {
    pub const ALL: [Table; 10] = [
        Table::Routes,
        Table::ClusterPolicies,
        Table::AuthzPolicies,
        Table::Services,
        Table::StaticEndpoints,
        Table::Tokens,
        Table::Runtime,
        Table::Vips,
        Table::Ca,
        Table::Revoked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Routes => "routes",
            Table::ClusterPolicies => "cluster_policies",
            Table::AuthzPolicies => "authz_policies",
            Table::Services => "services",
            Table::StaticEndpoints => "static_endpoints",
            Table::Tokens => "tokens",
            Table::Runtime => "runtime",
            Table::Vips => "vips",
            Table::Ca => "ca",
            Table::Revoked => "revoked_identities",
        }
    }
}

// === impl Op ===

impl Op {
    pub fn put<T: Serialize>(table: Table, key: impl Into<String>, value: &T) -> Op {
        // Serializing plain domain structs (string keys, no floats-as-keys) cannot fail.
        let bytes = serde_json::to_vec(value).unwrap_or_default();
        Op::Put(table, key.into(), bytes)
    }

    pub fn delete(table: Table, key: impl Into<String>) -> Op {
        Op::Delete(table, key.into())
    }
}

/// Reads and decodes every value of a table.
pub fn list_typed<T: DeserializeOwned>(
    store: &dyn Store,
    table: Table,
) -> Result<Vec<(String, T)>, StoreError> {
    store
        .list(table)?
        .into_iter()
        .map(|(key, bytes)| match serde_json::from_slice(&bytes) {
            Ok(v) => Ok((key, v)),
            Err(source) => Err(StoreError::Corrupt { table, key, source }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redb_round_trip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mesh.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            s.apply(vec![
                Op::put(Table::Routes, "a", &1u32),
                Op::put(Table::Routes, "b", &2u32),
            ])
            .unwrap();
            s.apply(vec![Op::delete(Table::Routes, "a")]).unwrap();
        }
        let s = RedbStore::open(&path).unwrap();
        let all: Vec<(String, u32)> = list_typed(&s, Table::Routes).unwrap();
        assert_eq!(all, vec![("b".to_string(), 2)]);
        assert!(s.get(Table::Tokens, "x").unwrap().is_none());
    }
}
