//! The lock table: strict two-phase locking with shared (read) and exclusive (write) locks on
//! keys, and deadlock prevention by transaction age (docs/protocol.md rule P9).
//!
//! A request that conflicts with another transaction's lock fails at once with a conflict,
//! unless the caller allowed waiting. Waiting is bounded by the caller's wait limit, and goes
//! one way in age only, by one of two classic rules ([`LockPolicy`]):
//! - wound-wait (the default): a YOUNGER transaction waits for an older holder; an OLDER one
//!   "wounds" younger holders that have not prepared (the store aborts them on the spot: they
//!   have not voted, so that is theirs to do, P4) and takes the lock. Under a hot key this
//!   queues the newcomers, as a database's lock queue would.
//! - wait-die: an OLDER transaction waits for a younger holder; a YOUNGER one "dies" (gets the
//!   conflict) instead of waiting. Under a hot key most newcomers die and retry.
//!
//! Either way every wait goes the same way in age, so no cycle of waits — no deadlock — can
//! form. Age is the transaction id's order: ids are UUIDv7, so a smaller id is an older
//! transaction (ties are impossible; ids are unique).
//!
//! A retry of an aborted transaction may keep the age of its first attempt (the context's
//! `first_attempt`, bounded: `TxnContext::age`), as wait-die prescribes for restarts: age is
//! then the pair (age id, own id), still a total order, so waits still go one way only, and a
//! transaction that keeps losing conflicts on a hot key ends up the oldest and wins.
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

/// How waits that could deadlock are prevented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LockPolicy {
    /// An older requester aborts younger holders that have not prepared; a younger one waits.
    #[default]
    WoundWait,
    /// An older requester waits for younger holders; a younger one gets the conflict at once.
    WaitDie,
}

/// Who asks for or holds a lock, and how old it counts as for the lock policy (smaller is older).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The transaction.
    pub txn: TxnId,
    /// The id whose age counts (the first attempt's, for a retry; else `txn`).
    pub age: TxnId,
}

impl Owner {
    /// A transaction that counts its own age.
    pub fn new(txn: TxnId) -> Self {
        Self { txn, age: txn }
    }

    fn priority(&self) -> (TxnId, TxnId) {
        (self.age, self.txn)
    }
}

#[derive(Default)]
struct KeyLock {
    /// Holder → (mode, age).
    holders: BTreeMap<TxnId, (LockMode, TxnId)>,
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
        /// The oldest conflicting holder that is not prepared, else the oldest conflicting
        /// holder.
        holder: TxnId,
        /// The policy allows waiting.
        may_wait: bool,
        /// Younger holders, not prepared, that wound-wait says to abort.
        wound: Vec<TxnId>,
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
    fn attempt(
        &self,
        who: Owner,
        key: &[u8],
        mode: LockMode,
        register_wait: bool,
        policy: LockPolicy,
    ) -> Attempt {
        let mut guard = self.table();
        let Table { keys, prepared } = &mut *guard;
        let entry = keys.entry(key.to_vec()).or_default();
        let conflicting: Vec<Owner> = entry
            .holders
            .iter()
            .filter(|(holder, (held, _))| {
                **holder != who.txn && (mode == LockMode::Exclusive || *held == LockMode::Exclusive)
            })
            .map(|(holder, (_, age))| Owner {
                txn: *holder,
                age: *age,
            })
            .collect();
        let Some(oldest) = conflicting.iter().min_by_key(|o| o.priority()) else {
            let held = entry.holders.entry(who.txn).or_insert((mode, who.age));
            held.0 = held.0.max(mode);
            return Attempt::Granted;
        };
        let active = || conflicting.iter().filter(|h| !prepared.contains(&h.txn));
        let oldest_active = active().min_by_key(|o| o.priority());
        let holder = oldest_active.unwrap_or(oldest).txn;
        let (may_wait, wound) = match policy {
            // Waiting for a prepared holder is always allowed (it waits for nobody).
            LockPolicy::WaitDie => (
                oldest_active.is_none_or(|h| who.priority() < h.priority()),
                Vec::new(),
            ),
            LockPolicy::WoundWait => (
                true,
                active()
                    .filter(|h| h.priority() > who.priority())
                    .map(|h| h.txn)
                    .collect(),
            ),
        };
        if register_wait {
            entry.waiters += 1;
        }
        Attempt::Blocked {
            holder,
            may_wait,
            wound,
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

    /// Acquire `mode` on `key` for `who`. A held lock is kept (and a shared one upgraded when
    /// nobody else holds the key). With `wait = None`, a conflict fails at once; with
    /// `Some(limit)`, the request waits up to `limit` as `policy` allows; under wound-wait it
    /// calls `wound` for each younger holder that has not prepared (`wound` aborts it and
    /// releases its locks, and says whether it could: a holder in the middle of preparing
    /// cannot be wounded, and is waited for).
    pub async fn acquire(
        &self,
        who: Owner,
        key: &[u8],
        mode: LockMode,
        wait: Option<Duration>,
        policy: LockPolicy,
        wound: &(dyn Fn(TxnId) -> bool + Sync),
    ) -> Result<(), LockConflict> {
        let started = tokio::time::Instant::now();
        let Some(limit) = wait else {
            return match self.attempt(who, key, mode, false, policy) {
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
            let notify = match self.attempt(who, key, mode, true, policy) {
                Attempt::Granted => return Ok(()),
                Attempt::Blocked {
                    holder,
                    may_wait,
                    wound: victims,
                    notify,
                } => {
                    // Wound-wait: abort every younger holder we can; if any went, look again
                    // at once (one in the middle of preparing is waited for instead).
                    if victims.into_iter().fold(false, |any, v| wound(v) | any) {
                        self.unregister_wait(key);
                        continue;
                    }
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
            if let Attempt::Granted = self.attempt(who, key, mode, false, policy) {
                self.unregister_wait(key);
                return Ok(());
            }
            let timed_out = tokio::time::timeout_at(deadline, notified).await.is_err();
            self.unregister_wait(key);
            if timed_out {
                return match self.attempt(who, key, mode, false, policy) {
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
            if let Attempt::Blocked { holder, .. } = self.attempt(
                Owner::new(txn),
                &key,
                LockMode::Exclusive,
                false,
                LockPolicy::WaitDie,
            ) {
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
            .and_then(|e| e.holders.get(&txn).map(|(mode, _)| *mode))
    }

    /// Number of keys with a lock or a waiter (for metrics and leak tests).
    pub fn len(&self) -> usize {
        self.table().keys.len()
    }

    /// Lock requests waiting right now (for metrics, and for tests that wait on it instead of
    /// a timer).
    pub fn waiting(&self) -> usize {
        self.table().keys.values().map(|e| e.waiters).sum()
    }

    /// True when no key is locked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
