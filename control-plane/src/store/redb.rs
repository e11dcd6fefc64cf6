//! The embedded `Store` backend: one redb file, one redb table per `Table`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Op, Store, StoreError, Table};

pub struct RedbStore {
    db: Database,
}

fn def(t: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(t.name())
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

// === impl RedbStore ===

impl RedbStore {
    /// Opens (or creates) the database and makes sure every table exists, so reads never
    /// have to tell "missing table" from "empty table".
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        let tx = db.begin_write().map_err(backend)?;
        for t in Table::ALL {
            tx.open_table(def(t)).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        Ok(Self { db })
    }
}

impl Store for RedbStore {
    fn apply(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        // redb's default durability is `Immediate`: commit returns after fsync, which is what
        // makes an acknowledged admin write survive kill -9.
        let tx = self.db.begin_write().map_err(backend)?;
        for op in &ops {
            match op {
                Op::Put(t, k, v) => {
                    let mut table = tx.open_table(def(*t)).map_err(backend)?;
                    table.insert(k.as_str(), v.as_slice()).map_err(backend)?;
                }
                Op::Delete(t, k) => {
                    let mut table = tx.open_table(def(*t)).map_err(backend)?;
                    table.remove(k.as_str()).map_err(backend)?;
                }
            }
        }
        tx.commit().map_err(backend)
    }

    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(def(table)).map_err(backend)?;
        Ok(t.get(key).map_err(backend)?.map(|v| v.value().to_vec()))
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(backend)?;
        let t = tx.open_table(def(table)).map_err(backend)?;
        t.iter()
            .map_err(backend)?
            .map(|e| {
                let (k, v) = e.map_err(backend)?;
                Ok((k.value().to_string(), v.value().to_vec()))
            })
            .collect()
    }
}
