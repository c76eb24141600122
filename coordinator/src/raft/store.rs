//! The node's RocksDB database: one database, four column families, one write-ahead log.
//!
//! | column family | key                         | value                                  |
//! |---------------|-----------------------------|----------------------------------------|
//! | `raft_log`    | log index, u64 big-endian   | `ratify.raft.v1.Entry` (protobuf)      |
//! | `raft_meta`   | `vote`, `committed`, `purged` | `RaftVote` / `LogId` (protobuf)      |
//! | `sm`          | `d`+txn (16 bytes)          | decided record (JSON)                  |
//! |               | `c`+txn (16 bytes)          | completed record (JSON)                |
//! |               | `p`+participant id          | registration (JSON)                    |
//! |               | `m:last_applied`, `m:membership` | `LogId` / `StoredMembership` (protobuf) |
//! | `snapshot`    | `meta`, `data`              | `SnapshotMeta` (protobuf) / snapshot bytes |
//!
//! Durability: every column family shares the one write-ahead log, so a synced write (or a
//! `flush_wal(sync)`) makes every earlier write durable too. Log appends and votes are synced
//! before they are acknowledged; state-machine writes ride along (they are re-derivable from the
//! log until the log is purged, and the log is purged only behind a snapshot built after a WAL
//! sync).

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

/// Column family names.
pub const CF_LOG: &str = "raft_log";
/// Raft metadata: vote, committed, purged.
pub const CF_META: &str = "raft_meta";
/// The state machine's rows.
pub const CF_SM: &str = "sm";
/// The current snapshot.
pub const CF_SNAPSHOT: &str = "snapshot";

/// An error from the node's database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed (I/O error, disk full, corruption).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored value did not decode: the database is damaged or from an incompatible version.
    #[error("corrupt {what} in the database: {why}")]
    Corrupt {
        /// Which value.
        what: String,
        /// Why it did not decode.
        why: String,
    },
}

/// The opened database.
pub struct Db {
    db: DB,
}

impl Db {
    /// Open (creating if missing) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A coordinator's data is small; keep RocksDB's background work modest on 2 cores.
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        let cfs = [CF_LOG, CF_META, CF_SM, CF_SNAPSHOT]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Arc::new(Self { db }))
    }

    /// A column family handle. The families are created at open, so a missing one is a bug.
    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created at open")
    }

    /// Read one value.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    /// Write a batch: `sync` makes it (and everything before it) durable before returning.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), StoreError> {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Make every write so far durable (one fsync of the write-ahead log).
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// The underlying database, for iteration.
    pub fn raw(&self) -> &DB {
        &self.db
    }
}

/// Decode a protobuf value, naming it in the error.
pub fn decode<M: prost::Message + Default>(what: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        why: e.to_string(),
    })
}

/// Turn a conversion error on stored data into a corruption error.
pub fn corrupt(what: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        why: why.to_string(),
    }
}
