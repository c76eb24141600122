//! The lock table: strict two-phase locking with shared (read) and exclusive (write) locks on
//! keys, and wait-die deadlock prevention (docs/protocol.md rule P9).
//!
//! A request that conflicts with another transaction's lock fails at once with a conflict,
//! unless the caller allowed waiting. Waiting is bounded by the caller's wait limit, and only an
//! OLDER transaction may wait for a younger one (wait-die): a younger one that would wait
//! "dies" (gets the conflict) instead. Since every wait goes from older to younger, no cycle of
//! waits — no deadlock — can form. Age is the transaction id's order: ids are UUIDv7, so a
//! smaller id is an older transaction (ties are impossible; ids are unique).
//!
//! One refinement: any transaction may wait (bounded) for a lock held by a PREPARED one,
//! whatever their ages. A prepared transaction waits for no lock — it holds all it will ever
//! hold and waits only for the coordinator's decision — so a wait for it cannot close a cycle.
//! This matters right after a commit: the client has its answer, phase 2 is still on its way,
//! and the client's next transaction on the same keys (younger, by construction) would
//! otherwise die instead of waiting a moment.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratify_proto::types::TxnId;
use tokio::sync::Notify;

/// A lock mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    /// Many readers.
    Shared,
    /// One writer.
    Exclusive,
}

/// Why a lock was not granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConflict {
    /// The key.
    pub key: Vec<u8>,
    /// A transaction holding a conflicting lock.
    pub holder: TxnId,
    /// How long the request waited before giving up (zero when it failed fast or died).
    pub waited: Duration,
    /// True when wait-die refused to let a younger transaction wait.
    pub died: bool,
}

#[derive(Default)]
struct KeyLock {
    holders: BTreeMap<TxnId, LockMode>,
    waiters: usize,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct Table {
    keys: HashMap<Vec<u8>, KeyLock>,
    /// Transactions prepared here: they wait for no lock, so anyone may wait for them.
    prepared: HashSet<TxnId>,
}

/// Locks of every key in one store.
#[derive(Default)]
pub struct LockTable {
    table: Mutex<Table>,
}

enum Attempt {
    Granted,
    Blocked {
        /// The oldest conflicting holder that is not prepared (the one wait-die compares
        /// with), else the oldest conflicting holder.
        holder: TxnId,
        /// Wait-die allows waiting: every conflicting holder is younger, or prepared.
        may_wait: bool,
        notify: Arc<Notify>,
    },
}

impl LockTable {
    /// An empty lock table.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic while holding this mutex leaves the table consistent (every update is a
        // single map operation), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Try once. On conflict, registers as a waiter (if asked) and says whether wait-die
    /// allows waiting.
    fn attempt(&self, txn: TxnId, key: &[u8], mode: LockMode, register_wait: bool) -> Attempt {
        let mut guard = self.table();
        let Table { keys, prepared } = &mut *guard;
        let entry = keys.entry(key.to_vec()).or_default();
        let mut conflicting = entry
            .holders
            .iter()
            .filter(|(holder, held)| {
                **holder != txn && (mode == LockMode::Exclusive || **held == LockMode::Exclusive)
            })
            .map(|(holder, _)| *holder)
            .peekable();
        let Some(&oldest) = conflicting.peek() else {
            let held = entry.holders.entry(txn).or_insert(mode);
            *held = (*held).max(mode);
            return Attempt::Granted;
        };
        // Holders are in id (= age) order: the first active one is the oldest active one.
        let oldest_active = conflicting.find(|h| !prepared.contains(h));
        let (holder, may_wait) = match oldest_active {
            Some(h) => (h, txn < h),
            None => (oldest, true),
        };
        if register_wait {
            entry.waiters += 1;
        }
        Attempt::Blocked {
            holder,
            may_wait,
            notify: entry.notify.clone(),
        }
    }

    fn unregister_wait(&self, key: &[u8]) {
        let mut table = self.table();
        if let Some(entry) = table.keys.get_mut(key) {
            entry.waiters = entry.waiters.saturating_sub(1);
            if entry.holders.is_empty() && entry.waiters == 0 {
                table.keys.remove(key);
            }
        }
    }

    /// `txn` is now prepared: it will take no more locks, so others may wait for it.
    pub fn mark_prepared(&self, txn: TxnId) {
        self.table().prepared.insert(txn);
    }

    /// Acquire `mode` on `key` for `txn`. A held lock is kept (and a shared one upgraded when
    /// nobody else holds the key). With `wait = None`, a conflict fails at once; with
    /// `Some(limit)`, an older transaction waits up to `limit` for younger holders to finish,
    /// a younger one fails at once (wait-die).
    pub async fn acquire(
        &self,
        txn: TxnId,
        key: &[u8],
        mode: LockMode,
        wait: Option<Duration>,
    ) -> Result<(), LockConflict> {
        let started = tokio::time::Instant::now();
        let Some(limit) = wait else {
            return match self.attempt(txn, key, mode, false) {
                Attempt::Granted => Ok(()),
                Attempt::Blocked { holder, .. } => Err(LockConflict {
                    key: key.to_vec(),
                    holder,
                    waited: Duration::ZERO,
                    died: false,
                }),
            };
        };
        let deadline = started + limit;
        loop {
            // Registered as a waiter while blocked, so the key's entry (and its Notify) stays.
            let notify = match self.attempt(txn, key, mode, true) {
                Attempt::Granted => return Ok(()),
                Attempt::Blocked {
                    holder,
                    may_wait,
                    notify,
                } => {
                    if !may_wait {
                        // Younger than an active holder: die rather than wait.
                        self.unregister_wait(key);
                        return Err(LockConflict {
                            key: key.to_vec(),
                            holder,
                            waited: started.elapsed(),
                            died: true,
                        });
                    }
                    notify
                }
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // A release between the attempt and `enable` woke nobody: look again.
            if let Attempt::Granted = self.attempt(txn, key, mode, false) {
                self.unregister_wait(key);
                return Ok(());
            }
            let timed_out = tokio::time::timeout_at(deadline, notified).await.is_err();
            self.unregister_wait(key);
            if timed_out {
                return match self.attempt(txn, key, mode, false) {
                    Attempt::Granted => Ok(()),
                    Attempt::Blocked { holder, .. } => Err(LockConflict {
                        key: key.to_vec(),
                        holder,
                        waited: started.elapsed(),
                        died: false,
                    }),
                };
            }
        }
    }

    /// Take exclusive locks for a transaction being recovered (prepared before a restart). At
    /// recovery nothing else holds locks yet, so this cannot conflict; a conflict means two
    /// prepared transactions wrote the same key, which prepare never allows.
    pub fn acquire_recovered(
        &self,
        txn: TxnId,
        keys: impl IntoIterator<Item = Vec<u8>>,
    ) -> Result<(), LockConflict> {
        for key in keys {
            if let Attempt::Blocked { holder, .. } =
                self.attempt(txn, &key, LockMode::Exclusive, false)
            {
                return Err(LockConflict {
                    key,
                    holder,
                    waited: Duration::ZERO,
                    died: false,
                });
            }
        }
        Ok(())
    }

    /// Release `txn`'s locks on `keys` and wake their waiters.
    pub fn release<'a>(&self, txn: TxnId, keys: impl IntoIterator<Item = &'a [u8]>) {
        let mut table = self.table();
        for key in keys {
            if let Some(entry) = table.keys.get_mut(key) {
                if entry.holders.remove(&txn).is_some() {
                    entry.notify.notify_waiters();
                }
                if entry.holders.is_empty() && entry.waiters == 0 {
                    table.keys.remove(key);
                }
            }
        }
    }

    /// `txn` finished: release its locks on `keys` and forget it was prepared.
    pub fn finish<'a>(&self, txn: TxnId, keys: impl IntoIterator<Item = &'a [u8]>) {
        self.release(txn, keys);
        self.table().prepared.remove(&txn);
    }

    /// The mode `txn` holds on `key`, if any.
    pub fn held(&self, txn: TxnId, key: &[u8]) -> Option<LockMode> {
        self.table()
            .keys
            .get(key)
            .and_then(|e| e.holders.get(&txn).copied())
    }

    /// Number of keys with a lock or a waiter (for metrics and leak tests).
    pub fn len(&self) -> usize {
        self.table().keys.len()
    }

    /// True when no key is locked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
