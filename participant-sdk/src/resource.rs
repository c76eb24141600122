//! The resource trait: what the participant runtime needs from a store. The SDK's
//! [`RocksStore`](crate::store::RocksStore) implements it; a service with its own database
//! (PostgreSQL, say) implements it too and runs the conformance suite
//! (`ratify_participant::testing`, feature `testing`) to check it keeps the protocol's promises.
//!
//! Every method is called with a transaction id and must be idempotent by that id: the
//! coordinator retries. The rules cited are docs/protocol.md's.

use std::future::Future;

use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome};
use ratify_proto::types::{TxnId, Vote};

use crate::error::Result;

/// A transaction prepared and not yet decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    /// The transaction.
    pub txn_id: TxnId,
    /// When it was prepared (this participant's clock).
    pub prepared_at_unix_ms: u64,
}

/// A participant's store, as the 2PC runtime sees it.
///
/// The runtime runs every `prepare`, `commit`, `abort` and `commit_one_phase` to completion
/// (in a task of its own), even when the coordinator's call that asked for it is cancelled:
/// implementations need not be cancel-safe.
pub trait Resource: Send + Sync + 'static {
    /// Phase 1: make the transaction's staged work durable and vote (P2, P5, P6).
    /// - staged work, now durable: `Vote::Yes`; nothing to write: `Vote::ReadOnly` (locks
    ///   released);
    /// - prepared already: `Vote::Yes` again;
    /// - unknown, aborted, timed out, refused by validation: `Vote::No` with the reason, and a
    ///   tombstone so no later work is accepted for it.
    ///
    /// `Err` only when the store failed and nothing is durable (the runtime votes NO).
    fn prepare(&self, txn_id: TxnId) -> impl Future<Output = Result<Vote>> + Send;

    /// Phase 2, COMMIT: apply the prepared work durably, then answer (P7, P8).
    fn commit(&self, txn_id: TxnId) -> impl Future<Output = Result<AckStatus>> + Send;

    /// Phase 2, ABORT: discard staged or prepared work durably and leave a tombstone (P5, P7).
    fn abort(&self, txn_id: TxnId) -> impl Future<Output = Result<AckStatus>> + Send;

    /// A business call of the transaction failed here (P10): the initiator saw an error and
    /// this participant cannot know what it will do next, so the transaction must never commit
    /// here. Called by the runtime's call guard ([`crate::Participant::guard`]) and before a
    /// Prepare whose calls do not add up. `why` names the call and its error.
    /// - staged (or not seen yet): a later `prepare` must vote NO (`NoReason::CallFailed`,
    ///   with `why`) and `commit_one_phase` must abort; release its locks now if you can;
    /// - preparing, prepared or finished: change nothing — a YES stands (P1);
    /// - doomed already: keep the first reason.
    ///
    /// Idempotent. `Err` only when the store failed (the runtime then refuses the commit
    /// itself).
    fn doom(&self, txn_id: TxnId, why: String) -> impl Future<Output = Result<()>> + Send;

    /// Prepare and commit in one durable step (the single-participant fast path, C2).
    fn commit_one_phase(
        &self,
        txn_id: TxnId,
    ) -> impl Future<Output = Result<OnePhaseOutcome>> + Send;

    /// Every prepared, undecided transaction (after a restart: those found on disk).
    fn in_doubt(&self) -> impl Future<Output = Result<Vec<InDoubt>>> + Send;

    /// How long staged (unprepared) work lives here at most before it is aborted (P4), if
    /// there is such a limit. The runtime keeps a transaction's call records (P10) at least
    /// this long after its last call, so that a repeated call can never run again while the
    /// transaction can still commit; `Participant::new` refuses a shorter `calls.idle_ttl`.
    /// The default says there is none: then make sure `calls.idle_ttl` outlives any
    /// transaction's staged work.
    fn staged_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// Periodic housekeeping, called by the runtime every tick: abort staged work past its
    /// timeout (P4), drop outcomes past their retention. Must be quick when there is nothing to
    /// do. The default does nothing.
    fn maintain(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}
