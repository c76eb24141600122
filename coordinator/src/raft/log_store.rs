//! The Raft log and vote in the node's database.
//!
//! A log entry is durable before openraft is told it is (docs/protocol.md rule R1): `append`
//! writes the entries to the database at once (so readers see them), then hands the completion
//! callback to the database's group-commit syncer (`ratify_storage::Syncer`: a thread over
//! RocksDB, a task over the simulation's memory disk), which fsyncs the write-ahead log once
//! for every callback queued so far and only then reports them flushed. Votes are written with
//! a synced write before `save_vote` returns.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use prost::Message;
use ratify_proto::pb::raft as pbr;
use ratify_proto::raft as wire;
use ratify_storage::Syncer;

use super::TypeConfig;
use super::store::{Batch, CF_LOG, CF_META, Db, StoreError, corrupt, decode};

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

/// The log store. Cheap to clone; clones share the database and the syncer (which stops when
/// the last clone is dropped).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Db>,
    syncer: Arc<Syncer>,
}

impl LogStore {
    /// A log store over `db`, with its group-commit syncer. Over the memory engine, use it
    /// inside a tokio runtime (the syncer is a task there).
    pub fn new(db: Arc<Db>) -> Result<Self, StoreError> {
        let syncer = Syncer::start(db.clone(), "raft-log-sync", |result| {
            if let Err(e) = result {
                tracing::error!(error = %e, "raft log fsync failed; the node will stop accepting writes");
            }
        })?;
        Ok(Self {
            db,
            syncer: Arc::new(syncer),
        })
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
        let last = self
            .db
            .scan(CF_LOG, Bound::Unbounded, Bound::Unbounded, true, 1)?;
        match last.first() {
            None => Ok(None),
            Some((_, value)) => Ok(Some(decode_entry(value)?.log_id)),
        }
    }

    /// The entries with indexes within (`start`, `end`), in order.
    fn entries(&self, start: Bound<u64>, end: Bound<u64>) -> Result<Vec<Entry>, StoreError> {
        let (from, to) = (start.map(index_key), end.map(index_key));
        let rows = self.db.scan(
            CF_LOG,
            from.as_ref().map(|k| k.as_slice()),
            to.as_ref().map(|k| k.as_slice()),
            false,
            usize::MAX,
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (key, value) in rows {
            if key.len() != 8 {
                return Err(corrupt("log key", "not 8 bytes"));
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

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry>> {
        self.entries(range.start_bound().cloned(), range.end_bound().cloned())
            .map_err(read_err)
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
        let mut batch = Batch::new();
        batch.put(CF_META, KEY_VOTE, wire::vote_to_wire(vote).encode_to_vec());
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
        let mut batch = Batch::new();
        match committed {
            Some(id) => batch.put(
                CF_META,
                KEY_COMMITTED,
                wire::log_id_to_wire(&id).encode_to_vec(),
            ),
            None => batch.delete(CF_META, KEY_COMMITTED),
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
        let mut batch = Batch::new();
        for entry in entries {
            batch.put(
                CF_LOG,
                index_key(entry.log_id.index),
                wire::entry_to_wire(&entry).encode_to_vec(),
            );
        }
        self.db.write(batch, false).map_err(write_err)?;
        // Durable only after the syncer's fsync; it reports to openraft then.
        self.syncer
            .enqueue(Box::new(move |result| {
                callback.log_io_completed(result.map_err(io::Error::other));
            }))
            .await
            .map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Remove [log_id.index, ∞): conflicting entries from a deposed leader.
        let mut batch = Batch::new();
        batch.delete_range(CF_LOG, index_key(log_id.index), index_key(u64::MAX));
        batch.delete(CF_LOG, index_key(u64::MAX));
        self.db.write(batch, false).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> StorageResult<()> {
        // Remove [0, log_id.index] and remember the last purged id, in one batch.
        let mut batch = Batch::new();
        batch.put(
            CF_META,
            KEY_PURGED,
            wire::log_id_to_wire(&log_id).encode_to_vec(),
        );
        batch.delete_range(
            CF_LOG,
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

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload, Membership};
    use ratify_proto::types::command::{Command, CommandKind};
    use ratify_proto::types::{Endpoint, ParticipantId};
    use ratify_storage::MemDisk;

    use super::*;

    fn log_id(term: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    /// A blank, a membership or a normal entry, by index, so payloads vary.
    fn entry(term: u64, index: u64) -> Entry {
        let payload = match index % 3 {
            0 => EntryPayload::Blank,
            1 => EntryPayload::Membership(Membership::new(vec![[1, 2, 3].into()], None)),
            _ => EntryPayload::Normal(Command {
                proposed_at_unix_ms: index,
                kind: CommandKind::RegisterParticipant {
                    participant: ParticipantId::new(format!("p{index}")).expect("valid"),
                    endpoint: Endpoint::new(format!("http://p{index}:1")).expect("valid"),
                },
            }),
        };
        Entry {
            log_id: log_id(term, index),
            payload,
        }
    }

    fn reopen(disk: &Arc<MemDisk>) -> LogStore {
        LogStore::new(crate::raft::store::memory(disk.clone())).expect("a memory log store")
    }

    /// (index, term) of each entry; openraft's Entry has no PartialEq, so payloads are
    /// compared through their (complete) Debug output.
    async fn read_all(store: &mut LogStore) -> Vec<(u64, u64)> {
        let got = store.try_get_log_entries(..).await.expect("read the log");
        got.iter()
            .map(|e| (e.log_id.index, e.log_id.leader_id.term))
            .collect()
    }

    async fn state(store: &mut LogStore) -> (Option<LogId<u64>>, Option<LogId<u64>>) {
        let s = store.get_log_state().await.expect("log state");
        (s.last_purged_log_id, s.last_log_id)
    }

    #[tokio::test]
    async fn acknowledged_appends_survive_a_crash_over_the_memory_disk() {
        let disk = MemDisk::new();
        let mut store = reopen(&disk);
        assert_eq!(state(&mut store).await, (None, None));
        assert_eq!(store.read_vote().await.expect("vote"), None);

        store.save_vote(&Vote::new(1, 1)).await.expect("save vote");
        store
            .blocking_append((1..=5).map(|i| entry(1, i)))
            .await
            .expect("append");
        // Not synced by itself: lost in the crash below.
        store
            .save_committed(Some(log_id(1, 3)))
            .await
            .expect("save committed");
        disk.crash();

        let mut store = reopen(&disk);
        assert_eq!(state(&mut store).await, (None, Some(log_id(1, 5))));
        assert_eq!(
            store.read_vote().await.expect("vote"),
            Some(Vote::new(1, 1))
        );
        assert_eq!(store.read_committed().await.expect("committed"), None);
        let got = store.try_get_log_entries(1..=5).await.expect("entries");
        assert_eq!(
            format!("{got:?}"),
            format!("{:?}", (1..=5).map(|i| entry(1, i)).collect::<Vec<_>>())
        );
        // Ranges of every bound kind, including ones that would overflow as index + 1.
        let ids = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        assert_eq!(
            ids(store.try_get_log_entries(2..4).await.expect("r")),
            [2, 3]
        );
        assert_eq!(
            ids(store
                .try_get_log_entries((Bound::Excluded(1), Bound::Included(3)))
                .await
                .expect("r")),
            [2, 3]
        );
        assert_eq!(
            ids(store.try_get_log_entries(4..=u64::MAX).await.expect("r")),
            [4, 5]
        );
        assert!(
            ids(store
                .try_get_log_entries((Bound::Excluded(u64::MAX), Bound::Unbounded))
                .await
                .expect("r"))
            .is_empty()
        );
        assert!(ids(store.try_get_log_entries(6..).await.expect("r")).is_empty());

        // A deposed leader's entries are truncated and replaced; the replacing (synced) append
        // makes the truncation durable too.
        store.truncate(log_id(1, 4)).await.expect("truncate");
        assert_eq!(state(&mut store).await, (None, Some(log_id(1, 3))));
        store.blocking_append([entry(2, 4)]).await.expect("append");
        disk.crash();

        let mut store = reopen(&disk);
        assert_eq!(read_all(&mut store).await, [(1, 1), (2, 1), (3, 1), (4, 2)]);
        assert_eq!(state(&mut store).await, (None, Some(log_id(2, 4))));

        // Purge behind a snapshot; the next synced write (a vote) makes it durable.
        store.purge(log_id(1, 2)).await.expect("purge");
        store.save_vote(&Vote::new(2, 1)).await.expect("save vote");
        disk.crash();

        let mut store = reopen(&disk);
        assert_eq!(read_all(&mut store).await, [(3, 1), (4, 2)]);
        assert_eq!(
            state(&mut store).await,
            (Some(log_id(1, 2)), Some(log_id(2, 4)))
        );
        assert_eq!(
            store.read_vote().await.expect("vote"),
            Some(Vote::new(2, 1))
        );

        // Everything purged: the last log id is the last purged one.
        store.purge(log_id(2, 4)).await.expect("purge");
        store.db.sync_wal().expect("sync");
        disk.crash();
        let mut store = reopen(&disk);
        assert!(read_all(&mut store).await.is_empty());
        assert_eq!(
            state(&mut store).await,
            (Some(log_id(2, 4)), Some(log_id(2, 4)))
        );
    }
}
