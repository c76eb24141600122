//! End to end: 3 coordinator processes and 2 bank branch processes on loopback. Each test says
//! which guarantee (docs/protocol.md rule) it checks.

use ratify_devtools::deployment::{Deployment, Env, SETTLE, pid};
use ratify_devtools::wait;
use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::coordinator_client::CoordinatorClient;
use ratify_proto::types::{AbortCause, NoReason, Outcome, TxnId, TxnPhase};

fn env(pairs: &[(&str, String)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Branch `eu` with alice (100) and branch `us` with bob (0), opened by one-phase transactions
/// (no 2PC failpoint is on that path).
async fn alice_and_bob(name: &str, coordinator_env: Env, bank_env: Env) -> Deployment {
    let d = Deployment::start(name, &["eu", "us"], coordinator_env, bank_env).await;
    d.open_account("eu", "alice", 100).await;
    d.open_account("us", "bob", 0).await;
    d
}

/// Alice's and Bob's committed balances.
async fn balances(d: &Deployment) -> (i64, i64) {
    (d.balance("eu", "alice").await, d.balance("us", "bob").await)
}

/// C3–C7: a transfer across two branches commits on both; phase 2 is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_across_two_participants() {
    let d = alice_and_bob("commit", vec![], vec![]).await;
    let txn = d.client.begin();
    let id = txn.id();
    assert!(
        d.stage_transfer(&txn, ("eu", "alice"), ("us", "bob"), 30)
            .await
            .is_empty()
    );
    assert_eq!(txn.commit().await.expect("commit"), Outcome::Committed);
    assert_eq!(d.wait_completed(id).await, Outcome::Committed);
    assert_eq!(balances(&d).await, (70, 30));
    d.stop().await;
}

/// C3, P5: a NO vote (insufficient funds) aborts the transaction on every participant; the
/// other participant's staged deposit is discarded and its lock released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_vote_aborts_everywhere() {
    let d = alice_and_bob("no-vote", vec![], vec![]).await;
    let txn = d.client.begin();
    let errors = d
        .stage_transfer(&txn, ("eu", "alice"), ("us", "bob"), 1_000)
        .await;
    assert_eq!(errors.len(), 1, "the withdrawal is refused: {errors:?}");
    assert_eq!(errors[0].code(), tonic::Code::FailedPrecondition);
    match txn.commit().await.expect("commit") {
        Outcome::Aborted(info) => {
            assert_eq!(info.cause, AbortCause::VotedNo);
            assert_eq!(info.participant, Some(pid("eu")));
            assert_eq!(info.no_reason, Some(NoReason::ValidationFailed));
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(balances(&d).await, (100, 0));
    // Bob's lock at us was released by phase 2: a new transfer goes through.
    let txn = d.client.begin();
    let id = txn.id();
    assert!(
        d.stage_transfer(&txn, ("eu", "alice"), ("us", "bob"), 10)
            .await
            .is_empty()
    );
    assert_eq!(txn.commit().await.expect("commit"), Outcome::Committed);
    // The client is answered before phase 2: committed reads see it once it completes.
    assert_eq!(d.wait_completed(id).await, Outcome::Committed);
    assert_eq!(balances(&d).await, (90, 10));
    d.stop().await;
}

/// C3, C6: a participant that cannot be reached aborts the transaction; the one that could
/// be reached discards its work; the unreachable one gets the ABORT once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_participant_aborts() {
    let mut d = alice_and_bob("unreachable", vec![], vec![]).await;
    let txn = d.client.begin();
    let id = txn.id();
    assert!(
        d.stage_transfer(&txn, ("eu", "alice"), ("us", "bob"), 10)
            .await
            .is_empty()
    );
    d.banks
        .get_mut("us")
        .expect("us")
        .kill()
        .await
        .expect("SIGKILL us");
    match txn.commit().await.expect("commit") {
        Outcome::Aborted(info) => assert!(
            matches!(
                info.cause,
                AbortCause::UnreachableParticipant | AbortCause::PrepareTimeout
            ),
            "{info:?}"
        ),
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(d.balance("eu", "alice").await, 100);
    d.banks
        .get_mut("us")
        .expect("us")
        .start()
        .await
        .expect("restart us");
    assert!(matches!(d.wait_completed(id).await, Outcome::Aborted(_)));
    assert_eq!(balances(&d).await, (100, 0));
    d.stop().await;
}

/// C2: one participant commits in one phase, nothing logged at the coordinator; a retry of
/// the same commit gets the participant's recorded outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_phase_commit() {
    let d = Deployment::start("one-phase", &["eu"], vec![], vec![]).await;
    d.open_account("eu", "alice", 5).await;
    let txn = d.client.begin();
    let (id, deadline) = (txn.id(), txn.context().deadline_unix_ms.expect("deadline"));
    d.bank("eu")
        .deposit(txn.request(
            &pid("eu"),
            ratify_proto::pb::bank::AmountRequest {
                account: "alice".into(),
                amount: 7,
            },
        ))
        .await
        .expect("deposit");
    assert_eq!(txn.commit().await.expect("commit"), Outcome::Committed);
    assert_eq!(d.balance("eu", "alice").await, 12);
    let status = d.client.status(id).await.expect("status");
    assert_eq!(
        status.phase,
        TxnPhase::Undecided,
        "nothing is logged for one participant"
    );
    let retry = d
        .client
        .commit_txn(id, vec![pid("eu")], deadline)
        .await
        .expect("retry");
    assert_eq!(
        retry,
        Outcome::Committed,
        "the participant's recorded outcome answers the retry"
    );
    assert_eq!(d.balance("eu", "alice").await, 12, "applied once");
    d.stop().await;
}

/// C3: a participant that only read votes READ_ONLY and takes no part in phase 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_participant_is_left_out_of_phase_two() {
    let d = Deployment::start("read-only", &["eu", "us"], vec![], vec![]).await;
    d.open_account("eu", "alice", 1).await;
    d.open_account("us", "bob", 2).await;
    let txn = d.client.begin();
    let id = txn.id();
    let seen = d
        .bank("us")
        .balance(txn.request(
            &pid("us"),
            ratify_proto::pb::bank::BalanceRequest {
                account: "bob".into(),
            },
        ))
        .await
        .expect("read at us")
        .into_inner()
        .balance;
    d.bank("eu")
        .deposit(txn.request(
            &pid("eu"),
            ratify_proto::pb::bank::AmountRequest {
                account: "alice".into(),
                amount: seen,
            },
        ))
        .await
        .expect("deposit at eu");
    assert_eq!(txn.commit().await.expect("commit"), Outcome::Committed);
    assert_eq!(d.wait_completed(id).await, Outcome::Committed);
    let list = d
        .cluster
        .admin()
        .call_leader(|mut c| async move {
            c.list_txns(pbco::ListTxnsRequest {
                phase: pbco::TxnPhase::Completed as i32,
                limit: 100,
                page_token: String::new(),
                local: false,
            })
            .await
        })
        .await
        .expect("list");
    let t = list
        .txns
        .iter()
        .find(|t| t.txn_id == id.to_string())
        .expect("the transaction is listed");
    assert_eq!(
        t.participants,
        vec!["eu".to_owned()],
        "only the writer had phase 2"
    );
    assert_eq!(d.balance("eu", "alice").await, 3);
    d.stop().await;
}

/// C5, C6, C10, P1, P3: SIGKILL the leader at one protocol step (a failpoint that fires once
/// in the whole cluster). Whatever the client was told, every participant ends with the same
/// outcome, the client's answer (if it got one) matches it, and nobody stays in doubt once a
/// new leader is up.
async fn leader_crash_at(failpoint: &str) {
    let marker_dir = tempfile::tempdir().expect("tempdir");
    let coordinator_env = env(&[
        ("RATIFY_FAILPOINTS", failpoint.to_owned()),
        (
            "RATIFY_FAILPOINT_ONCE_DIR",
            marker_dir.path().display().to_string(),
        ),
    ]);
    let mut d = alice_and_bob(&format!("crash-{failpoint}"), coordinator_env, vec![]).await;
    d.cluster
        .wait_for_leader(SETTLE, None)
        .await
        .expect("leader");

    let txn = d.client.begin();
    let id = txn.id();
    assert!(
        d.stage_transfer(&txn, ("eu", "alice"), ("us", "bob"), 10)
            .await
            .is_empty()
    );
    let told = txn.commit().await.expect("commit");

    // Phase 2 runs after the reply: a later failpoint may fire after `commit` returned.
    let crashed = wait::until(
        &format!("the failpoint {failpoint} to crash someone"),
        SETTLE,
        async || {
            let crashed = d.cluster.crashed();
            (!crashed.is_empty()).then_some(crashed)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        marker_dir.path().join(failpoint).exists(),
        "the failpoint {failpoint} fired"
    );
    // Only a leader runs the 2PC driver, so the node that crashed was leading.
    assert_eq!(crashed.len(), 1, "one node crashed: {crashed:?}");
    let old = crashed[0];
    let final_outcome = d.wait_completed(id).await;
    eprintln!("{failpoint}: the client was told {told:?}; the outcome is {final_outcome:?}");
    match (&told, &final_outcome) {
        (Outcome::Unknown, _) => {}
        (Outcome::Committed, Outcome::Committed) => {}
        (Outcome::Aborted(_), Outcome::Aborted(_)) => {}
        _ => panic!("the client was told {told:?} but the outcome is {final_outcome:?}"),
    }
    let balances = balances(&d).await;
    let expected = match final_outcome {
        Outcome::Committed => (90, 10),
        _ => (100, 0),
    };
    assert_eq!(
        balances, expected,
        "both branches applied {final_outcome:?}"
    );
    d.cluster
        .restart(old)
        .await
        .expect("restart the old leader");
    d.cluster
        .wait_for_leader(SETTLE, None)
        .await
        .expect("leader");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_after_prepares_sent() {
    leader_crash_at("after_prepares_sent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_after_decision_proposed() {
    leader_crash_at("after_decision_proposed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_after_decision_applied() {
    leader_crash_at("after_decision_applied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_crash_mid_phase_two() {
    leader_crash_at("mid_phase_two").await;
}

/// P1, P3: a participant SIGKILLed after voting YES (it dies as the Commit arrives) recovers
/// on restart: the transaction is in doubt, it resolves it with the coordinator, and applies
/// the COMMIT exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_killed_after_yes_recovers_and_applies_the_decision() {
    let marker_dir = tempfile::tempdir().expect("tempdir");
    let bank_env = env(&[
        ("RATIFY_FAILPOINTS", "participant_before_commit".to_owned()),
        (
            "RATIFY_FAILPOINT_ONCE_DIR",
            marker_dir.path().display().to_string(),
        ),
    ]);
    let mut d = alice_and_bob("participant-crash", vec![], bank_env).await;
    let txn = d.client.begin();
    let id = txn.id();
    assert!(
        d.stage_transfer(&txn, ("eu", "alice"), ("us", "bob"), 10)
            .await
            .is_empty()
    );
    assert_eq!(txn.commit().await.expect("commit"), Outcome::Committed);
    // One branch died on the Commit.
    let dead = wait::until("a branch to crash", SETTLE, async || {
        let names: Vec<String> = d.banks.keys().cloned().collect();
        names
            .into_iter()
            .find(|n| d.banks.get_mut(n).is_some_and(|b| b.exited()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    d.banks
        .get_mut(&dead)
        .expect("dead branch")
        .start()
        .await
        .expect("restart");
    assert_eq!(d.wait_completed(id).await, Outcome::Committed);
    assert_eq!(balances(&d).await, (90, 10));
    d.stop().await;
}

/// W6 and the coordinator's limits: malformed or impossible Commit requests get a clear
/// INVALID_ARGUMENT naming the problem; nothing panics and nothing is decided.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commit_requests_get_invalid_argument() {
    let d = Deployment::start("bad-input", &["eu", "us"], vec![], vec![]).await;
    let endpoint = d.cluster.endpoints()[0].to_string();
    let mut c = CoordinatorClient::connect(endpoint).await.expect("connect");
    let id = TxnId::new_v7().to_string();
    let cases: Vec<(pbco::CommitRequest, ErrorCode)> = vec![
        (
            pbco::CommitRequest {
                txn_id: "01890A5D-AC96-774B-BCCE-B302099A8057".into(),
                participants: vec!["eu".into()],
                deadline_unix_ms: 0,
                call_counts: vec![],
            },
            ErrorCode::MalformedTxnId,
        ),
        (
            pbco::CommitRequest {
                txn_id: id.clone(),
                participants: vec!["eu".into(), "us".into(), "eu".into()],
                deadline_unix_ms: 0,
                call_counts: vec![],
            },
            ErrorCode::DuplicateParticipant,
        ),
        (
            pbco::CommitRequest {
                txn_id: id.clone(),
                participants: vec!["eu".into(), "nowhere".into()],
                deadline_unix_ms: 0,
                call_counts: vec![],
            },
            ErrorCode::UnknownParticipant,
        ),
        (
            pbco::CommitRequest {
                txn_id: id.clone(),
                participants: (0..65).map(|i| format!("p{i}")).collect(),
                deadline_unix_ms: 0,
                call_counts: vec![],
            },
            ErrorCode::LimitExceeded,
        ),
        (
            pbco::CommitRequest {
                txn_id: id.clone(),
                participants: vec!["Not Valid".into()],
                deadline_unix_ms: 0,
                call_counts: vec![],
            },
            ErrorCode::MalformedParticipantId,
        ),
        (
            pbco::CommitRequest {
                txn_id: id.clone(),
                participants: vec!["eu".into(), "us".into()],
                deadline_unix_ms: 0,
                call_counts: vec![1, 1, 1],
            },
            ErrorCode::InvalidField,
        ),
    ];
    for (req, code) in cases {
        // Any node: followers check the request before forwarding it.
        let status = c.commit(req.clone()).await.expect_err("refused");
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{req:?}: {status:?}"
        );
        let detail = ErrorDetail::from_status(&status).expect("details attached");
        assert_eq!(detail.code, code, "{req:?}");
    }
    let status = d
        .client
        .status(id.parse().expect("valid"))
        .await
        .expect("status");
    assert_eq!(status.phase, TxnPhase::Undecided, "nothing was decided");
    d.stop().await;
}

/// C4, C6: an operator's ForceResolve is first-wins and its phase 2 is delivered: the
/// participant's staged work is discarded (its lock released), and a later, different forced
/// decision changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_force_resolve_is_delivered() {
    let d = Deployment::start("force", &["eu"], vec![], vec![]).await;
    d.open_account("eu", "alice", 100).await;
    let txn = d.client.begin();
    let id = txn.id();
    d.bank("eu")
        .withdraw(txn.request(
            &pid("eu"),
            ratify_proto::pb::bank::AmountRequest {
                account: "alice".into(),
                amount: 40,
            },
        ))
        .await
        .expect("staged withdrawal");
    let force = |decision: ratify_proto::pb::common::Decision| {
        let req = pbco::ForceResolveRequest {
            txn_id: id.to_string(),
            decision: decision as i32,
            participants: vec!["eu".into()],
            reason: "test".into(),
        };
        let admin = d.cluster.admin();
        async move {
            admin
                .call_leader(|mut c| {
                    let req = req.clone();
                    async move { c.force_resolve(req).await }
                })
                .await
                .expect("force resolve")
        }
    };
    let first = force(ratify_proto::pb::common::Decision::Abort).await;
    assert!(first.changed);
    assert!(
        matches!(d.wait_completed(id).await, Outcome::Aborted(_)),
        "delivered to eu"
    );
    let second = force(ratify_proto::pb::common::Decision::Commit).await;
    assert!(!second.changed, "first-wins");
    assert_eq!(
        second.decision,
        ratify_proto::pb::common::Decision::Abort as i32
    );
    // The lock is free and nothing was applied.
    let txn = d.client.begin();
    d.bank("eu")
        .deposit(txn.request(
            &pid("eu"),
            ratify_proto::pb::bank::AmountRequest {
                account: "alice".into(),
                amount: 1,
            },
        ))
        .await
        .expect("the account is not locked any more");
    assert_eq!(txn.commit().await.expect("commit"), Outcome::Committed);
    assert_eq!(d.balance("eu", "alice").await, 101);
    d.stop().await;
}
