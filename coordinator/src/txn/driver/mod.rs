//! The 2PC driver: a pure, deterministic state machine run by the leader, and the only place
//! in the coordinator that makes protocol decisions (docs/architecture.md).
//!
//! `step(now, input) -> actions`: no I/O, no clock, no randomness, no globals (planted bugs
//! come in [`DriverConfig`]). The runtime ([`super::runtime`]) feeds it every event — client
//! Commit/Abort (zero, one or many participants: C2, C3), Resolve, an operator's ForceResolve,
//! registrations, votes, one-phase results, acknowledgements, ticks, leadership changes, and
//! **every change the replicated state machine applies** (the apply feed, [`Input::Applied`])
//! — and carries out the actions it returns (send Prepare / one-phase / phase 2, propose to
//! Raft, answer a caller). The rules cited are docs/protocol.md's.
//!
//! What the driver remembers is only what a leader needs in memory: transactions being decided
//! (votes so far, who waits for the answer), one-phase commits in progress, registrations being
//! proposed, and phase-2 deliveries in progress. Everything that must survive the leader is in
//! the replicated state: a new leader rebuilds its phase-2 work from it
//! ([`Input::BecameLeader`]) and from then on learns of every applied decision from the apply
//! feed, whoever proposed it — so no decision can be missed and no periodic scan is needed.

use std::collections::{BTreeMap, BTreeSet};

use ratify_proto::planted::Bug;
use ratify_proto::types::command::{DecideItem, PhaseTwoAck};
use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome};
use ratify_proto::types::{
    AbortCause, AbortInfo, Decision, DecisionSource, Endpoint, FinalDecision, Outcome,
    ParticipantId, TxnId, Vote,
};

use crate::limits;
use crate::state::{AppliedDecision, Effect};

/// Identifies a caller waiting for an answer (the runtime maps it to a reply channel).
pub type ReplyId = u64;

/// The driver's limits and timings (defaults from [`crate::limits`]).
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Longest prepare phase, whatever deadline the client asked for.
    pub prepare_timeout_ms: u64,
    /// Transactions being decided (two-phase or one-phase) at once, at most; beyond, requests
    /// are refused as overloaded.
    pub deciding_max: usize,
    /// Registrations being proposed at once, at most.
    pub registering_max: usize,
    /// Transactions per phase-2 message to one participant, at most.
    pub phase2_batch_max: usize,
    /// First phase-2 retry pause; doubles up to `phase2_backoff_max_ms`.
    pub phase2_backoff_min_ms: u64,
    /// Longest phase-2 retry pause.
    pub phase2_backoff_max_ms: u64,
    /// First pause before a one-phase commit is sent again; doubles up to
    /// `one_phase_backoff_max_ms`.
    pub one_phase_backoff_min_ms: u64,
    /// Longest pause between one-phase attempts.
    pub one_phase_backoff_max_ms: u64,
    /// Acknowledgements per Forget proposal, at most.
    pub forget_batch_max: usize,
    /// Acknowledgements wait up to this long to be proposed together (or until a decision is
    /// proposed, or `forget_batch_max` are waiting): a Forget is bookkeeping, not on any
    /// caller's path, and one entry for many transactions saves a Raft round per transaction.
    pub forget_delay_ms: u64,
    /// Completed outcomes are kept this long (C8, C11), then compacted.
    pub outcome_retention_ms: u64,
    /// How often the leader proposes a compaction.
    pub compact_interval_ms: u64,
    /// The planted bug switched on, if any (`ratify-jepsen selftest`; only bugs (c) and (d)
    /// concern the driver). Production configurations leave it `None`.
    pub planted: Option<Bug>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            prepare_timeout_ms: limits::PREPARE_TIMEOUT.as_millis() as u64,
            deciding_max: limits::DECIDING_MAX,
            registering_max: limits::REGISTERING_MAX,
            phase2_batch_max: limits::PARTICIPANT_BATCH_TXNS_MAX,
            phase2_backoff_min_ms: limits::PHASE2_BACKOFF_MIN.as_millis() as u64,
            phase2_backoff_max_ms: limits::PHASE2_BACKOFF_MAX.as_millis() as u64,
            one_phase_backoff_min_ms: limits::ONE_PHASE_BACKOFF_MIN.as_millis() as u64,
            one_phase_backoff_max_ms: limits::ONE_PHASE_BACKOFF_MAX.as_millis() as u64,
            forget_batch_max: limits::FORGET_BATCH_MAX,
            forget_delay_ms: limits::FORGET_DELAY.as_millis() as u64,
            outcome_retention_ms: limits::OUTCOME_RETENTION.as_millis() as u64,
            compact_interval_ms: limits::COMPACT_INTERVAL.as_millis() as u64,
            planted: None,
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
    /// A client's Commit: none (C2: committed, nothing to do), one (C2: one-phase commit at
    /// that participant, nothing logged here) or two or more participants (C3).
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
        /// The decision in the replicated state when the request arrived, if any: the answer.
        recorded: Option<FinalDecision>,
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
        /// The decision in the replicated state when the request arrived, if any.
        recorded: Option<FinalDecision>,
        /// Who waits.
        reply: ReplyId,
    },
    /// An in-doubt participant asks for the decision (P3).
    Resolve {
        /// The transaction.
        txn_id: TxnId,
        /// Who asks.
        participant: ParticipantId,
        /// The decision in the replicated state when the request arrived, if any.
        recorded: Option<FinalDecision>,
        /// Who waits.
        reply: ReplyId,
    },
    /// An operator forces a decision (C4 still holds: an existing decision stands).
    ForceResolve {
        /// The transaction.
        txn_id: TxnId,
        /// The operator's decision.
        decision: FinalDecision,
        /// Who gets phase 2 if it is recorded.
        participants: Vec<ParticipantId>,
        /// Who waits.
        reply: ReplyId,
    },
    /// A participant registers (or moves to) an endpoint.
    Register {
        /// Who.
        participant: ParticipantId,
        /// Where it listens.
        endpoint: Endpoint,
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
    /// A one-phase commit's answer (`Unknown` also for no answer: the attempt is repeated).
    OnePhaseResult {
        /// The transaction.
        txn_id: TxnId,
        /// What the participant said.
        outcome: OnePhaseOutcome,
    },
    /// The state machine applied these changes (the apply feed, in log order, on every node).
    Applied {
        /// What changed.
        effects: Vec<Effect>,
    },
    /// A Decide proposal failed: this node is not the leader any more, or Raft stopped.
    ProposeFailed {
        /// The proposal's transactions.
        txn_ids: Vec<TxnId>,
    },
    /// A registration proposal failed.
    RegisterFailed {
        /// Who.
        participant: ParticipantId,
        /// The endpoint proposed.
        endpoint: Endpoint,
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
    /// This node became the leader and has applied the whole log: resume phase 2 (C6). The
    /// apply feed brings every later decision.
    BecameLeader {
        /// Decided transactions not yet acknowledged by everyone.
        pending: Vec<PendingPhase2>,
    },
    /// This node is no longer the leader.
    LostLeadership,
    /// Time passed (deadlines, retries, compaction).
    Tick,
}

/// What a waiting caller is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// For Commit and Abort.
    Outcome(Outcome),
    /// For Resolve.
    Decision(FinalDecision),
    /// For ForceResolve: the decision that stands, and whether the operator's made it.
    Forced {
        /// The decision that stands.
        decision: FinalDecision,
        /// True if the operator's decision was recorded; false if an earlier one stood.
        changed: bool,
    },
    /// For Register: recorded.
    Registered,
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
    /// Send a one-phase commit (C2) for one transaction to its only participant — or, with
    /// `abort`, its Abort: the initiator gave up, and the participant's answer (aborted now or
    /// before, or committed in one phase already) is the outcome.
    SendOnePhase {
        /// To whom.
        participant: ParticipantId,
        /// Which transaction.
        txn_id: TxnId,
        /// The initiator's call count there, if reported (P10).
        call_count: Option<u32>,
        /// No answer by then: the attempt is abandoned.
        deadline_unix_ms: u64,
        /// Abort instead of commit.
        abort: bool,
    },
    /// Propose these decisions in one Raft entry.
    Propose {
        /// The decisions.
        items: Vec<DecideItem>,
    },
    /// Propose a participant's registration.
    ProposeRegister {
        /// Who.
        participant: ParticipantId,
        /// Where it listens.
        endpoint: Endpoint,
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
    /// Propose dropping outcomes completed before this time (C8); the cut-off travels in the
    /// command, so every node drops the same ones.
    ProposeCompact {
        /// The cut-off.
        before_unix_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaiterKind {
    Commit,
    Abort,
    Resolve,
    /// An operator's ForceResolve, with the decision they asked for.
    Operator(Decision),
}

impl WaiterKind {
    /// The answer for this kind of caller, once `decision` stands; `changed` says whether an
    /// operator's decision was the one recorded.
    fn answer(self, decision: &FinalDecision, changed: bool) -> Answer {
        match self {
            WaiterKind::Commit | WaiterKind::Abort => Answer::Outcome(decision.outcome()),
            WaiterKind::Resolve => Answer::Decision(decision.clone()),
            WaiterKind::Operator(asked) => Answer::Forced {
                decision: decision.clone(),
                changed: changed && decision.decision() == asked,
            },
        }
    }
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

/// A one-phase commit in progress (C2): retried until the participant answers COMMITTED or
/// ABORTED, or the deadline passes (then the caller hears UNKNOWN, C10).
#[derive(Debug, Clone)]
struct OnePhase {
    participant: ParticipantId,
    call_count: Option<u32>,
    /// The initiator gave up (with this message): ask the participant to abort instead.
    abort: Option<String>,
    deadline_unix_ms: u64,
    due_unix_ms: u64,
    backoff_ms: u64,
    in_flight: bool,
    /// The Commit that started it, its retries, and any Abort, Resolve or ForceResolve that
    /// came meanwhile: all hear the participant's outcome (C2).
    waiters: Vec<(ReplyId, WaiterKind)>,
}

impl OnePhase {
    fn send(&self, txn_id: TxnId) -> Action {
        Action::SendOnePhase {
            participant: self.participant.clone(),
            txn_id,
            call_count: self.call_count,
            deadline_unix_ms: self.deadline_unix_ms,
            abort: self.abort.is_some(),
        }
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
    one_phase: BTreeMap<TxnId, OnePhase>,
    registering: BTreeMap<(ParticipantId, Endpoint), Vec<ReplyId>>,
    phase2: BTreeMap<TxnId, Phase2>,
    /// Acknowledged, not yet proposed in a Forget.
    acked: BTreeMap<TxnId, BTreeSet<ParticipantId>>,
    /// When the oldest of `acked` arrived.
    acked_since_ms: Option<u64>,
    /// When the next compaction is due (while leading).
    compact_due_ms: u64,
}

impl Driver {
    /// A driver that is not (yet) the leader.
    pub fn new(config: DriverConfig) -> Self {
        Self {
            config,
            leader: false,
            deciding: BTreeMap::new(),
            one_phase: BTreeMap::new(),
            registering: BTreeMap::new(),
            phase2: BTreeMap::new(),
            acked: BTreeMap::new(),
            acked_since_ms: None,
            compact_due_ms: 0,
        }
    }

    /// Whether it acts as the leader.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// Transactions being decided (two-phase and one-phase).
    pub fn deciding_len(&self) -> usize {
        self.deciding.len() + self.one_phase.len()
    }

    /// Phase-2 deliveries outstanding (transaction, participant) — the phase-2 backlog.
    pub fn phase2_backlog(&self) -> usize {
        self.phase2.values().map(|p| p.deliveries.len()).sum()
    }

    /// The decision known to this driver for a transaction in phase 2.
    pub fn phase2_decision(&self, txn_id: &TxnId) -> Option<&FinalDecision> {
        self.phase2.get(txn_id).map(|p| &p.decision)
    }

    fn planted(&self, bug: Bug) -> bool {
        self.config.planted == Some(bug)
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
                recorded,
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
                    recorded,
                    reply,
                    &mut out,
                )
            }
            Input::Abort {
                txn_id,
                participants,
                message,
                recorded,
                reply,
            } => self.on_abort(
                now_unix_ms,
                txn_id,
                participants,
                message,
                recorded,
                reply,
                &mut out,
            ),
            Input::Resolve {
                txn_id,
                participant,
                recorded,
                reply,
            } => self.on_resolve(txn_id, participant, recorded, reply, &mut out),
            Input::ForceResolve {
                txn_id,
                decision,
                participants,
                reply,
            } => self.on_force_resolve(txn_id, decision, participants, reply, &mut out),
            Input::Register {
                participant,
                endpoint,
                reply,
            } => self.on_register(participant, endpoint, reply, &mut out),
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
            Input::OnePhaseResult { txn_id, outcome } => {
                self.on_one_phase_result(now_unix_ms, txn_id, outcome, &mut out)
            }
            Input::Applied { effects } => {
                for effect in effects {
                    match effect {
                        Effect::Decided(a) => self.on_decided(now_unix_ms, a, &mut out),
                        Effect::Registered {
                            participant,
                            endpoint,
                        } => self.answer_registration(
                            participant,
                            endpoint,
                            Answer::Registered,
                            &mut out,
                        ),
                    }
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
            Input::RegisterFailed {
                participant,
                endpoint,
            } => self.answer_registration(participant, endpoint, Answer::NotLeader, &mut out),
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
                    self.acked
                        .entry(ack.txn_id)
                        .or_default()
                        .extend(ack.participants);
                }
            }
            Input::BecameLeader { pending } => {
                self.leader = true;
                self.compact_due_ms = now_unix_ms.saturating_add(self.config.compact_interval_ms);
                for p in pending {
                    self.deliver(now_unix_ms, p.txn_id, p.decision, p.pending);
                }
                self.flush(now_unix_ms, &mut out);
            }
            Input::LostLeadership => {
                self.leader = false;
                let deciding = std::mem::take(&mut self.deciding)
                    .into_values()
                    .flat_map(|d| d.waiters.into_iter().map(|(reply, _)| reply));
                let one_phase = std::mem::take(&mut self.one_phase)
                    .into_values()
                    .flat_map(|o| o.waiters.into_iter().map(|(reply, _)| reply));
                let registering = std::mem::take(&mut self.registering)
                    .into_values()
                    .flatten();
                for reply in deciding.chain(one_phase).chain(registering) {
                    out.push(Action::Reply {
                        reply,
                        answer: Answer::NotLeader,
                    });
                }
                // Phase 2 and unproposed acks belong to the next leader (from the replicated
                // state); at worst it resends a message a participant already applied (P7).
                self.phase2.clear();
                self.acked.clear();
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
                self.tick_one_phase(now_unix_ms, &mut out);
                if self.leader && now_unix_ms >= self.compact_due_ms {
                    self.compact_due_ms =
                        now_unix_ms.saturating_add(self.config.compact_interval_ms);
                    out.push(Action::ProposeCompact {
                        before_unix_ms: now_unix_ms
                            .saturating_sub(self.config.outcome_retention_ms),
                    });
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

    #[allow(clippy::too_many_arguments)]
    fn on_commit(
        &mut self,
        now: u64,
        txn_id: TxnId,
        enlisted: Vec<(ParticipantId, Option<u32>)>,
        deadline_unix_ms: u64,
        recorded: Option<FinalDecision>,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        if self.answer_early(&txn_id, recorded, reply, WaiterKind::Commit, out) {
            return;
        }
        if let Some(d) = self.deciding.get_mut(&txn_id) {
            // A retry while the first attempt is in progress: wait for the same answer.
            d.waiters.push((reply, WaiterKind::Commit));
            return;
        }
        if self.join_one_phase(&txn_id, reply, WaiterKind::Commit) {
            return;
        }
        if enlisted.is_empty() {
            // C2: nothing to commit anywhere.
            out.push(Action::Reply {
                reply,
                answer: Answer::Outcome(Outcome::Committed),
            });
            return;
        }
        if self.deciding_len() >= self.config.deciding_max {
            out.push(Action::Reply {
                reply,
                answer: Answer::Overloaded,
            });
            return;
        }
        let deadline = deadline_unix_ms.min(now.saturating_add(self.config.prepare_timeout_ms));
        if deadline <= now {
            // Too late to learn an outcome (C10): send nothing that could still commit.
            out.push(Action::Reply {
                reply,
                answer: Answer::Outcome(Outcome::Unknown),
            });
            return;
        }
        if let [(participant, call_count)] = &enlisted[..] {
            // C2: one participant decides alone, in one step there; nothing is logged here.
            // A retry (here or at another leader) gets the participant's recorded outcome.
            let alone = OnePhase {
                participant: participant.clone(),
                call_count: *call_count,
                abort: None,
                deadline_unix_ms: deadline,
                due_unix_ms: now,
                backoff_ms: self.config.one_phase_backoff_min_ms,
                in_flight: false,
                waiters: vec![(reply, WaiterKind::Commit)],
            };
            self.start_one_phase(now, txn_id, alone, out);
            return;
        }
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

    fn on_one_phase_result(
        &mut self,
        now: u64,
        txn_id: TxnId,
        outcome: OnePhaseOutcome,
        out: &mut Vec<Action>,
    ) {
        let Some(o) = self.one_phase.get_mut(&txn_id) else {
            return; // Late: the deadline passed, or leadership changed.
        };
        let answer = match outcome {
            OnePhaseOutcome::Committed => Outcome::Committed,
            OnePhaseOutcome::Aborted { .. } if o.abort.is_some() => Outcome::Aborted(
                AbortInfo::new(AbortCause::ClientAbort, o.abort.clone().unwrap_or_default()),
            ),
            OnePhaseOutcome::Aborted { reason, message } => Outcome::Aborted(AbortInfo {
                cause: AbortCause::VotedNo,
                participant: Some(o.participant.clone()),
                no_reason: Some(reason),
                message,
            }),
            OnePhaseOutcome::Unknown { .. } => {
                // Nothing known durable there: ask again after a pause (C2, C10).
                o.in_flight = false;
                o.due_unix_ms = now.saturating_add(o.backoff_ms);
                o.backoff_ms = (o.backoff_ms * 2).min(self.config.one_phase_backoff_max_ms);
                return;
            }
        };
        let decision = match answer {
            Outcome::Committed => FinalDecision::Commit,
            Outcome::Aborted(info) => FinalDecision::Abort(info),
            Outcome::Unknown => return,
        };
        let waiters = self.one_phase.remove(&txn_id).map(|o| o.waiters);
        for (reply, kind) in waiters.unwrap_or_default() {
            out.push(Action::Reply {
                reply,
                answer: kind.answer(&decision, false),
            });
        }
    }

    /// A caller joins the one-phase commit of `txn_id` in progress, if there is one (C2: the
    /// participant decides; nothing is recorded here to race it).
    fn join_one_phase(&mut self, txn_id: &TxnId, reply: ReplyId, kind: WaiterKind) -> bool {
        match self.one_phase.get_mut(txn_id) {
            Some(o) => {
                o.waiters.push((reply, kind));
                true
            }
            None => false,
        }
    }

    fn tick_one_phase(&mut self, now: u64, out: &mut Vec<Action>) {
        let expired: Vec<TxnId> = self
            .one_phase
            .iter()
            .filter(|(_, o)| o.deadline_unix_ms <= now)
            .map(|(id, _)| *id)
            .collect();
        for txn_id in expired {
            // C10: never a guess. (Those who asked for a decision hear NOT_LEADER: ask again.)
            let waiters = self.one_phase.remove(&txn_id).map(|o| o.waiters);
            for (reply, kind) in waiters.unwrap_or_default() {
                let answer = match kind {
                    WaiterKind::Commit | WaiterKind::Abort => Answer::Outcome(Outcome::Unknown),
                    WaiterKind::Resolve | WaiterKind::Operator(_) => Answer::NotLeader,
                };
                out.push(Action::Reply { reply, answer });
            }
        }
        for (txn_id, o) in &mut self.one_phase {
            if !o.in_flight && o.due_unix_ms <= now {
                o.in_flight = true;
                out.push(o.send(*txn_id));
            }
        }
    }

    /// Track `alone` (a one-participant transaction, C2) and send its first attempt.
    fn start_one_phase(
        &mut self,
        now: u64,
        txn_id: TxnId,
        mut alone: OnePhase,
        out: &mut Vec<Action>,
    ) {
        alone.in_flight = true;
        alone.due_unix_ms = now;
        out.push(alone.send(txn_id));
        self.one_phase.insert(txn_id, alone);
    }

    /// Answer at once when this node cannot decide (not the leader) or already knows the
    /// decision (recorded in the replicated state, or phase 2 in progress here). Returns
    /// whether it answered.
    fn answer_early(
        &self,
        txn_id: &TxnId,
        recorded: Option<FinalDecision>,
        reply: ReplyId,
        kind: WaiterKind,
        out: &mut Vec<Action>,
    ) -> bool {
        let known = recorded.or_else(|| self.phase2.get(txn_id).map(|p| p.decision.clone()));
        let answer = if !self.leader {
            Answer::NotLeader
        } else if let Some(decision) = known {
            kind.answer(&decision, false)
        } else {
            return false;
        };
        out.push(Action::Reply { reply, answer });
        true
    }

    /// `reply` waits for `txn_id`'s decision: joins the transaction being decided, or starts
    /// deciding one (with no prepare round: Abort, Resolve, ForceResolve) over `participants`.
    fn wait_for(
        &mut self,
        txn_id: TxnId,
        participants: Vec<ParticipantId>,
        reply: ReplyId,
        kind: WaiterKind,
    ) -> &mut Deciding {
        let d = self.deciding.entry(txn_id).or_insert_with(|| Deciding {
            participants,
            votes: BTreeMap::new(),
            deadline_unix_ms: 0,
            waiters: Vec::new(),
            proposed: None,
        });
        d.waiters.push((reply, kind));
        d
    }

    #[allow(clippy::too_many_arguments)]
    fn on_abort(
        &mut self,
        now: u64,
        txn_id: TxnId,
        participants: Vec<ParticipantId>,
        message: String,
        recorded: Option<FinalDecision>,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        if self.answer_early(&txn_id, recorded, reply, WaiterKind::Abort, out)
            || self.join_one_phase(&txn_id, reply, WaiterKind::Abort)
        {
            return;
        }
        if let [participant] = &participants[..]
            && !self.deciding.contains_key(&txn_id)
        {
            // C2: a one-participant transaction is decided at its participant, never here, so
            // its Abort goes there too: the answer is what it did (aborted now or before, or
            // committed in one phase already), and nothing is recorded here to contradict it.
            let alone = OnePhase {
                participant: participant.clone(),
                call_count: None,
                abort: Some(message),
                deadline_unix_ms: now.saturating_add(self.config.prepare_timeout_ms),
                due_unix_ms: now,
                backoff_ms: self.config.one_phase_backoff_min_ms,
                in_flight: false,
                waiters: vec![(reply, WaiterKind::Abort)],
            };
            self.start_one_phase(now, txn_id, alone, out);
            return;
        }
        let d = self.wait_for(txn_id, participants, reply, WaiterKind::Abort);
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
        recorded: Option<FinalDecision>,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        let info = AbortInfo {
            cause: AbortCause::ResolvedByParticipant,
            participant: Some(participant.clone()),
            no_reason: None,
            message: String::new(),
        };
        if self.leader && self.join_one_phase(&txn_id, reply, WaiterKind::Resolve) {
            return;
        }
        if self.planted(Bug::LastWins) && self.leader {
            // Planted bug (d): propose ABORT over any earlier decision (with the state
            // machine's last-wins apply, it overwrites a COMMIT, and this driver forgets the
            // phase 2 of the decision it replaces).
            self.phase2.remove(&txn_id);
            let d = self.wait_for(
                txn_id,
                vec![participant.clone()],
                reply,
                WaiterKind::Resolve,
            );
            out.push(Action::Propose {
                items: vec![DecideItem {
                    txn_id,
                    decision: FinalDecision::Abort(info.clone()),
                    source: DecisionSource::Resolve,
                    participants: vec![participant],
                }],
            });
            d.proposed = Some(FinalDecision::Abort(info));
            return;
        }
        if self.answer_early(&txn_id, recorded, reply, WaiterKind::Resolve, out) {
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
        self.wait_for(txn_id, vec![participant], reply, WaiterKind::Resolve);
        self.propose(txn_id, FinalDecision::Abort(info), out);
    }

    /// An operator's decision is proposed like any other (C4: first-wins keeps an earlier
    /// one); the operator hears the decision that stands and whether theirs made it.
    fn on_force_resolve(
        &mut self,
        txn_id: TxnId,
        decision: FinalDecision,
        participants: Vec<ParticipantId>,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        let kind = WaiterKind::Operator(decision.decision());
        if self.answer_early(&txn_id, None, reply, kind, out)
            || self.join_one_phase(&txn_id, reply, kind)
        {
            return;
        }
        let mut targets: BTreeSet<ParticipantId> = participants.iter().cloned().collect();
        let d = self.wait_for(txn_id, participants, reply, kind);
        // Phase 2 goes to whoever the operator names and whoever this leader asked to prepare.
        targets.extend(d.participants.iter().cloned());
        d.proposed.get_or_insert_with(|| decision.clone());
        out.push(Action::Propose {
            items: vec![DecideItem {
                txn_id,
                decision,
                source: DecisionSource::Operator,
                participants: targets.into_iter().collect(),
            }],
        });
    }

    /// Answer everyone waiting for the registration of `participant` at `endpoint`.
    fn answer_registration(
        &mut self,
        participant: ParticipantId,
        endpoint: Endpoint,
        answer: Answer,
        out: &mut Vec<Action>,
    ) {
        let waiters = self.registering.remove(&(participant, endpoint));
        for reply in waiters.unwrap_or_default() {
            out.push(Action::Reply {
                reply,
                answer: answer.clone(),
            });
        }
    }

    fn on_register(
        &mut self,
        participant: ParticipantId,
        endpoint: Endpoint,
        reply: ReplyId,
        out: &mut Vec<Action>,
    ) {
        if !self.leader {
            out.push(Action::Reply {
                reply,
                answer: Answer::NotLeader,
            });
            return;
        }
        let key = (participant, endpoint);
        if let Some(waiters) = self.registering.get_mut(&key) {
            waiters.push(reply); // The same registration is on its way.
            return;
        }
        if self.registering.len() >= self.config.registering_max {
            out.push(Action::Reply {
                reply,
                answer: Answer::Overloaded,
            });
            return;
        }
        out.push(Action::ProposeRegister {
            participant: key.0.clone(),
            endpoint: key.1.clone(),
        });
        self.registering.insert(key, vec![reply]);
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
            Some((_, WaiterKind::Operator(_))) => DecisionSource::Operator,
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
        let answer_before_apply = self.planted(Bug::AnswerBeforeApply);
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
        if decision == FinalDecision::Commit && answer_before_apply {
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

    /// A decision was applied (from the apply feed: this driver's proposal or anyone's).
    fn on_decided(&mut self, now: u64, applied: AppliedDecision, out: &mut Vec<Action>) {
        let Some(d) = self.deciding.remove(&applied.txn_id) else {
            // Not proposed by this driver (an earlier leader's entry committed late): deliver
            // phase 2 of a new decision too (C6). Followers keep nothing.
            if applied.newly_decided && self.leader {
                self.deliver(now, applied.txn_id, applied.decision, applied.pending);
                self.flush(now, out);
            }
            return;
        };
        let changed = applied.newly_decided && applied.source == DecisionSource::Operator;
        for (reply, kind) in &d.waiters {
            out.push(Action::Reply {
                reply: *reply,
                answer: kind.answer(&applied.decision, changed),
            });
        }
        // Phase 2 (C6): the standing record's pending participants, plus — when an earlier
        // ABORT won over this leader's proposal — everyone who may have prepared for it here,
        // so they need not wait to resolve.
        let mut targets: BTreeSet<ParticipantId> = applied.pending.into_iter().collect();
        if !applied.newly_decided && matches!(applied.decision, FinalDecision::Abort(_)) {
            targets.extend(d.may_have_prepared());
        }
        if targets.is_empty() || !self.leader {
            return;
        }
        self.deliver(now, applied.txn_id, applied.decision, targets);
        self.flush(now, out);
    }

    /// Track phase-2 deliveries of `decision` to `to` (idempotent).
    fn deliver(
        &mut self,
        now: u64,
        txn_id: TxnId,
        decision: FinalDecision,
        to: impl IntoIterator<Item = ParticipantId>,
    ) {
        let mut to = to.into_iter().peekable();
        if to.peek().is_none() {
            return;
        }
        let entry = self.phase2.entry(txn_id).or_insert_with(|| Phase2 {
            decision,
            deliveries: BTreeMap::new(),
        });
        for participant in to {
            entry.deliveries.entry(participant).or_insert(Delivery {
                due_unix_ms: now,
                backoff_ms: self.config.phase2_backoff_min_ms,
                in_flight: false,
            });
        }
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
        for (id, o) in &self.one_phase {
            assert!(
                !o.waiters.is_empty(),
                "{id}: one-phase commit nobody waits for"
            );
            assert!(
                !self.deciding.contains_key(id),
                "{id}: one-phase and two-phase at once"
            );
        }
        if !self.leader {
            assert!(
                self.deciding.is_empty()
                    && self.phase2.is_empty()
                    && self.one_phase.is_empty()
                    && self.registering.is_empty(),
                "work held while not leader"
            );
        }
    }
}

#[cfg(test)]
mod tests;
