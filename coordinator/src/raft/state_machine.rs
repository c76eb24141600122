//! The Raft state machine: applies committed entries to [`State`] (pure logic in
//! `crate::state`), keeps it in memory for reads, persists exactly the rows each apply changed,
//! hands the node's 2PC driver what changed (the apply feed, [`crate::txn::runtime::ApplyFeed`]),
//! and builds and installs snapshots.

use std::io::Cursor;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use prost::Message;
use ratify_proto::pb::raft as pbr;
use ratify_proto::raft as wire;
use ratify_proto::types::{ParticipantId, TxnId};
use serde::{Deserialize, Serialize};

use super::TypeConfig;
use super::store::{Batch, CF_SM, CF_SNAPSHOT, Db, StoreError, corrupt, decode};
use crate::state::{ApplyRules, Change, CommandReply, DecisionRecord, Effect, Registration, State};
use crate::txn::runtime::ApplyFeed;

type Entry = openraft::Entry<TypeConfig>;
type StorageResult<T> = Result<T, StorageError<u64>>;

const PREFIX_DECIDED: u8 = b'd';
const PREFIX_COMPLETED: u8 = b'c';
const PREFIX_PARTICIPANT: u8 = b'p';
const KEY_LAST_APPLIED: &[u8] = b"m:last_applied";
const KEY_MEMBERSHIP: &[u8] = b"m:membership";
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// Version of the snapshot data format (JSON of [`SnapshotFile`]).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// The snapshot's data: the whole replicated state. Membership and the last applied log id
/// travel in the snapshot's metadata.
#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// [`SNAPSHOT_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// The state at the snapshot's last log id.
    pub state: State,
}

/// What has been applied: the state, the last applied log id and the last membership.
#[derive(Debug, Default)]
pub struct Applied {
    /// The replicated state.
    pub state: State,
    /// The last applied entry.
    pub last_applied: Option<LogId<u64>>,
    /// The last applied membership.
    pub membership: StoredMembership<u64, BasicNode>,
}

/// A read-only view of the applied state, for servers. Reads are local: they may lag the
/// leader (use a read-index check first where linearizability matters).
#[derive(Clone)]
pub struct StateView(Arc<RwLock<Applied>>);

impl StateView {
    /// Read the applied state. Hold the guard briefly: apply waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, Applied> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The state machine store. Clones share the state.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<Db>,
    applied: Arc<RwLock<Applied>>,
    feed: Option<ApplyFeed>,
    rules: ApplyRules,
}

fn txn_key(prefix: u8, id: &TxnId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(&id.to_bytes());
    k
}

fn participant_key(id: &ParticipantId) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.as_str().len());
    k.push(PREFIX_PARTICIPANT);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("state rows are plain data and always serialize")
}

impl StateMachineStore {
    /// Load the applied state from `db`.
    pub fn open(db: Arc<Db>) -> Result<Self, StoreError> {
        let applied = load(&db)?;
        Ok(Self {
            db,
            applied: Arc::new(RwLock::new(applied)),
            feed: None,
            rules: ApplyRules::default(),
        })
    }

    /// Hand every apply's [`Effect`]s to `feed` (the node's 2PC driver), and apply under
    /// `rules`.
    pub fn with_feed(mut self, feed: ApplyFeed, rules: ApplyRules) -> Self {
        self.feed = Some(feed);
        self.rules = rules;
        self
    }

    /// A read-only view for servers.
    pub fn view(&self) -> StateView {
        StateView(self.applied.clone())
    }

    fn write_applied(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.applied
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn save_snapshot(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(
            CF_SNAPSHOT,
            KEY_SNAPSHOT_META,
            wire::snapshot_meta_to_wire(meta).encode_to_vec(),
        );
        batch.put(CF_SNAPSHOT, KEY_SNAPSHOT_DATA, data);
        self.db.write(batch, true)
    }
}

fn load(db: &Db) -> Result<Applied, StoreError> {
    let mut applied = Applied::default();
    let rows = db.scan(CF_SM, Bound::Unbounded, Bound::Unbounded, false, usize::MAX)?;
    for (key, value) in rows {
        match key.first() {
            Some(&PREFIX_DECIDED) | Some(&PREFIX_COMPLETED) => {
                let bytes: [u8; 16] = key[1..]
                    .try_into()
                    .map_err(|_| corrupt("state row key", "transaction id is not 16 bytes"))?;
                let id = TxnId::from_bytes(bytes).map_err(|e| corrupt("state row key", e))?;
                let record: DecisionRecord =
                    serde_json::from_slice(&value).map_err(|e| corrupt("decision record", e))?;
                if key[0] == PREFIX_DECIDED {
                    applied.state.decided.insert(id, record);
                } else {
                    applied.state.completed.insert(id, record);
                }
            }
            Some(&PREFIX_PARTICIPANT) => {
                let name =
                    std::str::from_utf8(&key[1..]).map_err(|e| corrupt("participant key", e))?;
                let id = ParticipantId::new(name).map_err(|e| corrupt("participant key", e))?;
                let reg: Registration =
                    serde_json::from_slice(&value).map_err(|e| corrupt("registration", e))?;
                applied.state.participants.insert(id, reg);
            }
            _ if key == KEY_LAST_APPLIED => {
                let w: pbr::LogId = decode("last applied", &value)?;
                applied.last_applied = Some(
                    wire::log_id_from_wire("last_applied", w)
                        .map_err(|e| corrupt("last applied", e))?,
                );
            }
            _ if key == KEY_MEMBERSHIP => {
                let w: pbr::StoredMembership = decode("membership", &value)?;
                applied.membership = wire::stored_membership_from_wire("membership", w)
                    .map_err(|e| corrupt("membership", e))?;
            }
            _ => {
                return Err(corrupt(
                    "state row",
                    format!("unknown key {:?}", String::from_utf8_lossy(&key)),
                ));
            }
        }
    }
    applied.state.check_invariants();
    Ok(applied)
}

/// Write the rows `changes` names, as they are now in `state`, into `batch`.
/// What one applied command did that the driver acts on.
fn effects_of(state: &State, reply: &CommandReply, changes: &[Change], out: &mut Vec<Effect>) {
    if let CommandReply::Decided(applied) = reply {
        out.extend(applied.iter().cloned().map(Effect::Decided));
    }
    for change in changes {
        if let Change::Participant(participant) = change
            && let Some(r) = state.participants.get(participant)
        {
            out.push(Effect::Registered {
                participant: participant.clone(),
                endpoint: r.endpoint.clone(),
            });
        }
    }
}

fn stage_changes(batch: &mut Batch, state: &State, changes: &[Change]) {
    let cf = CF_SM;
    for change in changes {
        match change {
            Change::Decided(id) => match state.decided.get(id) {
                Some(r) => batch.put(cf, txn_key(PREFIX_DECIDED, id), json(r)),
                None => batch.delete(cf, txn_key(PREFIX_DECIDED, id)),
            },
            Change::DecidedRemoved(id) => batch.delete(cf, txn_key(PREFIX_DECIDED, id)),
            Change::Completed(id) => match state.completed.get(id) {
                Some(r) => batch.put(cf, txn_key(PREFIX_COMPLETED, id), json(r)),
                None => batch.delete(cf, txn_key(PREFIX_COMPLETED, id)),
            },
            Change::CompletedRemoved(id) => batch.delete(cf, txn_key(PREFIX_COMPLETED, id)),
            Change::Participant(id) => match state.participants.get(id) {
                Some(r) => batch.put(cf, participant_key(id), json(r)),
                None => batch.delete(cf, participant_key(id)),
            },
        }
    }
}

fn stage_meta(batch: &mut Batch, applied: &Applied) {
    let cf = CF_SM;
    if let Some(id) = &applied.last_applied {
        batch.put(
            cf,
            KEY_LAST_APPLIED,
            wire::log_id_to_wire(id).encode_to_vec(),
        );
    }
    batch.put(
        cf,
        KEY_MEMBERSHIP,
        wire::stored_membership_to_wire(&applied.membership).encode_to_vec(),
    );
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_state_machine(&e).into()
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::read_state_machine(&e).into()
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>)> {
        let a = self.view();
        let a = a.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandReply>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut replies = Vec::new();
        let mut changes = Vec::new();
        let mut effects = Vec::new();
        let wanted = self.feed.as_ref().is_some_and(ApplyFeed::wanted);
        let mut batch = Batch::new();
        {
            let mut applied = self.write_applied();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let reply = match entry.payload {
                    EntryPayload::Blank => CommandReply::Done,
                    EntryPayload::Normal(cmd) => {
                        let from = changes.len();
                        let reply = applied.state.apply_with(self.rules, &cmd, &mut changes);
                        if wanted {
                            effects_of(&applied.state, &reply, &changes[from..], &mut effects);
                        }
                        reply
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        CommandReply::Done
                    }
                };
                replies.push(reply);
            }
            stage_changes(&mut batch, &applied.state, &changes);
            stage_meta(&mut batch, &applied);
        }
        // Not synced here: the entries are durable in the log, and apply is re-run from the log
        // after a crash (see `store`).
        self.db.write(batch, false).map_err(sm_write_err)?;
        if let Some(feed) = &self.feed
            && !effects.is_empty()
        {
            // Waits while the driver is behind (bounded).
            feed.send(effects).await;
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            store: self.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let file: SnapshotFile = serde_json::from_slice(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(Some(meta.signature()), &e))
        })?;
        if file.format_version != SNAPSHOT_FORMAT_VERSION {
            let e = corrupt(
                "snapshot",
                format!(
                    "format version {} is not {SNAPSHOT_FORMAT_VERSION}",
                    file.format_version
                ),
            );
            return Err(StorageIOError::read_snapshot(Some(meta.signature()), &e).into());
        }
        file.state.check_invariants();
        let installed = Applied {
            state: file.state,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        // Replace every state row in one batch, synced, with the snapshot itself.
        let mut batch = Batch::new();
        batch.delete_range(CF_SM, [0u8].as_slice(), [0xffu8; 32].as_slice());
        let mut changes: Vec<Change> = Vec::new();
        changes.extend(
            installed
                .state
                .decided
                .keys()
                .map(|id| Change::Decided(*id)),
        );
        changes.extend(
            installed
                .state
                .completed
                .keys()
                .map(|id| Change::Completed(*id)),
        );
        changes.extend(
            installed
                .state
                .participants
                .keys()
                .cloned()
                .map(Change::Participant),
        );
        stage_changes(&mut batch, &installed.state, &changes);
        stage_meta(&mut batch, &installed);
        batch.put(
            CF_SNAPSHOT,
            KEY_SNAPSHOT_META,
            wire::snapshot_meta_to_wire(meta).encode_to_vec(),
        );
        batch.put(CF_SNAPSHOT, KEY_SNAPSHOT_DATA, &data);
        self.db.write(batch, true).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &e))
        })?;
        *self.write_applied() = installed;
        tracing::info!(last_log_id = ?meta.last_log_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let Some(meta_bytes) = self
            .db
            .get(CF_SNAPSHOT, KEY_SNAPSHOT_META)
            .map_err(sm_read_err)?
        else {
            return Ok(None);
        };
        let w: pbr::SnapshotMeta = decode("snapshot meta", &meta_bytes).map_err(sm_read_err)?;
        let meta = wire::snapshot_meta_from_wire("snapshot meta", w)
            .map_err(|e| sm_read_err(corrupt("snapshot meta", e)))?;
        let data = self
            .db
            .get(CF_SNAPSHOT, KEY_SNAPSHOT_DATA)
            .map_err(sm_read_err)?
            .ok_or_else(|| sm_read_err(corrupt("snapshot", "metadata without data")))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// Builds a snapshot of the applied state.
pub struct SnapshotBuilder {
    store: StateMachineStore,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (file, last_applied, membership) = {
            let view = self.store.view();
            let a = view.read();
            (
                SnapshotFile {
                    format_version: SNAPSHOT_FORMAT_VERSION,
                    state: a.state.clone(),
                },
                a.last_applied,
                a.membership.clone(),
            )
        };
        // Make the state rows durable before the log behind them may be purged.
        self.store.db.sync_wal().map_err(sm_write_err)?;
        let data = json(&file);
        let snapshot_id = match last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.store.save_snapshot(&meta, &data).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(Some(meta.signature()), &e))
        })?;
        tracing::info!(last_log_id = ?meta.last_log_id, bytes = data.len(), "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Membership};
    use ratify_proto::types::command::{Command, CommandKind, DecideItem};
    use ratify_proto::types::{DecisionSource, Endpoint, FinalDecision};
    use ratify_storage::MemDisk;

    use super::*;

    fn log_id(index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn txn(n: u8) -> TxnId {
        let mut b = [0u8; 16];
        b[0] = 1;
        b[15] = n;
        TxnId::from_bytes(b).expect("non-nil")
    }

    fn p(s: &str) -> ParticipantId {
        ParticipantId::new(s).expect("valid")
    }

    fn normal(index: u64, kind: CommandKind) -> Entry {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Command {
                proposed_at_unix_ms: 1_000 + index,
                kind,
            }),
        }
    }

    fn register(index: u64, name: &str) -> Entry {
        normal(
            index,
            CommandKind::RegisterParticipant {
                participant: p(name),
                endpoint: Endpoint::new(format!("http://{name}:1")).expect("valid"),
            },
        )
    }

    fn decide(index: u64, id: TxnId) -> Entry {
        normal(
            index,
            CommandKind::Decide(vec![DecideItem {
                txn_id: id,
                decision: FinalDecision::Commit,
                source: DecisionSource::Commit,
                participants: vec![p("a"), p("b")],
            }]),
        )
    }

    fn membership(index: u64) -> Entry {
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Membership(Membership::new(vec![[1, 2, 3].into()], None)),
        }
    }

    fn open(disk: &Arc<MemDisk>) -> StateMachineStore {
        StateMachineStore::open(crate::raft::store::memory(disk.clone()))
            .expect("open the state machine")
    }

    fn snapshot_of(s: &Snapshot<TypeConfig>) -> (SnapshotMeta<u64, BasicNode>, Vec<u8>) {
        (s.meta.clone(), s.snapshot.get_ref().clone())
    }

    #[tokio::test]
    async fn a_snapshot_and_the_rows_behind_it_survive_a_crash_over_the_memory_disk() {
        let disk = MemDisk::new();
        let mut sm = open(&disk);
        assert!(sm.get_current_snapshot().await.expect("read").is_none());
        sm.apply([
            membership(1),
            register(2, "a"),
            register(3, "b"),
            decide(4, txn(1)),
        ])
        .await
        .expect("apply");
        let built = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build a snapshot");
        assert_eq!(built.meta.last_log_id, Some(log_id(4)));
        let state_at_snapshot = sm.view().read().state.clone();
        assert_eq!(state_at_snapshot.participants.len(), 2);
        assert_eq!(state_at_snapshot.decided.len(), 1);
        // Applied after the snapshot and never synced: lost in the crash (the log re-applies it).
        sm.apply([decide(5, txn(2))]).await.expect("apply");
        assert_eq!(sm.view().read().state.decided.len(), 2);
        disk.crash();

        let mut sm = open(&disk);
        let current = sm
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("the snapshot survived");
        assert_eq!(snapshot_of(&current), snapshot_of(&built));
        let (last_applied, members) = sm.applied_state().await.expect("applied state");
        assert_eq!(last_applied, Some(log_id(4)));
        assert_eq!(members.log_id(), &Some(log_id(1)));
        assert_eq!(sm.view().read().state, state_at_snapshot);

        // The snapshot installs on another node's disk, durably, replacing its rows.
        let disk2 = MemDisk::new();
        let mut other = open(&disk2);
        other
            .apply([register(1, "stale"), decide(2, txn(9))])
            .await
            .expect("apply");
        other
            .install_snapshot(&current.meta, current.snapshot)
            .await
            .expect("install");
        disk2.crash();
        let mut other = open(&disk2);
        assert_eq!(other.view().read().state, state_at_snapshot);
        assert_eq!(
            other.applied_state().await.expect("applied").0,
            Some(log_id(4))
        );
        let installed = other
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("the installed snapshot survived");
        assert_eq!(snapshot_of(&installed), snapshot_of(&built));
    }
}
