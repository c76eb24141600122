//! docs/protocol.md P10 end to end — a failed business call dooms its transaction, a retried
//! call runs once — with 3 coordinator processes and the two `ratify-bank` branches of issue
//! 14 (`accounts-eu`, `accounts-us`) on loopback. The initiators misbehave as real ones do:
//! they commit after an error, retry calls, and lose calls on the way.

use ratify_devtools::deployment::{Deployment, pid};
use ratify_participant::TxnContext;
use ratify_proto::metadata::CALL_ID;
use ratify_proto::pb::bank as pbb;
use ratify_proto::pb::common as pbc;
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::coordinator_client::CoordinatorClient;
use ratify_proto::types::{AbortCause, NoReason, Outcome, TxnId};
use tonic::Request;
use tonic::transport::Channel;

const EU: &str = "accounts-eu";
const US: &str = "accounts-us";

/// The two branches, alice with 1000 at accounts-eu and bob with 0 at accounts-us.
async fn bank(name: &str) -> Deployment {
    let d = Deployment::start(name, &[EU, US], vec![], vec![]).await;
    d.open_account(EU, "alice", 1000).await;
    d.open_account(US, "bob", 0).await;
    d
}

/// A raw request in transaction `txn` — what a non-Rust initiator sends (W8): the context,
/// and a call id when it uses them.
fn raw<T>(txn: TxnId, call_id: Option<&str>, message: T) -> Request<T> {
    let mut ctx = TxnContext::new(txn);
    ctx.deadline_unix_ms = Some(ratify_proto::hooks::now_unix_ms() + 10_000);
    let mut r = Request::new(message);
    ctx.attach(r.metadata_mut());
    if let Some(id) = call_id {
        r.metadata_mut()
            .insert(CALL_ID, id.parse().expect("ascii call id"));
    }
    r
}

fn amount(account: &str, amount: i64) -> pbb::AmountRequest {
    pbb::AmountRequest {
        account: account.into(),
        amount,
    }
}

async fn coordinator(d: &Deployment) -> CoordinatorClient<Channel> {
    CoordinatorClient::connect(d.cluster.endpoints()[0].to_string())
        .await
        .expect("connect")
}

/// A raw Commit of `txn` over both branches (any node: followers forward), with call counts
/// when given.
async fn raw_commit(d: &Deployment, txn: TxnId, call_counts: Vec<u32>) -> pbco::CommitResponse {
    coordinator(d)
        .await
        .commit(pbco::CommitRequest {
            txn_id: txn.to_string(),
            participants: vec![EU.into(), US.into()],
            deadline_unix_ms: ratify_proto::hooks::now_unix_ms() + 10_000,
            call_counts,
        })
        .await
        .expect("commit answered")
        .into_inner()
}

/// The abort a Commit answered: voted NO by accounts-us, with this reason, naming the call.
fn assert_us_voted_no(reply: &pbco::CommitResponse, reason: pbc::NoReason, names: &[&str]) {
    assert_eq!(reply.outcome, pbc::Outcome::Aborted as i32, "{reply:?}");
    let info = reply.abort_info.as_ref().expect("an abort has its info");
    assert_eq!(info.cause, pbc::AbortCause::VotedNo as i32, "{info:?}");
    assert_eq!(info.participant_id, US, "{info:?}");
    assert_eq!(info.no_reason, reason as i32, "{info:?}");
    for n in names {
        assert!(
            info.message.contains(n),
            "the message names {n:?}: {info:?}"
        );
    }
}

/// Issue 14's scenario, step by step as `transfer.py` ran it (raw gRPC, no call ids, no call
/// counts): Withdraw(alice, 400) at accounts-eu succeeds, Deposit(nobody, 400) at accounts-us
/// fails NOT_FOUND, the initiator commits anyway. P10: ABORTED, accounts-us voted NO naming
/// the failed Deposit, and alice keeps her 1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_to_a_missing_account_then_commit_aborts() {
    let d = bank("p10-missing").await;
    let txn = TxnId::new_v7();
    let left = d
        .bank(EU)
        .withdraw(raw(txn, None, amount("alice", 400)))
        .await
        .expect("the withdrawal is staged")
        .into_inner();
    assert_eq!(left.balance, 600);
    let err = d
        .bank(US)
        .deposit(raw(txn, None, amount("nobody", 400)))
        .await
        .expect_err("no account nobody");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let reply = raw_commit(&d, txn, vec![]).await;
    assert_us_voted_no(
        &reply,
        pbc::NoReason::CallFailed,
        &["Deposit", "no account nobody"],
    );
    assert!(matches!(d.wait_completed(txn).await, Outcome::Aborted(_)));
    assert_eq!(d.balance(EU, "alice").await, 1000);
    d.stop().await;
}

/// The same with a lock conflict instead of a missing account: an older transaction holds
/// bob's account, the Deposit waits out its lock wait and fails ABORTED; the initiator
/// commits anyway. P10, P9: ABORTED, accounts-us voted NO (CONFLICT) naming the Deposit;
/// alice keeps 1000; the older transaction is unaffected and commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_that_lost_a_lock_conflict_then_commit_aborts() {
    let d = bank("p10-conflict").await;
    let holder = d.client.begin();
    holder
        .call(&pid(US), amount("bob", 1), |r| {
            let mut b = d.bank(US);
            async move { b.deposit(r).await }
        })
        .await
        .expect("the older transaction holds bob");
    let txn = TxnId::new_v7();
    d.bank(EU)
        .withdraw(raw(txn, None, amount("alice", 400)))
        .await
        .expect("the withdrawal is staged");
    let err = d
        .bank(US)
        .deposit(raw(txn, None, amount("bob", 400)))
        .await
        .expect_err("bob is held by an older transaction");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err:?}");
    let reply = raw_commit(&d, txn, vec![]).await;
    assert_us_voted_no(
        &reply,
        pbc::NoReason::Conflict,
        &["Deposit", "conflict on key"],
    );
    assert_eq!(d.balance(EU, "alice").await, 1000);
    // One participant: a one-phase commit, applied before it is answered (C2).
    assert_eq!(holder.commit().await.expect("commit"), Outcome::Committed);
    assert_eq!(d.balance(US, "bob").await, 1);
    d.stop().await;
}

/// A retried Deposit (its answer lost, sent again with the same call id; and twice at once,
/// as a gRPC retry policy may) is applied once: P10. The Commit reports one call per branch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_deposit_is_applied_once() {
    let d = bank("p10-retry").await;
    let txn = TxnId::new_v7();
    d.bank(EU)
        .withdraw(raw(txn, Some("1"), amount("alice", 400)))
        .await
        .expect("withdraw");
    let first = d
        .bank(US)
        .deposit(raw(txn, Some("2"), amount("bob", 400)))
        .await
        .expect("deposit")
        .into_inner();
    let (mut a, mut b) = (d.bank(US), d.bank(US));
    let (x, y) = tokio::join!(
        a.deposit(raw(txn, Some("2"), amount("bob", 400))),
        b.deposit(raw(txn, Some("2"), amount("bob", 400)))
    );
    assert_eq!(x.expect("retry answered").into_inner(), first);
    assert_eq!(y.expect("retry answered").into_inner(), first);
    assert_eq!(first.balance, 400, "staged once");
    let reply = raw_commit(&d, txn, vec![1, 1]).await;
    assert_eq!(reply.outcome, pbc::Outcome::Committed as i32, "{reply:?}");
    assert_eq!(d.wait_completed(txn).await, Outcome::Committed);
    assert_eq!(d.balance(EU, "alice").await, 600);
    assert_eq!(d.balance(US, "bob").await, 400, "applied once");
    d.stop().await;
}

/// P10 with call counts: a call built and counted but lost before it reached accounts-us
/// (the initiator then commits anyway) makes accounts-us vote NO instead of committing
/// without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_lost_on_the_way_makes_the_commit_abort() {
    let d = bank("p10-lost").await;
    let txn = d.client.begin();
    let id = txn.id();
    txn.call(&pid(EU), amount("alice", 100), |r| {
        let mut b = d.bank(EU);
        async move { b.withdraw(r).await }
    })
    .await
    .expect("withdraw");
    txn.call(&pid(US), amount("bob", 50), |r| {
        let mut b = d.bank(US);
        async move { b.deposit(r).await }
    })
    .await
    .expect("first deposit");
    // The second deposit is built (and counted) but never arrives.
    drop(txn.request(&pid(US), amount("bob", 50)));
    match txn.commit().await.expect("commit answered") {
        Outcome::Aborted(info) => {
            assert_eq!(info.cause, AbortCause::VotedNo, "{info:?}");
            assert_eq!(info.participant, Some(pid(US)), "{info:?}");
            assert_eq!(info.no_reason, Some(NoReason::CallFailed), "{info:?}");
            assert!(info.message.contains("made 2 call(s)"), "{info:?}");
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    assert!(matches!(d.wait_completed(id).await, Outcome::Aborted(_)));
    assert_eq!(d.balance(EU, "alice").await, 1000);
    assert_eq!(d.balance(US, "bob").await, 0);
    d.stop().await;
}

/// The Rust initiator (P10): after a failed call, `commit` does not commit — it aborts and
/// reports the call; with `forgive_failures` it asks the coordinator, and the branch that
/// failed the call votes NO. Either way alice keeps her 1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_aborts_after_a_failed_call() {
    let d = bank("p10-client").await;
    for forgive in [false, true] {
        let txn = d.client.begin();
        txn.call(&pid(EU), amount("alice", 400), |r| {
            let mut b = d.bank(EU);
            async move { b.withdraw(r).await }
        })
        .await
        .expect("withdraw");
        let err = txn
            .call(&pid(US), amount("nobody", 400), |r| {
                let mut b = d.bank(US);
                async move { b.deposit(r).await }
            })
            .await
            .expect_err("no account nobody");
        assert_eq!(err.code(), tonic::Code::NotFound);
        let failures = txn.failures();
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert!(
            failures[0].doomed,
            "the branch said it doomed the transaction"
        );
        if forgive {
            txn.forgive_failures();
        }
        match txn.commit().await.expect("commit answered") {
            Outcome::Aborted(info) if !forgive => {
                assert_eq!(info.cause, AbortCause::ClientAbort, "{info:?}");
                assert!(
                    info.message.contains(US) && info.message.contains("NotFound"),
                    "{info:?}"
                );
            }
            Outcome::Aborted(info) => {
                assert_eq!(info.cause, AbortCause::VotedNo, "{info:?}");
                assert_eq!(info.participant, Some(pid(US)), "{info:?}");
                assert!(info.message.contains("Deposit"), "{info:?}");
            }
            other => panic!("expected an abort, got {other:?}"),
        }
    }
    assert_eq!(d.balance(EU, "alice").await, 1000);
    d.stop().await;
}

/// P10: a call whose future the initiator drops (it gave up waiting) was counted: the
/// participant, which never completed it, votes NO — not the client's "still running" (the
/// dropped call is no longer running at the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_initiator_gave_up_on_aborts_the_commit() {
    let d = bank("p10-gave-up").await;
    let txn = d.client.begin();
    txn.call(&pid(EU), amount("alice", 100), |r| {
        let mut b = d.bank(EU);
        async move { b.withdraw(r).await }
    })
    .await
    .expect("withdraw");
    let us = pid(US);
    let never = txn.call(&us, amount("bob", 100), |_r| {
        std::future::pending::<Result<tonic::Response<pbb::AccountReply>, tonic::Status>>()
    });
    let gave_up = tokio::time::timeout(std::time::Duration::from_millis(20), never).await;
    assert!(gave_up.is_err(), "the call never answers");
    match txn.commit().await.expect("commit answered") {
        Outcome::Aborted(info) => {
            assert_eq!(info.cause, AbortCause::VotedNo, "{info:?}");
            assert_eq!(info.participant, Some(pid(US)), "{info:?}");
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(d.balance(EU, "alice").await, 1000);
    d.stop().await;
}

/// The Python example itself (`participant-sdk/bank-example/python/transfer.py`, grpcio) runs
/// issue 14's scenario against the deployment: its Deposit to `nobody` fails, it commits anyway,
/// and it prints ABORTED with accounts-us named; alice keeps her 1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_commits_after_a_failed_leg_and_gets_aborted() {
    let d = bank("p10-python").await;
    let host = |e: String| e.trim_start_matches("http://").to_owned();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../participant-sdk/bank-example/python/transfer.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args(["--coordinator", &host(d.cluster.endpoints()[0].to_string())])
        .args(["--eu", &host(endpoint(&d, EU))])
        .args(["--us", &host(endpoint(&d, US))])
        .args([
            "--from-account",
            "alice",
            "--to-account",
            "nobody",
            "--amount",
            "400",
        ])
        .output()
        .await
        .expect("python3 runs (scripts/setup installs grpcio and grpcio-tools)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "transfer.py failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("a leg failed: NOT_FOUND"),
        "the deposit failed:\n{stdout}"
    );
    assert!(stdout.contains("Commit -> OUTCOME_ABORTED"), "{stdout}");
    assert!(
        stdout.contains("participant 'accounts-us'") && stdout.contains("Deposit"),
        "the abort names accounts-us and the call:\n{stdout}"
    );
    assert_eq!(d.balance(EU, "alice").await, 1000);
    d.stop().await;
}

fn endpoint(d: &Deployment, branch: &str) -> String {
    d.banks[branch]
        .endpoint()
        .expect("started branches have endpoints")
        .to_string()
}
