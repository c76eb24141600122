//! The Raft log and vote in RocksDB.
//!
//! A log entry is durable before openraft is told it is (docs/protocol.md rule R1): `append`
//! writes the entries to RocksDB at once (so readers see them), then hands the completion
//! callback to a sync thread, which fsyncs the write-ahead log once for every callback queued
//! so far (group commit) and only then reports them flushed. Votes are written with a synced
//! write before `save_vote` returns.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use prost::Message;
use ratify_proto::pb::raft as pbr;
use ratify_proto::raft as wire;
use rocksdb::{Direction, IteratorMode, WriteBatch};
use tokio::sync::mpsc;

use super::TypeConfig;
use super::store::{CF_LOG, CF_META, Db, StoreError, corrupt, decode};
use crate::limits;

type Entry = openraft::Entry<TypeConfig>;
type StorageResult<T> = Result<T, StorageError<u64>>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_logs(&e).into()
}

/// The log store. Cheap to clone; clones share the database and the sync thread.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
    sync_tx: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// A log store over `db`, with its sync thread. The thread ends when the last clone is
    /// dropped.
    pub fn new(db: Arc<Db>) -> io::Result<Self> {
        let (sync_tx, sync_rx) = mpsc::channel(limits::LOG_SYNC_QUEUE_MAX);
        let thread_db = db.clone();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(&thread_db, sync_rx))?;
        Ok(Self { db, sync_tx })
    }

    fn read_meta_log_id(&self, key: &[u8]) -> Result<Option<LogId<u64>>, StoreError> {
        let Some(bytes) = self.db.get(CF_META, key)? else {
            return Ok(None);
        };
        let what = String::from_utf8_lossy(key).into_owned();
        let w: pbr::LogId = decode(&what, &bytes)?;
        wire::log_id_from_wire(&what, w)
            .map(Some)
            .map_err(|e| corrupt(&what, e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId<u64>>, StoreError> {
        let cf = self.db.cf(CF_LOG);
        let mut it = self.db.raw().iterator_cf(cf, IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item?;
                Ok(Some(decode_entry(&value)?.log_id))
            }
        }
    }

    fn entries(&self, start: u64, end_exclusive: Option<u64>) -> Result<Vec<Entry>, StoreError> {
        let cf = self.db.cf(CF_LOG);
        let from = index_key(start);
        let mut out = Vec::new();
        for item in self
            .db
            .raw()
            .iterator_cf(cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item?;
            let index = u64::from_be_bytes(
                key.as_ref()
                    .try_into()
                    .map_err(|_| corrupt("log key", "not 8 bytes"))?,
            );
            if end_exclusive.is_some_and(|end| index >= end) {
                break;
            }
            out.push(decode_entry(&value)?);
        }
        Ok(out)
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    let w: pbr::Entry = decode("log entry", bytes)?;
    wire::entry_from_wire::<TypeConfig>("log entry", w).map_err(|e| corrupt("log entry", e))
}

/// Group commit: wait for one callback, take every other one already queued (bounded), fsync
/// once, report all.
fn sync_loop(db: &Db, mut rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    let mut batch = Vec::with_capacity(64);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < limits::LOG_SYNC_BATCH_MAX {
            match rx.try_recv() {
                Ok(cb) => batch.push(cb),
                Err(_) => break,
            }
        }
        let result = db.sync_wal();
        if let Err(e) = &result {
            tracing::error!(error = %e, "raft log fsync failed; the node will stop accepting writes");
        }
        for cb in batch.drain(..) {
            cb.log_io_completed(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::other(e.to_string())),
            });
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Some(i + 1),
            Bound::Excluded(&i) => Some(i),
            Bound::Unbounded => None,
        };
        self.entries(start, end).map_err(read_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.read_meta_log_id(KEY_PURGED).map_err(read_err)?;
        let last_log_id = self
            .last_entry_log_id()
            .map_err(read_err)?
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> StorageResult<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_META),
            KEY_VOTE,
            wire::vote_to_wire(vote).encode_to_vec(),
        );
        // A vote must survive a crash before the node acts on it.
        self.db
            .write(batch, true)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<u64>>> {
        let Some(bytes) = self
            .db
            .get(CF_META, KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e))?
        else {
            return Ok(None);
        };
        let w: pbr::RaftVote = decode("vote", &bytes).map_err(|e| StorageIOError::read_vote(&e))?;
        wire::vote_from_wire("vote", Some(w))
            .map(Some)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> StorageResult<()> {
        // Not synced: it only lets a restarted node re-apply sooner; losing it is harmless.
        let mut batch = WriteBatch::default();
        match committed {
            Some(id) => batch.put_cf(
                self.db.cf(CF_META),
                KEY_COMMITTED,
                wire::log_id_to_wire(&id).encode_to_vec(),
            ),
            None => batch.delete_cf(self.db.cf(CF_META), KEY_COMMITTED),
        }
        self.db.write(batch, false).map_err(write_err)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<u64>>> {
        self.read_meta_log_id(KEY_COMMITTED).map_err(read_err)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put_cf(
                cf,
                index_key(entry.log_id.index),
                wire::entry_to_wire(&entry).encode_to_vec(),
            );
        }
        self.db.write(batch, false).map_err(write_err)?;
        // Durable only after the sync thread's fsync; it reports to openraft then.
        self.sync_tx
            .send(callback)
            .await
            .map_err(|_| write_err(io::Error::other("the raft log sync thread has stopped")))
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Remove [log_id.index, ∞): conflicting entries from a deposed leader.
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            index_key(log_id.index),
            index_key(u64::MAX),
        );
        batch.delete_cf(self.db.cf(CF_LOG), index_key(u64::MAX));
        self.db.write(batch, false).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Remove [0, log_id.index] and remember the last purged id, in one batch.
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_META),
            KEY_PURGED,
            wire::log_id_to_wire(&log_id).encode_to_vec(),
        );
        batch.delete_range_cf(
            self.db.cf(CF_LOG),
            index_key(0),
            index_key(log_id.index.saturating_add(1)),
        );
        self.db.write(batch, false).map_err(write_err)
    }
}

/// The last committed index openraft saved on this node (it lags the leader's slightly).
pub fn read_committed_index(db: &Db) -> Result<Option<u64>, StoreError> {
    let Some(bytes) = db.get(CF_META, KEY_COMMITTED)? else {
        return Ok(None);
    };
    let w: pbr::LogId = decode("committed", &bytes)?;
    Ok(Some(w.index))
}
