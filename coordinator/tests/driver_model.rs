//! The real 2PC driver (`Driver::step`) in a small randomized world: a first-wins replicated
//! record, participants that vote at random, lost and late messages, failed proposals,
//! leadership changes and ticks, all in orders proptest chooses. After every step it checks
//! the properties the model checker (`model/`) proves of the protocol, on the code that runs:
//!
//! - C5: a caller is told only the decision that was applied (first-wins), never another.
//! - C3: COMMIT is proposed only when every participant voted YES or READ_ONLY.
//! - C6: phase 2 carries the recorded decision, and COMMIT goes only to YES voters.
//! - C4: a forced decision answers with the decision that stands.
//!
//! and, once the world calms down (leader stable, every message delivered, every proposal
//! applied), that every decided transaction finishes phase 2 and is forgotten.
//!
//! A planted bug entered through the configuration (answer-before-apply, C5) must be found.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use ratify_coordinator::state::{AppliedDecision, Effect};
use ratify_coordinator::txn::driver::{
    Action, Answer, Driver, DriverConfig, Input, PendingPhase2, ReplyId,
};
use ratify_proto::planted::Bug;
use ratify_proto::types::command::DecideItem;
use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome};
use ratify_proto::types::{
    AbortCause, AbortInfo, Decision, FinalDecision, NoReason, Outcome, ParticipantId, TxnId, Vote,
};

const TXNS: u8 = 4;
const PARTICIPANTS: u8 = 3;

fn txn(n: u8) -> TxnId {
    let mut b = [0u8; 16];
    b[0] = 1;
    b[15] = n + 1;
    TxnId::from_bytes(b).expect("non-nil")
}

fn participant(n: u8) -> ParticipantId {
    ParticipantId::new(format!("p{n}")).expect("valid")
}

/// The replicated record: first-wins decisions and who still owes an acknowledgement.
#[derive(Default)]
struct Record {
    decided: BTreeMap<TxnId, (FinalDecision, BTreeSet<ParticipantId>)>,
}

impl Record {
    fn apply(&mut self, item: &DecideItem) -> AppliedDecision {
        if let Some((decision, pending)) = self.decided.get(&item.txn_id) {
            return AppliedDecision {
                txn_id: item.txn_id,
                decision: decision.clone(),
                newly_decided: false,
                pending: pending.iter().cloned().collect(),
                source: item.source,
            };
        }
        let pending: BTreeSet<ParticipantId> = item.participants.iter().cloned().collect();
        self.decided
            .insert(item.txn_id, (item.decision.clone(), pending.clone()));
        AppliedDecision {
            txn_id: item.txn_id,
            decision: item.decision.clone(),
            newly_decided: true,
            pending: pending.into_iter().collect(),
            source: item.source,
        }
    }

    fn pending(&self) -> Vec<PendingPhase2> {
        self.decided
            .iter()
            .filter(|(_, (_, p))| !p.is_empty())
            .map(|(id, (d, p))| PendingPhase2 {
                txn_id: *id,
                decision: d.clone(),
                pending: p.iter().cloned().collect(),
            })
            .collect()
    }
}

/// What the caller of a request asked.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Asked {
    Commit,
    Abort,
    Resolve,
    Force,
}

struct World {
    driver: Driver,
    now: u64,
    leader: bool,
    record: Record,
    /// Proposals made, not yet applied (a failed proposal may still apply later).
    proposals: VecDeque<DecideItem>,
    prepares: VecDeque<(ParticipantId, TxnId)>,
    phase2: VecDeque<(ParticipantId, Decision, TxnId)>,
    /// One-phase commits (or, `true`, one-participant Aborts) sent.
    one_phase: VecDeque<(TxnId, bool)>,
    /// Each participant's vote, fixed at its first Prepare.
    votes: BTreeMap<(ParticipantId, TxnId), Vote>,
    /// Votes the driver was given.
    delivered: BTreeMap<(ParticipantId, TxnId), Vote>,
    /// Participants' own outcomes: a one-phase commit decides there.
    one_phase_outcomes: BTreeMap<TxnId, bool>,
    /// The deadline of the one-phase commit in progress, until its outcome is delivered.
    one_phase_live: BTreeMap<TxnId, u64>,
    replies: BTreeMap<ReplyId, (Asked, TxnId)>,
    next_reply: ReplyId,
    violations: Vec<String>,
}

impl World {
    fn new(config: DriverConfig) -> Self {
        Self {
            driver: Driver::new(config),
            now: 1_000,
            leader: false,
            record: Record::default(),
            proposals: VecDeque::new(),
            prepares: VecDeque::new(),
            phase2: VecDeque::new(),
            one_phase: VecDeque::new(),
            votes: BTreeMap::new(),
            delivered: BTreeMap::new(),
            one_phase_outcomes: BTreeMap::new(),
            one_phase_live: BTreeMap::new(),
            replies: BTreeMap::new(),
            next_reply: 1,
            violations: Vec::new(),
        }
    }

    fn participants_of(t: u8) -> Vec<ParticipantId> {
        // Transaction 0 has one participant (one-phase, C2); the others two or three.
        match t {
            0 => vec![participant(0)],
            1 => vec![participant(0), participant(1)],
            _ => (0..PARTICIPANTS).map(participant).collect(),
        }
    }

    fn reply(&mut self, asked: Asked, t: TxnId) -> ReplyId {
        let id = self.next_reply;
        self.next_reply += 1;
        self.replies.insert(id, (asked, t));
        id
    }

    fn step(&mut self, input: Input) {
        let out = self.driver.step(self.now, input);
        for action in out {
            self.check_and_queue(action);
        }
    }

    fn check_and_queue(&mut self, action: Action) {
        match action {
            Action::SendPrepare {
                participant,
                txn_ids,
                ..
            } => {
                for t in txn_ids {
                    self.prepares.push_back((participant.clone(), t));
                }
            }
            Action::SendOnePhase {
                txn_id,
                abort,
                deadline_unix_ms,
                ..
            } => {
                if !abort {
                    self.one_phase_live.insert(txn_id, deadline_unix_ms);
                }
                self.one_phase.push_back((txn_id, abort))
            }
            Action::Propose { items } => {
                for item in items {
                    if item.decision == FinalDecision::Commit
                        && item.source == ratify_proto::types::DecisionSource::Commit
                    {
                        let index = item.txn_id.to_bytes()[15] - 1;
                        for p in Self::participants_of(index) {
                            if !matches!(
                                self.delivered.get(&(p.clone(), item.txn_id)),
                                Some(Vote::Yes | Vote::ReadOnly)
                            ) {
                                self.violations.push(format!(
                                    "C3: COMMIT of {} proposed without {p}'s YES",
                                    item.txn_id
                                ));
                            }
                        }
                    }
                    self.proposals.push_back(item);
                }
            }
            Action::SendPhase2 {
                participant,
                decision,
                txn_ids,
            } => {
                for t in txn_ids {
                    match self.record.decided.get(&t) {
                        Some((d, _)) if d.decision() == decision => {}
                        other => self.violations.push(format!(
                            "C6: phase 2 {decision:?} for {t}, recorded {other:?}"
                        )),
                    }
                    if decision == Decision::Commit
                        && !matches!(self.votes.get(&(participant.clone(), t)), Some(Vote::Yes))
                    {
                        self.violations.push(format!(
                            "C6: COMMIT of {t} sent to {participant}, not a YES voter"
                        ));
                    }
                    self.phase2.push_back((participant.clone(), decision, t));
                }
            }
            Action::Reply { reply, answer } => {
                let Some((asked, t)) = self.replies.remove(&reply) else {
                    self.violations
                        .push(format!("reply {reply} answered twice"));
                    return;
                };
                let recorded = self.record.decided.get(&t).map(|(d, _)| d.clone());
                let told = match &answer {
                    Answer::Outcome(Outcome::Committed) => Some(true),
                    Answer::Outcome(Outcome::Aborted(_)) => Some(false),
                    Answer::Decision(d) | Answer::Forced { decision: d, .. } => {
                        Some(*d == FinalDecision::Commit)
                    }
                    _ => None,
                };
                if let Some(committed) = told {
                    // One participant: its own outcome is the truth (C2); else the record (C5).
                    let truth = match self.one_phase_outcomes.get(&t) {
                        Some(c) if recorded.is_none() => Some(*c),
                        _ => recorded.map(|d| d == FinalDecision::Commit),
                    };
                    if truth != Some(committed) {
                        self.violations.push(format!(
                            "C5: {asked:?} of {t} told committed={committed}, the truth is {truth:?}"
                        ));
                    }
                }
            }
            Action::ProposeForget { acks } => {
                for ack in acks {
                    if let Some((_, pending)) = self.record.decided.get_mut(&ack.txn_id) {
                        for p in &ack.participants {
                            pending.remove(p);
                        }
                    }
                }
            }
            Action::ProposeRegister { .. } | Action::ProposeCompact { .. } => {}
        }
    }

    /// One event, chosen by `op`, with `a` and `b` picking what it concerns.
    fn event(&mut self, op: u8, a: u8, b: u8) {
        self.now += u64::from(b % 8);
        let t = txn(a % TXNS);
        // Abort, Resolve and ForceResolve concern two-phase transactions (1..), and the
        // one-phase transaction (0) only while its one-phase commit runs: they join it (C2).
        // (After it, nothing is recorded here to answer them from: see docs/protocol.md C2.)
        let live = self
            .one_phase_live
            .get(&txn(0))
            .is_some_and(|deadline| self.now < *deadline);
        let two_phase = if live && b.is_multiple_of(4) {
            0
        } else {
            1 + a % (TXNS - 1)
        };
        match op % 16 {
            0 | 1 => {
                let reply = self.reply(Asked::Commit, t);
                let recorded = self.record.decided.get(&t).map(|(d, _)| d.clone());
                self.step(Input::Commit {
                    txn_id: t,
                    participants: Self::participants_of(a % TXNS),
                    deadline_unix_ms: self.now + 500,
                    call_counts: vec![],
                    recorded,
                    reply,
                });
            }
            // Aborts, Resolves and forced decisions are rarer than commits, as in life.
            2 if b.is_multiple_of(3) => {
                // The one-participant transaction may be aborted at any time: its Abort asks
                // the participant (C2).
                let index = if a.is_multiple_of(2) { 0 } else { two_phase };
                let t = txn(index);
                let reply = self.reply(Asked::Abort, t);
                let recorded = self.record.decided.get(&t).map(|(d, _)| d.clone());
                self.step(Input::Abort {
                    txn_id: t,
                    participants: Self::participants_of(index),
                    message: "gave up".into(),
                    recorded,
                    reply,
                });
            }
            3 if b.is_multiple_of(3) => {
                let t = txn(two_phase);
                let reply = self.reply(Asked::Resolve, t);
                let recorded = self.record.decided.get(&t).map(|(d, _)| d.clone());
                self.step(Input::Resolve {
                    txn_id: t,
                    participant: participant(b % PARTICIPANTS),
                    recorded,
                    reply,
                });
            }
            4..=6 => {
                // A participant answers the oldest Prepare (or it is lost).
                if let Some((p, t)) = self.prepares.pop_front() {
                    let vote = match b % 8 {
                        0 => Vote::No {
                            reason: NoReason::Conflict,
                            message: "busy".into(),
                        },
                        1 => Vote::ReadOnly,
                        _ => Vote::Yes,
                    };
                    let vote = self.votes.entry((p.clone(), t)).or_insert(vote).clone();
                    if a.is_multiple_of(9) {
                        self.step(Input::PrepareFailed {
                            participant: p,
                            txn_ids: vec![t],
                            error: "lost".into(),
                        });
                    } else {
                        self.delivered.insert((p.clone(), t), vote.clone());
                        self.step(Input::Votes {
                            participant: p,
                            votes: vec![(t, vote)],
                        });
                    }
                }
            }
            7 | 8 => {
                // Raft applies the oldest proposal (through the apply feed), or it fails.
                if let Some(item) = self.proposals.pop_front() {
                    if !self.leader || b.is_multiple_of(7) {
                        // Failed here; it may still be applied by a later leader.
                        if b.is_multiple_of(2) {
                            self.proposals.push_back(item.clone());
                        }
                        self.step(Input::ProposeFailed {
                            txn_ids: vec![item.txn_id],
                        });
                    } else {
                        let applied = self.record.apply(&item);
                        self.step(Input::Applied {
                            effects: vec![Effect::Decided(applied)],
                        });
                    }
                }
            }
            9 => {
                if let Some((p, decision, t)) = self.phase2.pop_front() {
                    let status = if b.is_multiple_of(6) {
                        AckStatus::Retry
                    } else {
                        AckStatus::Applied
                    };
                    if a.is_multiple_of(4) {
                        self.step(Input::AcksFailed {
                            participant: p,
                            txn_ids: vec![t],
                        });
                    } else {
                        let _ = decision;
                        self.step(Input::Acks {
                            participant: p,
                            acks: vec![(t, status)],
                        });
                    }
                }
            }
            10 => {
                if let Some((t, abort)) = self.one_phase.pop_front() {
                    // The participant decides once: commit (unless told to abort first).
                    let committed = *self
                        .one_phase_outcomes
                        .entry(t)
                        .or_insert(!abort && !b.is_multiple_of(3));
                    let outcome = match (a % 4, committed) {
                        (0, _) => OnePhaseOutcome::Unknown {
                            message: "disk".into(),
                        },
                        (_, true) => OnePhaseOutcome::Committed,
                        (_, false) => OnePhaseOutcome::Aborted {
                            reason: NoReason::ValidationFailed,
                            message: "no".into(),
                        },
                    };
                    if !matches!(outcome, OnePhaseOutcome::Unknown { .. }) {
                        self.one_phase_live.remove(&t);
                    }
                    self.step(Input::OnePhaseResult { txn_id: t, outcome });
                }
            }
            11 => {
                // An operator forces an abort of a stuck transaction (C4: first-wins).
                if a.is_multiple_of(5) {
                    let t = txn(two_phase);
                    let reply = self.reply(Asked::Force, t);
                    self.step(Input::ForceResolve {
                        txn_id: t,
                        decision: FinalDecision::Abort(AbortInfo::new(
                            AbortCause::Operator,
                            "stuck",
                        )),
                        participants: Self::participants_of(two_phase),
                        reply,
                    });
                }
            }
            12 => {
                // Leadership changes.
                if self.leader {
                    self.leader = false;
                    self.one_phase_live.clear();
                    self.step(Input::LostLeadership);
                    self.prepares.clear();
                    self.phase2.clear();
                    self.one_phase.clear();
                } else {
                    self.leader = true;
                    let pending = self.record.pending();
                    self.step(Input::BecameLeader { pending });
                }
            }
            _ => self.step(Input::Tick),
        }
    }

    /// Calm: a stable leader, every message delivered, every proposal applied, time passing.
    fn settle(&mut self) {
        if !self.leader {
            self.leader = true;
            let pending = self.record.pending();
            self.step(Input::BecameLeader { pending });
        }
        for _ in 0..2_000 {
            self.now += 25;
            if let Some(item) = self.proposals.pop_front() {
                let applied = self.record.apply(&item);
                self.step(Input::Applied {
                    effects: vec![Effect::Decided(applied)],
                });
            } else if let Some((p, t)) = self.prepares.pop_front() {
                let vote = self
                    .votes
                    .entry((p.clone(), t))
                    .or_insert(Vote::Yes)
                    .clone();
                self.delivered.insert((p.clone(), t), vote.clone());
                self.step(Input::Votes {
                    participant: p,
                    votes: vec![(t, vote)],
                });
            } else if let Some((p, _, t)) = self.phase2.pop_front() {
                self.step(Input::Acks {
                    participant: p,
                    acks: vec![(t, AckStatus::Applied)],
                });
            } else if let Some((t, abort)) = self.one_phase.pop_front() {
                let committed = *self.one_phase_outcomes.entry(t).or_insert(!abort);
                let outcome = if committed {
                    OnePhaseOutcome::Committed
                } else {
                    OnePhaseOutcome::Aborted {
                        reason: NoReason::ValidationFailed,
                        message: "no".into(),
                    }
                };
                self.one_phase_live.remove(&t);
                self.step(Input::OnePhaseResult { txn_id: t, outcome });
            } else {
                self.step(Input::Tick);
            }
        }
    }

    fn quiescent(&self) -> Result<(), String> {
        if let Some((t, (_, p))) = self.record.decided.iter().find(|(_, (_, p))| !p.is_empty()) {
            return Err(format!("C6/C7: {t} still waits for {p:?} after settling"));
        }
        if self.driver.deciding_len() != 0 || self.driver.phase2_backlog() != 0 {
            return Err(format!(
                "work left after settling: {} deciding, {} phase-2 deliveries",
                self.driver.deciding_len(),
                self.driver.phase2_backlog()
            ));
        }
        Ok(())
    }
}

/// What a run reached, to show the properties are checked on real work.
#[derive(Default, Debug)]
struct Reached {
    committed: usize,
    aborted: usize,
    one_phase: usize,
}

fn run(config: DriverConfig, events: &[(u8, u8, u8)]) -> Result<Reached, String> {
    let mut w = World::new(config);
    w.event(12, 0, 0); // Become the leader.
    for &(op, a, b) in events {
        w.event(op, a, b);
        if let Some(v) = w.violations.first() {
            return Err(v.clone());
        }
    }
    w.settle();
    if let Some(v) = w.violations.first() {
        return Err(v.clone());
    }
    w.quiescent()?;
    let decided = w.record.decided.values();
    Ok(Reached {
        committed: decided
            .clone()
            .filter(|(d, _)| *d == FinalDecision::Commit)
            .count(),
        aborted: decided.filter(|(d, _)| *d != FinalDecision::Commit).count(),
        one_phase: w.one_phase_outcomes.len(),
    })
}

fn events() -> impl Strategy<Value = Vec<(u8, u8, u8)>> {
    prop::collection::vec((any::<u8>(), any::<u8>(), any::<u8>()), 1..300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// C3–C7 on the real driver, under every interleaving proptest tries.
    #[test]
    fn the_driver_keeps_the_protocol(events in events()) {
        if let Err(v) = run(DriverConfig::default(), &events) {
            prop_assert!(false, "{}", v);
        }
    }
}

/// The sequences reach commits, aborts and one-phase commits, so the properties above are
/// checked on real work.
#[test]
fn the_sequences_reach_every_outcome() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut total = Reached::default();
    for _ in 0..200 {
        let events = events()
            .new_tree(&mut runner)
            .expect("a sequence")
            .current();
        let r = run(DriverConfig::default(), &events).expect("valid");
        total.committed += r.committed;
        total.aborted += r.aborted;
        total.one_phase += r.one_phase;
    }
    eprintln!("200 sequences reached {total:?}");
    assert!(
        total.committed >= 50 && total.aborted >= 100 && total.one_phase >= 50,
        "{total:?}"
    );
}

/// The properties are not vacuous: the planted bug (c), entered through the configuration,
/// answers COMMITTED before the decision is applied, and some sequence shows it (C5).
#[test]
fn a_planted_bug_in_the_configuration_is_found() {
    let config = DriverConfig {
        planted: Some(Bug::AnswerBeforeApply),
        ..DriverConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let found = (0..2_000).any(|_| {
        let events = events()
            .new_tree(&mut runner)
            .expect("a sequence")
            .current();
        run(config.clone(), &events).is_err_and(|v| v.starts_with("C5"))
    });
    assert!(
        found,
        "answer-before-apply was not found in 2,000 sequences"
    );
}
