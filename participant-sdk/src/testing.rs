//! The conformance suite for [`Resource`] implementations (feature `testing`).
//!
//! A custom store (a service's own PostgreSQL, say) implements [`Resource`] for the runtime and
//! [`Harness`] for this suite — how to open it on a directory, stage a write in a transaction,
//! and read a committed value — then calls [`run_all`] from a test. Each check names the
//! protocol rule (docs/protocol.md) it holds the store to. The SDK's own [`RocksStore`] passes.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let report = ratify_participant::testing::run_all(&ratify_participant::testing::RocksHarness).await;
//! assert!(report.failures.is_empty(), "{:#?}", report.failures);
//! # }
//! ```

use std::future::Future;
use std::path::Path;

use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome};
use ratify_proto::types::{NoReason, TxnId, Vote};

use crate::context::TxnContext;
use crate::error::Result;
use crate::resource::Resource;
use crate::store::{RocksStore, StoreConfig};

/// How the suite drives a store besides the [`Resource`] trait.
pub trait Harness: Sync {
    /// The store under test.
    type R: Resource;

    /// Open the store on `dir` (new or existing). Opening an existing directory is a restart:
    /// the store must recover its prepared transactions.
    fn open(&self, dir: &Path) -> impl Future<Output = Result<Self::R>> + Send;

    /// Stage a write of `key = value` in transaction `txn_id` (beginning it if new). Must fail
    /// for a transaction that was aborted here (anti-hanging, P5).
    fn stage(
        &self,
        r: &Self::R,
        txn_id: TxnId,
        key: &[u8],
        value: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    /// Read `key` in transaction `txn_id` without writing (beginning it if new).
    fn stage_read(
        &self,
        r: &Self::R,
        txn_id: TxnId,
        key: &[u8],
    ) -> impl Future<Output = Result<()>> + Send;

    /// The committed value of `key`, outside any transaction.
    fn committed(
        &self,
        r: &Self::R,
        key: &[u8],
    ) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
}

/// The harness for the SDK's own store.
pub struct RocksHarness;

impl Harness for RocksHarness {
    type R = RocksStore;

    async fn open(&self, dir: &Path) -> Result<RocksStore> {
        // One machine, one clock: no skew margin after a restart.
        let config = StoreConfig {
            clock_skew_max: std::time::Duration::ZERO,
            ..StoreConfig::default()
        };
        RocksStore::open(dir, config)
    }

    async fn stage(&self, r: &RocksStore, txn_id: TxnId, key: &[u8], value: &[u8]) -> Result<()> {
        r.txn(&TxnContext::new(txn_id))?.put(key, value).await
    }

    async fn stage_read(&self, r: &RocksStore, txn_id: TxnId, key: &[u8]) -> Result<()> {
        r.txn(&TxnContext::new(txn_id))?.get(key).await.map(|_| ())
    }

    async fn committed(&self, r: &RocksStore, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(r.read_committed(key)?.map(|(_, v)| v))
    }
}

/// One failed check.
#[derive(Debug)]
pub struct Failure {
    /// The check's name.
    pub check: &'static str,
    /// What went wrong.
    pub what: String,
}

/// The suite's result.
#[derive(Debug, Default)]
pub struct Report {
    /// Checks that passed.
    pub passed: Vec<&'static str>,
    /// Checks that failed.
    pub failures: Vec<Failure>,
}

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

type Check = std::result::Result<(), String>;

fn e(err: crate::error::Error) -> String {
    err.to_string()
}

async fn prepare_commit_is_durable_and_idempotent<H: Harness>(h: &H, dir: &Path) -> Check {
    // P2, P6, P7, P8.
    let r = h.open(dir).await.map_err(e)?;
    let t = TxnId::new_v7();
    h.stage(&r, t, b"k1", b"v1").await.map_err(e)?;
    ensure!(
        h.committed(&r, b"k1").await.map_err(e)?.is_none(),
        "a staged write is visible before commit"
    );
    ensure!(
        r.prepare(t).await.map_err(e)? == Vote::Yes,
        "prepare of staged work did not vote YES"
    );
    ensure!(
        r.prepare(t).await.map_err(e)? == Vote::Yes,
        "a duplicate prepare did not vote YES again (P6)"
    );
    ensure!(
        h.committed(&r, b"k1").await.map_err(e)?.is_none(),
        "a prepared write is visible before commit"
    );
    ensure!(
        r.commit(t).await.map_err(e)? == AckStatus::Applied,
        "commit of a prepared transaction was not applied"
    );
    ensure!(
        h.committed(&r, b"k1").await.map_err(e)? == Some(b"v1".to_vec()),
        "the committed write is not visible"
    );
    ensure!(
        r.commit(t).await.map_err(e)? == AckStatus::AlreadyApplied,
        "a duplicate commit was not AlreadyApplied (P7)"
    );
    ensure!(
        r.in_doubt().await.map_err(e)?.is_empty(),
        "a committed transaction is still in doubt"
    );
    Ok(())
}

async fn abort_discards_and_leaves_a_tombstone<H: Harness>(h: &H, dir: &Path) -> Check {
    // P5, P7, P8.
    let r = h.open(dir).await.map_err(e)?;
    let t = TxnId::new_v7();
    h.stage(&r, t, b"k2", b"v2").await.map_err(e)?;
    ensure!(
        r.prepare(t).await.map_err(e)? == Vote::Yes,
        "prepare did not vote YES"
    );
    ensure!(
        r.abort(t).await.map_err(e)? == AckStatus::Applied,
        "abort was not applied"
    );
    ensure!(
        h.committed(&r, b"k2").await.map_err(e)?.is_none(),
        "an aborted write is visible"
    );
    ensure!(
        r.abort(t).await.map_err(e)? == AckStatus::AlreadyApplied,
        "a duplicate abort was not AlreadyApplied"
    );
    ensure!(
        matches!(
            r.prepare(t).await.map_err(e)?,
            Vote::No {
                reason: NoReason::AlreadyAborted,
                ..
            }
        ),
        "a late prepare of an aborted transaction did not vote NO (ALREADY_ABORTED)"
    );
    ensure!(
        h.stage(&r, t, b"k2", b"again").await.is_err(),
        "new work for an aborted transaction was accepted (P5)"
    );
    ensure!(
        r.commit(t).await.map_err(e)? == AckStatus::ConflictingOutcome,
        "commit of an aborted transaction was not reported as a conflicting outcome"
    );
    ensure!(
        h.committed(&r, b"k2").await.map_err(e)?.is_none(),
        "commit after abort applied the write"
    );
    Ok(())
}

async fn unknown_transactions_are_refused<H: Harness>(h: &H, dir: &Path) -> Check {
    // P5.
    let r = h.open(dir).await.map_err(e)?;
    let t = TxnId::new_v7();
    ensure!(
        matches!(
            r.prepare(t).await.map_err(e)?,
            Vote::No {
                reason: NoReason::UnknownTxn,
                ..
            }
        ),
        "prepare of an unknown transaction did not vote NO (UNKNOWN_TXN)"
    );
    ensure!(
        h.stage(&r, t, b"k3", b"late").await.is_err(),
        "work arriving after a NO vote was accepted (P5)"
    );
    ensure!(
        r.commit(TxnId::new_v7()).await.map_err(e)? == AckStatus::NotPrepared,
        "commit of a never-prepared transaction was not NotPrepared"
    );
    let u = TxnId::new_v7();
    ensure!(
        r.abort(u).await.map_err(e)? == AckStatus::Applied,
        "abort of an unknown transaction was not applied"
    );
    ensure!(
        h.stage(&r, u, b"k3", b"late").await.is_err(),
        "work arriving after an abort was accepted (P5)"
    );
    Ok(())
}

async fn read_only_votes_read_only<H: Harness>(h: &H, dir: &Path) -> Check {
    // C3, P9.
    let r = h.open(dir).await.map_err(e)?;
    let t = TxnId::new_v7();
    h.stage_read(&r, t, b"k4").await.map_err(e)?;
    ensure!(
        r.prepare(t).await.map_err(e)? == Vote::ReadOnly,
        "a transaction that only read did not vote READ_ONLY"
    );
    ensure!(
        r.prepare(t).await.map_err(e)? == Vote::ReadOnly,
        "a duplicate prepare of a read-only transaction changed its vote"
    );
    // Its read lock is released: another transaction can write the key.
    let w = TxnId::new_v7();
    h.stage(&r, w, b"k4", b"written").await.map_err(e)?;
    ensure!(
        r.commit_one_phase(w).await.map_err(e)? == OnePhaseOutcome::Committed,
        "a write after a read-only vote could not commit"
    );
    Ok(())
}

async fn prepared_survives_restart<H: Harness>(h: &H, dir: &Path) -> Check {
    // P2, P3.
    let t = TxnId::new_v7();
    let a = TxnId::new_v7();
    {
        let r = h.open(dir).await.map_err(e)?;
        h.stage(&r, t, b"k5", b"v5").await.map_err(e)?;
        h.stage(&r, a, b"k6", b"v6").await.map_err(e)?;
        ensure!(
            r.prepare(t).await.map_err(e)? == Vote::Yes,
            "prepare did not vote YES"
        );
        ensure!(
            r.prepare(a).await.map_err(e)? == Vote::Yes,
            "prepare did not vote YES"
        );
    }
    let r = h.open(dir).await.map_err(e)?;
    let doubt: Vec<TxnId> = r
        .in_doubt()
        .await
        .map_err(e)?
        .into_iter()
        .map(|d| d.txn_id)
        .collect();
    ensure!(
        doubt.contains(&t) && doubt.contains(&a),
        "prepared transactions were lost at restart: in doubt {doubt:?}"
    );
    ensure!(
        h.stage(&r, TxnId::new_v7(), b"k5", b"other").await.is_err(),
        "another transaction wrote a key of an in-doubt transaction"
    );
    ensure!(
        r.prepare(t).await.map_err(e)? == Vote::Yes,
        "a duplicate prepare after restart did not vote YES"
    );
    ensure!(
        r.commit(t).await.map_err(e)? == AckStatus::Applied,
        "commit after restart was not applied"
    );
    ensure!(
        r.abort(a).await.map_err(e)? == AckStatus::Applied,
        "abort after restart was not applied"
    );
    ensure!(
        h.committed(&r, b"k5").await.map_err(e)? == Some(b"v5".to_vec()),
        "the recovered commit is not visible"
    );
    ensure!(
        h.committed(&r, b"k6").await.map_err(e)?.is_none(),
        "the recovered abort applied its write"
    );
    ensure!(
        r.in_doubt().await.map_err(e)?.is_empty(),
        "transactions still in doubt after their decisions"
    );
    Ok(())
}

async fn one_phase_commit_answers_retries<H: Harness>(h: &H, dir: &Path) -> Check {
    // C2.
    let r = h.open(dir).await.map_err(e)?;
    let t = TxnId::new_v7();
    h.stage(&r, t, b"k7", b"v7").await.map_err(e)?;
    ensure!(
        r.commit_one_phase(t).await.map_err(e)? == OnePhaseOutcome::Committed,
        "one-phase commit did not commit"
    );
    ensure!(
        r.commit_one_phase(t).await.map_err(e)? == OnePhaseOutcome::Committed,
        "a retried one-phase commit changed its answer"
    );
    ensure!(
        h.committed(&r, b"k7").await.map_err(e)? == Some(b"v7".to_vec()),
        "the one-phase commit is not visible"
    );
    ensure!(
        matches!(
            r.commit_one_phase(TxnId::new_v7()).await.map_err(e)?,
            OnePhaseOutcome::Aborted { .. }
        ),
        "one-phase commit of an unknown transaction did not abort"
    );
    Ok(())
}

async fn a_doomed_transaction_never_commits<H: Harness>(h: &H, dir: &Path) -> Check {
    // P10, P1.
    let r = h.open(dir).await.map_err(e)?;
    // Staged, then doomed by a failed call: NO naming the call, nothing applied, key free.
    let t = TxnId::new_v7();
    h.stage(&r, t, b"k8", b"v8").await.map_err(e)?;
    r.doom(t, "call 2 (/bank.Bank/Deposit) failed: NOT_FOUND".into())
        .await
        .map_err(e)?;
    match r.prepare(t).await.map_err(e)? {
        Vote::No { message, .. } => ensure!(
            message.contains("Deposit"),
            "the NO vote of a doomed transaction does not name the failed call: {message:?}"
        ),
        other => return Err(format!("a doomed transaction voted {other:?}")),
    }
    ensure!(
        h.committed(&r, b"k8").await.map_err(e)?.is_none(),
        "a doomed transaction's write was applied"
    );
    let w = TxnId::new_v7();
    h.stage(&r, w, b"k8", b"other").await.map_err(e)?;
    ensure!(
        r.commit_one_phase(w).await.map_err(e)? == OnePhaseOutcome::Committed,
        "the key of a doomed transaction stayed locked"
    );
    // Doomed before any work here: later work is refused, one-phase aborts.
    let u = TxnId::new_v7();
    r.doom(u, "call 1 failed before touching the store".into())
        .await
        .map_err(e)?;
    ensure!(
        h.stage(&r, u, b"k9", b"late").await.is_err(),
        "work for a doomed transaction was accepted"
    );
    ensure!(
        matches!(
            r.commit_one_phase(u).await.map_err(e)?,
            OnePhaseOutcome::Aborted { .. }
        ),
        "one-phase commit of a doomed transaction did not abort"
    );
    // Prepared, then a late failure: the YES stands (P1).
    let p = TxnId::new_v7();
    h.stage(&r, p, b"k10", b"v10").await.map_err(e)?;
    ensure!(
        r.prepare(p).await.map_err(e)? == Vote::Yes,
        "prepare did not vote YES"
    );
    r.doom(p, "a late call failed".into()).await.map_err(e)?;
    ensure!(
        r.prepare(p).await.map_err(e)? == Vote::Yes,
        "a doom after YES changed the vote (P1)"
    );
    ensure!(
        r.commit(p).await.map_err(e)? == AckStatus::Applied,
        "a doom after YES stopped the commit (P1)"
    );
    ensure!(
        h.committed(&r, b"k10").await.map_err(e)? == Some(b"v10".to_vec()),
        "the commit after a late doom is not visible"
    );
    Ok(())
}

/// Run every check, each on a fresh directory.
pub async fn run_all<H: Harness>(h: &H) -> Report {
    let mut report = Report::default();
    macro_rules! run {
        ($name:ident) => {{
            let dir = tempfile::tempdir().expect("a temporary directory can be created");
            match $name(h, dir.path()).await {
                Ok(()) => report.passed.push(stringify!($name)),
                Err(what) => report.failures.push(Failure {
                    check: stringify!($name),
                    what,
                }),
            }
        }};
    }
    run!(prepare_commit_is_durable_and_idempotent);
    run!(abort_discards_and_leaves_a_tombstone);
    run!(unknown_transactions_are_refused);
    run!(read_only_votes_read_only);
    run!(prepared_survives_restart);
    run!(one_phase_commit_answers_retries);
    run!(a_doomed_transaction_never_commits);
    report
}
