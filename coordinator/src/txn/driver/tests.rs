//! The driver's unit tests: exact action lists for each input, citing docs/protocol.md.
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
            recorded: None,
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

fn applied_as(
    id: TxnId,
    decision: FinalDecision,
    newly: bool,
    pending: &[&str],
    source: DecisionSource,
) -> Input {
    Input::Applied {
        effects: vec![Effect::Decided(AppliedDecision {
            txn_id: id,
            decision,
            newly_decided: newly,
            pending: pending.iter().map(|s| p(s)).collect(),
            source,
        })],
    }
}

fn applied(id: TxnId, decision: FinalDecision, newly: bool, pending: &[&str]) -> Input {
    applied_as(id, decision, newly, pending, DecisionSource::Commit)
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
            recorded: None,
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
                recorded: None,
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

/// C6: the apply feed brings every decision, whoever proposed it. One this driver did not
/// propose (an earlier leader's entry committed late) gets its phase 2; one it tracks, or
/// one that was not new, adds nothing; a follower keeps nothing.
#[test]
fn applied_decisions_from_elsewhere_get_phase_two() {
    let mut d = leader();
    let missed = txn(22);
    let abort = FinalDecision::Abort(AbortInfo::new(AbortCause::ClientAbort, String::new()));
    let send = |to: &str| Action::SendPhase2 {
        participant: p(to),
        decision: Decision::Abort,
        txn_ids: vec![missed],
    };
    assert_eq!(
        d.step(5, applied(missed, abort.clone(), true, &["a", "b"])),
        vec![send("a"), send("b")]
    );
    assert!(
        d.step(6, applied(missed, abort.clone(), false, &["a", "b"]))
            .is_empty(),
        "a repeated decision is already being delivered"
    );
    assert!(
        d.step(7, applied(txn(23), abort.clone(), false, &["a"]))
            .is_empty(),
        "not new and not proposed here: whoever recorded it delivers it"
    );
    let mut f = Driver::new(DriverConfig::default());
    assert!(
        f.step(0, applied(missed, abort, true, &["a"])).is_empty(),
        "a follower ignores it"
    );
}

/// C2: a Commit with one participant is a one-phase commit there, retried on UNKNOWN with
/// backoff until the deadline (then UNKNOWN, C10); nothing is proposed to Raft.
#[test]
fn one_participant_commits_in_one_phase() {
    let mut d = leader();
    let t = txn(30);
    let one = |d: &mut Driver, now: u64, reply: ReplyId| {
        d.step(
            now,
            Input::Commit {
                txn_id: t,
                participants: vec![p("a")],
                deadline_unix_ms: 1_000,
                call_counts: vec![3],
                recorded: None,
                reply,
            },
        )
    };
    let send = Action::SendOnePhase {
        participant: p("a"),
        txn_id: t,
        call_count: Some(3),
        deadline_unix_ms: 1_000,
        abort: false,
    };
    assert_eq!(one(&mut d, 0, 1), vec![send.clone()]);
    assert!(one(&mut d, 1, 2).is_empty(), "a retry joins the attempt");
    assert!(d.step(2, Input::Tick).is_empty(), "in flight");
    let unknown = OnePhaseOutcome::Unknown {
        message: "disk".into(),
    };
    assert!(
        d.step(
            10,
            Input::OnePhaseResult {
                txn_id: t,
                outcome: unknown.clone()
            }
        )
        .is_empty()
    );
    assert!(d.step(29, Input::Tick).is_empty(), "backing off 20 ms");
    assert_eq!(d.step(30, Input::Tick), vec![send.clone()]);
    d.step(
        40,
        Input::OnePhaseResult {
            txn_id: t,
            outcome: unknown,
        },
    );
    assert!(d.step(79, Input::Tick).is_empty(), "backing off 40 ms");
    assert_eq!(d.step(80, Input::Tick), vec![send]);
    let aborted = Outcome::Aborted(AbortInfo {
        cause: AbortCause::VotedNo,
        participant: Some(p("a")),
        no_reason: Some(NoReason::CallFailed),
        message: "m".into(),
    });
    assert_eq!(
        d.step(
            90,
            Input::OnePhaseResult {
                txn_id: t,
                outcome: OnePhaseOutcome::Aborted {
                    reason: NoReason::CallFailed,
                    message: "m".into()
                }
            }
        ),
        vec![
            Action::Reply {
                reply: 1,
                answer: Answer::Outcome(aborted.clone())
            },
            Action::Reply {
                reply: 2,
                answer: Answer::Outcome(aborted)
            }
        ]
    );
    // Past the deadline with no answer: UNKNOWN, never a guess; a late answer is ignored.
    let u = txn(31);
    d.step(
        100,
        Input::Commit {
            txn_id: u,
            participants: vec![p("a")],
            deadline_unix_ms: 500,
            call_counts: vec![],
            recorded: None,
            reply: 3,
        },
    );
    assert_eq!(
        d.step(500, Input::Tick),
        vec![Action::Reply {
            reply: 3,
            answer: Answer::Outcome(Outcome::Unknown)
        }]
    );
    assert!(
        d.step(
            501,
            Input::OnePhaseResult {
                txn_id: u,
                outcome: OnePhaseOutcome::Committed
            }
        )
        .is_empty()
    );
    assert_eq!(d.deciding_len(), 0);
}

/// C2: a one-participant transaction's Abort goes to its participant, and the answer is
/// what the participant did: nothing is recorded here (an ABORT recorded here could
/// contradict a one-phase commit the participant already made). An Abort during the
/// one-phase commit joins it.
#[test]
fn one_participant_abort_asks_the_participant() {
    let mut d = leader();
    let t = txn(33);
    let abort = |d: &mut Driver, reply| {
        d.step(
            100,
            Input::Abort {
                txn_id: t,
                participants: vec![p("a")],
                message: "gave up".into(),
                recorded: None,
                reply,
            },
        )
    };
    assert_eq!(
        abort(&mut d, 1),
        vec![Action::SendOnePhase {
            participant: p("a"),
            txn_id: t,
            call_count: None,
            deadline_unix_ms: 10_100,
            abort: true,
        }]
    );
    // The participant had committed in one phase (its Abort answer conflicts): COMMITTED.
    assert_eq!(
        d.step(
            110,
            Input::OnePhaseResult {
                txn_id: t,
                outcome: OnePhaseOutcome::Committed
            }
        ),
        vec![Action::Reply {
            reply: 1,
            answer: Answer::Outcome(Outcome::Committed)
        }]
    );
    // During a one-phase commit, an Abort joins it and hears the same outcome.
    let u = txn(34);
    d.step(
        200,
        Input::Commit {
            txn_id: u,
            participants: vec![p("a")],
            deadline_unix_ms: 1_000,
            call_counts: vec![],
            recorded: None,
            reply: 2,
        },
    );
    assert!(
        d.step(
            201,
            Input::Abort {
                txn_id: u,
                participants: vec![p("a")],
                message: "gave up".into(),
                recorded: None,
                reply: 3,
            }
        )
        .is_empty()
    );
    let out = d.step(
        202,
        Input::OnePhaseResult {
            txn_id: u,
            outcome: OnePhaseOutcome::Committed,
        },
    );
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|a| matches!(
        a,
        Action::Reply {
            answer: Answer::Outcome(Outcome::Committed),
            ..
        }
    )));
}

/// C2: no participants commits at once; a recorded decision answers at once (C11).
#[test]
fn empty_and_recorded_commits_answer_at_once() {
    let mut d = leader();
    let commit_with = |d: &mut Driver, participants: Vec<ParticipantId>, recorded| {
        d.step(
            0,
            Input::Commit {
                txn_id: txn(32),
                participants,
                deadline_unix_ms: 1_000,
                call_counts: vec![],
                recorded,
                reply: 1,
            },
        )
    };
    assert_eq!(
        commit_with(&mut d, vec![], None),
        vec![Action::Reply {
            reply: 1,
            answer: Answer::Outcome(Outcome::Committed)
        }]
    );
    let info = AbortInfo::new(AbortCause::ClientAbort, "gone");
    assert_eq!(
        commit_with(
            &mut d,
            vec![p("a"), p("b")],
            Some(FinalDecision::Abort(info.clone()))
        ),
        vec![Action::Reply {
            reply: 1,
            answer: Answer::Outcome(Outcome::Aborted(info))
        }]
    );
    assert_eq!(d.deciding_len(), 0);
}

/// ForceResolve is proposed through the driver with the operator as source; the operator
/// hears whether theirs stood, and the new decision's phase 2 starts (C4, C6).
#[test]
fn force_resolve_is_proposed_and_answered() {
    let mut d = leader();
    let t = txn(40);
    let force = |d: &mut Driver, reply| {
        d.step(
            0,
            Input::ForceResolve {
                txn_id: t,
                decision: FinalDecision::Commit,
                participants: vec![p("b"), p("a")],
                reply,
            },
        )
    };
    assert_eq!(
        force(&mut d, 1),
        vec![Action::Propose {
            items: vec![DecideItem {
                txn_id: t,
                decision: FinalDecision::Commit,
                source: DecisionSource::Operator,
                participants: vec![p("a"), p("b")],
            }]
        }]
    );
    assert_eq!(
        d.step(
            1,
            applied_as(
                t,
                FinalDecision::Commit,
                true,
                &["a", "b"],
                DecisionSource::Operator
            )
        ),
        vec![
            Action::Reply {
                reply: 1,
                answer: Answer::Forced {
                    decision: FinalDecision::Commit,
                    changed: true
                }
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
    // Again, while phase 2 runs: the decision stands, unchanged.
    assert_eq!(
        force(&mut d, 2),
        vec![Action::Reply {
            reply: 2,
            answer: Answer::Forced {
                decision: FinalDecision::Commit,
                changed: false
            }
        }]
    );
    // An operator racing the driver's own decision: the driver's COMMIT applied first.
    let u = txn(41);
    commit(&mut d, 10, u, 3);
    let abort = FinalDecision::Abort(AbortInfo::new(AbortCause::Operator, "stuck"));
    let out = d.step(
        11,
        Input::ForceResolve {
            txn_id: u,
            decision: abort,
            participants: vec![],
            reply: 4,
        },
    );
    assert!(
        matches!(&out[..], [Action::Propose { items }] if items[0].source == DecisionSource::Operator
            && items[0].participants == vec![p("a"), p("b")]),
        "{out:?}"
    );
    let out = d.step(12, applied(u, FinalDecision::Commit, true, &["a"]));
    assert!(out.contains(&Action::Reply {
        reply: 4,
        answer: Answer::Forced {
            decision: FinalDecision::Commit,
            changed: false
        }
    }));
    assert!(out.contains(&Action::Reply {
        reply: 3,
        answer: Answer::Outcome(Outcome::Committed)
    }));
    // Not the leader: NOT_LEADER.
    let mut f = Driver::new(DriverConfig::default());
    assert_eq!(
        force(&mut f, 5),
        vec![Action::Reply {
            reply: 5,
            answer: Answer::NotLeader
        }]
    );
}

/// Registrations are proposed once per (participant, endpoint) and answered when applied.
#[test]
fn registration_is_proposed_and_answered_when_applied() {
    let mut d = leader();
    let e = Endpoint::new("http://127.0.0.1:7000".to_owned()).expect("valid");
    let register = |d: &mut Driver, reply| {
        d.step(
            0,
            Input::Register {
                participant: p("a"),
                endpoint: e.clone(),
                reply,
            },
        )
    };
    assert_eq!(
        register(&mut d, 1),
        vec![Action::ProposeRegister {
            participant: p("a"),
            endpoint: e.clone()
        }]
    );
    assert!(register(&mut d, 2).is_empty(), "joins the same proposal");
    assert_eq!(
        d.step(
            1,
            Input::Applied {
                effects: vec![Effect::Registered {
                    participant: p("a"),
                    endpoint: e.clone()
                }]
            }
        ),
        vec![
            Action::Reply {
                reply: 1,
                answer: Answer::Registered
            },
            Action::Reply {
                reply: 2,
                answer: Answer::Registered
            }
        ]
    );
    register(&mut d, 3);
    assert_eq!(
        d.step(
            2,
            Input::RegisterFailed {
                participant: p("a"),
                endpoint: e
            }
        ),
        vec![Action::Reply {
            reply: 3,
            answer: Answer::NotLeader
        }]
    );
}

/// C8: the leader proposes a compaction every `compact_interval_ms`, cutting at now minus
/// the retention.
#[test]
fn compaction_is_proposed_on_schedule() {
    let config = DriverConfig {
        outcome_retention_ms: 1_000,
        compact_interval_ms: 100,
        ..DriverConfig::default()
    };
    let mut d = Driver::new(config);
    d.step(5_000, Input::BecameLeader { pending: vec![] });
    assert!(d.step(5_099, Input::Tick).is_empty());
    assert_eq!(
        d.step(5_100, Input::Tick),
        vec![Action::ProposeCompact {
            before_unix_ms: 4_100
        }]
    );
    assert!(d.step(5_150, Input::Tick).is_empty());
}

/// Planted bugs come from the configuration: (c) answers before apply, (d) proposes ABORT
/// over a recorded decision. Without them the same inputs behave.
#[test]
fn planted_bugs_are_configuration() {
    let planted = |bug| {
        let mut d = Driver::new(DriverConfig {
            planted: Some(bug),
            ..DriverConfig::default()
        });
        d.step(0, Input::BecameLeader { pending: vec![] });
        d
    };
    let t = txn(50);
    let mut d = planted(Bug::AnswerBeforeApply);
    commit(&mut d, 0, t, 1);
    d.step(1, votes("a", t, Vote::Yes));
    let out = d.step(2, votes("b", t, Vote::Yes));
    assert_eq!(
        out[0],
        Action::Reply {
            reply: 1,
            answer: Answer::Outcome(Outcome::Committed)
        }
    );
    let resolve = |d: &mut Driver| {
        d.step(
            0,
            Input::Resolve {
                txn_id: t,
                participant: p("a"),
                recorded: Some(FinalDecision::Commit),
                reply: 2,
            },
        )
    };
    let mut d = planted(Bug::LastWins);
    assert!(
        matches!(&resolve(&mut d)[..], [Action::Propose { items }] if matches!(items[0].decision, FinalDecision::Abort(_)))
    );
    assert_eq!(
        resolve(&mut leader()),
        vec![Action::Reply {
            reply: 2,
            answer: Answer::Decision(FinalDecision::Commit)
        }]
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
