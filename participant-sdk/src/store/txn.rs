//! [`Txn`]: a service's reads and writes inside a transaction (P9, P10).

use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use ratify_proto::planted::Bug;
use ratify_proto::types::{NoReason, TxnId};

use super::codec::Recorded;
use super::locks::{self, LockMode};
use super::slot::{Slot, State};
use super::{CF_DATA, RocksStore, not_active};
use crate::error::{Error, EscapedKey, Result};

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
    /// A handle on `txn_id`'s work at `store`, with the store's default lock wait.
    pub(super) fn new(store: RocksStore, txn_id: TxnId, age: TxnId) -> Self {
        let lock_wait = store.inner.config.lock_wait;
        Self {
            store,
            txn_id,
            age,
            lock_wait,
            errors_doom: true,
        }
    }

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
        if self.errors_doom && self.store.inner.planted != Some(Bug::ErrorsDoNotDoom) {
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
