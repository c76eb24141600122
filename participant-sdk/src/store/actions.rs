//! The store's 2PC actions as pure functions, in the manner of TiKV's transaction actions: each
//! takes the transaction's state (taken out of its slot) and the request, and computes a
//! [`Step`] — the rows to write and how durably, the state once written, what to do if the
//! write fails, and the answer. No I/O, no clock (the time comes in [`Now`]), no globals (the
//! planted bug comes in [`Rules`]). One place applies a step: `RocksStore::run` in the parent
//! module. The rules cited are docs/protocol.md's.

use std::time::Duration;

use ratify_proto::planted::Bug;
use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome};
use ratify_proto::types::{NoReason, TxnId, Vote};
use ratify_storage::Batch;
use tokio::time::Instant;

use super::codec::{self, Recorded};
use super::slot::State;
use super::{CF_META, CF_OUTCOMES, CF_PREPARED, planted_key};

/// The store's settings an action depends on.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rules {
    /// Staged work older than this votes NO (P4).
    pub(super) staged_timeout: Duration,
    /// The planted bug switched on, if any (selftest builds; read once at open).
    pub(super) planted: Option<Bug>,
}

impl Rules {
    fn planted(&self, bug: Bug) -> bool {
        self.planted == Some(bug)
    }
}

/// The time of the request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Now {
    /// tokio's clock (staged ages).
    pub(super) instant: Instant,
    /// Wall clock, ms since the Unix epoch (deadlines, records).
    pub(super) unix_ms: u64,
}

/// How a step's rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sync {
    /// Nothing to write.
    Nothing,
    /// Written without waiting for an fsync, and a failure only logged: records a restart may
    /// lose safely (tombstones and read-only records of transactions that never voted YES: P4,
    /// P5).
    Lazy,
    /// Written and fsynced (shared, group commit) before the answer (P2, P8).
    Durable,
    /// Planted bug (a): written outside the write-ahead log.
    Unlogged,
}

/// The slot's state once the rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// As it was (nothing changed).
    Keep,
    /// Prepared, at this time, with the held staged writes and locks.
    Prepared { at_unix_ms: u64 },
    /// Finished: the slot goes and the held locks are released.
    Done,
}

/// What happens when the write fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnFailure {
    /// Put the held state back, so a retry finds it.
    Restore,
    /// Put the held staged state back, refused, so only an abort can follow.
    RestoreRefused,
    /// Abort locally (safe before a YES, P4): tombstone, release the locks, vote nothing.
    AbortLocally,
}

/// Which counter a finished step bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Counter {
    Prepared,
    Committed,
    Aborted,
}

/// One action's effect, for the executor to apply.
pub(super) struct Step<A> {
    /// The rows, besides the data rows of `apply_writes`.
    pub(super) batch: Batch,
    /// Also apply the held writes to the data (each key's version + 1; the versions are read
    /// when the batch is built, under the exclusive locks).
    pub(super) apply_writes: bool,
    pub(super) sync: Sync,
    /// The state the action took from the slot.
    pub(super) held: State,
    pub(super) next: Next,
    pub(super) on_failure: OnFailure,
    pub(super) count: Option<Counter>,
    pub(super) answer: A,
}

impl<A> Step<A> {
    /// Nothing to write; the state stays.
    fn keep(held: State, answer: A) -> Self {
        Self {
            batch: Batch::new(),
            apply_writes: false,
            sync: Sync::Nothing,
            held,
            next: Next::Keep,
            on_failure: OnFailure::Restore,
            count: None,
            answer,
        }
    }

    /// Record `recorded` for `txn_id` and finish.
    fn finish(
        txn_id: TxnId,
        held: State,
        recorded: Recorded,
        sync: Sync,
        now: Now,
        answer: A,
    ) -> Self {
        let mut batch = Batch::new();
        batch.put(
            CF_OUTCOMES,
            txn_id.to_bytes(),
            codec::encode_outcome(recorded, now.unix_ms),
        );
        let count = match recorded {
            Recorded::Aborted => Some(Counter::Aborted),
            Recorded::Committed => Some(Counter::Committed),
            Recorded::ReadOnly => None,
        };
        Self {
            batch,
            apply_writes: false,
            sync,
            held,
            next: Next::Done,
            on_failure: OnFailure::Restore,
            count,
            answer,
        }
    }
}

/// Why a staged or doomed transaction cannot commit here, if it cannot: a failed call (P10),
/// the service's rejection, or staged work past its timeout or deadline (P4).
fn refusal(held: &State, now: Now, rules: &Rules) -> Option<(NoReason, String)> {
    let s = match held {
        State::Doomed(d) => return Some((d.reason, d.why.clone())),
        State::Staged(s) => s,
        State::Busy | State::Prepared(_) | State::Done => return None,
    };
    let expired = now.instant.saturating_duration_since(s.started) > rules.staged_timeout
        || s.deadline_unix_ms.is_some_and(|d| d < now.unix_ms);
    match (&s.rejected, expired) {
        (Some(why), _) => Some((NoReason::ValidationFailed, why.clone())),
        (None, true) => Some((NoReason::StagedTimeout, "staged work timed out".to_owned())),
        (None, false) => None,
    }
}

/// Prepare (P2, P4, P10) of a transaction with a slot. A prepared one votes YES again; a busy
/// or done slot is the executor's to answer from the record ([`prepare_unknown`]).
pub(super) fn prepare(txn_id: TxnId, held: State, now: Now, rules: &Rules) -> Step<Vote> {
    if let Some((reason, message)) = refusal(&held, now, rules) {
        let vote = Vote::No { reason, message };
        return Step::finish(txn_id, held, Recorded::Aborted, Sync::Lazy, now, vote);
    }
    let State::Staged(s) = &held else {
        return Step::keep(held, Vote::Yes);
    };
    if s.writes.is_empty() {
        // Read-only here: release the read locks now; no phase 2 (P9, C3).
        return Step::finish(
            txn_id,
            held,
            Recorded::ReadOnly,
            Sync::Lazy,
            now,
            Vote::ReadOnly,
        );
    }
    let mut batch = Batch::new();
    batch.put(
        CF_PREPARED,
        txn_id.to_bytes(),
        codec::encode_prepared(&s.writes, now.unix_ms),
    );
    Step {
        batch,
        apply_writes: false,
        // Planted bug (a): in memory only, so a crash after the YES loses it.
        sync: if rules.planted(Bug::YesWithoutSync) {
            Sync::Unlogged
        } else {
            Sync::Durable
        },
        held,
        next: Next::Prepared {
            at_unix_ms: now.unix_ms,
        },
        // Nothing is known durable: abort locally (no vote was sent).
        on_failure: OnFailure::AbortLocally,
        count: Some(Counter::Prepared),
        answer: Vote::Yes,
    }
}

/// Commit (P7, P8) of a prepared transaction: apply its writes, drop the prepare record,
/// record the outcome, durably; then its locks go. Anything else is not prepared here (the
/// executor answers a done slot from the record).
pub(super) fn commit(txn_id: TxnId, held: State, now: Now, rules: &Rules) -> Step<AckStatus> {
    if !matches!(held, State::Prepared(_)) {
        return Step::keep(held, AckStatus::NotPrepared);
    }
    let keep = rules.planted(Bug::NonIdempotentCommit);
    let kept = keep.then(|| held.writes().map(|w| codec::encode_prepared(w, 0)));
    let mut step = Step::finish(
        txn_id,
        held,
        Recorded::Committed,
        Sync::Durable,
        now,
        AckStatus::Applied,
    );
    step.batch.delete(CF_PREPARED, txn_id.to_bytes());
    if let Some(Some(kept)) = kept {
        // Planted bug (e): keep the writes, to apply them again on a repeated Commit.
        step.batch.put(CF_META, planted_key(txn_id), kept);
    }
    step.apply_writes = true;
    step
}

/// Abort (P7, P8) of a staged, doomed or prepared transaction: a durable tombstone (and the
/// prepare record dropped), then its locks go.
pub(super) fn abort(txn_id: TxnId, held: State, now: Now) -> Step<AckStatus> {
    let prepared = matches!(held, State::Prepared(_));
    let on_failure = match held {
        // A staged transaction whose abort failed must not prepare afterwards.
        State::Staged(_) => OnFailure::RestoreRefused,
        _ => OnFailure::Restore,
    };
    let mut step = Step::finish(
        txn_id,
        held,
        Recorded::Aborted,
        Sync::Durable,
        now,
        AckStatus::Applied,
    );
    if prepared {
        step.batch.delete(CF_PREPARED, txn_id.to_bytes());
    }
    step.on_failure = on_failure;
    step
}

/// One-phase commit (C2) of a staged or doomed transaction: apply its writes and record the
/// outcome in one durable batch, or abort it. (A prepared one commits as in [`commit`].)
pub(super) fn one_phase(
    txn_id: TxnId,
    held: State,
    now: Now,
    rules: &Rules,
) -> Step<OnePhaseOutcome> {
    if let Some((reason, message)) = refusal(&held, now, rules) {
        let answer = OnePhaseOutcome::Aborted { reason, message };
        return Step::finish(txn_id, held, Recorded::Aborted, Sync::Durable, now, answer);
    }
    if !matches!(held, State::Staged(_)) {
        let message = "not staged here".into();
        return Step::keep(held, OnePhaseOutcome::Unknown { message });
    }
    let mut step = Step::finish(
        txn_id,
        held,
        Recorded::Committed,
        Sync::Durable,
        now,
        OnePhaseOutcome::Committed,
    );
    step.apply_writes = true;
    step
}

/// What a record-only answer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Record {
    /// Nothing.
    Nothing,
    /// A tombstone, so later work for the transaction is refused (P5); `Sync` says how.
    Tombstone(Sync),
    /// Planted bug (e): apply the kept writes of a committed transaction again.
    ApplyKeptAgain,
}

/// Prepare of a transaction with no slot (P5): an earlier answer if there is one, else NO and
/// a tombstone.
pub(super) fn prepare_unknown(recorded: Option<Recorded>, rules: &Rules) -> (Vote, Record) {
    match recorded {
        // A late duplicate of a Prepare whose transaction already committed here.
        Some(Recorded::Committed) => (Vote::Yes, Record::Nothing),
        Some(Recorded::ReadOnly) => (Vote::ReadOnly, Record::Nothing),
        Some(Recorded::Aborted) => (
            Vote::No {
                reason: NoReason::AlreadyAborted,
                message: "aborted here earlier".into(),
            },
            Record::Nothing,
        ),
        // Planted bug (h): the lost work is taken for no work at all.
        None if rules.planted(Bug::LostWorkReadOnly) => (Vote::ReadOnly, Record::Nothing),
        None => (
            Vote::No {
                reason: NoReason::UnknownTxn,
                message: "no staged work here (never seen, or lost at a restart)".into(),
            },
            Record::Tombstone(Sync::Lazy),
        ),
    }
}

/// Commit of a transaction with no slot: from the record (P7).
pub(super) fn commit_finished(recorded: Option<Recorded>, rules: &Rules) -> (AckStatus, Record) {
    match recorded {
        Some(Recorded::Committed) if rules.planted(Bug::NonIdempotentCommit) => {
            (AckStatus::Applied, Record::ApplyKeptAgain)
        }
        Some(Recorded::Committed) | Some(Recorded::ReadOnly) => {
            (AckStatus::AlreadyApplied, Record::Nothing)
        }
        Some(Recorded::Aborted) => (AckStatus::ConflictingOutcome, Record::Nothing),
        None => (AckStatus::NotPrepared, Record::Nothing),
    }
}

/// Abort of a transaction with no slot: from the record, or a durable tombstone (P5).
pub(super) fn abort_finished(recorded: Option<Recorded>) -> (AckStatus, Record) {
    match recorded {
        Some(Recorded::Aborted) | Some(Recorded::ReadOnly) => {
            (AckStatus::AlreadyApplied, Record::Nothing)
        }
        Some(Recorded::Committed) => (AckStatus::ConflictingOutcome, Record::Nothing),
        // Never seen (or lost at a restart): the tombstone refuses late work (P5).
        None => (AckStatus::Applied, Record::Tombstone(Sync::Durable)),
    }
}

/// One-phase commit of a transaction with no slot: as Prepare would answer (C2).
pub(super) fn one_phase_unknown(
    recorded: Option<Recorded>,
    rules: &Rules,
) -> (OnePhaseOutcome, Record) {
    let (vote, record) = prepare_unknown(recorded, rules);
    let outcome = match vote {
        Vote::Yes | Vote::ReadOnly => OnePhaseOutcome::Committed,
        Vote::No { reason, message } => OnePhaseOutcome::Aborted { reason, message },
    };
    (outcome, record)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ratify_storage::Op;

    use super::*;
    use crate::store::codec::Writes;
    use crate::store::slot::{Doomed, Prepared, Staged};

    fn txn() -> TxnId {
        let mut b = [0u8; 16];
        b[0] = 1;
        b[15] = 7;
        TxnId::from_bytes(b).expect("non-nil")
    }

    const RULES: Rules = Rules {
        staged_timeout: Duration::from_secs(60),
        planted: None,
    };

    fn now(start: Instant, after: Duration) -> Now {
        Now {
            instant: start + after,
            unix_ms: 1_000_000,
        }
    }

    fn staged(start: Instant, writes: &[(&str, &str)]) -> State {
        let writes: Writes = writes
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), Some(v.as_bytes().to_vec())))
            .collect();
        State::Staged(Staged {
            locked: writes.keys().cloned().collect(),
            writes,
            bytes: 0,
            started: start,
            age: txn(),
            deadline_unix_ms: None,
            rejected: None,
        })
    }

    fn prepared() -> State {
        State::Prepared(Prepared {
            writes: [(b"k".to_vec(), Some(b"v".to_vec()))].into(),
            locked: BTreeSet::from([b"k".to_vec()]),
            prepared_at_unix_ms: 5,
        })
    }

    fn doomed() -> State {
        State::Doomed(Doomed {
            reason: NoReason::CallFailed,
            why: "a call failed".into(),
            by_call: true,
            since: Instant::now(),
            deadline_unix_ms: None,
        })
    }

    /// The rows of a step: (family, key is the txn id, put or delete).
    fn rows<A>(step: &Step<A>) -> Vec<(&'static str, bool, &'static str)> {
        let id = txn().to_bytes();
        step.batch
            .ops()
            .iter()
            .map(|op| match op {
                Op::Put { cf, key, .. } => (*cf, key.as_slice() == id, "put"),
                Op::Delete { cf, key } => (*cf, key.as_slice() == id, "delete"),
                Op::DeleteRange { cf, .. } => (*cf, false, "delete-range"),
            })
            .collect()
    }

    /// P2: staged writes prepare with one durable record; if it fails, abort locally.
    #[test]
    fn staged_writes_prepare_durably() {
        let start = Instant::now();
        let step = prepare(
            txn(),
            staged(start, &[("k", "v")]),
            now(start, Duration::ZERO),
            &RULES,
        );
        assert_eq!(step.answer, Vote::Yes);
        assert_eq!(rows(&step), vec![(CF_PREPARED, true, "put")]);
        assert_eq!(step.sync, Sync::Durable);
        assert_eq!(
            step.next,
            Next::Prepared {
                at_unix_ms: 1_000_000
            }
        );
        assert_eq!(step.on_failure, OnFailure::AbortLocally);
        assert_eq!(step.count, Some(Counter::Prepared));
        let planted = Rules {
            planted: Some(Bug::YesWithoutSync),
            ..RULES
        };
        let step = prepare(
            txn(),
            staged(start, &[("k", "v")]),
            now(start, Duration::ZERO),
            &planted,
        );
        assert_eq!(
            step.sync,
            Sync::Unlogged,
            "planted bug (a) is configuration"
        );
    }

    /// C3, P9: nothing written here votes READ_ONLY and finishes; P4: staged work past its
    /// timeout, and work the service rejected, vote NO with a lazy tombstone.
    #[test]
    fn read_only_expired_and_rejected_work() {
        let start = Instant::now();
        let step = prepare(
            txn(),
            staged(start, &[]),
            now(start, Duration::ZERO),
            &RULES,
        );
        assert_eq!(step.answer, Vote::ReadOnly);
        assert_eq!((step.sync, step.next), (Sync::Lazy, Next::Done));
        assert_eq!(rows(&step), vec![(CF_OUTCOMES, true, "put")]);
        assert_eq!(step.count, None);

        let step = prepare(
            txn(),
            staged(start, &[("k", "v")]),
            now(start, Duration::from_secs(61)),
            &RULES,
        );
        assert!(
            matches!(
                &step.answer,
                Vote::No {
                    reason: NoReason::StagedTimeout,
                    ..
                }
            ),
            "{:?}",
            step.answer
        );
        assert_eq!((step.sync, step.next), (Sync::Lazy, Next::Done));
        assert_eq!(step.count, Some(Counter::Aborted));

        let mut rejected = staged(start, &[("k", "v")]);
        if let State::Staged(s) = &mut rejected {
            s.rejected = Some("insufficient funds".into());
        }
        let step = prepare(txn(), rejected, now(start, Duration::ZERO), &RULES);
        assert_eq!(
            step.answer,
            Vote::No {
                reason: NoReason::ValidationFailed,
                message: "insufficient funds".into()
            }
        );
    }

    /// P10: a doomed transaction votes NO naming the failed call; a prepared one votes YES
    /// again, writing nothing.
    #[test]
    fn doomed_votes_no_and_prepared_votes_yes_again() {
        let start = Instant::now();
        let step = prepare(txn(), doomed(), now(start, Duration::ZERO), &RULES);
        assert_eq!(
            step.answer,
            Vote::No {
                reason: NoReason::CallFailed,
                message: "a call failed".into()
            }
        );
        assert_eq!((step.sync, step.next), (Sync::Lazy, Next::Done));
        let step = prepare(txn(), prepared(), now(start, Duration::ZERO), &RULES);
        assert_eq!(step.answer, Vote::Yes);
        assert_eq!((step.sync, step.next), (Sync::Nothing, Next::Keep));
        assert!(step.batch.is_empty());
    }

    /// P7, P8: Commit applies the writes, drops the prepare record and records COMMITTED in one
    /// durable batch; a failure keeps it prepared. Anything not prepared is NOT_PREPARED.
    #[test]
    fn commit_of_prepared_and_of_anything_else() {
        let start = Instant::now();
        let step = commit(txn(), prepared(), now(start, Duration::ZERO), &RULES);
        assert_eq!(step.answer, AckStatus::Applied);
        assert!(step.apply_writes);
        assert_eq!(
            rows(&step),
            vec![(CF_OUTCOMES, true, "put"), (CF_PREPARED, true, "delete")]
        );
        assert_eq!(
            (step.sync, step.next, step.on_failure),
            (Sync::Durable, Next::Done, OnFailure::Restore)
        );
        assert_eq!(step.count, Some(Counter::Committed));
        let step = commit(
            txn(),
            staged(start, &[("k", "v")]),
            now(start, Duration::ZERO),
            &RULES,
        );
        assert_eq!(step.answer, AckStatus::NotPrepared);
        assert_eq!((step.sync, step.next), (Sync::Nothing, Next::Keep));
        let planted = Rules {
            planted: Some(Bug::NonIdempotentCommit),
            ..RULES
        };
        let step = commit(txn(), prepared(), now(start, Duration::ZERO), &planted);
        assert_eq!(rows(&step).len(), 3, "planted bug (e) keeps the writes");
    }

    /// P7, P8: Abort leaves a durable tombstone (and drops a prepare record); a staged
    /// transaction whose abort failed is put back refused, so it can never prepare.
    #[test]
    fn abort_of_staged_doomed_and_prepared() {
        let start = Instant::now();
        let at = now(start, Duration::ZERO);
        let step = abort(txn(), staged(start, &[("k", "v")]), at);
        assert_eq!(rows(&step), vec![(CF_OUTCOMES, true, "put")]);
        assert_eq!(step.on_failure, OnFailure::RestoreRefused);
        assert_eq!((step.sync, step.next), (Sync::Durable, Next::Done));
        let step = abort(txn(), doomed(), at);
        assert_eq!(step.on_failure, OnFailure::Restore);
        let step = abort(txn(), prepared(), at);
        assert_eq!(
            rows(&step),
            vec![(CF_OUTCOMES, true, "put"), (CF_PREPARED, true, "delete")]
        );
        assert_eq!(step.count, Some(Counter::Aborted));
    }

    /// C2: one phase commits staged writes in one durable batch, or aborts doomed or refused
    /// work with its reason.
    #[test]
    fn one_phase_commits_or_aborts() {
        let start = Instant::now();
        let at = now(start, Duration::ZERO);
        let step = one_phase(txn(), staged(start, &[("k", "v")]), at, &RULES);
        assert_eq!(step.answer, OnePhaseOutcome::Committed);
        assert!(step.apply_writes);
        assert_eq!((step.sync, step.next), (Sync::Durable, Next::Done));
        let step = one_phase(txn(), doomed(), at, &RULES);
        assert_eq!(
            step.answer,
            OnePhaseOutcome::Aborted {
                reason: NoReason::CallFailed,
                message: "a call failed".into()
            }
        );
        assert!(!step.apply_writes);
        assert_eq!(step.count, Some(Counter::Aborted));
    }

    /// P5, P7: answers from the record alone, for transactions with no slot.
    #[test]
    fn record_only_answers() {
        assert!(matches!(
            prepare_unknown(None, &RULES),
            (
                Vote::No {
                    reason: NoReason::UnknownTxn,
                    ..
                },
                Record::Tombstone(Sync::Lazy)
            )
        ));
        let planted = Rules {
            planted: Some(Bug::LostWorkReadOnly),
            ..RULES
        };
        assert_eq!(
            prepare_unknown(None, &planted),
            (Vote::ReadOnly, Record::Nothing),
            "planted bug (h) is configuration"
        );
        assert_eq!(
            prepare_unknown(Some(Recorded::Committed), &RULES),
            (Vote::Yes, Record::Nothing)
        );
        assert_eq!(
            abort_finished(None),
            (AckStatus::Applied, Record::Tombstone(Sync::Durable))
        );
        assert_eq!(
            abort_finished(Some(Recorded::Committed)).0,
            AckStatus::ConflictingOutcome
        );
        assert_eq!(
            commit_finished(Some(Recorded::Aborted), &RULES).0,
            AckStatus::ConflictingOutcome
        );
        assert_eq!(
            commit_finished(Some(Recorded::ReadOnly), &RULES).0,
            AckStatus::AlreadyApplied
        );
        assert_eq!(
            one_phase_unknown(Some(Recorded::Committed), &RULES).0,
            OnePhaseOutcome::Committed
        );
    }
}
