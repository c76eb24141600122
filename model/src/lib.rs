//! An exhaustive model of Ratify's commit protocol, checked with [stateright].
//!
//! One transaction, `participants` participants, a coordinator cluster whose replicated state
//! is abstracted to what Raft gives the protocol — a durable, first-wins decision register
//! (docs/protocol.md C4, C5) — and whose leader is a process with volatile state that can crash
//! and be replaced up to `leader_changes` times. Messages travel in a network that reorders
//! them freely and, within a fault budget, loses or duplicates them. Every rule the model
//! follows is a numbered rule of docs/protocol.md, cited where it is used:
//!
//! - the client asks the leader to commit (C3), and may retry with the same id (C10);
//! - the leader sends Prepare to every participant and decides ABORT on a NO or when its
//!   prepare timeout fires, COMMIT when all said YES (C3); the decision is proposed and
//!   applied first-wins (C4, C5), then answered (C6) and sent in phase 2, re-sent until
//!   acknowledged (C7); a new leader resumes phase 2 from the replicated decision;
//! - a participant votes YES (durably prepared) or NO; it may abort on its own only before it
//!   voted YES (P4); a duplicate Prepare gets the same vote (P6); phase 2 is idempotent (P7);
//!   a prepared participant asks the leader (Resolve), which answers from the replicated
//!   decision or, when nothing is being decided, proposes ABORT (R-rules).
//!
//! Properties: agreement (no participant committed while another aborted after voting YES, and
//! every participant's end state matches the replicated decision), validity (COMMIT only if
//! every participant voted YES), durability (what the client was told is the replicated
//! decision, forever), no commit applied at a participant that never prepared, and, on every
//! path that ends (all messages delivered, nothing left to do), eventual decision: every
//! participant has finished, and a decision is recorded whenever one voted YES.
//!
//! [`Bug`] plants one broken rule at a time; the tests show the checker finds each.
//!
//! [`calls`] models the business-call contract at one participant (P10): a reckless
//! initiator, call ids, doom, call counts, crashes.

use std::collections::BTreeMap;

use stateright::{Model, Property};

pub mod calls;

/// A planted bug (tests only: the checker must find a counterexample).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// A participant aborts on its own after voting YES (breaks P4).
    UnilateralAbortAfterYes,
    /// The decision register keeps the last decision proposed, not the first (breaks C5).
    LastWins,
    /// The leader answers the client COMMITTED when all voted YES, before the decision is
    /// replicated (breaks C6).
    AnswerBeforeDecision,
}

/// The model's size and faults.
#[derive(Debug, Clone)]
pub struct RatifyModel {
    /// Participants in the transaction.
    pub participants: usize,
    /// Leader crashes (each followed by a new leader), at most.
    pub leader_changes: u8,
    /// Messages lost or duplicated by the network, at most, in all.
    pub network_faults: u8,
    /// Commit requests the client makes, at most (the first and its retries).
    pub client_requests: u8,
    /// Whether the client may also give up and call Abort (once).
    pub client_abort: bool,
    /// A planted bug, or none.
    pub bug: Option<Bug>,
}

impl RatifyModel {
    /// The configurations CI checks exhaustively, each a few seconds and a few million states
    /// at most (network faults multiply the state space fastest, so they are checked with fewer
    /// leader changes): 3 participants through 2 leader changes; 3 participants with a lost or
    /// duplicated message; 2 participants with a leader change, a network fault and a client
    /// retry.
    pub fn ci() -> Vec<Self> {
        let base = Self {
            participants: 3,
            leader_changes: 2,
            network_faults: 0,
            client_requests: 1,
            client_abort: true,
            bug: None,
        };
        vec![
            base.clone(),
            Self {
                leader_changes: 0,
                network_faults: 1,
                client_abort: false,
                ..base.clone()
            },
            Self {
                participants: 2,
                leader_changes: 1,
                network_faults: 1,
                client_requests: 2,
                client_abort: false,
                ..base
            },
        ]
    }

    /// A larger configuration for a long run (`cargo test --release -p ratify-model --
    /// --ignored`): 3 participants, 2 leader changes, a network fault and a client retry.
    pub fn long() -> Self {
        Self {
            participants: 3,
            leader_changes: 2,
            network_faults: 1,
            client_requests: 2,
            client_abort: true,
            bug: None,
        }
    }
}

/// A participant's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// Doing the transaction's work; has not voted.
    Working,
    /// Voted YES: durably prepared, waits for the decision.
    Prepared,
    /// Committed.
    Committed,
    /// Aborted (voted NO, aborted on its own before voting, or told ABORT).
    Aborted,
}

/// A message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Leader of `epoch` → participant `to`.
    Prepare {
        /// The sender's term.
        epoch: u8,
        /// Participant.
        to: u8,
    },
    /// Participant `from` → the leader of `epoch`.
    Vote {
        /// The term of the Prepare answered.
        epoch: u8,
        /// Participant.
        from: u8,
        /// YES or NO.
        yes: bool,
    },
    /// The decision, leader → participant `to` (phase 2, or the answer to a Resolve).
    Decision {
        /// Participant.
        to: u8,
        /// COMMIT or ABORT.
        commit: bool,
    },
    /// Participant `from` acknowledges phase 2 → leader.
    Ack {
        /// Participant.
        from: u8,
    },
    /// Prepared participant `from` asks the leader for the outcome.
    Resolve {
        /// Participant.
        from: u8,
    },
}

/// The current leader's volatile state (lost when it crashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Leader {
    /// Collecting votes for the client's commit.
    pub deciding: bool,
    /// Votes received in this term.
    pub votes: BTreeMap<u8, bool>,
    /// Decisions proposed, not yet replicated, in order (a client's Abort can follow a
    /// COMMIT proposal).
    pub proposed: Vec<bool>,
    /// Replicated, not yet applied here (answer and phase 2 pending).
    pub to_apply: bool,
    /// The client waits for this leader's answer.
    pub client_waiting: bool,
    /// Participants phase 2 goes to (all, for the client's commit; the asker, for a Resolve).
    pub phase2: Vec<u8>,
    /// Participants that acknowledged phase 2.
    pub acked: Vec<u8>,
}

/// The whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct State {
    /// The replicated decision (Raft): COMMIT = true.
    pub decision: Option<bool>,
    /// The leader's term (0 = the first leader).
    pub epoch: u8,
    /// The leader.
    pub leader: Leader,
    /// Participants.
    pub parts: Vec<Part>,
    /// Which participants voted YES.
    pub voted_yes: Vec<bool>,
    /// Messages in flight (sorted: a multiset).
    pub net: Vec<Msg>,
    /// Network faults left.
    pub faults_left: u8,
    /// Commit requests left.
    pub requests_left: u8,
    /// Whether the client may still call Abort.
    pub abort_left: bool,
    /// What the client was told: COMMITTED = true.
    pub told: Option<bool>,
    /// A participant applied COMMIT without being prepared, or two different outcomes.
    pub broken: bool,
}

/// A step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The client sends Commit (or retries it) to the leader.
    ClientCommit,
    /// The client gives up and sends Abort: ABORT unless a decision exists.
    ClientAbort,
    /// Deliver a Prepare; a working participant votes `yes`.
    DeliverPrepare(Msg, bool),
    /// Deliver any other message.
    Deliver(Msg),
    /// The leader's prepare timeout fires: ABORT (late votes count as NO).
    PrepareTimeout,
    /// Raft replicates the proposed decision (first-wins).
    Replicate,
    /// The leader applies it: answers the client, starts phase 2.
    Apply,
    /// The leader re-sends phase 2 to an unacknowledged participant.
    ResendPhase2(u8),
    /// A prepared participant asks for the outcome.
    Resolve(u8),
    /// A working participant gives up on its own (staged timeout, P4).
    StagedTimeout(u8),
    /// The planted bug: a prepared participant aborts on its own.
    AbortAfterYes(u8),
    /// The leader crashes; a new one takes over.
    LeaderChange,
    /// The network loses a message.
    Lose(Msg),
    /// The network duplicates a message.
    Duplicate(Msg),
}

fn send(net: &mut Vec<Msg>, m: Msg) {
    let at = net.partition_point(|x| *x <= m);
    net.insert(at, m);
}

fn take(net: &mut Vec<Msg>, m: Msg) -> bool {
    match net.iter().position(|x| *x == m) {
        Some(i) => {
            net.remove(i);
            true
        }
        None => false,
    }
}

impl RatifyModel {
    fn n(&self) -> u8 {
        self.participants as u8
    }

    /// First-wins (C5); the planted `LastWins` overwrites.
    fn replicate(&self, s: &mut State, commit: bool) {
        if self.bug == Some(Bug::LastWins) || s.decision.is_none() {
            s.decision = Some(commit);
        }
    }
}

impl Model for RatifyModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            decision: None,
            epoch: 0,
            leader: Leader::default(),
            parts: vec![Part::Working; self.participants],
            voted_yes: vec![false; self.participants],
            net: Vec::new(),
            faults_left: self.network_faults,
            requests_left: self.client_requests,
            abort_left: self.client_abort,
            told: None,
            broken: false,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.requests_left > 0 && s.told.is_none() {
            actions.push(Action::ClientCommit);
        }
        if s.abort_left && s.told.is_none() {
            actions.push(Action::ClientAbort);
        }
        let mut seen = Vec::new();
        for m in &s.net {
            if seen.contains(m) {
                continue; // Copies of one message lead to the same states.
            }
            seen.push(*m);
            match m {
                Msg::Prepare { to, .. } if s.parts[*to as usize] == Part::Working => {
                    actions.push(Action::DeliverPrepare(*m, true));
                    actions.push(Action::DeliverPrepare(*m, false));
                }
                Msg::Prepare { .. } => actions.push(Action::DeliverPrepare(*m, true)),
                _ => actions.push(Action::Deliver(*m)),
            }
            if s.faults_left > 0 {
                actions.push(Action::Lose(*m));
                actions.push(Action::Duplicate(*m));
            }
        }
        let l = &s.leader;
        if l.deciding && l.proposed.is_empty() && !l.to_apply {
            actions.push(Action::PrepareTimeout);
        }
        if !l.proposed.is_empty() && !l.to_apply {
            actions.push(Action::Replicate);
        }
        if l.to_apply {
            actions.push(Action::Apply);
        }
        if s.decision.is_some() && !l.to_apply {
            for &p in &l.phase2 {
                // A phase-2 RPC is retried only once the last one is over (its answer, the
                // Ack, is not still on the way either): C7's retry after a failed delivery.
                let in_flight = s.net.iter().any(|m| {
                    matches!(m, Msg::Decision { to, .. } if *to == p)
                        || matches!(m, Msg::Ack { from } if *from == p)
                });
                if !l.acked.contains(&p) && !in_flight {
                    actions.push(Action::ResendPhase2(p));
                }
            }
        }
        for i in 0..self.n() {
            match s.parts[i as usize] {
                Part::Prepared => {
                    // The resolver asks again only when neither its question nor an answer is
                    // on the way (it backs off: one question at a time).
                    let asking = s.net.iter().any(|m| {
                        matches!(m, Msg::Resolve { from } if *from == i)
                            || matches!(m, Msg::Decision { to, .. } if *to == i)
                    });
                    if !asking {
                        actions.push(Action::Resolve(i));
                    }
                    if self.bug == Some(Bug::UnilateralAbortAfterYes) {
                        actions.push(Action::AbortAfterYes(i));
                    }
                }
                Part::Working => actions.push(Action::StagedTimeout(i)),
                Part::Committed | Part::Aborted => {}
            }
        }
        if s.epoch < self.leader_changes {
            actions.push(Action::LeaderChange);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        let n = self.n();
        match action {
            Action::ClientCommit => {
                s.requests_left -= 1;
                if let Some(d) = s.decision
                    && !s.leader.to_apply
                {
                    // C10: a retry is answered from the replicated decision.
                    s.told = Some(d);
                } else {
                    s.leader.client_waiting = true;
                    if !s.leader.deciding && !s.leader.to_apply && s.leader.proposed.is_empty() {
                        s.leader.deciding = true;
                        s.leader.phase2 = (0..n).collect();
                        for to in 0..n {
                            send(&mut s.net, Msg::Prepare { epoch: s.epoch, to });
                        }
                    }
                }
            }
            Action::ClientAbort => {
                s.abort_left = false;
                if let Some(d) = s.decision
                    && !s.leader.to_apply
                {
                    s.told = Some(d); // A decision exists: it stands.
                } else {
                    s.leader.client_waiting = true;
                    s.leader.phase2 = (0..n).collect();
                    if !s.leader.proposed.contains(&false) {
                        s.leader.proposed.push(false);
                    }
                }
            }
            Action::DeliverPrepare(m, yes) => {
                take(&mut s.net, m);
                let Msg::Prepare { epoch, to } = m else {
                    return None;
                };
                let p = &mut s.parts[to as usize];
                let vote = match *p {
                    Part::Working if yes => {
                        *p = Part::Prepared;
                        s.voted_yes[to as usize] = true;
                        true
                    }
                    Part::Working => {
                        *p = Part::Aborted;
                        false
                    }
                    // P6: the same answer again (a committed one had voted YES).
                    Part::Prepared | Part::Committed => true,
                    Part::Aborted => false,
                };
                send(
                    &mut s.net,
                    Msg::Vote {
                        epoch,
                        from: to,
                        yes: vote,
                    },
                );
            }
            Action::Deliver(m) => {
                take(&mut s.net, m);
                match m {
                    Msg::Vote { epoch, from, yes } => {
                        let l = &mut s.leader;
                        if epoch == s.epoch && l.deciding && l.proposed.is_empty() && !l.to_apply {
                            l.votes.insert(from, yes);
                            if !yes {
                                l.proposed.push(false); // C3: a NO aborts.
                            } else if l.votes.len() == n as usize && l.votes.values().all(|v| *v) {
                                l.proposed.push(true);
                                if self.bug == Some(Bug::AnswerBeforeDecision) && l.client_waiting {
                                    s.told = Some(true);
                                    l.client_waiting = false;
                                }
                            }
                        }
                    }
                    Msg::Decision { to, commit } => {
                        let p = &mut s.parts[to as usize];
                        match (*p, commit) {
                            (Part::Prepared, true) => *p = Part::Committed,
                            (Part::Prepared, false) | (Part::Working, false) => *p = Part::Aborted,
                            (Part::Committed, true) | (Part::Aborted, false) => {} // P7
                            (Part::Working, true)
                            | (Part::Committed, false)
                            | (Part::Aborted, true) => {
                                s.broken = true;
                            }
                        }
                        send(&mut s.net, Msg::Ack { from: to });
                    }
                    Msg::Ack { from } => {
                        if !s.leader.acked.contains(&from) {
                            s.leader.acked.push(from);
                            s.leader.acked.sort_unstable();
                        }
                    }
                    Msg::Resolve { from } => match s.decision {
                        Some(commit) if !s.leader.to_apply => {
                            send(&mut s.net, Msg::Decision { to: from, commit })
                        }
                        // Being decided here, or about to be applied: the participant asks
                        // again later.
                        _ if s.leader.deciding
                            || s.leader.to_apply
                            || !s.leader.proposed.is_empty() => {}
                        Some(_) => {}
                        None => {
                            // Nothing decided, nothing being decided: ABORT (R-rules).
                            s.leader.proposed.push(false);
                            if !s.leader.phase2.contains(&from) {
                                s.leader.phase2.push(from);
                                s.leader.phase2.sort_unstable();
                            }
                        }
                    },
                    Msg::Prepare { .. } => return None,
                }
            }
            Action::PrepareTimeout => s.leader.proposed.push(false),
            Action::Replicate => {
                if s.leader.proposed.is_empty() {
                    return None;
                }
                let commit = s.leader.proposed.remove(0);
                self.replicate(&mut s, commit);
                s.leader.to_apply = true;
            }
            Action::Apply => {
                s.leader.to_apply = false;
                s.leader.deciding = false;
                let commit = s.decision?;
                if s.leader.client_waiting {
                    s.told = Some(commit); // C6: the applied decision.
                    s.leader.client_waiting = false;
                }
                for &to in &s.leader.phase2.clone() {
                    send(&mut s.net, Msg::Decision { to, commit });
                }
            }
            Action::ResendPhase2(to) => {
                let commit = s.decision?;
                send(&mut s.net, Msg::Decision { to, commit });
            }
            Action::Resolve(from) => send(&mut s.net, Msg::Resolve { from }),
            Action::StagedTimeout(i) | Action::AbortAfterYes(i) => {
                s.parts[i as usize] = Part::Aborted;
            }
            Action::LeaderChange => {
                s.epoch += 1;
                s.leader = Leader::default();
                if s.decision.is_some() {
                    // The replicated decision lists its participants: phase 2 resumes.
                    s.leader.phase2 = (0..n).collect();
                }
            }
            Action::Lose(m) => {
                take(&mut s.net, m);
                s.faults_left -= 1;
            }
            Action::Duplicate(m) => {
                send(&mut s.net, m);
                s.faults_left -= 1;
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("agreement", |_, s: &State| {
                let committed = s.parts.contains(&Part::Committed);
                let aborted_after_yes = s
                    .parts
                    .iter()
                    .zip(&s.voted_yes)
                    .any(|(p, y)| *p == Part::Aborted && *y);
                !(committed && aborted_after_yes)
                    && s.parts.iter().zip(&s.voted_yes).all(|(p, y)| match p {
                        Part::Committed => s.decision == Some(true),
                        Part::Aborted if *y => s.decision == Some(false),
                        _ => true,
                    })
            }),
            Property::always("validity", |_, s: &State| {
                s.decision != Some(true) || s.voted_yes.iter().all(|y| *y)
            }),
            Property::always("durability", |_, s: &State| {
                s.told.is_none() || s.told == s.decision
            }),
            Property::always(
                "phase 2 applies only what a participant prepared for",
                |_, s: &State| !s.broken,
            ),
            // A decision is owed to whoever is in doubt: a participant that voted YES. (If
            // every participant aborted before voting, none is, and the client's retry or
            // Abort records the decision; its `Commit` answered UNKNOWN meanwhile, C10.)
            Property::eventually("decided and finished", |_, s: &State| {
                s.parts
                    .iter()
                    .all(|p| matches!(p, Part::Committed | Part::Aborted))
                    && (s.decision.is_some() || s.voted_yes.iter().all(|y| !y))
            }),
            Property::sometimes("commits", |_, s: &State| {
                s.told == Some(true) && s.parts.iter().all(|p| *p == Part::Committed)
            }),
            Property::sometimes("aborts after a leader change", |_, s: &State| {
                s.epoch > 0 && s.decision == Some(false)
            }),
        ]
    }
}
