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

pub mod codec;
pub mod locks;

use ratify_proto::planted::{self, Bug};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: the system's in production, the simulated one under simulation.
use tokio::time::Instant;

use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome};
use ratify_proto::types::{NoReason, TxnId, Vote};
use ratify_storage::{Batch, Db, MemDisk, Syncer};

use self::codec::{Recorded, Writes};
pub use self::locks::LockPolicy;
use self::locks::{LockMode, LockTable};
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

/// Limits and timeouts of a store. Every field has a default; `validate` checks them.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Staged (unprepared) work older than this is aborted locally (P4).
    pub staged_timeout: Duration,
    /// Bytes of keys and values one transaction may stage.
    pub staged_bytes_per_txn_max: usize,
    /// Keys one transaction may write.
    pub keys_per_txn_max: usize,
    /// Transactions staged or prepared at once.
    pub concurrent_txns_max: usize,
    /// Largest key.
    pub key_bytes_max: usize,
    /// Largest value.
    pub value_bytes_max: usize,
    /// Rows one prefix scan returns, at most.
    pub scan_rows_max: usize,
    /// How long outcomes and tombstones are kept (they answer retries and refuse late work).
    pub outcome_retention: Duration,
    /// How many outcomes and tombstones are kept, at most (the oldest go first).
    pub outcomes_max: usize,
    /// Default lock wait for new transactions: `None` fails fast on a conflict.
    pub lock_wait: Option<Duration>,
    /// How waiting transactions avoid deadlock (P9): wound-wait (the default) or wait-die.
    pub lock_policy: LockPolicy,
    /// The largest clock difference assumed between an initiator and this participant. After
    /// a restart, a transaction that began earlier than the restart plus this margin is refused:
    /// its staged work here may have been lost (P4).
    pub clock_skew_max: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            staged_timeout: Duration::from_secs(60),
            staged_bytes_per_txn_max: 16 << 20,
            keys_per_txn_max: 10_000,
            concurrent_txns_max: 10_000,
            key_bytes_max: 4 << 10,
            value_bytes_max: 4 << 20,
            scan_rows_max: 10_000,
            outcome_retention: Duration::from_secs(24 * 3600),
            outcomes_max: 1_000_000,
            lock_wait: None,
            lock_policy: LockPolicy::default(),
            clock_skew_max: Duration::from_millis(500),
        }
    }
}

impl StoreConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Context(format!("store config: {what}")));
        if self.staged_timeout.is_zero() {
            return bad("staged_timeout must be positive");
        }
        if self.keys_per_txn_max == 0 || self.concurrent_txns_max == 0 || self.scan_rows_max == 0 {
            return bad("limits must be positive");
        }
        if self.key_bytes_max == 0
            || self.value_bytes_max == 0
            || self.staged_bytes_per_txn_max == 0
        {
            return bad("size limits must be positive");
        }
        if self.outcomes_max == 0 {
            return bad("outcomes_max must be positive");
        }
        Ok(())
    }
}

/// Planted bug (e): where a committed transaction's writes are kept.
fn planted_key(txn_id: TxnId) -> Vec<u8> {
    let mut k = b"planted-applied/".to_vec();
    k.extend_from_slice(&txn_id.to_bytes());
    k
}

fn now_unix_ms() -> u64 {
    ratify_proto::hooks::now_unix_ms()
}

/// Counters, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Write-ahead-log fsyncs done.
    pub fsyncs: AtomicU64,
    /// Transactions prepared.
    pub prepared: AtomicU64,
    /// Transactions committed.
    pub committed: AtomicU64,
    /// Transactions aborted.
    pub aborted: AtomicU64,
}

struct Staged {
    writes: Writes,
    locked: BTreeSet<Vec<u8>>,
    bytes: usize,
    started: Instant,
    /// Its age for the lock policy, fixed by its first call here (P9): later calls cannot
    /// change it, so one transaction never has two ages.
    age: TxnId,
    deadline_unix_ms: Option<u64>,
    rejected: Option<String>,
}

/// A transaction that can no longer commit here: one of its calls failed (P10). Its staged
/// writes are gone and its locks released; the slot stays, with the first failure, so later
/// calls fail at once and Prepare votes NO naming it.
struct Doomed {
    reason: NoReason,
    why: String,
    /// The service boundary named the failed call (the runtime's call guard); a later doom by
    /// the call that failed replaces the message the store recorded for the same failure.
    by_call: bool,
    since: Instant,
    deadline_unix_ms: Option<u64>,
}

struct Prepared {
    writes: Writes,
    locked: BTreeSet<Vec<u8>>,
    prepared_at_unix_ms: u64,
}

enum State {
    Staged(Staged),
    /// A call failed: it will vote NO (P10).
    Doomed(Doomed),
    /// Prepare is writing the record; no more reads or writes.
    Preparing,
    Prepared(Prepared),
    /// Finished; the slot is about to go.
    Done,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Staged(_) => "staged",
            State::Doomed(_) => "doomed",
            State::Preparing => "preparing",
            State::Prepared(_) => "prepared",
            State::Done => "finished",
        }
    }
}

struct Slot {
    /// Serializes Prepare / Commit / Abort of one transaction.
    phase: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

impl Slot {
    fn new(state: State) -> Arc<Self> {
        Arc::new(Self {
            phase: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct Inner {
    db: Arc<Db>,
    syncer: Syncer,
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
            let relock = !planted::active(Bug::RecoveryWithoutLocks);
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
        Txn {
            store: self.clone(),
            txn_id,
            age,
            lock_wait: self.inner.config.lock_wait,
            errors_doom: true,
        }
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
                State::Preparing | State::Prepared(_) | State::Done => return false,
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

    /// Abort a transaction that has not voted YES (or has: Abort is the coordinator's word),
    /// durably, and leave a tombstone.
    async fn abort_slot(&self, txn_id: TxnId, slot: &Slot) -> Result<AckStatus> {
        let taken = {
            let mut state = slot.state();
            match std::mem::replace(&mut *state, State::Done) {
                State::Staged(s) => Some((s.locked, false, None)),
                State::Doomed(d) => Some((BTreeSet::new(), false, Some(d))),
                State::Prepared(p) => Some((p.locked, true, None)),
                other => {
                    *state = other;
                    None
                }
            }
        };
        let Some((locked, was_prepared, doomed)) = taken else {
            return self.finished_abort(txn_id).await;
        };
        let mut batch = Batch::new();
        if was_prepared {
            batch.delete(CF_PREPARED, txn_id.to_bytes());
        }
        batch.put(
            CF_OUTCOMES,
            txn_id.to_bytes(),
            codec::encode_outcome(Recorded::Aborted, now_unix_ms()),
        );
        if let Err(e) = self.write_durable(batch).await {
            // Not durable: put the state back so a retried Abort (or Commit) finds it.
            *slot.state() = if was_prepared {
                self.reload_prepared(txn_id)?
            } else if let Some(d) = doomed {
                State::Doomed(d)
            } else {
                State::Staged(Staged {
                    writes: Writes::new(),
                    locked,
                    bytes: 0,
                    started: Instant::now(),
                    // Only an abort can follow (it is rejected), so its age no longer matters.
                    age: txn_id,
                    deadline_unix_ms: None,
                    rejected: Some("a local abort failed".into()),
                })
            };
            return Err(e);
        }
        self.finish(txn_id, &locked);
        self.inner.stats.aborted.fetch_add(1, Ordering::Relaxed);
        Ok(AckStatus::Applied)
    }

    fn reload_prepared(&self, txn_id: TxnId) -> Result<State> {
        let bytes = self
            .inner
            .db
            .get(CF_PREPARED, &txn_id.to_bytes())?
            .ok_or_else(|| Error::Corrupt {
                what: "prepared record".into(),
                why: format!("{txn_id} vanished"),
            })?;
        let (writes, prepared_at_unix_ms) = codec::decode_prepared(&bytes)?;
        Ok(State::Prepared(Prepared {
            locked: writes.keys().cloned().collect(),
            writes,
            prepared_at_unix_ms,
        }))
    }

    /// Abort of a transaction with no slot: answer from the record, or leave a tombstone.
    async fn finished_abort(&self, txn_id: TxnId) -> Result<AckStatus> {
        match self.recorded(txn_id)? {
            Some(Recorded::Aborted) | Some(Recorded::ReadOnly) => Ok(AckStatus::AlreadyApplied),
            Some(Recorded::Committed) => {
                tracing::error!(%txn_id, "Abort for a transaction committed here: the coordinator's decision conflicts with this participant's record");
                Ok(AckStatus::ConflictingOutcome)
            }
            None => {
                // Never seen (or lost at a restart): the tombstone refuses late work (P5).
                let mut batch = Batch::new();
                batch.put(
                    CF_OUTCOMES,
                    txn_id.to_bytes(),
                    codec::encode_outcome(Recorded::Aborted, now_unix_ms()),
                );
                self.write_durable(batch).await?;
                Ok(AckStatus::Applied)
            }
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

    async fn commit_prepared(&self, txn_id: TxnId, slot: &Slot) -> Result<AckStatus> {
        let prepared = {
            let mut state = slot.state();
            match std::mem::replace(&mut *state, State::Done) {
                State::Prepared(p) => p,
                other => {
                    let name = other.name();
                    *state = other;
                    drop(state);
                    if name == "finished" {
                        return self.finished_commit(txn_id);
                    }
                    tracing::error!(%txn_id, state = name, "Commit for a transaction that is not prepared here");
                    return Ok(AckStatus::NotPrepared);
                }
            }
        };
        let mut batch = Batch::new();
        let staged = self.apply_writes(&mut batch, &prepared.writes);
        if let Err(e) = staged {
            *slot.state() = State::Prepared(prepared);
            return Err(e);
        }
        batch.delete(CF_PREPARED, txn_id.to_bytes());
        if planted::active(Bug::NonIdempotentCommit) {
            // Planted bug (e): keep the writes, to apply them again on a repeated Commit.
            batch.put(
                CF_META,
                planted_key(txn_id),
                codec::encode_prepared(&prepared.writes, 0),
            );
        }
        batch.put(
            CF_OUTCOMES,
            txn_id.to_bytes(),
            codec::encode_outcome(Recorded::Committed, now_unix_ms()),
        );
        if let Err(e) = self.write_durable(batch).await {
            // Not known durable: stay prepared (locks held) so the retry applies it.
            *slot.state() = State::Prepared(prepared);
            return Err(e);
        }
        self.finish(txn_id, &prepared.locked);
        self.inner.stats.committed.fetch_add(1, Ordering::Relaxed);
        Ok(AckStatus::Applied)
    }

    fn finished_commit(&self, txn_id: TxnId) -> Result<AckStatus> {
        match self.recorded(txn_id)? {
            Some(Recorded::Committed) if planted::active(Bug::NonIdempotentCommit) => {
                // Planted bug (e): apply the kept writes again.
                let engine = &self.inner.db;
                if let Some(bytes) = engine.get(CF_META, &planted_key(txn_id))? {
                    let (writes, _) = codec::decode_prepared(&bytes)?;
                    let mut batch = Batch::new();
                    self.apply_writes(&mut batch, &writes)?;
                    engine.write(batch, false)?;
                }
                Ok(AckStatus::Applied)
            }
            Some(Recorded::Committed) | Some(Recorded::ReadOnly) => Ok(AckStatus::AlreadyApplied),
            Some(Recorded::Aborted) => {
                tracing::error!(%txn_id, "Commit for a transaction aborted here: the coordinator's decision conflicts with this participant's record");
                Ok(AckStatus::ConflictingOutcome)
            }
            None => {
                tracing::error!(%txn_id, "Commit for a transaction never prepared here");
                Ok(AckStatus::NotPrepared)
            }
        }
    }

    /// Prepare of a transaction with no slot (P5): an earlier answer if there is one, else NO.
    fn prepare_unknown(&self, txn_id: TxnId) -> Result<Vote> {
        Ok(match self.recorded(txn_id)? {
            // A late duplicate of a Prepare whose transaction already committed here.
            Some(Recorded::Committed) => Vote::Yes,
            Some(Recorded::ReadOnly) => Vote::ReadOnly,
            Some(Recorded::Aborted) => Vote::No {
                reason: NoReason::AlreadyAborted,
                message: "aborted here earlier".into(),
            },
            // Planted bug (h): the lost work is taken for no work at all.
            None if planted::active(Bug::LostWorkReadOnly) => Vote::ReadOnly,
            None => {
                // Leave a tombstone so business calls arriving later are refused.
                if let Err(e) = self.write_outcome(txn_id, Recorded::Aborted, None, false) {
                    tracing::warn!(%txn_id, error = %e, "could not record a tombstone");
                }
                Vote::No {
                    reason: NoReason::UnknownTxn,
                    message: "no staged work here (never seen, or lost at a restart)".into(),
                }
            }
        })
    }

    async fn prepare_slot(&self, txn_id: TxnId, slot: &Slot) -> Result<Vote> {
        let (writes, locked) = {
            let mut state = slot.state();
            match &*state {
                State::Prepared(_) => return Ok(Vote::Yes),
                State::Done => {
                    drop(state);
                    return self.prepare_unknown(txn_id);
                }
                State::Preparing => unreachable!("Preparing is only seen under the phase lock"),
                State::Doomed(_) => {
                    let State::Doomed(d) = std::mem::replace(&mut *state, State::Done) else {
                        unreachable!("matched Doomed above");
                    };
                    drop(state);
                    if let Err(e) = self.write_outcome(txn_id, Recorded::Aborted, None, false) {
                        tracing::warn!(%txn_id, error = %e, "could not record a tombstone");
                    }
                    self.finish(txn_id, &BTreeSet::new());
                    self.inner.stats.aborted.fetch_add(1, Ordering::Relaxed);
                    return Ok(Vote::No {
                        reason: d.reason,
                        message: d.why,
                    });
                }
                State::Staged(_) => {}
            }
            let State::Staged(s) = std::mem::replace(&mut *state, State::Preparing) else {
                unreachable!("matched Staged above");
            };
            let expired = s.started.elapsed() > self.inner.config.staged_timeout
                || s.deadline_unix_ms.is_some_and(|d| d < now_unix_ms());
            let refusal = match (&s.rejected, expired) {
                (Some(why), _) => Some((NoReason::ValidationFailed, why.clone())),
                (None, true) => Some((NoReason::StagedTimeout, "staged work timed out".to_owned())),
                (None, false) => None,
            };
            if let Some((reason, message)) = refusal {
                *state = State::Done;
                drop(state);
                if let Err(e) = self.write_outcome(txn_id, Recorded::Aborted, None, false) {
                    tracing::warn!(%txn_id, error = %e, "could not record a tombstone");
                }
                self.finish(txn_id, &s.locked);
                self.inner.stats.aborted.fetch_add(1, Ordering::Relaxed);
                return Ok(Vote::No { reason, message });
            }
            if s.writes.is_empty() {
                // Read-only here: release the read locks now; no phase 2 (P9, C3).
                *state = State::Done;
                drop(state);
                if let Err(e) = self.write_outcome(txn_id, Recorded::ReadOnly, None, false) {
                    tracing::warn!(%txn_id, error = %e, "could not record a read-only vote");
                }
                self.finish(txn_id, &s.locked);
                return Ok(Vote::ReadOnly);
            }
            (s.writes, s.locked)
        };
        let prepared_at_unix_ms = now_unix_ms();
        let mut batch = Batch::new();
        batch.put(
            CF_PREPARED,
            txn_id.to_bytes(),
            codec::encode_prepared(&writes, prepared_at_unix_ms),
        );
        let written = if planted::active(Bug::YesWithoutSync) {
            // Planted bug (a): in memory only, so a crash after the YES loses it.
            Ok(self.inner.db.write_unlogged(batch)?)
        } else {
            self.write_durable(batch).await
        };
        if let Err(e) = written {
            // Nothing is known durable: abort locally (safe before YES) and vote NO.
            *slot.state() = State::Done;
            let mut undo = Batch::new();
            undo.delete(CF_PREPARED, txn_id.to_bytes());
            let _ = self.write_outcome(txn_id, Recorded::Aborted, Some(undo), false);
            self.finish(txn_id, &locked);
            return Err(e);
        }
        *slot.state() = State::Prepared(Prepared {
            writes,
            locked,
            prepared_at_unix_ms,
        });
        self.inner.locks.mark_prepared(txn_id);
        self.inner.stats.prepared.fetch_add(1, Ordering::Relaxed);
        Ok(Vote::Yes)
    }

    async fn one_phase_slot(&self, txn_id: TxnId, slot: &Slot) -> Result<OnePhaseOutcome> {
        enum Found {
            Staged(Staged),
            Doomed(Doomed),
            Prepared,
            Done,
        }
        let found = {
            let mut state = slot.state();
            match std::mem::replace(&mut *state, State::Preparing) {
                State::Staged(s) => Found::Staged(s),
                State::Doomed(d) => Found::Doomed(d),
                other => {
                    let found = match &other {
                        State::Prepared(_) => Found::Prepared,
                        _ => Found::Done,
                    };
                    *state = other;
                    found
                }
            }
        };
        let staged = match found {
            Found::Staged(s) => s,
            Found::Doomed(d) => {
                let mut batch = Batch::new();
                batch.put(
                    CF_OUTCOMES,
                    txn_id.to_bytes(),
                    codec::encode_outcome(Recorded::Aborted, now_unix_ms()),
                );
                if let Err(e) = self.write_durable(batch).await {
                    *slot.state() = State::Doomed(d);
                    return Err(e);
                }
                *slot.state() = State::Done;
                self.finish(txn_id, &BTreeSet::new());
                self.inner.stats.aborted.fetch_add(1, Ordering::Relaxed);
                return Ok(OnePhaseOutcome::Aborted {
                    reason: d.reason,
                    message: d.why,
                });
            }
            Found::Done => return self.one_phase_unknown(txn_id),
            Found::Prepared => {
                return match self.commit_prepared(txn_id, slot).await? {
                    AckStatus::Applied | AckStatus::AlreadyApplied => {
                        Ok(OnePhaseOutcome::Committed)
                    }
                    other => Ok(OnePhaseOutcome::Unknown {
                        message: format!("commit of the prepared transaction answered {other:?}"),
                    }),
                };
            }
        };
        let expired = staged.started.elapsed() > self.inner.config.staged_timeout
            || staged.deadline_unix_ms.is_some_and(|d| d < now_unix_ms());
        let refusal = match (&staged.rejected, expired) {
            (Some(why), _) => Some((NoReason::ValidationFailed, why.clone())),
            (None, true) => Some((NoReason::StagedTimeout, "staged work timed out".to_owned())),
            (None, false) => None,
        };
        let mut batch = Batch::new();
        let recorded = if refusal.is_some() {
            Recorded::Aborted
        } else {
            if let Err(e) = self.apply_writes(&mut batch, &staged.writes) {
                *slot.state() = State::Staged(staged);
                return Err(e);
            }
            Recorded::Committed
        };
        batch.put(
            CF_OUTCOMES,
            txn_id.to_bytes(),
            codec::encode_outcome(recorded, now_unix_ms()),
        );
        if let Err(e) = self.write_durable(batch).await {
            *slot.state() = State::Staged(staged);
            return Err(e);
        }
        *slot.state() = State::Done;
        self.finish(txn_id, &staged.locked);
        Ok(match refusal {
            Some((reason, message)) => {
                self.inner.stats.aborted.fetch_add(1, Ordering::Relaxed);
                OnePhaseOutcome::Aborted { reason, message }
            }
            None => {
                self.inner.stats.committed.fetch_add(1, Ordering::Relaxed);
                OnePhaseOutcome::Committed
            }
        })
    }

    fn one_phase_unknown(&self, txn_id: TxnId) -> Result<OnePhaseOutcome> {
        Ok(match self.prepare_unknown(txn_id)? {
            Vote::Yes | Vote::ReadOnly => OnePhaseOutcome::Committed,
            Vote::No { reason, message } => OnePhaseOutcome::Aborted { reason, message },
        })
    }

    /// Run `f` on a transaction's slot under its phase lock, or `none` if it has no slot.
    async fn with_phase<T, F, Fut>(
        &self,
        txn_id: TxnId,
        none: impl FnOnce() -> Result<T>,
        f: F,
    ) -> Result<T>
    where
        F: FnOnce(Arc<Slot>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let Some(slot) = self.slot(txn_id) else {
            return none();
        };
        let _phase = slot.phase.lock().await;
        f(slot.clone()).await
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
        self.with_phase(
            txn_id,
            || self.prepare_unknown(txn_id),
            |slot| async move { self.prepare_slot(txn_id, &slot).await },
        )
        .await
    }

    async fn commit(&self, txn_id: TxnId) -> Result<AckStatus> {
        self.with_phase(
            txn_id,
            || self.finished_commit(txn_id),
            |slot| async move { self.commit_prepared(txn_id, &slot).await },
        )
        .await
    }

    async fn abort(&self, txn_id: TxnId) -> Result<AckStatus> {
        match self.slot(txn_id) {
            None => self.finished_abort(txn_id).await,
            Some(slot) => {
                let _phase = slot.phase.lock().await;
                self.abort_slot(txn_id, &slot).await
            }
        }
    }

    async fn commit_one_phase(&self, txn_id: TxnId) -> Result<OnePhaseOutcome> {
        self.with_phase(
            txn_id,
            || self.one_phase_unknown(txn_id),
            |slot| async move { self.one_phase_slot(txn_id, &slot).await },
        )
        .await
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

/// A transaction's work at this participant: reads and writes under strict two-phase locking
/// (P9). Get one from [`RocksStore::txn`]. Reads see the transaction's own writes; writes stay in
/// memory until Prepare.
///
/// A failed read or write (a lock conflict, a limit, a storage error) dooms the transaction
/// here (docs/protocol.md P10): its staged writes are discarded and its locks released at
/// once, later operations fail with [`Error::TxnAborted`] naming the first failure, and
/// Prepare votes NO. An initiator that commits after an error therefore gets ABORTED, never a
/// transaction with a leg missing. A handler that expects a failure and handles it on purpose
/// (tries a hot key and falls back to another, say) uses [`Txn::harmless_errors`].
#[derive(Clone)]
pub struct Txn {
    store: RocksStore,
    txn_id: TxnId,
    /// The id whose age counts for wait-die (the first attempt's, for a retry).
    age: TxnId,
    lock_wait: Option<Duration>,
    /// Failed operations doom the transaction (P10); off for [`Txn::harmless_errors`].
    errors_doom: bool,
}

impl Txn {
    /// The transaction's id.
    pub fn id(&self) -> TxnId {
        self.txn_id
    }

    /// Wait up to `limit` for conflicting locks (wait-die: only an older transaction waits for
    /// a younger one; a younger one gets `Conflict` at once; a retry counts as old as its first
    /// attempt, `TxnContext::age`). `None` fails fast.
    pub fn with_lock_wait(mut self, limit: Option<Duration>) -> Self {
        self.lock_wait = limit;
        self
    }

    /// A handle whose failed operations do **not** doom the transaction (P10): for a handler
    /// that probes on purpose — tries a lock with no wait and, on `Conflict`, does something
    /// else — and handles the error itself. The failed operation did nothing; the rest of the
    /// transaction stands. Errors that say the transaction is already aborted or prepared
    /// here stay what they are. Meant to be visible in code review:
    ///
    /// ```ignore
    /// match txn.harmless_errors().with_lock_wait(None).put(b"seat/12A", b"alice").await {
    ///     Ok(()) => "12A",
    ///     Err(Error::Conflict { .. }) => { txn.put(b"seat/12B", b"alice").await?; "12B" }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// ```
    pub fn harmless_errors(mut self) -> Self {
        self.errors_doom = false;
        self
    }

    /// An operation failed with `e`: doom the transaction here (P10) unless this handle says
    /// its errors are harmless. Errors that mean the transaction is already aborted, doomed or
    /// prepared here have nothing left to doom.
    fn failed(&self, e: Error) -> Error {
        let reason = match &e {
            Error::Conflict { .. } => NoReason::Conflict,
            Error::LimitExceeded { .. } => NoReason::LimitExceeded,
            Error::Storage(_) | Error::Corrupt { .. } => NoReason::StorageError,
            Error::TxnAborted { .. }
            | Error::TxnNotActive { .. }
            | Error::Context(_)
            | Error::Coordinator(_) => return e,
        };
        // Planted bug (f): a failed operation leaves the transaction as it was.
        if self.errors_doom && !planted::active(Bug::ErrorsDoNotDoom) {
            self.store.doom_with(
                self.txn_id,
                reason,
                format!("a read or write failed: {e}"),
                false,
            );
        }
        e
    }

    fn slot(&self) -> Result<Arc<Slot>> {
        self.store
            .slot(self.txn_id)
            .ok_or_else(|| match self.store.recorded(self.txn_id) {
                Ok(Some(Recorded::Committed)) => Error::TxnNotActive {
                    txn_id: self.txn_id,
                    state: "committed",
                },
                Ok(Some(Recorded::ReadOnly)) => Error::TxnNotActive {
                    txn_id: self.txn_id,
                    state: "prepared (read-only)",
                },
                Ok(_) => Error::TxnAborted {
                    txn_id: self.txn_id,
                    why: "it was aborted here (staged timeout, wounded by an older transaction, \
                          or the coordinator's decision)"
                        .into(),
                },
                Err(e) => e,
            })
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.store.inner.config.key_bytes_max;
        if key.len() > max {
            return Err(Error::LimitExceeded {
                limit: "key_bytes_max",
                max,
                asked: key.len(),
            });
        }
        Ok(())
    }

    fn is_staged(&self) -> bool {
        self.store
            .slot(self.txn_id)
            .is_some_and(|slot| matches!(&*slot.state(), State::Staged(_)))
    }

    /// Take a lock and record it in the staged state; fails if the transaction stopped being
    /// staged meanwhile (prepared, aborted), releasing the lock it just took.
    async fn lock(&self, slot: &Slot, key: &[u8], mode: LockMode) -> Result<()> {
        {
            let state = slot.state();
            if !matches!(&*state, State::Staged(_)) {
                return Err(not_active(self.txn_id, &state));
            }
        }
        let locks = &self.store.inner.locks;
        let newly = locks.held(self.txn_id, key).is_none_or(|m| m < mode);
        locks
            .acquire(
                locks::Owner {
                    txn: self.txn_id,
                    age: self.age,
                },
                key,
                mode,
                self.lock_wait,
                self.store.inner.config.lock_policy,
                // A requester that was itself wounded meanwhile wounds nobody: it waits out
                // its wait and then finds itself aborted below.
                &|victim| self.is_staged() && self.store.wound(victim, self.txn_id),
            )
            .await
            .map_err(|c| Error::Conflict {
                key: EscapedKey(c.key),
                holder: c.holder,
                waited: c.waited,
                died: c.died,
            })?;
        let mut state = slot.state();
        match &mut *state {
            State::Staged(s) => {
                s.locked.insert(key.to_vec());
                Ok(())
            }
            other => {
                // Doomed or finished meanwhile: it holds no locks any more (whatever it held
                // was released then), so whatever this acquire granted goes too. Preparing or
                // prepared: its own locks stay, a lock taken just now goes.
                if newly || matches!(other, State::Doomed(_) | State::Done) {
                    locks.release(self.txn_id, [key]);
                }
                Err(not_active(self.txn_id, other))
            }
        }
    }

    /// Read `key` (shared lock): the transaction's own write if it made one, else the committed
    /// value.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_versioned(key).await?.map(|(_, v)| v))
    }

    /// Read `key` with its version (the number of commits that wrote it; 0 for the
    /// transaction's own uncommitted write).
    pub async fn get_versioned(&self, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        self.read(key).await.map_err(|e| self.failed(e))
    }

    async fn read(&self, key: &[u8]) -> Result<Option<(u64, Vec<u8>)>> {
        self.check_key(key)?;
        let slot = self.slot()?;
        self.lock(&slot, key, LockMode::Shared).await?;
        if let State::Staged(s) = &*slot.state()
            && let Some(own) = s.writes.get(key)
        {
            return Ok(own.clone().map(|v| (0, v)));
        }
        self.store.read_committed(key)
    }

    /// Write `key` (exclusive lock); visible to this transaction at once, to others after
    /// commit.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let max = self.store.inner.config.value_bytes_max;
        if value.len() > max {
            return Err(self.failed(Error::LimitExceeded {
                limit: "value_bytes_max",
                max,
                asked: value.len(),
            }));
        }
        self.write(key, Some(value.to_vec()))
            .await
            .map_err(|e| self.failed(e))
    }

    /// Delete `key` (exclusive lock).
    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        self.write(key, None).await.map_err(|e| self.failed(e))
    }

    async fn write(&self, key: &[u8], value: Option<Vec<u8>>) -> Result<()> {
        self.check_key(key)?;
        let slot = self.slot()?;
        self.lock(&slot, key, LockMode::Exclusive).await?;
        let config = &self.store.inner.config;
        let mut state = slot.state();
        let State::Staged(s) = &mut *state else {
            return Err(not_active(self.txn_id, &state));
        };
        let old = s
            .writes
            .get(key)
            .map_or(0, |v| key.len() + v.as_ref().map_or(0, Vec::len));
        let new = key.len() + value.as_ref().map_or(0, Vec::len);
        let bytes = s.bytes - old + new;
        if bytes > config.staged_bytes_per_txn_max {
            return Err(Error::LimitExceeded {
                limit: "staged_bytes_per_txn_max",
                max: config.staged_bytes_per_txn_max,
                asked: bytes,
            });
        }
        if old == 0 && !s.writes.contains_key(key) && s.writes.len() >= config.keys_per_txn_max {
            return Err(Error::LimitExceeded {
                limit: "keys_per_txn_max",
                max: config.keys_per_txn_max,
                asked: s.writes.len() + 1,
            });
        }
        s.bytes = bytes;
        s.writes.insert(key.to_vec(), value);
        Ok(())
    }

    /// Every key starting with `prefix`, with its value as this transaction sees it, in key
    /// order, at most `limit` (capped by the store's `scan_rows_max`). Each returned key is
    /// read-locked. Keys inserted by others after the scan are not (no phantom protection).
    pub async fn scan_prefix(
        &self,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.scan(prefix, limit).await.map_err(|e| self.failed(e))
    }

    async fn scan(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = limit.min(self.store.inner.config.scan_rows_max);
        let slot = self.slot()?;
        let mut keys: BTreeSet<Vec<u8>> = BTreeSet::new();
        self.store
            .inner
            .db
            .visit::<Error>(CF_DATA, prefix, |key, _| {
                if !key.starts_with(prefix) || keys.len() >= limit {
                    return Ok(ControlFlow::Break(()));
                }
                keys.insert(key.to_vec());
                Ok(ControlFlow::Continue(()))
            })?;
        if let State::Staged(s) = &*slot.state() {
            keys.extend(
                s.writes
                    .range(prefix.to_vec()..)
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .map(|(k, _)| k.clone()),
            );
        }
        let mut out = Vec::new();
        for key in keys {
            if out.len() >= limit {
                break;
            }
            if let Some((_, value)) = self.read(&key).await? {
                out.push((key, value));
            }
        }
        Ok(out)
    }

    /// Mark the transaction as refused by the service's own validation: this participant will
    /// vote NO (`VALIDATION_FAILED`, with `why`) and the transaction will abort everywhere.
    pub fn reject(&self, why: impl Into<String>) -> Result<()> {
        let slot = self.slot()?;
        let mut state = slot.state();
        match &mut *state {
            State::Staged(s) => {
                s.rejected = Some(why.into());
                Ok(())
            }
            other => Err(not_active(self.txn_id, other)),
        }
    }
}
