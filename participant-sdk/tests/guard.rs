//! The call guard (`Participant::guard`) over a real loopback connection: the contract of
//! docs/protocol.md P10 between a service's handlers, the participant and the initiator. Each
//! test drives the participant's own gRPC API (as the coordinator does) and a small bank
//! service's API (as an initiator does), with raw requests — the way a misbehaving client in
//! any language would send them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ratify_participant::{
    Participant, ParticipantConfig, RocksStore, StoreConfig, TxnContext, harmless,
};
use ratify_proto::metadata::{CALL_ID, DOOMED, HARMLESS};
use ratify_proto::pb::bank as pb;
use ratify_proto::pb::bank::bank_client::BankClient;
use ratify_proto::pb::bank::bank_server::{Bank, BankServer};
use ratify_proto::pb::common as pbc;
use ratify_proto::pb::participant as pbp;
use ratify_proto::pb::participant::participant_client::ParticipantClient;
use ratify_proto::types::{Endpoint, ParticipantId, TxnId};
use tokio::sync::Notify;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// A minimal bank: balances as decimal text under `acct/NAME`. `Withdraw` from an account
/// named `slow` waits for `release` first (a call still running). Counts handlers entered and
/// the deposits and withdrawals they ran.
struct TestBank {
    store: RocksStore,
    entered: Arc<AtomicU64>,
    runs: Arc<AtomicU64>,
    release: Arc<Notify>,
}

fn key(account: &str) -> Vec<u8> {
    format!("acct/{account}").into_bytes()
}

#[tonic::async_trait]
impl Bank for TestBank {
    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::AccountReply>, Status> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let txn = self.store.txn(&TxnContext::from_request(&request)?)?;
        let r = request.into_inner();
        txn.put(&key(&r.account), r.initial_balance.to_string().as_bytes())
            .await?;
        Ok(Response::new(pb::AccountReply {
            account: r.account,
            balance: r.initial_balance,
        }))
    }

    async fn deposit(
        &self,
        request: Request<pb::AmountRequest>,
    ) -> Result<Response<pb::AccountReply>, Status> {
        match request.get_ref().account.as_str() {
            "panic" => panic!("a handler bug"),
            // An error passed on from another service's answer, harmless *there*.
            "forwarded" => {
                let mut s = Status::not_found("no account (said another service)");
                s.metadata_mut()
                    .insert(HARMLESS, "1".parse().expect("ascii"));
                Err(s)
            }
            _ => self.add(request, 1).await,
        }
    }

    async fn withdraw(
        &self,
        request: Request<pb::AmountRequest>,
    ) -> Result<Response<pb::AccountReply>, Status> {
        if request.get_ref().account == "slow" {
            self.entered.fetch_add(1, Ordering::SeqCst);
            self.release.notified().await;
        }
        self.add(request, -1).await
    }

    async fn balance(
        &self,
        request: Request<pb::BalanceRequest>,
    ) -> Result<Response<pb::AccountReply>, Status> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let txn = self.store.txn(&TxnContext::from_request(&request)?)?;
        let account = request.into_inner().account;
        match txn.get(&key(&account)).await? {
            Some(v) => Ok(Response::new(pb::AccountReply {
                balance: String::from_utf8_lossy(&v).parse().unwrap_or(0),
                account,
            })),
            None => Err(harmless(Status::not_found(format!("no account {account}")))),
        }
    }

    async fn list_accounts(
        &self,
        _request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsReply>, Status> {
        Ok(Response::new(pb::ListAccountsReply { accounts: vec![] }))
    }
}

impl TestBank {
    async fn add(
        &self,
        request: Request<pb::AmountRequest>,
        sign: i64,
    ) -> Result<Response<pb::AccountReply>, Status> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let txn = self.store.txn(&TxnContext::from_request(&request)?)?;
        let r = request.into_inner();
        let Some(old) = txn.get(&key(&r.account)).await? else {
            return Err(Status::not_found(format!("no account {}", r.account)));
        };
        let balance = String::from_utf8_lossy(&old).parse::<i64>().unwrap_or(0) + sign * r.amount;
        txn.put(&key(&r.account), balance.to_string().as_bytes())
            .await?;
        Ok(Response::new(pb::AccountReply {
            account: r.account,
            balance,
        }))
    }
}

struct Served {
    bank: BankClient<Channel>,
    participant: ParticipantClient<Channel>,
    store: RocksStore,
    entered: Arc<AtomicU64>,
    runs: Arc<AtomicU64>,
    release: Arc<Notify>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStore::open(dir.path(), StoreConfig::default()).expect("open");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let config = ParticipantConfig::new(
        ParticipantId::new("accounts-us").expect("valid"),
        Endpoint::new(format!("http://{addr}")).expect("valid"),
        // Not contacted: no background work runs in these tests.
        vec![Endpoint::new("http://127.0.0.1:1").expect("valid")],
    );
    let participant = Participant::new(Arc::new(store.clone()), config).expect("participant");
    let runs = Arc::new(AtomicU64::new(0));
    let entered = Arc::new(AtomicU64::new(0));
    let release = Arc::new(Notify::new());
    let bank = TestBank {
        store: store.clone(),
        entered: entered.clone(),
        runs: runs.clone(),
        release: release.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(participant.service())
            .add_service(participant.guard(BankServer::new(bank)))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid")
        .connect()
        .await
        .expect("connect");
    Served {
        bank: BankClient::new(channel.clone()),
        participant: ParticipantClient::new(channel),
        store,
        entered,
        runs,
        release,
        _dir: dir,
        _stop: stop,
    }
}

/// The initiator's call count for `txn`, as Prepare carries it (P10).
fn counts(txn: TxnId, calls: Option<u32>) -> std::collections::HashMap<String, u32> {
    calls
        .map(|n| [(txn.to_string(), n)].into())
        .unwrap_or_default()
}

/// A request in transaction `txn`, as any initiator sends it (W8), with a call id if given.
fn req<T>(txn: TxnId, call_id: Option<&str>, message: T) -> Request<T> {
    let mut r = Request::new(message);
    TxnContext::new(txn).attach(r.metadata_mut());
    if let Some(id) = call_id {
        r.metadata_mut()
            .insert(CALL_ID, id.parse().expect("ascii call id"));
    }
    r
}

fn amount(account: &str, amount: i64) -> pb::AmountRequest {
    pb::AmountRequest {
        account: account.into(),
        amount,
    }
}

impl Served {
    /// Open `account` with `balance`, committed (one-phase, as the coordinator does).
    async fn open(&mut self, account: &str, balance: i64) {
        let t = TxnId::new_v7();
        self.bank
            .open_account(req(
                t,
                Some("1"),
                pb::OpenAccountRequest {
                    account: account.into(),
                    initial_balance: balance,
                },
            ))
            .await
            .expect("open");
        let r = self.one_phase(t, Some(1)).await;
        assert_eq!(r.outcome, pbc::Outcome::Committed as i32, "{r:?}");
    }

    async fn prepare(&mut self, txn: TxnId, calls: Option<u32>) -> pbp::PrepareResult {
        self.participant
            .prepare(pbp::PrepareRequest {
                txn_ids: vec![txn.to_string()],
                coordinator_node_id: 1,
                call_counts: counts(txn, calls),
            })
            .await
            .expect("prepare answered")
            .into_inner()
            .results
            .remove(0)
    }

    async fn one_phase(&mut self, txn: TxnId, calls: Option<u32>) -> pbp::OnePhaseResult {
        self.participant
            .commit_one_phase(pbp::CommitOnePhaseRequest {
                txn_ids: vec![txn.to_string()],
                coordinator_node_id: 1,
                call_counts: counts(txn, calls),
            })
            .await
            .expect("one-phase answered")
            .into_inner()
            .results
            .remove(0)
    }

    /// Wait until a slow withdrawal has entered its handler (and waits for `release`).
    async fn slow_entered(&self, before: u64) {
        while self.entered.load(Ordering::SeqCst) == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn committed(&self, account: &str) -> Option<String> {
        self.store
            .read_committed(&key(account))
            .expect("read")
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
    }
}

fn assert_no(result: &pbp::PrepareResult, names: &str) {
    assert_eq!(result.vote, pbc::Vote::No as i32, "{result:?}");
    assert_eq!(
        result.no_reason,
        pbc::NoReason::CallFailed as i32,
        "{result:?}"
    );
    assert!(
        result.message.contains(names),
        "the NO vote names {names:?}: {result:?}"
    );
}

/// P10, issue 14's scenario at one participant: a Deposit to a missing account fails; the
/// initiator commits anyway; this participant votes NO naming the failed call, and nothing it
/// staged is applied. The error the initiator got says the transaction is doomed here.
#[tokio::test]
async fn a_failed_call_dooms_the_transaction() {
    let mut s = serve().await;
    s.open("alice", 1000).await;
    let t = TxnId::new_v7();
    s.bank
        .withdraw(req(t, Some("1"), amount("alice", 400)))
        .await
        .expect("the withdrawal is staged");
    let err = s
        .bank
        .deposit(req(t, Some("2"), amount("nobody", 400)))
        .await
        .expect_err("no account nobody");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.metadata().contains_key(DOOMED), "{err:?}");
    let vote = s.prepare(t, None).await;
    assert_no(&vote, "Deposit");
    assert!(vote.message.contains("no account nobody"), "{vote:?}");
    assert_eq!(s.committed("alice").as_deref(), Some("1000"));
    // Later calls of the doomed transaction fail at once.
    let late = s
        .bank
        .withdraw(req(t, Some("3"), amount("alice", 1)))
        .await
        .expect_err("doomed");
    assert_eq!(late.code(), tonic::Code::Aborted);
}

/// P10: an error the handler declares harmless (a probe that finds nothing) dooms nothing;
/// the transaction commits with the rest of its work.
#[tokio::test]
async fn a_harmless_error_dooms_nothing() {
    let mut s = serve().await;
    s.open("alice", 10).await;
    let t = TxnId::new_v7();
    let err = s
        .bank
        .balance(req(
            t,
            Some("1"),
            pb::BalanceRequest {
                account: "nobody".into(),
            },
        ))
        .await
        .expect_err("not found");
    assert!(err.metadata().contains_key(HARMLESS), "{err:?}");
    assert!(!err.metadata().contains_key(DOOMED), "{err:?}");
    s.bank
        .deposit(req(t, Some("2"), amount("alice", 5)))
        .await
        .expect("deposit");
    let r = s.one_phase(t, Some(2)).await;
    assert_eq!(r.outcome, pbc::Outcome::Committed as i32, "{r:?}");
    assert_eq!(s.committed("alice").as_deref(), Some("15"));
}

/// P10: a retried call — sent again after a lost answer, or twice at once by a retry policy —
/// runs once and every attempt gets the first attempt's answer; the same call id for a
/// different request is refused and dooms the transaction.
#[tokio::test]
async fn a_retried_call_runs_once() {
    let mut s = serve().await;
    s.open("alice", 100).await;
    let before = s.runs.load(Ordering::SeqCst);
    let t = TxnId::new_v7();
    let first = s
        .bank
        .deposit(req(t, Some("7"), amount("alice", 10)))
        .await
        .expect("deposit")
        .into_inner();
    let again = s
        .bank
        .deposit(req(t, Some("7"), amount("alice", 10)))
        .await
        .expect("the retry is answered")
        .into_inner();
    assert_eq!(first, again);
    assert_eq!(first.balance, 110);
    let (mut b1, mut b2) = (s.bank.clone(), s.bank.clone());
    let (x, y) = tokio::join!(
        b1.deposit(req(t, Some("8"), amount("alice", 1))),
        b2.deposit(req(t, Some("8"), amount("alice", 1)))
    );
    assert_eq!(
        x.expect("x").into_inner(),
        y.expect("y").into_inner(),
        "concurrent attempts get one answer"
    );
    assert_eq!(
        s.runs.load(Ordering::SeqCst) - before,
        2,
        "four attempts, two calls, two runs"
    );
    let r = s.one_phase(t, Some(2)).await;
    assert_eq!(r.outcome, pbc::Outcome::Committed as i32, "{r:?}");
    assert_eq!(
        s.committed("alice").as_deref(),
        Some("111"),
        "applied once each"
    );

    // The same id for a different request: refused, and the transaction is doomed.
    let u = TxnId::new_v7();
    s.bank
        .deposit(req(u, Some("1"), amount("alice", 1)))
        .await
        .expect("deposit");
    let reused = s
        .bank
        .deposit(req(u, Some("1"), amount("alice", 2)))
        .await
        .expect_err("a different request under a used id");
    assert_eq!(reused.code(), tonic::Code::InvalidArgument);
    assert_no(&s.prepare(u, None).await, "reuses the call id");
}

/// P10, and the initiator that gives up midway: a call whose caller went away still runs to
/// the end, and its retry is answered from it without running again.
#[tokio::test]
async fn a_call_whose_caller_gave_up_completes_and_answers_its_retry() {
    let mut s = serve().await;
    s.open("slow", 100).await;
    let before = s.runs.load(Ordering::SeqCst);
    let t = TxnId::new_v7();
    let mut r = req(t, Some("1"), amount("slow", 30));
    r.set_timeout(Duration::from_millis(50));
    let gave_up = s.bank.withdraw(r).await.expect_err("the caller gives up");
    assert!(
        matches!(
            gave_up.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{gave_up:?}"
    );
    // The retry waits for the first attempt, which is still running.
    s.slow_entered(0).await;
    let mut bank = s.bank.clone();
    let retry =
        tokio::spawn(async move { bank.withdraw(req(t, Some("1"), amount("slow", 30))).await });
    s.release.notify_one();
    let answer = retry
        .await
        .expect("joined")
        .expect("the retry gets the first attempt's answer");
    assert_eq!(answer.into_inner().balance, 70);
    assert_eq!(s.runs.load(Ordering::SeqCst) - before, 1, "ran once");
    let r = s.one_phase(t, Some(1)).await;
    assert_eq!(r.outcome, pbc::Outcome::Committed as i32, "{r:?}");
    assert_eq!(s.committed("slow").as_deref(), Some("70"));
}

/// P10: a call still running when Prepare arrives makes this participant vote NO (the
/// initiator committed without seeing its result); calls arriving after Prepare are refused.
#[tokio::test]
async fn prepare_with_a_call_running_votes_no() {
    let mut s = serve().await;
    s.open("slow", 100).await;
    s.open("bob", 100).await;
    let t = TxnId::new_v7();
    s.bank
        .deposit(req(t, Some("1"), amount("bob", 5)))
        .await
        .expect("deposit");
    let mut bank = s.bank.clone();
    let running =
        tokio::spawn(async move { bank.withdraw(req(t, Some("2"), amount("slow", 5))).await });
    s.slow_entered(0).await;
    let vote = s.prepare(t, None).await;
    assert_no(&vote, "still running");
    let late = s
        .bank
        .deposit(req(t, Some("3"), amount("bob", 1)))
        .await
        .expect_err("no calls once the commit began");
    assert_eq!(late.code(), tonic::Code::Aborted, "{late:?}");
    s.release.notify_one();
    let _ = running.await.expect("joined");
    assert_eq!(s.committed("bob").as_deref(), Some("100"));
    assert_eq!(s.committed("slow").as_deref(), Some("100"));
    assert_eq!(s.store.locked_keys(), 0);
}

/// P10: the initiator's count of its calls here must match the calls completed here: a call
/// that never arrived makes the participant vote NO instead of committing without it.
#[tokio::test]
async fn call_counts_must_match() {
    let mut s = serve().await;
    s.open("alice", 100).await;
    let t = TxnId::new_v7();
    s.bank
        .deposit(req(t, Some("1"), amount("alice", 1)))
        .await
        .expect("deposit");
    // The initiator says it made two calls here; the second never arrived.
    assert_no(&s.prepare(t, Some(2)).await, "made 2 call(s)");
    assert_eq!(s.committed("alice").as_deref(), Some("100"));

    let u = TxnId::new_v7();
    s.bank
        .deposit(req(u, Some("1"), amount("alice", 1)))
        .await
        .expect("deposit");
    let vote = s.prepare(u, Some(1)).await;
    assert_eq!(vote.vote, pbc::Vote::Yes as i32, "{vote:?}");
    // A duplicate Prepare (its answer lost) still gets YES: the record is gone, the doom it
    // triggers cannot touch a prepared transaction (P1, P6).
    let again = s.prepare(u, Some(1)).await;
    assert_eq!(again.vote, pbc::Vote::Yes as i32, "{again:?}");
    let acks = s
        .participant
        .commit(pbp::CommitRequest {
            txn_ids: vec![u.to_string()],
            coordinator_node_id: 1,
        })
        .await
        .expect("commit")
        .into_inner();
    assert_eq!(acks.results[0].status, pbp::AckStatus::Applied as i32);
    assert_eq!(s.committed("alice").as_deref(), Some("101"));
}

/// P10: a handler that panics failed its call (the transaction is doomed, the record does not
/// stay running); an error a handler passes on from another service, harmless there, is not
/// harmless here.
#[tokio::test]
async fn panics_and_forwarded_harmless_errors_doom() {
    let mut s = serve().await;
    s.open("alice", 100).await;
    for (account, code) in [
        ("panic", tonic::Code::Unavailable),
        ("forwarded", tonic::Code::NotFound),
    ] {
        let t = TxnId::new_v7();
        s.bank
            .deposit(req(t, Some("1"), amount("alice", 1)))
            .await
            .expect("deposit");
        let err = s
            .bank
            .deposit(req(t, Some("2"), amount(account, 1)))
            .await
            .expect_err("failed");
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.metadata().contains_key(DOOMED), "{err:?}");
        assert!(!err.metadata().contains_key(HARMLESS), "{err:?}");
        assert_no(&s.prepare(t, None).await, "Deposit");
    }
    assert_eq!(s.committed("alice").as_deref(), Some("100"));
}

/// W8: a malformed call id is refused (INVALID_ARGUMENT) and dooms the transaction; so does a
/// malformed deadline when the transaction id is fine; calls without a transaction context
/// pass through untouched.
#[tokio::test]
async fn malformed_call_ids_are_refused() {
    let mut s = serve().await;
    s.open("alice", 100).await;
    let t = TxnId::new_v7();
    let err = s
        .bank
        .deposit(req(t, Some("not ok!"), amount("alice", 1)))
        .await
        .expect_err("malformed call id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.metadata().contains_key(DOOMED));
    assert_eq!(s.runs.load(Ordering::SeqCst), 1, "the handler did not run");
    let r = s.one_phase(t, None).await;
    assert_eq!(r.outcome, pbc::Outcome::Aborted as i32, "{r:?}");

    let u = TxnId::new_v7();
    s.bank
        .deposit(req(u, Some("1"), amount("alice", 1)))
        .await
        .expect("deposit");
    let mut bad = req(u, Some("2"), amount("alice", 1));
    bad.metadata_mut()
        .insert("ratify-deadline-ms", "soon".parse().expect("ascii"));
    let err = s.bank.deposit(bad).await.expect_err("malformed deadline");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.metadata().contains_key(DOOMED));
    assert_no(&s.prepare(u, None).await, "ratify-deadline-ms");

    s.bank
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .expect("no context: untouched");
}
