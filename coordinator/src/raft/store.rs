//! The node's database: one database, four column families, one write-ahead log.
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
//!
//! The engine (RocksDB in production, the simulation's memory disk) and its crash semantics
//! are `ratify-storage`'s; this module names the coordinator's column families and decodes
//! its values.

use ratify_storage::MemDisk;
pub use ratify_storage::{Batch, Db, Row, StorageError as StoreError};
use std::path::Path;
use std::sync::Arc;

/// Column family names.
pub const CF_LOG: &str = "raft_log";
/// Raft metadata: vote, committed, purged.
pub const CF_META: &str = "raft_meta";
/// The state machine's rows.
pub const CF_SM: &str = "sm";
/// The current snapshot.
pub const CF_SNAPSHOT: &str = "snapshot";

/// Every column family, created at open.
pub const ALL_CFS: &[&str] = &[CF_LOG, CF_META, CF_SM, CF_SNAPSHOT];

/// Open (creating if missing) the node's RocksDB database in `dir`.
pub fn open(dir: &Path) -> Result<Arc<Db>, StoreError> {
    Db::open(dir, ALL_CFS)
}

/// The node's database on the simulation's memory `disk`.
pub fn memory(disk: Arc<MemDisk>) -> Arc<Db> {
    Db::memory(disk, ALL_CFS)
}

/// Decode a protobuf value read from the database.
pub fn decode<M: prost::Message + Default>(what: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|e| StoreError::corrupt(what, e))
}

/// A value that did not decode.
pub fn corrupt(what: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(what, why)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    use openraft::StorageError;
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;
    use crate::raft::TypeConfig;
    use crate::raft::log_store::LogStore;
    use crate::raft::state_machine::StateMachineStore;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "ratify-coordinator-{tag}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a temporary directory");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// openraft's storage conformance suite, over a fresh database per case.
    struct Builder {
        memory: bool,
    }

    /// A RocksDB case's database and directory: closes the database (once the last clone of
    /// the log store, whose syncer holds it, is gone), then removes the directory.
    struct RocksCase {
        db: Option<Arc<Db>>,
        _dir: TempDir,
    }

    impl Drop for RocksCase {
        fn drop(&mut self) {
            if let Some(db) = self.db.take() {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while Arc::strong_count(&db) > 1 && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        }
    }

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, Option<RocksCase>> for Builder {
        async fn build(
            &self,
        ) -> Result<(Option<RocksCase>, LogStore, StateMachineStore), StorageError<u64>> {
            let (case, db) = if self.memory {
                (None, memory(MemDisk::new()))
            } else {
                let dir = TempDir::new("suite");
                let db = open(&dir.0).expect("open rocksdb");
                let case = RocksCase {
                    db: Some(db.clone()),
                    _dir: dir,
                };
                (Some(case), db)
            };
            let log = LogStore::new(db.clone()).expect("a log store");
            let sm = StateMachineStore::open(db).expect("a state machine");
            Ok((case, log, sm))
        }
    }

    #[test]
    fn openraft_storage_suite_over_the_memory_engine() {
        Suite::test_all(Builder { memory: true }).expect("the suite passes");
    }

    #[test]
    fn openraft_storage_suite_over_rocksdb() {
        Suite::test_all(Builder { memory: false }).expect("the suite passes");
    }
}
