//! The 2PC driver: a pure, deterministic state machine run by the leader.
//!
//! `step(now, input) -> actions`: no I/O, no clock, no randomness. The runtime
//! ([`super::runtime`]) feeds it requests, votes, applied decisions, acknowledgements and ticks,
//! and carries out the actions it returns (send Prepare, propose a decision to Raft, answer a
//! caller, send phase 2, propose Forget). The rules cited are docs/protocol.md's.
//!
//! What the driver remembers is only what a leader needs in memory: transactions being decided
//! (votes so far, who waits for the answer) and phase-2 deliveries in progress. Everything that
//! must survive the leader is in the replicated state: a new leader rebuilds its phase-2 work
//! from it ([`Input::BecameLeader`]), and a transaction that was being prepared when the old
//! leader died is decided again when the client retries (first-wins keeps any earlier decision).

use std::collections::{BTreeMap, BTreeSet};

use ratify_proto::types::command::{DecideItem, PhaseTwoAck};
use ratify_proto::types::participant::AckStatus;
use ratify_proto::types::{
    AbortCause, AbortInfo, Decision, DecisionSource, FinalDecision, Outcome, ParticipantId, TxnId,
    Vote,
};

use crate::state::AppliedDecision;

/// Identifies a caller waiting for an answer (the runtime maps it to a reply channel).
pub type ReplyId = u64;

/// The driver's limits and timings.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Longest prepare phase, whatever deadline the client asked for.
    pub prepare_timeout_ms: u64,
    /// Transactions being decided at once, at most; beyond, requests are refused as overloaded.
    pub deciding_max: usize,
    /// Transactions per phase-2 message to one participant, at most.
    pub phase2_batch_max: usize,
    /// First phase-2 retry pause; doubles up to `phase2_backoff_max_ms`.
    pub phase2_backoff_min_ms: u64,
    /// Longest phase-2 retry pause.
    pub phase2_backoff_max_ms: u64,
    /// Acknowledgements per Forget proposal, at most.
    pub forget_batch_max: usize,
    /// Acknowledgements wait up to this long to be proposed together (or until a decision is
    /// proposed, or `forget_batch_max` are waiting): a Forget is bookkeeping, not on any
    /// caller's path, and one entry for many transactions saves a Raft round per transaction.
    pub forget_delay_ms: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            prepare_timeout_ms: 10_000,
            deciding_max: 100_000,
            phase2_batch_max: 1_024,
            phase2_backoff_min_ms: 50,
            phase2_backoff_max_ms: 5_000,
            forget_batch_max: 4_096,
            forget_delay_ms: 10,
        }
    }
}

/// A decided transaction whose phase 2 is not acknowledged, from the replicated state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPhase2 {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its decision.
    pub decision: FinalDecision,
    /// Participants still to acknowledge.
    pub pending: Vec<ParticipantId>,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Commit with two or more participants (C3). Zero and one are the runtime's (C2).
    Commit {
        /// The transaction.
        txn_id: TxnId,
        /// Its participants (distinct, registered).
        participants: Vec<ParticipantId>,
        /// The client's deadline.
        deadline_unix_ms: u64,
        /// Empty, or one per participant: the calls the initiator made to it, which the
        /// participant checks at Prepare (P10).
        call_counts: Vec<u32>,
        /// Who waits.
        reply: ReplyId,
    },
    /// The initiator gives up: decide ABORT unless a decision exists.
    Abort {
        /// The transaction.
        txn_id: TxnId,
        /// Its participants.
        participants: Vec<ParticipantId>,
        /// Why.
        message: String,
        /// Who waits.
        reply: ReplyId,
    },
    /// An in-doubt participant asks; no decision is recorded yet (the runtime answers from the
    /// replicated state when there is one).
    Resolve {
        /// The transaction.
        txn_id: TxnId,
        /// Who asks.
        participant: ParticipantId,
        /// Who waits.
        reply: ReplyId,
    },
    /// One participant's answers to a Prepare batch.
    Votes {
        /// Who voted.
        participant: ParticipantId,
        /// The votes.
        votes: Vec<(TxnId, Vote)>,
    },
    /// A Prepare batch to one participant failed (unreachable, refused, timed out).
    PrepareFailed {
        /// Which participant.
        participant: ParticipantId,
        /// The batch.
        txn_ids: Vec<TxnId>,
        /// Why.
        error: String,
    },
    /// Decisions this leader proposed were applied (first-wins: maybe not as proposed).
    Decided {
        /// One per item, as applied.
        applied: Vec<AppliedDecision>,
    },
    /// A proposal failed: this node is not the leader any more, or Raft stopped.
    ProposeFailed {
        /// The proposal's transactions.
        txn_ids: Vec<TxnId>,
    },
    /// One participant's answers to a phase-2 batch.
    Acks {
        /// Who answered.
        participant: ParticipantId,
        /// Per transaction.
        acks: Vec<(TxnId, AckStatus)>,
    },
    /// A phase-2 batch to one participant failed.
    AcksFailed {
        /// Which participant.
        participant: ParticipantId,
        /// The batch.
        txn_ids: Vec<TxnId>,
    },
    /// A Forget proposal failed; its acknowledgements must be proposed again.
    ForgetFailed {
        /// The acknowledgements.
        acks: Vec<PhaseTwoAck>,
    },
    /// This node became the leader and has applied the whole log: resume phase 2 (C6).
    BecameLeader {
        /// Decided transactions not yet acknowledged by everyone.
        pending: Vec<PendingPhase2>,
    },
    /// The replicated state's decided-but-unacknowledged transactions, read periodically on
    /// the leader (C6): any this driver does not track (a decision applied after the scan at
    /// [`Input::BecameLeader`] that this driver did not propose) gets its phase 2.
    Reconcile {
        /// Decided transactions not yet acknowledged by everyone, decided a while ago.
        pending: Vec<PendingPhase2>,
    },
    /// This node is no longer the leader.
    LostLeadership,
    /// Time passed (deadlines, retries).
    Tick,
}

/// What a waiting caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For Commit and Abort.
    Outcome(Outcome),
    /// For Resolve.
    Decision(FinalDecision),
    /// This node cannot answer: not the leader (any more). The caller retries at the leader.
    NotLeader,
    /// Too many transactions being decided; retry later.
    Overloaded,
}

/// Something to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send Prepare for these transactions to one participant.
    SendPrepare {
        /// To whom.
        participant: ParticipantId,
        /// Which transactions.
        txn_ids: Vec<TxnId>,
        /// Answers after this count as NO.
        deadline_unix_ms: u64,
        /// The initiators' call counts for this participant, where reported (P10).
        call_counts: BTreeMap<TxnId, u32>,
    },
    /// Propose these decisions in one Raft entry.
    Propose {
        /// The decisions.
        items: Vec<DecideItem>,
    },
    /// Answer a caller.
    Reply {
        /// Who.
        reply: ReplyId,
        /// What.
        answer: Answer,
    },
    /// Send phase 2 to one participant.
    SendPhase2 {
        /// To whom.
        participant: ParticipantId,
        /// COMMIT or ABORT.
        decision: Decision,
        /// Which transactions.
        txn_ids: Vec<TxnId>,
    },
    /// Propose these phase-2 acknowledgements (C7).
    ProposeForget {
        /// The acknowledgements.
        acks: Vec<PhaseTwoAck>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaiterKind {
    Commit,
    Abort,
    Resolve,
}

#[derive(Debug, Clone)]
struct Deciding {
    participants: Vec<ParticipantId>,
    votes: BTreeMap<ParticipantId, Vote>,
    deadline_unix_ms: u64,
    waiters: Vec<(ReplyId, WaiterKind)>,
    /// The decision proposed to Raft, once proposed.
    proposed: Option<FinalDecision>,
}

impl Deciding {
    /// Who may have prepared: everyone but NO and READ_ONLY voters.
    fn may_have_prepared(&self) -> Vec<ParticipantId> {
        self.participants
            .iter()
            .filter(|p| !matches!(self.votes.get(*p), Some(Vote::No { .. } | Vote::ReadOnly)))
            .cloned()
            .collect()
    }

    fn yes_voters(&self) -> Vec<ParticipantId> {
        self.participants
            .iter()
            .filter(|p| matches!(self.votes.get(*p), Some(Vote::Yes)))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Delivery {
    due_unix_ms: u64,
    backoff_ms: u64,
    in_flight: bool,
}

#[derive(Debug, Clone)]
struct Phase2 {
    decision: FinalDecision,
    deliveries: BTreeMap<ParticipantId, Delivery>,
}

/// The driver.
#[derive(Debug)]
pub struct Driver {
    config: DriverConfig,
    leader: bool,
    deciding: BTreeMap<TxnId, Deciding>,
    phase2: BTreeMap<TxnId, Phase2>,
    /// Acknowledged, not yet proposed in a Forget.
    acked: BTreeMap<TxnId, BTreeSet<ParticipantId>>,
    /// When the oldest of `acked` arrived.
    acked_since_ms: Option<u64>,
    /// Transactions whose phase 2 [`Input::Reconcile`] had to pick up.
    reconciled: u64,
    /// Transactions in a Forget proposal not known to have failed, with when it was made:
    /// reconciliation leaves them alone for [`FORGET_GRACE_MS`].
    forgetting: BTreeMap<TxnId, u64>,
}

/// How long a proposed Forget may take to apply before reconciliation resends the
/// transaction's phase 2 (a Forget lost with a leadership change is retried that way).
pub const FORGET_GRACE_MS: u64 = 30_000;

impl Driver {
    /// A driver that is not (yet) the leader.
    pub fn new(config: DriverConfig) -> Self {
        Self {
            config,
            leader: false,
            deciding: BTreeMap::new(),
            phase2: BTreeMap::new(),
            acked: BTreeMap::new(),
            acked_since_ms: None,
            reconciled: 0,
            forgetting: BTreeMap::new(),
        }
    }

    /// How many transactions' phase 2 a [`Input::Reconcile`] picked up since start (each one
    /// a decision this driver had missed).
    pub fn reconciled(&self) -> u64 {
        self.reconciled
    }

    /// Whether it acts as the leader.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Transactions being decided.
    pub fn deciding_len(&self) -> usize {
        self.deciding.len()
    }

    /// Phase-2 deliveries outstanding (transaction, participant) — the phase-2 backlog.
    pub fn phase2_backlog(&self) -> usize {
        self.phase2.values().map(|p| p.deliveries.len()).sum()
    }

    /// The decision known to this driver for a transaction in phase 2.
    pub fn phase2_decision(&self, txn_id: &TxnId) -> Option<&FinalDecision> {
        self.phase2.get(txn_id).map(|p| &p.decision)
    }

    /// Advance: apply `input` at time `now_unix_ms`, return what to do.
    pub fn step(&mut self, now_unix_ms: u64, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Commit {
                txn_id,
                participants,
                deadline_unix_ms,
                call_counts,
                reply,
            } => {
                // Each participant with the initiator's count of its calls there, if reported.
                let enlisted = participants
                    .into_iter()
                    .enumerate()
                    .map(|(i, p)| (p, call_counts.get(i).copied()))
                    .collect();
                self.on_commit(
                    now_unix_ms,
                    txn_id,
                    enlisted,
                    deadline_unix_ms,
                    reply,
                    &mut out,
                )
            }
            Input::Abort {
                txn_id,
                participants,
                message,
                reply,
            } => self.on_abort(txn_id, participants, message, reply, &mut out),
            Input::Resolve {
                txn_id,
                participant,
                reply,
            } => self.on_resolve(txn_id, participant, reply, &mut out),
            Input::Votes { participant, votes } => {
                for (txn_id, vote) in votes {
                    self.on_vote(txn_id, &participant, vote, &mut out);
                }
            }
            Input::PrepareFailed {
                participant,
                txn_ids,
                error,
            } => {
                for txn_id in txn_ids {
                    // No answer counts as NO (C3). The participant may still have prepared
                    // (the answer may be what was lost), so it gets phase-2 ABORT too.
                    if let Some(d) = self.deciding.get(&txn_id)
                        && d.proposed.is_none()
                        && d.participants.contains(&participant)
                        && !d.votes.contains_key(&participant)
                    {
                        let info = AbortInfo {
                            cause: AbortCause::UnreachableParticipant,
                            participant: Some(participant.clone()),
                            no_reason: None,
                            message: ratify_proto::types::truncate_utf8(&error, 1024).to_owned(),
                        };
                        self.propose(txn_id, FinalDecision::Abort(info), &mut out);
                    }
                }
            }
            Input::Decided { applied } => {
                for a in applied {
                    self.on_decided(now_unix_ms, a, &mut out);
                }
            }
            Input::ProposeFailed { txn_ids } => {
                for txn_id in txn_ids {
                    if let Some(d) = self.deciding.remove(&txn_id) {
                        for (reply, _) in d.waiters {
                            out.push(Action::Reply {
                                reply,
                                answer: Answer::NotLeader,
                            });
                        }
                    }
                }
            }
            Input::Acks { participant, acks } => {
                for (txn_id, status) in acks {
                    self.on_ack(now_unix_ms, txn_id, &participant, status);
                }
            }
            Input::AcksFailed {
                participant,
                txn_ids,
            } => {
                for txn_id in txn_ids {
                    self.retry_later(now_unix_ms, txn_id, &participant);
                }
            }
            Input::ForgetFailed { acks } => {
                if !acks.is_empty() {
                    self.acked_since_ms.get_or_insert(now_unix_ms);
                }
                for ack in acks {
                    self.forgetting.remove(&ack.txn_id);
                    self.acked
                        .entry(ack.txn_id)
                        .or_default()
                        .extend(ack.participants);
                }
            }
            Input::BecameLeader { pending } => {
                self.leader = true;
                for p in pending {
                    let entry = self.phase2.entry(p.txn_id).or_insert_with(|| Phase2 {
                        decision: p.decision.clone(),
                        deliveries: BTreeMap::new(),
                    });
                    for participant in p.pending {
                        entry.deliveries.entry(participant).or_insert(Delivery {
                            due_unix_ms: now_unix_ms,
                            backoff_ms: self.config.phase2_backoff_min_ms,
                            in_flight: false,
                        });
                    }
                }
                self.flush(now_unix_ms, &mut out);
            }
            Input::Reconcile { pending } => {
                if self.leader {
                    let grace_from = now_unix_ms.saturating_sub(FORGET_GRACE_MS);
                    self.forgetting.retain(|_, at| *at >= grace_from);
                    for p in pending {
                        if self.deciding.contains_key(&p.txn_id)
                            || self.phase2.contains_key(&p.txn_id)
                            || self.acked.contains_key(&p.txn_id)
                            || self.forgetting.contains_key(&p.txn_id)
                        {
                            continue;
                        }
                        self.reconciled += 1;
                        let entry = self.phase2.entry(p.txn_id).or_insert_with(|| Phase2 {
                            decision: p.decision.clone(),
                            deliveries: BTreeMap::new(),
                        });
                        for participant in p.pending {
                            entry.deliveries.entry(participant).or_insert(Delivery {
                                due_unix_ms: now_unix_ms,
                                backoff_ms: self.config.phase2_backoff_min_ms,
                                in_flight: false,
                            });
                        }
                    }
                    self.flush(now_unix_ms, &mut out);
                }
            }
            Input::LostLeadership => {
                self.leader = false;
                for (_, d) in std::mem::take(&mut self.deciding) {
                    for (reply, _) in d.waiters {
                        out.push(Action::Reply {
                            reply,
                            answer: Answer::NotLeader,
                        });
                    }
                }
                // Phase 2 and unproposed acks belong to the next leader (from the replicated
                // state); at worst it resends a message a participant already applied (P7).
                self.phase2.clear();
                self.acked.clear();
                self.forgetting.clear();
                self.acked_since_ms = None;
            }
            Input::Tick => {
                let expired: Vec<TxnId> = self
                    .deciding
                    .iter()
                    .filter(|(_, d)| d.proposed.is_none() && d.deadline_unix_ms <= now_unix_ms)
                    .map(|(id, _)| *id)
                    .collect();
                for txn_id in expired {
                    let d = &self.deciding[&txn_id];
                    let missing = d
                        .participants
                        .iter()
                        .find(|p| !d.votes.contains_key(*p))
                        .cloned();
                    let info = AbortInfo {
                        cause: AbortCause::PrepareTimeout,
                        participant: missing,
                        no_reason: None,
                        message: "no vote before the deadline".into(),
                    };
                    self.propose(txn_id, FinalDecision::Abort(info), &mut out);
                }
                self.flush(now_unix_ms, &mut out);
            }
        }
        if self.leader && out.iter().any(|a| matches!(a, Action::Propose { .. })) {
            self.flush_forgets(now_unix_ms, &mut out);
        }
        self.check_invariants();
        out
    }

    fn on_commit(
        &mut self,
        now: u64,
        txn_id: TxnId,
        enlisted: Vec<(ParticipantId, Option<u32>)>,
        deadline_unix_ms: u64,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        if self.answer_early(&txn_id, reply, WaiterKind::Commit, out) {
            return;
        }
        if let Some(d) = self.deciding.get_mut(&txn_id) {
            // A retry while the first attempt is in progress: wait for the same answer.
            d.waiters.push((reply, WaiterKind::Commit));
            return;
        }
        if self.deciding.len() >= self.config.deciding_max {
            out.push(Action::Reply {
                reply,
                answer: Answer::Overloaded,
            });
            return;
        }
        let deadline = deadline_unix_ms.min(now.saturating_add(self.config.prepare_timeout_ms));
        let mut participants = Vec::with_capacity(enlisted.len());
        for (p, calls) in enlisted {
            out.push(Action::SendPrepare {
                participant: p.clone(),
                txn_ids: vec![txn_id],
                deadline_unix_ms: deadline,
                call_counts: calls
                    .map(|n| BTreeMap::from([(txn_id, n)]))
                    .unwrap_or_default(),
            });
            participants.push(p);
        }
        self.deciding.insert(
            txn_id,
            Deciding {
                participants,
                votes: BTreeMap::new(),
                deadline_unix_ms: deadline,
                waiters: vec![(reply, WaiterKind::Commit)],
                proposed: None,
            },
        );
    }

    /// Answer at once when this node cannot decide (not the leader) or already knows the
    /// decision (phase 2 in progress here). Returns whether it answered.
    fn answer_early(
        &self,
        txn_id: &TxnId,
        reply: ReplyId,
        kind: WaiterKind,
        out: &mut Vec<Action>,
    ) -> bool {
        let answer = if !self.leader {
            Answer::NotLeader
        } else if let Some(p) = self.phase2.get(txn_id) {
            match kind {
                WaiterKind::Resolve => Answer::Decision(p.decision.clone()),
                WaiterKind::Commit | WaiterKind::Abort => Answer::Outcome(p.decision.outcome()),
            }
        } else {
            return false;
        };
        out.push(Action::Reply { reply, answer });
        true
    }

    fn on_abort(
        &mut self,
        txn_id: TxnId,
        participants: Vec<ParticipantId>,
        message: String,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        if self.answer_early(&txn_id, reply, WaiterKind::Abort, out) {
            return;
        }
        let d = self.deciding.entry(txn_id).or_insert_with(|| Deciding {
            participants: participants.clone(),
            votes: BTreeMap::new(),
            deadline_unix_ms: 0,
            waiters: Vec::new(),
            proposed: None,
        });
        d.waiters.push((reply, WaiterKind::Abort));
        if d.proposed.is_none() {
            // Abort is always allowed before a decision.
            let info = AbortInfo::new(AbortCause::ClientAbort, message);
            self.propose_as(
                txn_id,
                FinalDecision::Abort(info),
                DecisionSource::ClientAbort,
                out,
            );
        }
    }

    fn on_resolve(
        &mut self,
        txn_id: TxnId,
        participant: ParticipantId,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        if self.answer_early(&txn_id, reply, WaiterKind::Resolve, out) {
            return;
        }
        if let Some(d) = self.deciding.get_mut(&txn_id) {
            // Being decided here right now: the answer comes with the decision (bounded by the
            // prepare deadline).
            d.waiters.push((reply, WaiterKind::Resolve));
            return;
        }
        // No decision anywhere: the participant waited long enough; decide ABORT (first-wins
        // keeps any decision that races it).
        let info = AbortInfo {
            cause: AbortCause::ResolvedByParticipant,
            participant: Some(participant.clone()),
            no_reason: None,
            message: String::new(),
        };
        self.deciding.insert(
            txn_id,
            Deciding {
                participants: vec![participant],
                votes: BTreeMap::new(),
                deadline_unix_ms: 0,
                waiters: vec![(reply, WaiterKind::Resolve)],
                proposed: None,
            },
        );
        self.propose(txn_id, FinalDecision::Abort(info), out);
    }

    fn on_vote(
        &mut self,
        txn_id: TxnId,
        participant: &ParticipantId,
        vote: Vote,
        out: &mut Vec<Action>,
    ) {
        let Some(d) = self.deciding.get_mut(&txn_id) else {
            return; // Late: already decided.
        };
        if d.proposed.is_some()
            || !d.participants.contains(participant)
            || d.votes.contains_key(participant)
        {
            return; // Late, unexpected or duplicate.
        }
        d.votes.insert(participant.clone(), vote.clone());
        if let Vote::No { reason, message } = vote {
            let info = AbortInfo {
                cause: AbortCause::VotedNo,
                participant: Some(participant.clone()),
                no_reason: Some(reason),
                message,
            };
            self.propose(txn_id, FinalDecision::Abort(info), out);
        } else if d.votes.len() == d.participants.len() {
            self.propose(txn_id, FinalDecision::Commit, out);
        }
    }

    fn propose(&mut self, txn_id: TxnId, decision: FinalDecision, out: &mut Vec<Action>) {
        let source = match self.deciding.get(&txn_id).and_then(|d| d.waiters.first()) {
            Some((_, WaiterKind::Resolve)) => DecisionSource::Resolve,
            Some((_, WaiterKind::Abort)) => DecisionSource::ClientAbort,
            Some((_, WaiterKind::Commit)) | None => DecisionSource::Commit,
        };
        self.propose_as(txn_id, decision, source, out);
    }

    fn propose_as(
        &mut self,
        txn_id: TxnId,
        decision: FinalDecision,
        source: DecisionSource,
        out: &mut Vec<Action>,
    ) {
        let d = self
            .deciding
            .get_mut(&txn_id)
            .expect("propose is called for a transaction being decided");
        // Phase-2 participants: YES voters for COMMIT (C3: READ_ONLY voters are done); for
        // ABORT everyone who may have prepared.
        let participants = match decision {
            FinalDecision::Commit => d.yes_voters(),
            FinalDecision::Abort(_) => d.may_have_prepared(),
        };
        d.proposed = Some(decision.clone());
        if decision == FinalDecision::Commit
            && ratify_proto::planted::active(ratify_proto::planted::Bug::AnswerBeforeApply)
        {
            // Planted bug (c): tell the client before Raft has the decision.
            d.waiters.retain(|(reply, kind)| {
                if *kind == WaiterKind::Commit {
                    out.push(Action::Reply {
                        reply: *reply,
                        answer: Answer::Outcome(Outcome::Committed),
                    });
                    return false;
                }
                true
            });
        }
        out.push(Action::Propose {
            items: vec![DecideItem {
                txn_id,
                decision,
                source,
                participants,
            }],
        });
    }

    fn on_decided(&mut self, now: u64, applied: AppliedDecision, out: &mut Vec<Action>) {
        let Some(d) = self.deciding.remove(&applied.txn_id) else {
            // Decided outside this driver (an operator's ForceResolve): deliver phase 2 of a
            // new decision too.
            if applied.newly_decided && !applied.pending.is_empty() && self.leader {
                let entry = self.phase2.entry(applied.txn_id).or_insert_with(|| Phase2 {
                    decision: applied.decision.clone(),
                    deliveries: BTreeMap::new(),
                });
                for p in applied.pending {
                    entry.deliveries.entry(p).or_insert(Delivery {
                        due_unix_ms: now,
                        backoff_ms: self.config.phase2_backoff_min_ms,
                        in_flight: false,
                    });
                }
                self.flush(now, out);
            }
            return;
        };
        for (reply, kind) in &d.waiters {
            let answer = match kind {
                WaiterKind::Commit | WaiterKind::Abort => {
                    Answer::Outcome(applied.decision.outcome())
                }
                WaiterKind::Resolve => Answer::Decision(applied.decision.clone()),
            };
            out.push(Action::Reply {
                reply: *reply,
                answer,
            });
        }
        // Phase 2 (C6): the standing record's pending participants, plus — when an earlier
        // ABORT won over this leader's proposal — everyone who may have prepared for it here,
        // so they need not wait to resolve.
        let mut targets: BTreeSet<ParticipantId> = applied.pending.iter().cloned().collect();
        if !applied.newly_decided && matches!(applied.decision, FinalDecision::Abort(_)) {
            targets.extend(d.may_have_prepared());
        }
        if targets.is_empty() {
            return;
        }
        if !self.leader {
            return;
        }
        let entry = self.phase2.entry(applied.txn_id).or_insert_with(|| Phase2 {
            decision: applied.decision.clone(),
            deliveries: BTreeMap::new(),
        });
        for p in targets {
            entry.deliveries.entry(p).or_insert(Delivery {
                due_unix_ms: now,
                backoff_ms: self.config.phase2_backoff_min_ms,
                in_flight: false,
            });
        }
        self.flush(now, out);
    }

    fn on_ack(&mut self, now: u64, txn_id: TxnId, participant: &ParticipantId, status: AckStatus) {
        let Some(p) = self.phase2.get_mut(&txn_id) else {
            return;
        };
        let Some(delivery) = p.deliveries.get_mut(participant) else {
            return;
        };
        match status {
            AckStatus::Applied | AckStatus::AlreadyApplied => {}
            AckStatus::NotPrepared | AckStatus::ConflictingOutcome => {
                // Retrying cannot change this answer; the runtime logs it as an error.
            }
            AckStatus::Retry => {
                delivery.in_flight = false;
                delivery.due_unix_ms = now.saturating_add(delivery.backoff_ms);
                delivery.backoff_ms =
                    (delivery.backoff_ms * 2).min(self.config.phase2_backoff_max_ms);
                return;
            }
        }
        p.deliveries.remove(participant);
        if p.deliveries.is_empty() {
            self.phase2.remove(&txn_id);
        }
        self.acked_since_ms.get_or_insert(now);
        self.acked
            .entry(txn_id)
            .or_default()
            .insert(participant.clone());
    }

    fn retry_later(&mut self, now: u64, txn_id: TxnId, participant: &ParticipantId) {
        if let Some(delivery) = self
            .phase2
            .get_mut(&txn_id)
            .and_then(|p| p.deliveries.get_mut(participant))
        {
            delivery.in_flight = false;
            delivery.due_unix_ms = now.saturating_add(delivery.backoff_ms);
            delivery.backoff_ms = (delivery.backoff_ms * 2).min(self.config.phase2_backoff_max_ms);
        }
    }

    /// Send due phase-2 deliveries, batched per participant and decision; propose Forget for
    /// acknowledgements gathered.
    fn flush(&mut self, now: u64, out: &mut Vec<Action>) {
        if !self.leader {
            return;
        }
        let mut batches: BTreeMap<(ParticipantId, Decision), Vec<TxnId>> = BTreeMap::new();
        for (txn_id, p) in &mut self.phase2 {
            for (participant, delivery) in &mut p.deliveries {
                if delivery.in_flight || delivery.due_unix_ms > now {
                    continue;
                }
                let batch = batches
                    .entry((participant.clone(), p.decision.decision()))
                    .or_default();
                if batch.len() >= self.config.phase2_batch_max {
                    continue; // Next flush.
                }
                delivery.in_flight = true;
                batch.push(*txn_id);
            }
        }
        for ((participant, decision), txn_ids) in batches {
            out.push(Action::SendPhase2 {
                participant,
                decision,
                txn_ids,
            });
        }
        self.flush_forgets(now, out);
    }

    /// Propose Forget for the acknowledgements gathered, once due.
    fn flush_forgets(&mut self, now: u64, out: &mut Vec<Action>) {
        let due = self
            .acked_since_ms
            .is_some_and(|t| now >= t.saturating_add(self.config.forget_delay_ms))
            || self.acked.len() >= self.config.forget_batch_max
            || out.iter().any(|a| matches!(a, Action::Propose { .. }));
        if due && !self.acked.is_empty() {
            self.acked_since_ms = None;
            let mut acks = Vec::new();
            while acks.len() < self.config.forget_batch_max {
                let Some((txn_id, participants)) = self.acked.pop_first() else {
                    break;
                };
                self.forgetting.insert(txn_id, now);
                acks.push(PhaseTwoAck {
                    txn_id,
                    participants: participants.into_iter().collect(),
                });
            }
            if !self.acked.is_empty() {
                self.acked_since_ms = Some(now);
            }
            out.push(Action::ProposeForget { acks });
        }
    }

    /// Invariants after every step; a violation is a bug here, so it panics (debug builds).
    fn check_invariants(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        for (id, d) in &self.deciding {
            assert!(
                !self.phase2.contains_key(id),
                "{id}: deciding and in phase 2"
            );
            assert!(
                d.proposed.is_some() || !d.waiters.is_empty(),
                "{id}: being decided with nobody waiting and nothing proposed"
            );
            assert!(
                d.votes.keys().all(|p| d.participants.contains(p)),
                "{id}: a vote from a stranger"
            );
        }
        for (id, p) in &self.phase2 {
            assert!(
                !p.deliveries.is_empty(),
                "{id}: phase 2 with nothing to deliver"
            );
        }
        if !self.leader {
            assert!(
                self.deciding.is_empty() && self.phase2.is_empty(),
                "work held while not leader"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratify_proto::types::NoReason;

    fn txn(n: u8) -> TxnId {
        let mut b = [0u8; 16];
        b[0] = 1;
        b[15] = n;
        TxnId::from_bytes(b).expect("non-nil")
    }

    fn p(s: &str) -> ParticipantId {
        ParticipantId::new(s).expect("valid")
    }

    fn leader() -> Driver {
        let mut d = Driver::new(DriverConfig::default());
        assert!(
            d.step(0, Input::BecameLeader { pending: vec![] })
                .is_empty()
        );
        d
    }

    fn commit(d: &mut Driver, now: u64, id: TxnId, reply: ReplyId) -> Vec<Action> {
        d.step(
            now,
            Input::Commit {
                txn_id: id,
                participants: vec![p("a"), p("b")],
                deadline_unix_ms: now + 1_000,
                call_counts: vec![],
                reply,
            },
        )
    }

    fn prepare(to: &str, id: TxnId, deadline: u64) -> Action {
        Action::SendPrepare {
            participant: p(to),
            txn_ids: vec![id],
            deadline_unix_ms: deadline,
            call_counts: BTreeMap::new(),
        }
    }

    fn votes(from: &str, id: TxnId, vote: Vote) -> Input {
        Input::Votes {
            participant: p(from),
            votes: vec![(id, vote)],
        }
    }

    fn no(reason: NoReason) -> Vote {
        Vote::No {
            reason,
            message: "m".into(),
        }
    }

    fn applied(id: TxnId, decision: FinalDecision, newly: bool, pending: &[&str]) -> Input {
        Input::Decided {
            applied: vec![AppliedDecision {
                txn_id: id,
                decision,
                newly_decided: newly,
                pending: pending.iter().map(|s| p(s)).collect(),
            }],
        }
    }

    /// C3, C4, C5, C6, C7: all YES → propose COMMIT for the YES voters → answer with the
    /// applied decision → phase 2 to each → Forget once acknowledged.
    #[test]
    fn all_yes_commits() {
        let mut d = leader();
        let t = txn(1);
        assert_eq!(
            commit(&mut d, 100, t, 7),
            vec![prepare("a", t, 1_100), prepare("b", t, 1_100)]
        );
        assert!(d.step(110, votes("a", t, Vote::Yes)).is_empty());
        assert_eq!(
            d.step(120, votes("b", t, Vote::Yes)),
            vec![Action::Propose {
                items: vec![DecideItem {
                    txn_id: t,
                    decision: FinalDecision::Commit,
                    source: DecisionSource::Commit,
                    participants: vec![p("a"), p("b")],
                }]
            }]
        );
        assert_eq!(
            d.step(130, applied(t, FinalDecision::Commit, true, &["a", "b"])),
            vec![
                Action::Reply {
                    reply: 7,
                    answer: Answer::Outcome(Outcome::Committed)
                },
                Action::SendPhase2 {
                    participant: p("a"),
                    decision: Decision::Commit,
                    txn_ids: vec![t]
                },
                Action::SendPhase2 {
                    participant: p("b"),
                    decision: Decision::Commit,
                    txn_ids: vec![t]
                },
            ]
        );
        assert!(
            d.step(
                140,
                Input::Acks {
                    participant: p("a"),
                    acks: vec![(t, AckStatus::Applied)]
                }
            )
            .is_empty()
        );
        d.step(
            141,
            Input::Acks {
                participant: p("b"),
                acks: vec![(t, AckStatus::AlreadyApplied)],
            },
        );
        assert_eq!(
            d.step(150, Input::Tick),
            vec![Action::ProposeForget {
                acks: vec![PhaseTwoAck {
                    txn_id: t,
                    participants: vec![p("a"), p("b")]
                }]
            }]
        );
        assert_eq!(d.phase2_backlog(), 0);
    }

    /// C7 (batching): acknowledgements wait up to `forget_delay_ms` and leave in one Forget,
    /// or sooner with the next proposed decision (one Raft round serves both).
    #[test]
    fn forgets_are_batched_by_delay_or_with_a_decision() {
        let mut d = leader();
        let decide = |d: &mut Driver, t: TxnId, at: u64| {
            commit(d, at, t, 1);
            d.step(at, votes("a", t, Vote::Yes));
            d.step(at, votes("b", t, Vote::Yes));
            d.step(at, applied(t, FinalDecision::Commit, true, &["a", "b"]));
        };
        let ack = |d: &mut Driver, t: TxnId, at: u64| {
            for who in ["a", "b"] {
                let out = d.step(
                    at,
                    Input::Acks {
                        participant: p(who),
                        acks: vec![(t, AckStatus::Applied)],
                    },
                );
                assert!(out.is_empty(), "no Forget before the delay: {out:?}");
            }
        };
        let (t1, t2, t3, t4) = (txn(1), txn(2), txn(3), txn(4));
        decide(&mut d, t1, 100);
        decide(&mut d, t2, 100);
        ack(&mut d, t1, 100);
        ack(&mut d, t2, 105);
        assert!(d.step(109, Input::Tick).is_empty());
        let out = d.step(110, Input::Tick);
        assert!(
            matches!(&out[..], [Action::ProposeForget { acks }] if acks.len() == 2),
            "{out:?}"
        );
        // A pending ack rides along with the next decision.
        decide(&mut d, t3, 200);
        ack(&mut d, t3, 200);
        commit(&mut d, 201, t4, 2);
        d.step(201, votes("a", t4, Vote::Yes));
        let out = d.step(202, votes("b", t4, Vote::Yes));
        assert!(
            matches!(&out[..], [Action::Propose { .. }, Action::ProposeForget { acks }] if acks[0].txn_id == t3),
            "{out:?}"
        );
    }

    /// C3: a NO aborts at once; phase 2 goes only to those who may have prepared.
    #[test]
    fn a_no_vote_aborts() {
        let mut d = leader();
        let t = txn(2);
        commit(&mut d, 0, t, 1);
        assert!(d.step(1, votes("a", t, Vote::Yes)).is_empty());
        let info = AbortInfo {
            cause: AbortCause::VotedNo,
            participant: Some(p("b")),
            no_reason: Some(NoReason::ValidationFailed),
            message: "m".into(),
        };
        assert_eq!(
            d.step(2, votes("b", t, no(NoReason::ValidationFailed))),
            vec![Action::Propose {
                items: vec![DecideItem {
                    txn_id: t,
                    decision: FinalDecision::Abort(info.clone()),
                    source: DecisionSource::Commit,
                    participants: vec![p("a")],
                }]
            }]
        );
        assert_eq!(
            d.step(
                3,
                applied(t, FinalDecision::Abort(info.clone()), true, &["a"])
            ),
            vec![
                Action::Reply {
                    reply: 1,
                    answer: Answer::Outcome(Outcome::Aborted(info))
                },
                Action::SendPhase2 {
                    participant: p("a"),
                    decision: Decision::Abort,
                    txn_ids: vec![t]
                },
            ]
        );
    }

    /// C3: no vote by the deadline counts as NO; the one who did not answer may have prepared.
    #[test]
    fn a_timeout_aborts() {
        let mut d = leader();
        let t = txn(3);
        commit(&mut d, 0, t, 1);
        d.step(10, votes("a", t, Vote::Yes));
        assert!(d.step(999, Input::Tick).is_empty(), "not yet");
        let actions = d.step(1_000, Input::Tick);
        assert_eq!(
            actions,
            vec![Action::Propose {
                items: vec![DecideItem {
                    txn_id: t,
                    decision: FinalDecision::Abort(AbortInfo {
                        cause: AbortCause::PrepareTimeout,
                        participant: Some(p("b")),
                        no_reason: None,
                        message: "no vote before the deadline".into(),
                    }),
                    source: DecisionSource::Commit,
                    participants: vec![p("a"), p("b")],
                }]
            }]
        );
        // The late vote changes nothing.
        assert!(d.step(1_001, votes("b", t, Vote::Yes)).is_empty());
    }

    /// Duplicate and late votes are ignored; a vote from a stranger too.
    #[test]
    fn duplicate_late_and_stray_votes_are_ignored() {
        let mut d = leader();
        let t = txn(4);
        commit(&mut d, 0, t, 1);
        assert!(d.step(1, votes("a", t, Vote::Yes)).is_empty());
        assert!(
            d.step(2, votes("a", t, no(NoReason::Conflict))).is_empty(),
            "a duplicate (even a different one) is ignored"
        );
        assert!(
            d.step(3, votes("zz", t, no(NoReason::Conflict))).is_empty(),
            "a stranger's vote is ignored"
        );
        assert!(
            d.step(4, votes("a", txn(99), Vote::Yes)).is_empty(),
            "a vote for an unknown txn is ignored"
        );
        assert_eq!(
            d.step(5, votes("b", t, Vote::ReadOnly)).len(),
            1,
            "b's vote completes the round"
        );
    }

    /// READ_ONLY voters take no part in phase 2 (C3).
    #[test]
    fn read_only_voters_are_left_out_of_phase_two() {
        let mut d = leader();
        let t = txn(5);
        commit(&mut d, 0, t, 1);
        d.step(1, votes("a", t, Vote::ReadOnly));
        let actions = d.step(2, votes("b", t, Vote::Yes));
        assert_eq!(
            actions,
            vec![Action::Propose {
                items: vec![DecideItem {
                    txn_id: t,
                    decision: FinalDecision::Commit,
                    source: DecisionSource::Commit,
                    participants: vec![p("b")],
                }]
            }]
        );
    }

    /// Losing leadership mid-prepare answers NOT_LEADER (the client retries at the new leader,
    /// which decides again; first-wins keeps any decision already made) and drops all work.
    #[test]
    fn leadership_lost_mid_prepare() {
        let mut d = leader();
        commit(&mut d, 0, txn(6), 1);
        commit(&mut d, 0, txn(7), 2);
        let actions = d.step(5, Input::LostLeadership);
        assert_eq!(
            actions,
            vec![
                Action::Reply {
                    reply: 1,
                    answer: Answer::NotLeader
                },
                Action::Reply {
                    reply: 2,
                    answer: Answer::NotLeader
                },
            ]
        );
        assert_eq!(d.deciding_len(), 0);
        assert_eq!(
            commit(&mut d, 6, txn(8), 3),
            vec![Action::Reply {
                reply: 3,
                answer: Answer::NotLeader
            }]
        );
    }

    /// C4: a participant's Resolve decided ABORT first; this leader's COMMIT proposal loses. The
    /// client is told ABORTED (the applied decision, C5), and every YES voter gets Abort.
    #[test]
    fn resolve_racing_a_decide() {
        let mut d = leader();
        let t = txn(9);
        commit(&mut d, 0, t, 1);
        d.step(1, votes("a", t, Vote::Yes));
        assert_eq!(d.step(2, votes("b", t, Vote::Yes)).len(), 1);
        let resolved = FinalDecision::Abort(AbortInfo {
            cause: AbortCause::ResolvedByParticipant,
            participant: Some(p("a")),
            no_reason: None,
            message: String::new(),
        });
        let actions = d.step(3, applied(t, resolved.clone(), false, &["a"]));
        assert_eq!(
            actions,
            vec![
                Action::Reply {
                    reply: 1,
                    answer: Answer::Outcome(resolved.outcome())
                },
                Action::SendPhase2 {
                    participant: p("a"),
                    decision: Decision::Abort,
                    txn_ids: vec![t]
                },
                Action::SendPhase2 {
                    participant: p("b"),
                    decision: Decision::Abort,
                    txn_ids: vec![t]
                },
            ]
        );
    }

    /// A Resolve with no decision anywhere proposes ABORT; while a transaction is being decided
    /// here, the Resolve waits for that decision instead.
    #[test]
    fn resolve_decides_abort_or_waits() {
        let mut d = leader();
        let t = txn(10);
        let actions = d.step(
            0,
            Input::Resolve {
                txn_id: t,
                participant: p("a"),
                reply: 5,
            },
        );
        assert!(
            matches!(&actions[..], [Action::Propose { items }] if items[0].source == DecisionSource::Resolve && items[0].participants == vec![p("a")])
        );

        let u = txn(11);
        commit(&mut d, 0, u, 1);
        assert!(
            d.step(
                1,
                Input::Resolve {
                    txn_id: u,
                    participant: p("a"),
                    reply: 2,
                }
            )
            .is_empty()
        );
        d.step(2, votes("a", u, Vote::Yes));
        d.step(3, votes("b", u, Vote::Yes));
        let actions = d.step(4, applied(u, FinalDecision::Commit, true, &["a", "b"]));
        assert!(actions.contains(&Action::Reply {
            reply: 2,
            answer: Answer::Decision(FinalDecision::Commit)
        }));
        assert!(actions.contains(&Action::Reply {
            reply: 1,
            answer: Answer::Outcome(Outcome::Committed)
        }));
    }

    /// C6: a decision this driver missed (applied after its leadership scan, not proposed by
    /// it) is picked up by the periodic reconciliation; tracked ones are left alone.
    #[test]
    fn reconcile_picks_up_missed_decisions_only() {
        let mut d = Driver::new(DriverConfig::default());
        d.step(0, Input::BecameLeader { pending: vec![] });
        let tracked = txn(21);
        commit(&mut d, 0, tracked, 1);
        let missed = txn(22);
        let pending = |id| PendingPhase2 {
            txn_id: id,
            decision: FinalDecision::Abort(AbortInfo::new(AbortCause::ClientAbort, String::new())),
            pending: vec![p("a"), p("b")],
        };
        let actions = d.step(
            5,
            Input::Reconcile {
                pending: vec![pending(tracked), pending(missed)],
            },
        );
        let sent: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::SendPhase2 {
                    participant,
                    txn_ids,
                    ..
                } => Some((participant.clone(), txn_ids.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![(p("a"), vec![missed]), (p("b"), vec![missed])]);
        assert_eq!(d.reconciled(), 1);
        // Already tracked now: a second reconcile adds nothing.
        let again = d.step(
            6,
            Input::Reconcile {
                pending: vec![pending(missed)],
            },
        );
        assert!(
            again
                .iter()
                .all(|a| !matches!(a, Action::SendPhase2 { .. }))
        );
        // A transaction whose Forget was just proposed is left alone until the grace ends.
        let acked = txn(23);
        d.step(
            7,
            Input::Reconcile {
                pending: vec![pending(acked)],
            },
        );
        d.step(
            8,
            Input::Acks {
                participant: p("a"),
                acks: vec![(acked, AckStatus::Applied)],
            },
        );
        let forget = d.step(
            9,
            Input::Acks {
                participant: p("b"),
                acks: vec![(acked, AckStatus::Applied)],
            },
        );
        let forget = [
            forget,
            d.step(9 + DriverConfig::default().forget_delay_ms, Input::Tick),
        ]
        .concat();
        assert!(
            forget
                .iter()
                .any(|a| matches!(a, Action::ProposeForget { .. })),
            "{forget:?}"
        );
        let during = d.step(
            100,
            Input::Reconcile {
                pending: vec![pending(acked)],
            },
        );
        assert!(
            during
                .iter()
                .all(|a| !matches!(a, Action::SendPhase2 { .. }))
        );
        let after = d.step(
            100 + FORGET_GRACE_MS,
            Input::Reconcile {
                pending: vec![pending(acked)],
            },
        );
        assert!(
            after.iter().any(|a| matches!(a, Action::SendPhase2 { .. })),
            "{after:?}"
        );
        // A follower ignores it.
        let mut f = Driver::new(DriverConfig::default());
        assert!(
            f.step(
                0,
                Input::Reconcile {
                    pending: vec![pending(missed)]
                }
            )
            .is_empty()
        );
    }

    /// C10: a client retry of the same transaction waits for the same answer, or gets the
    /// decision at once once decided.
    #[test]
    fn client_retries_get_the_same_answer() {
        let mut d = leader();
        let t = txn(12);
        commit(&mut d, 0, t, 1);
        assert!(
            commit(&mut d, 1, t, 2).is_empty(),
            "no second prepare round"
        );
        d.step(2, votes("a", t, Vote::Yes));
        d.step(3, votes("b", t, Vote::Yes));
        let actions = d.step(4, applied(t, FinalDecision::Commit, true, &["a", "b"]));
        assert!(actions.contains(&Action::Reply {
            reply: 1,
            answer: Answer::Outcome(Outcome::Committed)
        }));
        assert!(actions.contains(&Action::Reply {
            reply: 2,
            answer: Answer::Outcome(Outcome::Committed)
        }));
        assert_eq!(
            commit(&mut d, 5, t, 3),
            vec![Action::Reply {
                reply: 3,
                answer: Answer::Outcome(Outcome::Committed)
            }]
        );
    }

    /// C6: phase 2 is retried with exponential backoff until acknowledged, and a new leader
    /// resumes it from the replicated state.
    #[test]
    fn phase_two_retries_with_backoff_and_resumes_on_a_new_leader() {
        let mut d = Driver::new(DriverConfig::default());
        let t = txn(13);
        let actions = d.step(
            0,
            Input::BecameLeader {
                pending: vec![PendingPhase2 {
                    txn_id: t,
                    decision: FinalDecision::Commit,
                    pending: vec![p("a")],
                }],
            },
        );
        let send = Action::SendPhase2 {
            participant: p("a"),
            decision: Decision::Commit,
            txn_ids: vec![t],
        };
        assert_eq!(actions, vec![send.clone()]);
        assert!(d.step(1, Input::Tick).is_empty(), "in flight: not resent");
        d.step(
            10,
            Input::AcksFailed {
                participant: p("a"),
                txn_ids: vec![t],
            },
        );
        assert!(d.step(59, Input::Tick).is_empty(), "backing off 50 ms");
        assert_eq!(d.step(60, Input::Tick), vec![send.clone()]);
        d.step(
            70,
            Input::Acks {
                participant: p("a"),
                acks: vec![(t, AckStatus::Retry)],
            },
        );
        assert!(d.step(169, Input::Tick).is_empty(), "backing off 100 ms");
        assert_eq!(d.step(170, Input::Tick), vec![send]);
    }

    /// A failed proposal answers NOT_LEADER; the participants stay prepared and resolve later.
    #[test]
    fn failed_proposal_answers_not_leader() {
        let mut d = leader();
        let t = txn(14);
        commit(&mut d, 0, t, 1);
        d.step(1, votes("a", t, Vote::Yes));
        d.step(2, votes("b", t, Vote::Yes));
        assert_eq!(
            d.step(3, Input::ProposeFailed { txn_ids: vec![t] }),
            vec![Action::Reply {
                reply: 1,
                answer: Answer::NotLeader
            }]
        );
    }

    /// An unreachable participant counts as NO (C3) with its own cause; it may have prepared
    /// (only the answer may have been lost), so it gets phase-2 ABORT too.
    #[test]
    fn unreachable_participant_aborts() {
        let mut d = leader();
        let t = txn(15);
        commit(&mut d, 0, t, 1);
        let actions = d.step(
            1,
            Input::PrepareFailed {
                participant: p("b"),
                txn_ids: vec![t],
                error: "connection refused".into(),
            },
        );
        assert!(matches!(&actions[..], [Action::Propose { items }]
            if matches!(&items[0].decision, FinalDecision::Abort(i) if i.cause == AbortCause::UnreachableParticipant)
            && items[0].participants == vec![p("a"), p("b")]));
    }
}
