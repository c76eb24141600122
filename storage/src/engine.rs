//! [`Db`]: RocksDB or the memory disk, behind one set of calls (see the crate docs for the
//! durability contract both keep).

use std::ops::{Bound, ControlFlow};
use std::path::Path;
use std::sync::Arc;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions,
};

use crate::memdisk::{Batch, MemDisk, Op};

/// Entries a visit of the memory engine copies out of the disk at a time.
const MEMORY_SCAN_CHUNK: usize = 256;
/// RocksDB background jobs (flushes, compactions): Ratify's stores are small; keep RocksDB's
/// background work modest on small machines.
const ROCKS_BACKGROUND_JOBS_MAX: i32 = 2;
/// RocksDB info log files kept.
const ROCKS_LOG_FILES_KEPT: usize = 4;

/// An error from the storage engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
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
    /// The group-commit syncer could not be started (no thread could be spawned).
    #[error("cannot start the sync thread: {0}")]
    SyncerStart(#[source] Arc<std::io::Error>),
    /// The group-commit syncer has stopped (the store is being closed).
    #[error("the sync thread has stopped")]
    SyncerStopped,
    /// Another store failed (a `Resource` over a database of its own says why).
    #[error("{0}")]
    Other(String),
}

/// Errors compare by what they say (an I/O error has no equality of its own).
impl PartialEq for StorageError {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for StorageError {}

impl StorageError {
    /// A [`StorageError::Corrupt`] for `what`.
    pub fn corrupt(what: impl Into<String>, why: impl std::fmt::Display) -> Self {
        StorageError::Corrupt {
            what: what.into(),
            why: why.to_string(),
        }
    }
}

/// A key and its value, as [`Db::scan`] returns them.
pub type Row = (Vec<u8>, Vec<u8>);

enum Engine {
    Rocks(DB),
    Memory(Arc<MemDisk>),
}

/// An opened database: its engine and its column families (fixed at open).
pub struct Db {
    engine: Engine,
    cfs: &'static [&'static str],
}

impl Db {
    /// Open (creating if missing) the RocksDB database in `dir` with the column families
    /// `cfs`.
    pub fn open(dir: &Path, cfs: &'static [&'static str]) -> Result<Arc<Self>, StorageError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(ROCKS_BACKGROUND_JOBS_MAX);
        opts.set_keep_log_file_num(ROCKS_LOG_FILES_KEPT);
        let descriptors = cfs
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, dir, descriptors)?;
        Ok(Arc::new(Self {
            engine: Engine::Rocks(db),
            cfs,
        }))
    }

    /// A database with the column families `cfs` on the in-memory `disk` (which outlives it: a
    /// restarted process reopens the same disk).
    pub fn memory(disk: Arc<MemDisk>, cfs: &'static [&'static str]) -> Arc<Self> {
        Arc::new(Self {
            engine: Engine::Memory(disk),
            cfs,
        })
    }

    /// True on the memory engine (no OS thread may be used with it: the simulation is
    /// single-threaded and deterministic).
    pub fn is_memory(&self) -> bool {
        matches!(self.engine, Engine::Memory(_))
    }

    /// The column families are fixed at open, so an unknown name is a bug in the caller.
    fn known_cf<'a>(&self, name: &'a str) -> &'a str {
        assert!(
            self.cfs.contains(&name),
            "unknown column family {name:?}: every column family is created at open"
        );
        name
    }

    /// Read one value.
    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match &self.engine {
            Engine::Rocks(db) => Ok(db.get_cf(rocks_cf(db, cf), key)?),
            Engine::Memory(disk) => Ok(disk.get(self.known_cf(cf), key)),
        }
    }

    /// Write a batch atomically; `sync` makes it (and everything before it) durable before
    /// returning, on this thread (for group commit, write unsynced and wait on a [`Syncer`]).
    ///
    /// [`Syncer`]: crate::Syncer
    pub fn write(&self, batch: Batch, sync: bool) -> Result<(), StorageError> {
        match &self.engine {
            Engine::Rocks(db) => {
                let mut wo = WriteOptions::default();
                wo.set_sync(sync);
                db.write_opt(rocks_batch(db, batch), &wo)?;
            }
            Engine::Memory(disk) => {
                self.check_cfs(&batch);
                disk.write(batch, sync);
            }
        }
        Ok(())
    }

    /// Write a batch with no durability at all (RocksDB: outside the write-ahead log; memory:
    /// a write no sync covers). Only planted bug (a) of the harness's selftest uses it.
    pub fn write_unlogged(&self, batch: Batch) -> Result<(), StorageError> {
        match &self.engine {
            Engine::Rocks(db) => {
                let mut wo = WriteOptions::default();
                wo.disable_wal(true);
                db.write_opt(rocks_batch(db, batch), &wo)?;
            }
            Engine::Memory(disk) => {
                self.check_cfs(&batch);
                disk.write_unlogged(batch);
            }
        }
        Ok(())
    }

    fn check_cfs(&self, batch: &Batch) {
        for op in batch.ops() {
            let (Op::Put { cf, .. } | Op::Delete { cf, .. } | Op::DeleteRange { cf, .. }) = op;
            self.known_cf(cf);
        }
    }

    /// Make every write so far durable (one fsync of the write-ahead log).
    pub fn sync_wal(&self) -> Result<(), StorageError> {
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
    ) -> Result<Vec<Row>, StorageError> {
        match &self.engine {
            Engine::Rocks(db) => rocks_scan(db, cf, from, to, reverse, limit),
            Engine::Memory(disk) => Ok(disk.scan(self.known_cf(cf), from, to, reverse, limit)),
        }
    }

    /// Visit the rows of `cf` in key order from `from` (inclusive; empty: the first) until `f`
    /// breaks, without holding them all in memory.
    pub fn visit<E: From<StorageError>>(
        &self,
        cf: &str,
        from: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>, E>,
    ) -> Result<(), E> {
        match &self.engine {
            Engine::Rocks(db) => {
                let mode = if from.is_empty() {
                    IteratorMode::Start
                } else {
                    IteratorMode::From(from, Direction::Forward)
                };
                for item in db.iterator_cf(rocks_cf(db, cf), mode) {
                    let (key, value) = item.map_err(StorageError::from)?;
                    if f(&key, &value)?.is_break() {
                        break;
                    }
                }
            }
            Engine::Memory(disk) => {
                let cf = self.known_cf(cf);
                let mut after: Option<Vec<u8>> = None;
                loop {
                    let lower = match &after {
                        None => Bound::Included(from),
                        Some(last) => Bound::Excluded(last.as_slice()),
                    };
                    let mut chunk =
                        disk.scan(cf, lower, Bound::Unbounded, false, MEMORY_SCAN_CHUNK);
                    let more = chunk.len() == MEMORY_SCAN_CHUNK;
                    for (key, value) in &chunk {
                        if f(key, value)?.is_break() {
                            return Ok(());
                        }
                    }
                    if !more {
                        break;
                    }
                    after = chunk.pop().map(|(key, _)| key);
                }
            }
        }
        Ok(())
    }

    /// How many rows `cf` holds, counting at most `max`.
    pub fn count(&self, cf: &str, max: usize) -> Result<usize, StorageError> {
        let mut n = 0;
        if max == 0 {
            return Ok(0);
        }
        self.visit::<StorageError>(cf, &[], |_, _| {
            n += 1;
            Ok(if n >= max {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        Ok(n)
    }
}

/// A column family handle. The families are created at open, so a missing one is a bug.
fn rocks_cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created at open")
}

/// The RocksDB form of an engine-neutral batch.
fn rocks_batch(db: &DB, batch: Batch) -> WriteBatch {
    let mut wb = WriteBatch::default();
    for op in batch.into_ops() {
        match op {
            Op::Put { cf, key, value } => wb.put_cf(rocks_cf(db, cf), key, value),
            Op::Delete { cf, key } => wb.delete_cf(rocks_cf(db, cf), key),
            Op::DeleteRange { cf, from, to } => wb.delete_range_cf(rocks_cf(db, cf), from, to),
        }
    }
    wb
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
) -> Result<Vec<Row>, StorageError> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let mut it = db.raw_iterator_cf(rocks_cf(db, cf));
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

#[cfg(test)]
mod tests {
    use super::*;

    const CFS: &[&str] = &["a", "b", "c"];

    fn engines() -> (tempfile::TempDir, Arc<Db>, Arc<Db>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let rocks = Db::open(dir.path(), CFS).expect("open rocksdb");
        let memory = Db::memory(MemDisk::new(), CFS);
        assert!(!rocks.is_memory() && memory.is_memory());
        (dir, rocks, memory)
    }

    /// Both engines answer every read, scan, visit and count the same way (the memory engine
    /// is the reference the simulation relies on).
    #[test]
    fn both_engines_agree_on_reads_writes_and_scans() {
        let (_dir, rocks, memory) = engines();
        let mut batches = Vec::new();
        let mut b = Batch::new();
        for i in (0u8..40).step_by(2) {
            b.put("a", [i], [i, 1]);
            b.put("b", [b'k', i], [i]);
        }
        b.put("a", [10u8, 5], b"longer key");
        b.put("c", b"vote", b"v");
        batches.push(b);
        let mut b = Batch::new();
        b.delete("a", [4u8]);
        b.delete_range("a", [20u8], [26u8]);
        b.delete_range("b", [b'k', 30], [b'k', 0xff]);
        b.put("a", [22u8], b"back");
        b.delete("c", b"absent");
        batches.push(b);
        for (i, b) in batches.into_iter().enumerate() {
            rocks.write(b.clone(), i == 0).expect("write");
            memory.write(b, i == 0).expect("write");
        }
        rocks.sync_wal().expect("sync");
        memory.sync_wal().expect("sync");

        for cf in CFS {
            for key in [&b"vote"[..], &[22u8], &[4u8], &[b'k', 2], &[b'k', 32]] {
                assert_eq!(
                    rocks.get(cf, key).expect("get"),
                    memory.get(cf, key).expect("get"),
                    "get {cf} {key:?}"
                );
            }
            for max in [0, 1, 5, usize::MAX] {
                assert_eq!(
                    rocks.count(cf, max).expect("count"),
                    memory.count(cf, max).expect("count")
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
        for cf in CFS {
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
            for from in &points {
                let visit = |db: &Db| {
                    let mut seen = Vec::new();
                    db.visit::<StorageError>(cf, from, |k, v| {
                        seen.push((k.to_vec(), v.to_vec()));
                        Ok(if seen.len() == 7 {
                            ControlFlow::Break(())
                        } else {
                            ControlFlow::Continue(())
                        })
                    })
                    .expect("visit");
                    seen
                };
                assert_eq!(visit(&rocks), visit(&memory), "visit {cf} from {from:?}");
            }
        }
        assert!(
            checked > 100,
            "the grid exercised non-empty scans ({checked})"
        );
    }

    /// The crash contract over the memory disk: synced writes (and everything before them)
    /// survive a crash; unsynced and unlogged ones do not.
    #[test]
    fn a_crash_keeps_exactly_the_synced_prefix() {
        let disk = MemDisk::new();
        let db = Db::memory(disk.clone(), CFS);
        let put = |key: &[u8], sync: bool| {
            let mut b = Batch::new();
            b.put("a", key, b"v");
            db.write(b, sync).expect("write");
        };
        put(b"1", false);
        put(b"2", true);
        put(b"3", false);
        let mut b = Batch::new();
        b.put("a", b"4", b"v");
        db.write_unlogged(b).expect("write");
        disk.sync();
        put(b"5", false);
        disk.crash();
        let db = Db::memory(disk, CFS);
        let keys: Vec<Vec<u8>> = db
            .scan("a", Bound::Unbounded, Bound::Unbounded, false, usize::MAX)
            .expect("scan")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
    }

    #[test]
    #[should_panic(expected = "unknown column family")]
    fn an_unknown_column_family_is_a_bug() {
        let db = Db::memory(MemDisk::new(), CFS);
        let _ = db.get("nope", b"k");
    }
}
