//! The replicated state machine's logic: a pure, deterministic function of (state, command).
//!
//! Every node applies the same commands in the same order and must reach the same state, so
//! nothing here reads a clock, a random number or the environment: the only time is the
//! command's `proposed_at_unix_ms`, stamped by the leader that proposed it. Maps are ordered so
//! iteration (into snapshots, into listings) is the same everywhere.
//!
//! Decisions are FIRST-WINS (docs/protocol.md rule C4): a `Decide` for a transaction that
//! already has a decision changes nothing and reports the decision that stands. This is what
//! makes a participant's `Resolve` (which proposes ABORT) safe against a racing COMMIT.

use std::collections::{BTreeMap, BTreeSet};

use ratify_proto::types::command::{Command, CommandKind, DecideItem, PhaseTwoAck};
use ratify_proto::types::{
    DecisionSource, Endpoint, FinalDecision, ParticipantId, TxnId, TxnPhase,
};
use serde::{Deserialize, Serialize};

/// A recorded decision and the progress of its phase 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The decision; never changes once recorded.
    pub decision: FinalDecision,
    /// Who decided it.
    pub source: DecisionSource,
    /// Who must acknowledge phase 2.
    pub participants: Vec<ParticipantId>,
    /// Who has not acknowledged yet (empty once completed).
    pub pending: BTreeSet<ParticipantId>,
    /// From the deciding entry.
    pub decided_at_unix_ms: u64,
    /// From the entry that recorded the last acknowledgement; `None` while pending.
    pub completed_at_unix_ms: Option<u64>,
}

/// A registered participant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Where it listens.
    pub endpoint: Endpoint,
    /// From the registering entry.
    pub registered_at_unix_ms: u64,
}

/// One transaction's applied decision, as reported to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedDecision {
    /// The transaction.
    pub txn_id: TxnId,
    /// The decision that stands (the proposer's, or an earlier one).
    pub decision: FinalDecision,
    /// True if this command recorded it; false if an earlier decision stood.
    pub newly_decided: bool,
    /// The standing record's participants still to acknowledge phase 2 (empty once completed).
    pub pending: Vec<ParticipantId>,
    /// Who decided the standing record.
    pub source: DecisionSource,
}

/// What an applied entry did that the leader's 2PC driver acts on. Apply hands these, in log
/// order, to the node's driver (the apply feed): the driver learns of every decision and
/// registration however it was proposed, with no scan of the state (docs/protocol.md C6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A Decide item was applied (first-wins: maybe not as proposed).
    Decided(AppliedDecision),
    /// A participant's registration was recorded.
    Registered {
        /// Who.
        participant: ParticipantId,
        /// Where it listens now.
        endpoint: Endpoint,
    },
}

/// How apply treats a decision for a transaction that already has one. Only the planted bug
/// (d) of `ratify-jepsen selftest` changes it; it is configuration, never read from a global.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyRules {
    /// Planted bug (d), C4 broken: the later decision replaces the earlier one.
    pub last_wins: bool,
}

/// What applying a command returns to the node that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandReply {
    /// For `Decide`: one entry per item, in order.
    Decided(Vec<AppliedDecision>),
    /// For every other command (and for blank and membership entries).
    Done,
}

/// A row changed by an apply, so the store persists exactly what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `decided[txn]` was written.
    Decided(TxnId),
    /// `decided[txn]` was removed.
    DecidedRemoved(TxnId),
    /// `completed[txn]` was written.
    Completed(TxnId),
    /// `completed[txn]` was removed.
    CompletedRemoved(TxnId),
    /// `participants[id]` was written.
    Participant(ParticipantId),
}

/// The replicated state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Decided, phase 2 not yet acknowledged by every participant.
    pub decided: BTreeMap<TxnId, DecisionRecord>,
    /// Decided and acknowledged; kept until compacted, so retries get the true answer.
    pub completed: BTreeMap<TxnId, DecisionRecord>,
    /// The participant registry.
    pub participants: BTreeMap<ParticipantId, Registration>,
}

impl State {
    /// Apply one command. Appends every row it changed to `changes`.
    pub fn apply(&mut self, cmd: &Command, changes: &mut Vec<Change>) -> CommandReply {
        self.apply_with(ApplyRules::default(), cmd, changes)
    }

    /// [`State::apply`] under `rules`.
    pub fn apply_with(
        &mut self,
        rules: ApplyRules,
        cmd: &Command,
        changes: &mut Vec<Change>,
    ) -> CommandReply {
        let now = cmd.proposed_at_unix_ms;
        let reply = match &cmd.kind {
            CommandKind::Decide(items) => CommandReply::Decided(
                items
                    .iter()
                    .map(|item| self.decide(rules, now, item, changes))
                    .collect(),
            ),
            CommandKind::Forget(acks) => {
                for ack in acks {
                    self.ack(now, ack, changes);
                }
                CommandReply::Done
            }
            CommandKind::Compact { before_unix_ms } => {
                self.compact(*before_unix_ms, changes);
                CommandReply::Done
            }
            CommandKind::RegisterParticipant {
                participant,
                endpoint,
            } => {
                self.participants.insert(
                    participant.clone(),
                    Registration {
                        endpoint: endpoint.clone(),
                        registered_at_unix_ms: now,
                    },
                );
                changes.push(Change::Participant(participant.clone()));
                CommandReply::Done
            }
        };
        self.check_invariants();
        reply
    }

    /// The record of a transaction and its phase, if one exists.
    pub fn lookup(&self, txn_id: &TxnId) -> Option<(TxnPhase, &DecisionRecord)> {
        if let Some(r) = self.decided.get(txn_id) {
            return Some((TxnPhase::Decided, r));
        }
        self.completed.get(txn_id).map(|r| (TxnPhase::Completed, r))
    }

    fn decide(
        &mut self,
        rules: ApplyRules,
        now: u64,
        item: &DecideItem,
        changes: &mut Vec<Change>,
    ) -> AppliedDecision {
        if rules.last_wins {
            // Planted bug (d): the later decision replaces the earlier one.
            self.decided.remove(&item.txn_id);
            self.completed.remove(&item.txn_id);
        }
        if let Some((_, existing)) = self.lookup(&item.txn_id) {
            // First-wins: the earlier decision stands.
            return AppliedDecision {
                txn_id: item.txn_id,
                decision: existing.decision.clone(),
                newly_decided: false,
                pending: existing.pending.iter().cloned().collect(),
                source: existing.source,
            };
        }
        let pending: BTreeSet<ParticipantId> = item.participants.iter().cloned().collect();
        let record = DecisionRecord {
            decision: item.decision.clone(),
            source: item.source,
            participants: item.participants.clone(),
            completed_at_unix_ms: pending.is_empty().then_some(now),
            pending,
            decided_at_unix_ms: now,
        };
        if record.pending.is_empty() {
            // Nobody to tell: complete at once.
            self.completed.insert(item.txn_id, record);
            changes.push(Change::Completed(item.txn_id));
        } else {
            self.decided.insert(item.txn_id, record);
            changes.push(Change::Decided(item.txn_id));
        }
        AppliedDecision {
            txn_id: item.txn_id,
            decision: item.decision.clone(),
            newly_decided: true,
            pending: item
                .participants
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            source: item.source,
        }
    }

    fn ack(&mut self, now: u64, ack: &PhaseTwoAck, changes: &mut Vec<Change>) {
        // Acks for transactions no longer pending (duplicates, or after completion) are no-ops.
        let Some(record) = self.decided.get_mut(&ack.txn_id) else {
            return;
        };
        for p in &ack.participants {
            record.pending.remove(p);
        }
        if record.pending.is_empty() {
            let mut record = self
                .decided
                .remove(&ack.txn_id)
                .expect("present: borrowed just above");
            record.completed_at_unix_ms = Some(now);
            self.completed.insert(ack.txn_id, record);
            changes.push(Change::DecidedRemoved(ack.txn_id));
            changes.push(Change::Completed(ack.txn_id));
        } else {
            changes.push(Change::Decided(ack.txn_id));
        }
    }

    fn compact(&mut self, before_unix_ms: u64, changes: &mut Vec<Change>) {
        let expired: Vec<TxnId> = self
            .completed
            .iter()
            .filter(|(_, r)| r.completed_at_unix_ms.is_some_and(|t| t < before_unix_ms))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.completed.remove(&id);
            changes.push(Change::CompletedRemoved(id));
        }
    }

    /// Invariants that hold after every apply. A violation is a bug in this module, so it
    /// panics (in debug builds; the checks are O(n)).
    pub fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        for (id, r) in &self.decided {
            assert!(!r.pending.is_empty(), "{id}: decided with nobody pending");
            assert!(
                r.completed_at_unix_ms.is_none(),
                "{id}: decided but completed"
            );
            assert!(
                !self.completed.contains_key(id),
                "{id}: both decided and completed"
            );
            assert!(
                r.pending.iter().all(|p| r.participants.contains(p)),
                "{id}: pending participant not in the participant list"
            );
        }
        for (id, r) in &self.completed {
            assert!(r.pending.is_empty(), "{id}: completed with acks pending");
            assert!(
                r.completed_at_unix_ms.is_some(),
                "{id}: completed without a time"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ratify_proto::types::{AbortCause, AbortInfo};

    fn txn(n: u8) -> TxnId {
        let mut b = [0u8; 16];
        b[0] = 1;
        b[15] = n;
        TxnId::from_bytes(b).expect("non-nil")
    }

    fn p(s: &str) -> ParticipantId {
        ParticipantId::new(s).expect("valid")
    }

    fn abort() -> FinalDecision {
        FinalDecision::Abort(AbortInfo::new(AbortCause::ResolvedByParticipant, ""))
    }

    fn decide(at: u64, id: TxnId, d: FinalDecision, ps: &[&str]) -> Command {
        Command {
            proposed_at_unix_ms: at,
            kind: CommandKind::Decide(vec![DecideItem {
                txn_id: id,
                decision: d,
                source: DecisionSource::Commit,
                participants: ps.iter().map(|s| p(s)).collect(),
            }]),
        }
    }

    fn ack(at: u64, id: TxnId, ps: &[&str]) -> Command {
        Command {
            proposed_at_unix_ms: at,
            kind: CommandKind::Forget(vec![PhaseTwoAck {
                txn_id: id,
                participants: ps.iter().map(|s| p(s)).collect(),
            }]),
        }
    }

    /// Rule C4: the first decision stands; a later one for the same txn changes nothing.
    #[test]
    fn decide_is_first_wins() {
        let mut s = State::default();
        let mut ch = vec![];
        let r = s.apply(
            &decide(1, txn(1), FinalDecision::Commit, &["a", "b"]),
            &mut ch,
        );
        assert_eq!(
            r,
            CommandReply::Decided(vec![AppliedDecision {
                txn_id: txn(1),
                decision: FinalDecision::Commit,
                newly_decided: true,
                pending: vec![p("a"), p("b")],
                source: DecisionSource::Commit,
            }])
        );
        let before = s.clone();
        let mut ch = vec![];
        let r = s.apply(&decide(2, txn(1), abort(), &["a"]), &mut ch);
        assert_eq!(
            r,
            CommandReply::Decided(vec![AppliedDecision {
                txn_id: txn(1),
                decision: FinalDecision::Commit,
                newly_decided: false,
                pending: vec![p("a"), p("b")],
                source: DecisionSource::Commit,
            }])
        );
        assert_eq!(s, before);
        assert!(ch.is_empty());
    }

    /// A decision stays decided through completion: a Resolve after phase 2 still loses.
    #[test]
    fn completed_decisions_still_win() {
        let mut s = State::default();
        let mut ch = vec![];
        s.apply(
            &decide(1, txn(1), FinalDecision::Commit, &["a", "b"]),
            &mut ch,
        );
        s.apply(&ack(2, txn(1), &["a"]), &mut ch);
        assert_eq!(s.lookup(&txn(1)).map(|(ph, _)| ph), Some(TxnPhase::Decided));
        s.apply(&ack(3, txn(1), &["b"]), &mut ch);
        let (phase, rec) = s.lookup(&txn(1)).expect("recorded");
        assert_eq!(phase, TxnPhase::Completed);
        assert_eq!(rec.completed_at_unix_ms, Some(3));
        let r = s.apply(&decide(4, txn(1), abort(), &["a"]), &mut ch);
        assert!(
            matches!(r, CommandReply::Decided(v) if v[0].decision == FinalDecision::Commit && !v[0].newly_decided)
        );
    }

    /// Compact drops only outcomes completed before the cut-off, by entry time.
    #[test]
    fn compact_by_entry_time() {
        let mut s = State::default();
        let mut ch = vec![];
        s.apply(&decide(10, txn(1), FinalDecision::Commit, &[]), &mut ch);
        s.apply(&decide(20, txn(2), FinalDecision::Commit, &[]), &mut ch);
        s.apply(&decide(30, txn(3), FinalDecision::Commit, &["a"]), &mut ch);
        s.apply(
            &Command {
                proposed_at_unix_ms: 1_000,
                kind: CommandKind::Compact { before_unix_ms: 20 },
            },
            &mut ch,
        );
        assert!(s.lookup(&txn(1)).is_none());
        assert!(s.lookup(&txn(2)).is_some());
        assert!(
            s.lookup(&txn(3)).is_some(),
            "pending decisions are never compacted"
        );
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        let names = ["a", "b", "c"];
        let ps = proptest::sample::subsequence(names.to_vec(), 0..=3)
            .prop_map(|v| v.into_iter().map(p).collect::<Vec<_>>());
        let id = (1u8..6).prop_map(txn);
        let decision = prop_oneof![Just(FinalDecision::Commit), Just(abort())];
        let kind = prop_oneof![
            (id.clone(), decision, ps.clone()).prop_map(|(txn_id, decision, participants)| {
                CommandKind::Decide(vec![DecideItem {
                    txn_id,
                    decision,
                    source: DecisionSource::Commit,
                    participants,
                }])
            }),
            (id, ps).prop_map(|(txn_id, participants)| {
                CommandKind::Forget(vec![PhaseTwoAck {
                    txn_id,
                    participants,
                }])
            }),
            (0u64..100).prop_map(|before_unix_ms| CommandKind::Compact { before_unix_ms }),
            proptest::sample::select(names.to_vec()).prop_map(|n| {
                CommandKind::RegisterParticipant {
                    participant: p(n),
                    endpoint: Endpoint::new(format!("http://127.0.0.1:1/{n}")).expect("valid"),
                }
            }),
        ];
        (0u64..100, kind).prop_map(|(proposed_at_unix_ms, kind)| Command {
            proposed_at_unix_ms,
            kind,
        })
    }

    proptest! {
        /// Apply is deterministic: the same commands give the same state, replies and snapshot
        /// bytes on two state machines; and a decision, once made, never changes.
        #[test]
        fn apply_is_deterministic_and_decisions_are_final(cmds in proptest::collection::vec(arb_command(), 0..60)) {
            let (mut a, mut b) = (State::default(), State::default());
            let mut first: BTreeMap<TxnId, FinalDecision> = BTreeMap::new();
            for cmd in &cmds {
                let (mut ca, mut cb) = (vec![], vec![]);
                let ra = a.apply(cmd, &mut ca);
                let rb = b.apply(cmd, &mut cb);
                prop_assert_eq!(&ra, &rb);
                prop_assert_eq!(&ca, &cb);
                if let CommandReply::Decided(applied) = ra {
                    for d in applied {
                        let stands = first.entry(d.txn_id).or_insert_with(|| d.decision.clone());
                        prop_assert_eq!(&d.decision, &*stands);
                    }
                }
                // Compaction forgets completed outcomes (after their retention); until then a
                // decision never changes.
                first.retain(|id, _| a.lookup(id).is_some());
            }
            prop_assert_eq!(&a, &b);
            let sa = serde_json::to_vec(&a).expect("serializable");
            let sb = serde_json::to_vec(&b).expect("serializable");
            prop_assert_eq!(sa, sb);
        }
    }
}
