//! A transaction's state at this participant (docs/protocol.md §3, "At a participant"): staged,
//! doomed, prepared, or done, held in a slot with the lock that serializes its Prepare, Commit
//! and Abort.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

// tokio's clock: the system's in production, the simulated one under simulation.
use tokio::time::Instant;

use ratify_proto::types::{NoReason, TxnId};

use super::codec::Writes;

/// Staged work (P4): in memory only, under its locks.
pub(super) struct Staged {
    pub(super) writes: Writes,
    pub(super) locked: BTreeSet<Vec<u8>>,
    pub(super) bytes: usize,
    pub(super) started: Instant,
    /// Its age for the lock policy, fixed by its first call here (P9): later calls cannot
    /// change it, so one transaction never has two ages.
    pub(super) age: TxnId,
    pub(super) deadline_unix_ms: Option<u64>,
    pub(super) rejected: Option<String>,
}

/// A transaction that can no longer commit here: one of its calls failed (P10). Its staged
/// writes are gone and its locks released; the slot stays, with the first failure, so later
/// calls fail at once and Prepare votes NO naming it.
pub(super) struct Doomed {
    pub(super) reason: NoReason,
    pub(super) why: String,
    /// The service boundary named the failed call (the runtime's call guard); a later doom by
    /// the call that failed replaces the message the store recorded for the same failure.
    pub(super) by_call: bool,
    pub(super) since: Instant,
    pub(super) deadline_unix_ms: Option<u64>,
}

/// Prepared (P2): durable, in doubt until the decision arrives, its keys locked.
pub(super) struct Prepared {
    pub(super) writes: Writes,
    pub(super) locked: BTreeSet<Vec<u8>>,
    pub(super) prepared_at_unix_ms: u64,
}

pub(super) enum State {
    Staged(Staged),
    /// A call failed: it will vote NO (P10).
    Doomed(Doomed),
    /// Prepare, Commit or Abort is writing its record (under the phase lock); no more reads or
    /// writes.
    Busy,
    Prepared(Prepared),
    /// Finished; the slot is about to go.
    Done,
}

impl State {
    pub(super) fn name(&self) -> &'static str {
        match self {
            State::Staged(_) => "staged",
            State::Doomed(_) => "doomed",
            State::Busy => "being prepared or finished",
            State::Prepared(_) => "prepared",
            State::Done => "finished",
        }
    }

    /// The keys it holds locks on.
    pub(super) fn locked(&self) -> Option<&BTreeSet<Vec<u8>>> {
        match self {
            State::Staged(s) => Some(&s.locked),
            State::Prepared(p) => Some(&p.locked),
            State::Doomed(_) | State::Busy | State::Done => None,
        }
    }

    /// Its writes, staged or prepared.
    pub(super) fn writes(&self) -> Option<&Writes> {
        match self {
            State::Staged(s) => Some(&s.writes),
            State::Prepared(p) => Some(&p.writes),
            State::Doomed(_) | State::Busy | State::Done => None,
        }
    }
}

pub(super) struct Slot {
    /// Serializes Prepare / Commit / Abort of one transaction.
    pub(super) phase: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

impl Slot {
    pub(super) fn new(state: State) -> Arc<Self> {
        Arc::new(Self {
            phase: tokio::sync::Mutex::new(()),
            state: Mutex::new(state),
        })
    }

    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the state out for an action (leaving [`State::Busy`]).
    pub(super) fn take(&self) -> State {
        std::mem::replace(&mut *self.state(), State::Busy)
    }
}
