//! An exhaustive model of the business-call contract at one participant (docs/protocol.md
//! P10), checked with stateright: a reckless initiator, the participant's call guard and store,
//! and the coordinator's Prepare, over a network that reorders, loses and (by the initiator's
//! own retries) repeats messages, with participant crashes that lose staged work and call
//! records.
//!
//! The initiator makes up to `calls` business calls (each may succeed or fail in the handler),
//! may send any call again with the same call id, and may commit at any moment — after errors,
//! with calls still unanswered — reporting how many calls it made (`call_counts`) or not. The
//! participant runs a call once per call id (P10), dooms the transaction on a failed call,
//! refuses calls once Prepare arrived, and at Prepare votes NO if a call is still running, a
//! call failed, or the count does not match; after a restart it refuses the transaction's
//! work (P4) and votes NO on a Prepare it has no record of (P5). A YES vote is durable.
//!
//! Properties: **exactly once** (no call's effect is staged twice); **no YES after a failed
//! call**; **every call that ran here is in** (a YES or READ_ONLY vote carries every call whose
//! handler began before it, since the last restart); **nothing heard OK is left out** (a YES or
//! READ_ONLY vote carries every call the initiator was told succeeded); **every counted call
//! is in** (with call counts, a YES or READ_ONLY vote carries every call the initiator made). [`CallsBug`] plants one broken rule
//! at a time; the tests show the checker finds each.

use stateright::{Model, Property};

/// A planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallsBug {
    /// A failed call neither dooms the transaction nor stops counting as completed.
    ErrorsDoNotDoom,
    /// A repeated call id runs the handler again.
    CallsRunTwice,
    /// A Prepare for work lost at a restart is answered READ_ONLY.
    LostWorkReadOnly,
    /// Prepare does not look for calls still running.
    NoRunningCheck,
}

/// The model's size and faults.
#[derive(Debug, Clone)]
pub struct CallsModel {
    /// Business calls the initiator makes, at most.
    pub calls: u8,
    /// Repeats of a call (same call id) the initiator sends, at most, in all.
    pub repeats: u8,
    /// Messages the network loses, at most, in all.
    pub losses: u8,
    /// Participant crashes (restarted at once), at most.
    pub crashes: u8,
    /// Whether the initiator's commit reports its call count.
    pub call_counts: bool,
    /// A planted bug, or none.
    pub bug: Option<CallsBug>,
}

impl CallsModel {
    /// The configurations CI checks: three calls, two repeats, two lost messages and a
    /// crash, with and without call counts.
    pub fn ci() -> Vec<Self> {
        [true, false]
            .into_iter()
            .map(|call_counts| Self {
                calls: 3,
                repeats: 2,
                losses: 2,
                crashes: 1,
                call_counts,
                bug: None,
            })
            .collect()
    }
}

/// A message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CMsg {
    /// Initiator → participant: call `id`.
    Call {
        /// The call id.
        id: u8,
    },
    /// Participant → initiator: the answer to call `id`.
    Reply {
        /// The call id.
        id: u8,
        /// OK, or an error.
        ok: bool,
    },
    /// Coordinator → participant: Prepare, with the initiator's call count if reported.
    Prepare {
        /// The count.
        expected: Option<u8>,
    },
}

/// The participant's record of one call (memory: lost at a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rec {
    /// Not seen.
    None,
    /// Its handler runs; `waiting` repeats wait for its answer.
    Running {
        /// Repeats waiting.
        waiting: u8,
    },
    /// Answered.
    Ended {
        /// OK or failed.
        ok: bool,
    },
}

/// A vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CVote {
    /// Prepared: the staged effects are durable.
    Yes,
    /// Nothing to write.
    ReadOnly,
    /// Refused.
    No,
}

/// The whole system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CState {
    /// Calls the initiator has made (ids `0..sent`).
    pub sent: u8,
    /// What the initiator heard first for each call: `Some(ok)`.
    pub heard: Vec<Option<bool>>,
    /// The call count the commit reported (`Some(None)`: committed without counts).
    pub committed: Option<Option<u8>>,
    /// Repeats left.
    pub repeats_left: u8,
    /// Losses left.
    pub losses_left: u8,
    /// Crashes left.
    pub crashes_left: u8,
    /// Messages in flight (sorted: a multiset).
    pub net: Vec<CMsg>,
    /// The participant's call records.
    pub recs: Vec<Rec>,
    /// Prepare arrived: no more calls.
    pub closed: bool,
    /// The transaction is doomed here.
    pub doomed: bool,
    /// The participant restarted since the transaction began (P4: its work is refused).
    pub restarted: bool,
    /// Times each call's effect is staged (memory until the vote).
    pub staged: Vec<u8>,
    /// The vote, once given (a YES is durable with the effects it carries).
    pub vote: Option<CVote>,
    /// The effects a YES vote made durable.
    pub voted: Vec<u8>,
    /// Ghost: a call's handler failed here before the vote.
    pub failed_before_vote: bool,
    /// Ghost: which calls' handlers began here before the vote (since the last restart).
    pub started_before_vote: Vec<bool>,
}

/// A step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CAction {
    /// The initiator makes its next call.
    Send,
    /// The initiator sends call `id` again (same call id).
    Repeat(u8),
    /// The initiator commits (whatever it heard so far).
    Commit,
    /// Deliver a call: the guard admits it (or answers from its record, or refuses it).
    DeliverCall(u8),
    /// The handler of a running call ends, OK or failing.
    Finish(u8, bool),
    /// Deliver an answer to the initiator.
    DeliverReply(CMsg),
    /// Deliver the Prepare.
    DeliverPrepare(CMsg),
    /// The network loses a message.
    Lose(CMsg),
    /// The participant crashes and restarts: memory lost, a YES kept.
    Crash,
}

fn send(net: &mut Vec<CMsg>, m: CMsg) {
    let at = net.partition_point(|x| *x <= m);
    net.insert(at, m);
}

fn take(net: &mut Vec<CMsg>, m: CMsg) -> bool {
    match net.iter().position(|x| *x == m) {
        Some(i) => {
            net.remove(i);
            true
        }
        None => false,
    }
}

impl CallsModel {
    fn bug(&self, b: CallsBug) -> bool {
        self.bug == Some(b)
    }
}

impl Model for CallsModel {
    type State = CState;
    type Action = CAction;

    fn init_states(&self) -> Vec<CState> {
        let n = self.calls as usize;
        vec![CState {
            sent: 0,
            heard: vec![None; n],
            committed: None,
            repeats_left: self.repeats,
            losses_left: self.losses,
            crashes_left: self.crashes,
            net: Vec::new(),
            recs: vec![Rec::None; n],
            closed: false,
            doomed: false,
            restarted: false,
            staged: vec![0; n],
            vote: None,
            voted: vec![0; n],
            failed_before_vote: false,
            started_before_vote: vec![false; n],
        }]
    }

    fn actions(&self, s: &CState, actions: &mut Vec<CAction>) {
        if s.committed.is_none() {
            if s.sent < self.calls {
                actions.push(CAction::Send);
            }
            if s.repeats_left > 0 {
                for id in 0..s.sent {
                    actions.push(CAction::Repeat(id));
                }
            }
            if s.sent > 0 {
                actions.push(CAction::Commit);
            }
        }
        let mut seen = Vec::new();
        for m in &s.net {
            if seen.contains(m) {
                continue;
            }
            seen.push(*m);
            match *m {
                CMsg::Call { id } => actions.push(CAction::DeliverCall(id)),
                CMsg::Reply { .. } => actions.push(CAction::DeliverReply(*m)),
                CMsg::Prepare { .. } => actions.push(CAction::DeliverPrepare(*m)),
            }
            if s.losses_left > 0 {
                actions.push(CAction::Lose(*m));
            }
        }
        for (id, r) in s.recs.iter().enumerate() {
            if matches!(r, Rec::Running { .. }) {
                actions.push(CAction::Finish(id as u8, true));
                actions.push(CAction::Finish(id as u8, false));
            }
        }
        if s.crashes_left > 0 {
            actions.push(CAction::Crash);
        }
    }

    fn next_state(&self, last: &CState, action: CAction) -> Option<CState> {
        let mut s = last.clone();
        match action {
            CAction::Send => {
                send(&mut s.net, CMsg::Call { id: s.sent });
                s.sent += 1;
            }
            CAction::Repeat(id) => {
                send(&mut s.net, CMsg::Call { id });
                s.repeats_left -= 1;
            }
            CAction::Commit => {
                let expected = self.call_counts.then_some(s.sent);
                s.committed = Some(expected);
                send(&mut s.net, CMsg::Prepare { expected });
            }
            CAction::DeliverCall(id) => {
                take(&mut s.net, CMsg::Call { id });
                let i = id as usize;
                if s.closed {
                    // Refused once the commit began; the vote stands (nothing dooms).
                    send(&mut s.net, CMsg::Reply { id, ok: false });
                    return Some(s);
                }
                match s.recs[i] {
                    Rec::Running { waiting } if !self.bug(CallsBug::CallsRunTwice) => {
                        s.recs[i] = Rec::Running {
                            waiting: waiting + 1,
                        };
                    }
                    Rec::Ended { ok } if !self.bug(CallsBug::CallsRunTwice) => {
                        send(&mut s.net, CMsg::Reply { id, ok });
                    }
                    // First attempt: the handler runs.
                    Rec::None => {
                        s.recs[i] = Rec::Running { waiting: 0 };
                        if s.vote.is_none() {
                            s.started_before_vote[i] = true;
                        }
                    }
                    Rec::Running { .. } | Rec::Ended { .. } => {
                        // Planted: the repeat runs the handler again; its effect lands now.
                        if !s.doomed && !s.restarted {
                            s.staged[i] += 1;
                        }
                        send(&mut s.net, CMsg::Reply { id, ok: true });
                    }
                }
            }
            CAction::Finish(id, handler_ok) => {
                let i = id as usize;
                let Rec::Running { waiting } = s.recs[i] else {
                    return None;
                };
                // The store refuses a doomed transaction, one whose commit began (preparing
                // or prepared), and after a restart one that began before it (P4).
                let store_ok = !s.doomed && !s.restarted && s.vote.is_none();
                let ok = handler_ok && store_ok;
                if ok {
                    s.staged[i] += 1;
                } else {
                    if s.vote.is_none() {
                        s.failed_before_vote = true;
                    }
                    if self.bug(CallsBug::ErrorsDoNotDoom) {
                        // Planted: the failure counts as a completed call, nothing dooms.
                    } else if s.vote.is_none() {
                        s.doomed = true;
                        s.staged.iter_mut().for_each(|e| *e = 0);
                    }
                }
                let counted_ok = ok || self.bug(CallsBug::ErrorsDoNotDoom);
                s.recs[i] = Rec::Ended { ok: counted_ok };
                for _ in 0..=waiting {
                    send(&mut s.net, CMsg::Reply { id, ok });
                }
            }
            CAction::DeliverReply(m) => {
                take(&mut s.net, m);
                let CMsg::Reply { id, ok } = m else {
                    return None;
                };
                let h = &mut s.heard[id as usize];
                if h.is_none() {
                    *h = Some(ok);
                }
            }
            CAction::DeliverPrepare(m) => {
                take(&mut s.net, m);
                let CMsg::Prepare { expected } = m else {
                    return None;
                };
                if s.vote.is_some() {
                    return Some(s); // P6: the same vote again.
                }
                s.closed = true;
                let running = s.recs.iter().any(|r| matches!(r, Rec::Running { .. }))
                    && !self.bug(CallsBug::NoRunningCheck);
                let failed = s.recs.contains(&Rec::Ended { ok: false });
                let completed = s
                    .recs
                    .iter()
                    .filter(|r| **r == Rec::Ended { ok: true })
                    .count() as u8;
                if running || failed || expected.is_some_and(|n| n != completed) {
                    s.doomed = true;
                    s.staged.iter_mut().for_each(|e| *e = 0);
                }
                let seen = s.recs.iter().any(|r| *r != Rec::None);
                s.vote = Some(if s.doomed {
                    CVote::No
                } else if s.staged.iter().any(|e| *e > 0) {
                    s.voted = s.staged.clone();
                    CVote::Yes
                } else if !seen && s.restarted && self.bug(CallsBug::LostWorkReadOnly) {
                    CVote::ReadOnly
                } else {
                    // Never seen here, or its work lost with a restart (P5).
                    CVote::No
                });
            }
            CAction::Lose(m) => {
                take(&mut s.net, m);
                s.losses_left -= 1;
            }
            CAction::Crash => {
                s.crashes_left -= 1;
                s.restarted = true;
                s.recs.iter_mut().for_each(|r| *r = Rec::None);
                s.staged.iter_mut().for_each(|e| *e = 0);
                s.started_before_vote.iter_mut().for_each(|b| *b = false);
                s.doomed = false;
                s.closed = false;
                if s.vote != Some(CVote::Yes) {
                    // Only a YES is durable (the prepare record); any other answer is
                    // forgotten, and a duplicate Prepare is answered anew.
                    s.vote = None;
                }
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("exactly once", |_, s: &CState| {
                s.staged.iter().chain(&s.voted).all(|e| *e <= 1)
            }),
            Property::always("no YES after a failed call", |_, s: &CState| {
                s.vote != Some(CVote::Yes) || !s.failed_before_vote
            }),
            Property::always("every call that ran here is in", |_, s: &CState| {
                !matches!(s.vote, Some(CVote::Yes | CVote::ReadOnly))
                    || s.started_before_vote
                        .iter()
                        .zip(&s.voted)
                        .all(|(started, v)| !*started || *v == 1)
            }),
            Property::always("nothing heard OK is left out", |_, s: &CState| {
                !matches!(s.vote, Some(CVote::Yes | CVote::ReadOnly))
                    || s.heard
                        .iter()
                        .zip(&s.voted)
                        .all(|(h, v)| *h != Some(true) || *v == 1)
            }),
            Property::always("every counted call is in", |_, s: &CState| {
                let Some(Some(n)) = s.committed else {
                    return true;
                };
                !matches!(s.vote, Some(CVote::Yes | CVote::ReadOnly))
                    || s.voted.iter().take(n as usize).all(|v| *v == 1)
            }),
            Property::sometimes("commits a call heard OK", |_, s: &CState| {
                s.vote == Some(CVote::Yes) && s.heard.contains(&Some(true))
            }),
            Property::sometimes("refuses after a failed call", |_, s: &CState| {
                s.vote == Some(CVote::No) && s.heard.contains(&Some(false))
            }),
        ]
    }
}
