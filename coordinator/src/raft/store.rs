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
//! Two engines behind the same calls: RocksDB ([`Db::open`], production) and the deterministic
//! simulation's in-memory disk ([`Db::memory`], [`MemDisk`]), which keeps the same column
//! families, keys and values and the same durability contract (a write is durable once it or a
//! later write is synced; [`MemDisk::crash`] forgets the rest). Writes are engine-neutral
//! [`Batch`]es; reads are [`Db::get`] and bounded [`Db::scan`]s.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use ratify_proto::memdisk::{Batch, MemDisk, Op};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Options, WriteBatch, WriteOptions};

/// Column family names.
pub const CF_LOG: &str = "raft_log";
/// Raft metadata: vote, committed, purged.
pub const CF_META: &str = "raft_meta";
/// The state machine's rows.
pub const CF_SM: &str = "sm";
/// The current snapshot.
pub const CF_SNAPSHOT: &str = "snapshot";

/// Every column family, created at open.
const ALL_CFS: [&str; 4] = [CF_LOG, CF_META, CF_SM, CF_SNAPSHOT];

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

/// A key and its value, as [`Db::scan`] returns them.
pub type Row = (Vec<u8>, Vec<u8>);

enum Engine {
    Rocks(DB),
    Memory(Arc<MemDisk>),
}

/// The opened database.
pub struct Db {
    engine: Engine,
}

/// The column families are fixed at open, so an unknown name is a bug in the caller.
fn known_cf(name: &str) -> &str {
    assert!(
        ALL_CFS.contains(&name),
        "unknown column family {name:?}: every column family is created at open"
    );
    name
}

impl Db {
    /// Open (creating if missing) the RocksDB database in `dir`.
    pub fn open(dir: &Path) -> Result<Arc<Self>, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // A coordinator's data is small; keep RocksDB's background work modest on 2 cores.
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        let cfs = ALL_CFS
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Arc::new(Self {
            engine: Engine::Rocks(db),
        }))
    }

    /// A database on the simulation's in-memory `disk` (which outlives it: a restarted node
    /// reopens the same disk).
    pub fn memory(disk: Arc<MemDisk>) -> Arc<Self> {
        Arc::new(Self {
            engine: Engine::Memory(disk),
        })
    }

    /// True on the in-memory engine (no background threads may be used with it: the
    /// simulation is single-threaded and deterministic).
    pub fn is_memory(&self) -> bool {
        matches!(self.engine, Engine::Memory(_))
    }

    /// Read one value.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.engine {
            Engine::Rocks(db) => Ok(db.get_cf(rocks_cf(db, cf), key)?),
            Engine::Memory(disk) => Ok(disk.get(known_cf(cf), key)),
        }
    }

    /// Write a batch atomically: `sync` makes it (and everything before it) durable before
    /// returning.
    pub fn write(&self, batch: Batch, sync: bool) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Rocks(db) => {
                let mut wb = WriteBatch::default();
                for op in batch.into_ops() {
                    match op {
                        Op::Put { cf, key, value } => wb.put_cf(rocks_cf(db, cf), key, value),
                        Op::Delete { cf, key } => wb.delete_cf(rocks_cf(db, cf), key),
                        Op::DeleteRange { cf, from, to } => {
                            wb.delete_range_cf(rocks_cf(db, cf), from, to)
                        }
                    }
                }
                let mut wo = WriteOptions::default();
                wo.set_sync(sync);
                db.write_opt(wb, &wo)?;
            }
            Engine::Memory(disk) => {
                for op in batch.ops() {
                    let (Op::Put { cf, .. } | Op::Delete { cf, .. } | Op::DeleteRange { cf, .. }) =
                        op;
                    known_cf(cf);
                }
                disk.write(batch, sync);
            }
        }
        Ok(())
    }

    /// Make every write so far durable (one fsync of the write-ahead log).
    pub fn sync_wal(&self) -> Result<(), StoreError> {
        match &self.engine {
            Engine::Rocks(db) => db.flush_wal(true)?,
            Engine::Memory(disk) => disk.sync(),
        }
        Ok(())
    }

    /// The rows of `cf` with keys within (`from`, `to`), in key order (descending with
    /// `reverse`), at most `limit` of them.
    pub fn scan(
        &self,
        cf: &str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        match &self.engine {
            Engine::Rocks(db) => rocks_scan(db, cf, from, to, reverse, limit),
            Engine::Memory(disk) => Ok(disk.scan(known_cf(cf), from, to, reverse, limit)),
        }
    }
}

/// A column family handle. The families are created at open, so a missing one is a bug.
fn rocks_cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created at open")
}

fn below_upper(key: &[u8], to: Bound<&[u8]>) -> bool {
    match to {
        Bound::Included(t) => key <= t,
        Bound::Excluded(t) => key < t,
        Bound::Unbounded => true,
    }
}

fn above_lower(key: &[u8], from: Bound<&[u8]>) -> bool {
    match from {
        Bound::Included(f) => key >= f,
        Bound::Excluded(f) => key > f,
        Bound::Unbounded => true,
    }
}

fn rocks_scan(
    db: &DB,
    cf: &str,
    from: Bound<&[u8]>,
    to: Bound<&[u8]>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<Row>, StoreError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut it = db.raw_iterator_cf(rocks_cf(db, cf));
    // Position on the first row in scan order, then walk while inside the far bound.
    if reverse {
        match to {
            Bound::Included(k) | Bound::Excluded(k) => it.seek_for_prev(k),
            Bound::Unbounded => it.seek_to_last(),
        }
    } else {
        match from {
            Bound::Included(k) | Bound::Excluded(k) => it.seek(k),
            Bound::Unbounded => it.seek_to_first(),
        }
    }
    while let Some((key, value)) = it.item() {
        let (inside_near, inside_far) = if reverse {
            (below_upper(key, to), above_lower(key, from))
        } else {
            (above_lower(key, from), below_upper(key, to))
        };
        if !inside_far {
            break;
        }
        // Only an excluded near bound itself can be outside it; skip it.
        if inside_near {
            out.push((key.to_vec(), value.to_vec()));
            if out.len() >= limit {
                break;
            }
        }
        if reverse {
            it.prev();
        } else {
            it.next();
        }
    }
    it.status()?;
    Ok(out)
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

    /// Both engines answer every scan the same way (the memory engine is the reference).
    #[test]
    fn both_engines_agree_on_reads_writes_and_scans() {
        let dir = TempDir::new("scan");
        let rocks = Db::open(&dir.0).expect("open rocksdb");
        let memory = Db::memory(MemDisk::new());
        assert!(!rocks.is_memory() && memory.is_memory());

        let mut batches = Vec::new();
        let mut b = Batch::new();
        for i in (0u8..40).step_by(2) {
            b.put(CF_LOG, [i], [i, 1]);
            b.put(CF_SM, [b'k', i], [i]);
        }
        b.put(CF_LOG, [10u8, 5], b"longer key");
        b.put(CF_META, b"vote", b"v");
        batches.push(b);
        let mut b = Batch::new();
        b.delete(CF_LOG, [4u8]);
        b.delete_range(CF_LOG, [20u8], [26u8]);
        b.delete_range(CF_SM, [b'k', 30], [b'k', 0xff]);
        b.put(CF_LOG, [22u8], b"back");
        b.delete(CF_META, b"absent");
        batches.push(b);
        for (i, b) in batches.into_iter().enumerate() {
            rocks.write(b.clone(), i == 0).expect("write");
            memory.write(b, i == 0).expect("write");
        }
        rocks.sync_wal().expect("sync");
        memory.sync_wal().expect("sync");

        for cf in ALL_CFS {
            for key in [&b"vote"[..], &[22u8], &[4u8], &[b'k', 2], &[b'k', 32]] {
                assert_eq!(
                    rocks.get(cf, key).expect("get"),
                    memory.get(cf, key).expect("get"),
                    "get {cf} {key:?}"
                );
            }
        }
        let points: Vec<Vec<u8>> = [
            vec![],
            vec![0],
            vec![3],
            vec![4],
            vec![10],
            vec![10, 0],
            vec![10, 5],
            vec![22],
            vec![23],
            vec![38],
            vec![39],
            vec![0xff],
            vec![b'k', 8],
        ]
        .into();
        let mut bounds = vec![Bound::Unbounded];
        for p in &points {
            bounds.push(Bound::Included(p.as_slice()));
            bounds.push(Bound::Excluded(p.as_slice()));
        }
        let mut checked = 0;
        for cf in [CF_LOG, CF_SM, CF_SNAPSHOT] {
            for from in &bounds {
                for to in &bounds {
                    for reverse in [false, true] {
                        for limit in [0, 1, 3, usize::MAX] {
                            let r = rocks.scan(cf, *from, *to, reverse, limit).expect("scan");
                            let m = memory.scan(cf, *from, *to, reverse, limit).expect("scan");
                            assert_eq!(r, m, "{cf} {from:?}..{to:?} reverse={reverse} {limit}");
                            checked += usize::from(!m.is_empty());
                        }
                    }
                }
            }
        }
        assert!(
            checked > 100,
            "the grid exercised non-empty scans ({checked})"
        );
    }

    /// openraft's storage conformance suite, over a fresh database per case.
    struct Builder {
        memory: bool,
    }

    /// A RocksDB case's database and directory: closes the database (once the log store's
    /// sync thread, which ends after the store is dropped, has let go of it), then removes
    /// the directory.
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
                (None, Db::memory(MemDisk::new()))
            } else {
                let dir = TempDir::new("suite");
                let db = Db::open(&dir.0).expect("open rocksdb");
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
