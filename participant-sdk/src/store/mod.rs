//! The RocksDB participant store (docs/protocol.md rules P1–P10).
//!
//! The same store runs over RocksDB ([`RocksStore::open`], production) or over the
//! deterministic simulation's in-memory disk ([`RocksStore::open_in_memory`]): every read and
//! write goes through `ratify-storage`'s engine and group-commit syncer, with the same column
//! families, keys and sync points on both (the crash semantics are documented there).
//!
//! Column families:
//!
//! | family     | key                  | value                                              |
//! |------------|----------------------|----------------------------------------------------|
//! | `data`     | the user's key       | `version u64 | value` (version counts this key's commits) |
//! | `prepared` | txn id (16 bytes)    | the transaction's writes (see [`codec`])           |
//! | `outcomes` | txn id (16 bytes)    | committed / aborted (tombstone) / read-only, and when |
//! | `meta`     | `opened`             | set at first open (a later open is a restart)      |
//!
//! Staged work lives in memory until Prepare (P4). Prepare, Commit and Abort each write one
//! batch and wait for a write-ahead-log fsync before answering (P2, P8); concurrent
//! transactions share fsyncs (group commit), which is where throughput comes from.

mod actions;
pub mod codec;
mod config;
pub mod locks;
mod slot;
mod txn;

use ratify_proto::planted::Bug;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: the system's in production, the simulated one under simulation.
use tokio::time::Instant;

use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome};
use ratify_proto::types::{NoReason, TxnId, Vote};
use ratify_storage::{Batch, Db, MemDisk, Syncer};

use self::actions::{Counter, Next, Now, OnFailure, Record, Rules, Step, Sync};
use self::codec::{Recorded, Writes};
pub use self::config::{StoreConfig, StoreStats};
pub use self::locks::LockPolicy;
use self::locks::LockTable;
use self::slot::{Doomed, Prepared, Slot, Staged, State};
pub use self::txn::Txn;
use crate::context::TxnContext;
use crate::error::{Error, EscapedKey, Result};
use crate::resource::{InDoubt, Resource};

const CF_DATA: &str = "data";
const CF_PREPARED: &str = "prepared";
const CF_OUTCOMES: &str = "outcomes";
const CF_META: &str = "meta";
const KEY_OPENED: &[u8] = b"opened";

/// Group commit's limits (`ratify-storage`'s syncer).
pub use ratify_storage::{SYNC_BATCH_MAX, SYNC_QUEUE_MAX};
/// Every column family, created at open.
const ALL_CFS: &[&str] = &[CF_DATA, CF_PREPARED, CF_OUTCOMES, CF_META];
/// How often `maintain` prunes outcomes past their retention.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Planted bug (e): where a committed transaction's writes are kept.
fn planted_key(txn_id: TxnId) -> Vec<u8> {
    let mut k = b"planted-applied/".to_vec();
    k.extend_from_slice(&txn_id.to_bytes());
    k
}

fn now_unix_ms() -> u64 {
    ratify_proto::hooks::now_unix_ms()
}

struct Inner {
    db: Arc<Db>,
    syncer: Syncer,
    /// The planted bug switched on, if any (selftest builds), read once at open.
    planted: Option<Bug>,
    locks: LockTable,
    config: StoreConfig,
    slots: Mutex<BTreeMap<TxnId, Arc<Slot>>>,
    /// Set when this open is a restart: transactions begun before it are refused.
    restarted_at_unix_ms: Option<u64>,
    stats: Arc<StoreStats>,
    last_prune: Mutex<Option<Instant>>,
}

/// The participant store (RocksDB in production; see [`RocksStore::open_in_memory`] for the
/// simulation's engine). Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct RocksStore {
    inner: Arc<Inner>,
}

impl RocksStore {
    /// Open (creating if missing) the store in `dir`, and recover: every transaction found
    /// prepared is reloaded, in doubt, with its keys locked (P3).
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Self> {
        config.validate()?;
        Self::start(Db::open(dir, ALL_CFS)?, config)
    }

    /// The same store logic over an in-memory disk: for the deterministic simulation and for
    /// tests; not durable across processes. Opening it again on the same `disk` (after
    /// [`MemDisk::crash`], say) is a restart and recovers exactly as [`RocksStore::open`] does:
    /// prepared transactions are reloaded, in doubt, with their keys locked (P3).
    ///
    /// Starts no OS thread and never blocks a thread: durable writes (Prepare, Commit, Abort)
    /// share syncs through a tokio task that takes simulated fsync time, so the store runs
    /// deterministically on one thread. Use it inside a tokio runtime.
    pub fn open_in_memory(disk: Arc<MemDisk>, config: StoreConfig) -> Result<Self> {
        config.validate()?;
        Self::start(Db::memory(disk, ALL_CFS), config)
    }

    /// Mark the first open, start the syncer, and recover.
    fn start(db: Arc<Db>, config: StoreConfig) -> Result<Self> {
        let restarted_at_unix_ms = {
            let opened_before = db.get(CF_META, KEY_OPENED)?.is_some();
            if !opened_before {
                let mut batch = Batch::new();
                batch.put(CF_META, KEY_OPENED, now_unix_ms().to_be_bytes());
                db.write(batch, true)?;
            }
            opened_before.then(now_unix_ms)
        };
        let stats = Arc::new(StoreStats::default());
        let counted = stats.clone();
        let syncer = Syncer::start(db.clone(), "ratify-store-sync", move |result| {
            counted.fsyncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = result {
                tracing::error!(error = %e, "participant store fsync failed");
            }
        })?;
        let store = Self {
            inner: Arc::new(Inner {
                db,
                syncer,
                planted: ratify_proto::planted::current(),
                locks: LockTable::new(),
                config,
                slots: Mutex::new(BTreeMap::new()),
                restarted_at_unix_ms,
                stats,
                last_prune: Mutex::new(None),
            }),
        };
        store.recover()?;
        Ok(store)
    }

    fn recover(&self) -> Result<()> {
        let mut slots = self.slots();
        self.inner.db.visit::<Error>(CF_PREPARED, &[], |key, value| {
            let txn_id = txn_from_key(key)?;
            let (writes, prepared_at_unix_ms) = codec::decode_prepared(value)?;
            let locked: BTreeSet<Vec<u8>> = writes.keys().cloned().collect();
            // Planted bug (g): the keys stay unlocked while the transaction is in doubt.
            let relock = self.inner.planted != Some(Bug::RecoveryWithoutLocks);
            relock
                .then(|| {
                    self.inner
                        .locks
                        .acquire_recovered(txn_id, locked.iter().cloned())
                })
                .transpose()
                .map_err(|c| Error::Corrupt {
                    what: "prepared records".into(),
                    why: format!(
                        "transactions {txn_id} and {} both prepared a write of {}",
                        c.holder,
                        EscapedKey(c.key)
                    ),
                })?;
            tracing::info!(%txn_id, keys = locked.len(), "recovered a prepared transaction; it is in doubt until resolved");
            slots.insert(
                txn_id,
                Slot::new(State::Prepared(Prepared {
                        writes,
                        locked,
                        prepared_at_unix_ms,
                    })),
            );
            Ok(ControlFlow::Continue(()))
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<TxnId, Arc<Slot>>> {
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, txn_id: TxnId) -> Option<Arc<Slot>> {
        self.slots().get(&txn_id).cloned()
    }

    /// Counters: fsyncs, prepares, commits, aborts.
    pub fn stats(&self) -> &StoreStats {
        &self.inner.stats
    }

    /// The store's limits.
    pub fn config(&self) -> &StoreConfig {
        &self.inner.config
    }

    /// Number of keys locked (for tests and metrics).
    pub fn locked_keys(&self) -> usize {
        self.inner.locks.len()
    }

    /// Lock requests waiting right now (P9).
    pub fn lock_waiters(&self) -> usize {
        self.inner.locks.waiting()
    }

    /// Transactions staged or prepared here.
    pub fn active_txns(&self) -> usize {
        self.slots().len()
    }

    /// The committed value of `key`, outside any transaction (no locks: a prepared transaction's
    /// writes are not visible until it commits).
    pub fn read_committed(&self, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        match self.inner.db.get(CF_DATA, key)? {
            None => Ok(None),
            Some(bytes) => {
                let (version, value) = codec::decode_value(&bytes)?;
                Ok(Some((version, value.to_vec())))
            }
        }
    }

    /// Committed rows whose key starts with `prefix`, in key order, at most `limit` (and the
    /// store's `scan_rows_max`), outside any transaction: no locks, prepared writes invisible.
    pub fn scan_committed(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = limit.min(self.inner.config.scan_rows_max);
        let mut out = Vec::new();
        self.inner
            .db
            .visit::<Error>(CF_DATA, prefix, |key, value| {
                if !key.starts_with(prefix) || out.len() >= limit {
                    return Ok(ControlFlow::Break(()));
                }
                out.push((key.to_vec(), codec::decode_value(value)?.1.to_vec()));
                Ok(ControlFlow::Continue(()))
            })?;
        Ok(out)
    }

    /// What this participant recorded about a finished transaction, if anything.
    pub fn recorded(&self, txn_id: TxnId) -> Result<Option<Recorded>> {
        match self.inner.db.get(CF_OUTCOMES, &txn_id.to_bytes())? {
            None => Ok(None),
            Some(bytes) => Ok(Some(codec::decode_outcome(&bytes)?.0)),
        }
    }

    /// Work inside a transaction: reads and writes under its locks. The first call for a
    /// transaction begins it here; later calls (from other requests of the same transaction)
    /// continue it. Refused for transactions prepared, finished or aborted here (P5), and after a
    /// restart for transactions that began before it (P4).
    pub fn txn(&self, ctx: &TxnContext) -> Result<Txn> {
        let txn_id = ctx.txn_id;
        if let Some(slot) = self.slot(txn_id) {
            let state = slot.state();
            return match &*state {
                State::Staged(s) => Ok(self.handle(txn_id, s.age)),
                other => Err(not_active(txn_id, other)),
            };
        }
        match self.recorded(txn_id)? {
            Some(Recorded::Aborted) => {
                return Err(Error::TxnAborted {
                    txn_id,
                    why: "it was aborted here earlier".into(),
                });
            }
            Some(Recorded::Committed) => {
                return Err(Error::TxnNotActive {
                    txn_id,
                    state: "committed",
                });
            }
            Some(Recorded::ReadOnly) => {
                return Err(Error::TxnNotActive {
                    txn_id,
                    state: "prepared (read-only)",
                });
            }
            None => {}
        }
        if let (Some(restarted), Some(created)) =
            (self.inner.restarted_at_unix_ms, txn_id.created_unix_ms())
        {
            let margin = self.inner.config.clock_skew_max.as_millis() as u64;
            if created < restarted.saturating_add(margin) {
                return Err(Error::TxnAborted {
                    txn_id,
                    why: "it began before this participant restarted, so work it staged here may be lost".into(),
                });
            }
        }
        if let Some(deadline) = ctx.deadline_unix_ms
            && deadline <= now_unix_ms()
        {
            return Err(Error::TxnAborted {
                txn_id,
                why: "its deadline has passed".into(),
            });
        }
        let mut slots = self.slots();
        let age = match slots.get(&txn_id) {
            // Begun by a concurrent first call meanwhile: its age stands.
            Some(slot) => match &*slot.state() {
                State::Staged(s) => s.age,
                other => return Err(not_active(txn_id, other)),
            },
            None => ctx.age(),
        };
        if !slots.contains_key(&txn_id) {
            let max = self.inner.config.concurrent_txns_max;
            if slots.len() >= max {
                let e = Error::LimitExceeded {
                    limit: "concurrent_txns_max",
                    max,
                    asked: slots.len() + 1,
                };
                drop(slots);
                // A later call could succeed and stage work: this one's failure dooms it (P10).
                self.doom_with(txn_id, NoReason::LimitExceeded, e.to_string(), false);
                return Err(e);
            }
            slots.insert(
                txn_id,
                Slot::new(State::Staged(Staged {
                    writes: Writes::new(),
                    locked: BTreeSet::new(),
                    bytes: 0,
                    started: Instant::now(),
                    age,
                    deadline_unix_ms: ctx.deadline_unix_ms,
                    rejected: None,
                })),
            );
        }
        Ok(self.handle(txn_id, age))
    }

    fn handle(&self, txn_id: TxnId, age: TxnId) -> Txn {
        Txn::new(self.clone(), txn_id, age)
    }

    /// Doom `txn_id` here (P10): it can no longer commit at this participant. A staged
    /// transaction loses its staged writes and releases its locks at once; later calls fail
    /// with [`Error::TxnAborted`] naming `why`, and Prepare votes NO (`reason`, `why`). The first
    /// failure is kept, except that a doom `by_call` (the service boundary, which names the
    /// call) replaces the message the store recorded for it. Too late for a transaction
    /// preparing, prepared or finished here: its vote stands (P1). A transaction not seen here
    /// yet gets a doomed slot (a tombstone when there is no room, P5). Returns whether the
    /// transaction was staged until now.
    fn doom_with(&self, txn_id: TxnId, reason: NoReason, why: String, by_call: bool) -> bool {
        let why = ratify_proto::types::truncate_utf8(&why, ratify_proto::types::MESSAGE_LEN_MAX)
            .to_owned();
        let Some(slot) = self.slot(txn_id) else {
            match self.recorded(txn_id) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    // Not seen yet (the call failed before touching the store): a doomed slot
                    // with the reason, so later calls are refused and Prepare says why; a
                    // tombstone (P5) when there is no room for one.
                    let mut slots = self.slots();
                    if slots.contains_key(&txn_id) {
                        drop(slots);
                        return self.doom_with(txn_id, reason, why, by_call);
                    }
                    if slots.len() < self.inner.config.concurrent_txns_max {
                        slots.insert(
                            txn_id,
                            Slot::new(State::Doomed(Doomed {
                                reason,
                                why,
                                by_call,
                                since: Instant::now(),
                                deadline_unix_ms: None,
                            })),
                        );
                    } else {
                        drop(slots);
                        if let Err(e) = self.write_outcome(txn_id, Recorded::Aborted, None, false) {
                            tracing::warn!(%txn_id, error = %e, "could not record a tombstone for a doomed transaction");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%txn_id, error = %e, "could not read a doomed transaction's record")
                }
            }
            return false;
        };
        let released = {
            let mut state = slot.state();
            match &mut *state {
                State::Staged(s) => {
                    let locked = std::mem::take(&mut s.locked);
                    let deadline_unix_ms = s.deadline_unix_ms;
                    // A transaction the service refused (`reject`) failed its validation
                    // first: that stays the reason; the failed call's message says the rest.
                    let reason = if s.rejected.is_some() {
                        NoReason::ValidationFailed
                    } else {
                        reason
                    };
                    *state = State::Doomed(Doomed {
                        reason,
                        why,
                        by_call,
                        since: Instant::now(),
                        deadline_unix_ms,
                    });
                    locked
                }
                State::Doomed(d) => {
                    // The call that failed names itself; the store's reason for the same
                    // failure (a conflict, say) is the more precise code, so it stays.
                    if by_call && !d.by_call {
                        d.why = why;
                        d.by_call = true;
                    }
                    return false;
                }
                State::Busy | State::Prepared(_) | State::Done => return false,
            }
        };
        tracing::debug!(%txn_id, "doomed: a call failed");
        self.inner
            .locks
            .release(txn_id, released.iter().map(Vec::as_slice));
        true
    }

    /// Abort, locally and without waiting for durability, every staged transaction older than
    /// the staged timeout or past its deadline (P4: safe, since none of them voted YES).
    /// Returns how many were aborted. The participant runtime calls this periodically.
    pub fn reap_expired(&self) -> usize {
        let now = Instant::now();
        let now_ms = now_unix_ms();
        let timeout = self.inner.config.staged_timeout;
        let expired: Vec<(TxnId, Arc<Slot>)> = self
            .slots()
            .iter()
            .filter(|(_, slot)| match &*slot.state() {
                State::Staged(s) => {
                    now.duration_since(s.started) > timeout
                        || s.deadline_unix_ms.is_some_and(|d| d < now_ms)
                }
                State::Doomed(d) => {
                    now.duration_since(d.since) > timeout
                        || d.deadline_unix_ms.is_some_and(|d| d < now_ms)
                }
                _ => false,
            })
            .map(|(id, slot)| (*id, slot.clone()))
            .collect();
        expired
            .into_iter()
            .filter(|(txn_id, slot)| self.abort_staged(*txn_id, slot, "staged work timed out"))
            .count()
    }

    /// Wound-wait (P9): doom `txn_id` here if it is still staged (it has not voted, so that is
    /// ours to do, P4), releasing its locks; its later calls are refused and its Prepare votes
    /// NO (`CONFLICT`). False if it is gone, doomed already, preparing or prepared.
    fn wound(&self, txn_id: TxnId, by: TxnId) -> bool {
        self.doom_with(
            txn_id,
            NoReason::Conflict,
            format!("wounded by the older transaction {by} (wound-wait)"),
            false,
        )
    }

    /// Abort a staged (or doomed) transaction locally: record the outcome (without waiting for
    /// durability: a restart refuses the transaction anyway, P4), then release its locks. If
    /// the outcome cannot be recorded, nothing changes (and false is returned): without the
    /// record, a later call could begin the transaction afresh here (P5).
    fn abort_staged(&self, txn_id: TxnId, slot: &Slot, why: &'static str) -> bool {
        // Skip a transaction whose Prepare/Abort is running right now.
        let Ok(_phase) = slot.phase.try_lock() else {
            return false;
        };
        if !matches!(&*slot.state(), State::Staged(_) | State::Doomed(_)) {
            return false;
        }
        if let Err(e) = self.write_outcome(txn_id, Recorded::Aborted, None, false) {
            tracing::warn!(%txn_id, error = %e, why, "could not record a local abort; the transaction stays staged");
            return false;
        }
        // Still staged or doomed: only Prepare and Abort change that (they hold the phase
        // lock), and a doom (staged to doomed, releasing the locks itself).
        let locked = {
            let mut state = slot.state();
            match std::mem::replace(&mut *state, State::Done) {
                State::Staged(s) => s.locked,
                State::Doomed(_) => BTreeSet::new(),
                other => {
                    *state = other;
                    return false;
                }
            }
        };
        tracing::debug!(%txn_id, why, "aborted locally");
        self.finish(txn_id, &locked);
        self.inner.stats.aborted.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Drop outcomes and tombstones past the retention or beyond the count limit, oldest
    /// transactions first. Returns how many were dropped.
    pub fn prune_outcomes(&self) -> Result<usize> {
        let engine = &self.inner.db;
        let cutoff =
            now_unix_ms().saturating_sub(self.inner.config.outcome_retention.as_millis() as u64);
        let total = engine.count(
            CF_OUTCOMES,
            self.inner.config.outcomes_max.saturating_add(1_000_000),
        )?;
        let mut excess = total.saturating_sub(self.inner.config.outcomes_max);
        let mut batch = Batch::new();
        let mut dropped = 0;
        // Keys are txn ids, UUIDv7: iteration goes from the oldest transactions.
        engine.visit::<Error>(CF_OUTCOMES, &[], |key, value| {
            let (_, at) = codec::decode_outcome(value)?;
            if excess == 0 && at >= cutoff {
                return Ok(ControlFlow::Break(()));
            }
            batch.delete(CF_OUTCOMES, key);
            excess = excess.saturating_sub(1);
            dropped += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        if dropped > 0 {
            engine.write(batch, false)?;
        }
        Ok(dropped)
    }

    fn write_outcome(
        &self,
        txn_id: TxnId,
        recorded: Recorded,
        batch: Option<Batch>,
        sync_now: bool,
    ) -> Result<()> {
        let mut batch = batch.unwrap_or_default();
        batch.put(
            CF_OUTCOMES,
            txn_id.to_bytes(),
            codec::encode_outcome(recorded, now_unix_ms()),
        );
        Ok(self.inner.db.write(batch, sync_now)?)
    }

    /// Remove the slot and release the locks.
    fn finish(&self, txn_id: TxnId, locked: &BTreeSet<Vec<u8>>) {
        self.slots().remove(&txn_id);
        self.inner
            .locks
            .finish(txn_id, locked.iter().map(Vec::as_slice));
    }

    /// Write `batch` and wait for it to be durable (shared fsync).
    async fn write_durable(&self, batch: Batch) -> Result<()> {
        self.inner.db.write(batch, false)?;
        Ok(self.inner.syncer.synced().await?)
    }

    fn now(&self) -> Now {
        Now {
            instant: Instant::now(),
            unix_ms: now_unix_ms(),
        }
    }

    fn rules(&self) -> Rules {
        Rules {
            staged_timeout: self.inner.config.staged_timeout,
            planted: self.inner.planted,
        }
    }

    /// The batch that applies `writes` to the data (each key's version + 1).
    fn apply_writes(&self, batch: &mut Batch, writes: &Writes) -> Result<()> {
        for (key, value) in writes {
            match value {
                None => batch.delete(CF_DATA, key),
                Some(v) => {
                    // The exclusive lock on `key` makes this read-modify-write safe.
                    let version = match self.inner.db.get(CF_DATA, key)? {
                        Some(old) => codec::decode_value(&old)?.0 + 1,
                        None => 1,
                    };
                    batch.put(CF_DATA, key, codec::encode_value(version, v));
                }
            }
        }
        Ok(())
    }

    /// Carry out an action's [`Step`]: the one place a 2PC action's rows are written, its
    /// state set, its locks released and its counters bumped (see [`actions`]).
    async fn run<A>(&self, txn_id: TxnId, slot: &Slot, step: Step<A>) -> Result<A> {
        let Step {
            mut batch,
            apply_writes,
            sync,
            held,
            next,
            on_failure,
            count,
            answer,
        } = step;
        if apply_writes
            && let Some(writes) = held.writes()
            && let Err(e) = self.apply_writes(&mut batch, writes)
        {
            *slot.state() = held;
            return Err(e);
        }
        let written = match sync {
            Sync::Nothing => Ok(()),
            Sync::Lazy => {
                if let Err(e) = self.inner.db.write(batch, false) {
                    tracing::warn!(%txn_id, error = %e, "could not record a tombstone or a read-only vote");
                }
                Ok(())
            }
            Sync::Durable => self.write_durable(batch).await,
            Sync::Unlogged => self.inner.db.write_unlogged(batch).map_err(Error::from),
        };
        if let Err(e) = written {
            match on_failure {
                // Not known durable: as before, so a retry finds it.
                OnFailure::Restore => *slot.state() = held,
                OnFailure::RestoreRefused => {
                    *slot.state() = match held {
                        State::Staged(mut s) => {
                            s.rejected = Some("a local abort failed".into());
                            State::Staged(s)
                        }
                        other => other,
                    }
                }
                OnFailure::AbortLocally => {
                    *slot.state() = State::Done;
                    let mut undo = Batch::new();
                    undo.delete(CF_PREPARED, txn_id.to_bytes());
                    let _ = self.write_outcome(txn_id, Recorded::Aborted, Some(undo), false);
                    self.finish(txn_id, held.locked().unwrap_or(&BTreeSet::new()));
                }
            }
            return Err(e);
        }
        match next {
            Next::Keep => *slot.state() = held,
            Next::Done => {
                *slot.state() = State::Done;
                self.finish(txn_id, held.locked().unwrap_or(&BTreeSet::new()));
            }
            Next::Prepared { at_unix_ms } => {
                let State::Staged(s) = held else {
                    return Err(Error::Corrupt {
                        what: "transaction state".into(),
                        why: format!("{txn_id}: only staged work prepares"),
                    });
                };
                *slot.state() = State::Prepared(Prepared {
                    writes: s.writes,
                    locked: s.locked,
                    prepared_at_unix_ms: at_unix_ms,
                });
                self.inner.locks.mark_prepared(txn_id);
            }
        }
        let stats = &self.inner.stats;
        match count {
            Some(Counter::Prepared) => stats.prepared.fetch_add(1, Ordering::Relaxed),
            Some(Counter::Committed) => stats.committed.fetch_add(1, Ordering::Relaxed),
            Some(Counter::Aborted) => stats.aborted.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        Ok(answer)
    }

    /// Carry out what a record-only answer writes.
    async fn record(&self, txn_id: TxnId, record: Record) -> Result<()> {
        match record {
            Record::Nothing => Ok(()),
            Record::Tombstone(Sync::Durable) => {
                let mut batch = Batch::new();
                batch.put(
                    CF_OUTCOMES,
                    txn_id.to_bytes(),
                    codec::encode_outcome(Recorded::Aborted, now_unix_ms()),
                );
                self.write_durable(batch).await
            }
            Record::Tombstone(_) => {
                if let Err(e) = self.write_outcome(txn_id, Recorded::Aborted, None, false) {
                    tracing::warn!(%txn_id, error = %e, "could not record a tombstone");
                }
                Ok(())
            }
            Record::ApplyKeptAgain => {
                // Planted bug (e): apply the kept writes again.
                if let Some(bytes) = self.inner.db.get(CF_META, &planted_key(txn_id))? {
                    let (writes, _) = codec::decode_prepared(&bytes)?;
                    let mut batch = Batch::new();
                    self.apply_writes(&mut batch, &writes)?;
                    self.inner.db.write(batch, false)?;
                }
                Ok(())
            }
        }
    }

    /// Prepare of a transaction with no slot (P5).
    async fn prepare_unknown(&self, txn_id: TxnId) -> Result<Vote> {
        let (vote, record) = actions::prepare_unknown(self.recorded(txn_id)?, &self.rules());
        self.record(txn_id, record).await?;
        Ok(vote)
    }

    /// Commit of a transaction with no slot, or a finished one (P7).
    async fn commit_finished(&self, txn_id: TxnId) -> Result<AckStatus> {
        let (ack, record) = actions::commit_finished(self.recorded(txn_id)?, &self.rules());
        match ack {
            AckStatus::ConflictingOutcome => {
                tracing::error!(%txn_id, "Commit for a transaction aborted here: the coordinator's decision conflicts with this participant's record")
            }
            AckStatus::NotPrepared => {
                tracing::error!(%txn_id, "Commit for a transaction never prepared here")
            }
            _ => {}
        }
        self.record(txn_id, record).await?;
        Ok(ack)
    }

    /// Abort of a transaction with no slot, or a finished one (P5, P7).
    async fn abort_finished(&self, txn_id: TxnId) -> Result<AckStatus> {
        let (ack, record) = actions::abort_finished(self.recorded(txn_id)?);
        if ack == AckStatus::ConflictingOutcome {
            // Expected for a one-participant transaction whose initiator gave up after its
            // one-phase commit (the coordinator then answers COMMITTED, C2); otherwise the
            // coordinator's decision conflicts with this participant's record.
            tracing::warn!(%txn_id, "Abort for a transaction committed here: answered ConflictingOutcome");
        }
        self.record(txn_id, record).await?;
        Ok(ack)
    }

    /// One-phase commit of a transaction with no slot, or a finished one (C2).
    async fn one_phase_unknown(&self, txn_id: TxnId) -> Result<OnePhaseOutcome> {
        let (outcome, record) = actions::one_phase_unknown(self.recorded(txn_id)?, &self.rules());
        self.record(txn_id, record).await?;
        Ok(outcome)
    }

    /// Commit of a slot held under its phase lock.
    async fn commit_slot(&self, txn_id: TxnId, slot: &Slot) -> Result<AckStatus> {
        let (state, done, prepared) = {
            let state = slot.state();
            (
                state.name(),
                matches!(*state, State::Done),
                matches!(*state, State::Prepared(_)),
            )
        };
        if done {
            return self.commit_finished(txn_id).await;
        }
        if !prepared {
            // Decided without taking the state out of the slot (a doom or wound meanwhile
            // must not find it busy).
            tracing::error!(%txn_id, state, "Commit for a transaction that is not prepared here");
            return Ok(AckStatus::NotPrepared);
        }
        let step = actions::commit(txn_id, slot.take(), self.now(), &self.rules());
        self.run(txn_id, slot, step).await
    }
}

impl Resource for RocksStore {
    fn staged_timeout(&self) -> Option<Duration> {
        Some(self.inner.config.staged_timeout)
    }

    async fn doom(&self, txn_id: TxnId, why: String) -> Result<()> {
        self.doom_with(txn_id, NoReason::CallFailed, why, true);
        Ok(())
    }

    async fn prepare(&self, txn_id: TxnId) -> Result<Vote> {
        let Some(slot) = self.slot(txn_id) else {
            return self.prepare_unknown(txn_id).await;
        };
        let _phase = slot.phase.lock().await;
        let (done, prepared) = {
            let state = slot.state();
            (
                matches!(*state, State::Done),
                matches!(*state, State::Prepared(_)),
            )
        };
        if done {
            return self.prepare_unknown(txn_id).await;
        }
        if prepared {
            // P6: a duplicate Prepare gets YES again (decided here, without taking the state
            // out of the slot, so a concurrent doom or wound never sees it busy).
            return Ok(Vote::Yes);
        }
        let step = actions::prepare(txn_id, slot.take(), self.now(), &self.rules());
        self.run(txn_id, &slot, step).await
    }

    async fn commit(&self, txn_id: TxnId) -> Result<AckStatus> {
        let Some(slot) = self.slot(txn_id) else {
            return self.commit_finished(txn_id).await;
        };
        let _phase = slot.phase.lock().await;
        self.commit_slot(txn_id, &slot).await
    }

    async fn abort(&self, txn_id: TxnId) -> Result<AckStatus> {
        let Some(slot) = self.slot(txn_id) else {
            return self.abort_finished(txn_id).await;
        };
        let _phase = slot.phase.lock().await;
        if matches!(*slot.state(), State::Done | State::Busy) {
            return self.abort_finished(txn_id).await;
        }
        let step = actions::abort(txn_id, slot.take(), self.now());
        self.run(txn_id, &slot, step).await
    }

    async fn commit_one_phase(&self, txn_id: TxnId) -> Result<OnePhaseOutcome> {
        let Some(slot) = self.slot(txn_id) else {
            return self.one_phase_unknown(txn_id).await;
        };
        let _phase = slot.phase.lock().await;
        let (done, prepared) = {
            let state = slot.state();
            (
                matches!(*state, State::Done | State::Busy),
                matches!(*state, State::Prepared(_)),
            )
        };
        if done {
            return self.one_phase_unknown(txn_id).await;
        }
        if prepared {
            return match self.commit_slot(txn_id, &slot).await? {
                AckStatus::Applied | AckStatus::AlreadyApplied => Ok(OnePhaseOutcome::Committed),
                other => Ok(OnePhaseOutcome::Unknown {
                    message: format!("commit of the prepared transaction answered {other:?}"),
                }),
            };
        }
        let step = actions::one_phase(txn_id, slot.take(), self.now(), &self.rules());
        self.run(txn_id, &slot, step).await
    }

    async fn maintain(&self) {
        let reaped = self.reap_expired();
        if reaped > 0 {
            tracing::debug!(reaped, "aborted staged transactions past their timeout");
        }
        let due = {
            let mut last = self
                .inner
                .last_prune
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= PRUNE_INTERVAL);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            match self.prune_outcomes() {
                Ok(0) => {}
                Ok(n) => tracing::debug!(dropped = n, "dropped outcomes past retention"),
                Err(e) => tracing::warn!(error = %e, "pruning outcomes failed"),
            }
        }
    }

    async fn in_doubt(&self) -> Result<Vec<InDoubt>> {
        let slots: Vec<(TxnId, Arc<Slot>)> = self
            .slots()
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        let mut out: Vec<InDoubt> = slots
            .into_iter()
            .filter_map(|(txn_id, slot)| match &*slot.state() {
                State::Prepared(p) => Some(InDoubt {
                    txn_id,
                    prepared_at_unix_ms: p.prepared_at_unix_ms,
                }),
                _ => None,
            })
            .collect();
        out.sort_by_key(|d| d.txn_id);
        Ok(out)
    }
}

fn txn_from_key(key: &[u8]) -> Result<TxnId> {
    let bytes: [u8; 16] = key.try_into().map_err(|_| Error::Corrupt {
        what: "transaction key".into(),
        why: format!("{} bytes, expected 16", key.len()),
    })?;
    TxnId::from_bytes(bytes).map_err(|e| Error::Corrupt {
        what: "transaction key".into(),
        why: e.to_string(),
    })
}

/// Why a transaction in `state` takes no more reads or writes here.
fn not_active(txn_id: TxnId, state: &State) -> Error {
    match state {
        State::Done => Error::TxnAborted {
            txn_id,
            why: "it finished or was aborted here".into(),
        },
        State::Doomed(d) => Error::TxnAborted {
            txn_id,
            why: format!("an earlier call of it failed here: {}", d.why),
        },
        other => Error::TxnNotActive {
            txn_id,
            state: other.name(),
        },
    }
}
