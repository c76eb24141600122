//! The participant store, in process over real RocksDB directories and over the simulation's
//! in-memory disk (`RocksStore::open_in_memory`). Each test names the rule of docs/protocol.md
//! it checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratify_participant::store::codec::Recorded;
use ratify_participant::testing::{Harness, RocksHarness, run_all};
use ratify_participant::{Error, LockPolicy, Resource, RocksStore, StoreConfig, TxnContext};
use ratify_proto::planted::{self, Bug};
use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome};
use ratify_proto::types::{NoReason, TxnId, Vote};
use ratify_storage::MemDisk;

fn open(dir: &std::path::Path) -> RocksStore {
    RocksStore::open(dir, StoreConfig::default()).expect("store opens")
}

fn open_wait_die(dir: &std::path::Path) -> RocksStore {
    let config = StoreConfig {
        lock_policy: LockPolicy::WaitDie,
        ..StoreConfig::default()
    };
    RocksStore::open(dir, config).expect("store opens")
}

fn ctx(id: TxnId) -> TxnContext {
    TxnContext::new(id)
}

/// Two ids, the first older (UUIDv7 order) than the second.
fn older_younger() -> (TxnId, TxnId) {
    let a = TxnId::new_v7();
    let b = TxnId::new_v7();
    assert!(a < b);
    (a, b)
}

/// P2, P6, P7, P8, P5, C2, P3, P10: the conformance suite that every custom store must pass.
#[tokio::test]
async fn rocks_store_passes_the_conformance_suite() {
    let report = run_all(&RocksHarness).await;
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.passed.len(), 7);
}

/// The conformance suite's harness for the store over the memory disk: one disk per directory
/// the suite names, and every reopen of a disk is a restart after a power loss (`crash()`
/// first), which is stricter than a clean restart.
#[derive(Default)]
struct MemHarness {
    disks: Mutex<HashMap<PathBuf, Arc<MemDisk>>>,
}

impl Harness for MemHarness {
    type R = RocksStore;

    async fn open(&self, dir: &Path) -> ratify_participant::Result<RocksStore> {
        let disk = {
            let mut disks = self.disks.lock().expect("not poisoned");
            if let Some(disk) = disks.get(dir) {
                disk.crash();
            }
            disks.entry(dir.to_path_buf()).or_default().clone()
        };
        RocksStore::open_in_memory(disk, mem_config())
    }

    async fn stage(
        &self,
        r: &RocksStore,
        txn_id: TxnId,
        key: &[u8],
        value: &[u8],
    ) -> ratify_participant::Result<()> {
        RocksHarness.stage(r, txn_id, key, value).await
    }

    async fn stage_read(
        &self,
        r: &RocksStore,
        txn_id: TxnId,
        key: &[u8],
    ) -> ratify_participant::Result<()> {
        RocksHarness.stage_read(r, txn_id, key).await
    }

    async fn committed(
        &self,
        r: &RocksStore,
        key: &[u8],
    ) -> ratify_participant::Result<Option<Vec<u8>>> {
        RocksHarness.committed(r, key).await
    }
}

/// One process, one clock: no skew margin after a restart.
fn mem_config() -> StoreConfig {
    StoreConfig {
        clock_skew_max: Duration::ZERO,
        ..StoreConfig::default()
    }
}

fn open_mem(disk: &Arc<MemDisk>) -> RocksStore {
    RocksStore::open_in_memory(disk.clone(), mem_config()).expect("store opens")
}

async fn stage(store: &RocksStore, t: TxnId, key: &[u8], value: &[u8]) {
    store
        .txn(&ctx(t))
        .expect("begin")
        .put(key, value)
        .await
        .expect("stage");
}

async fn in_doubt(store: &RocksStore) -> Vec<TxnId> {
    store
        .in_doubt()
        .await
        .expect("in doubt")
        .into_iter()
        .map(|d| d.txn_id)
        .collect()
}

/// The same suite over the memory disk, each restart a crash.
#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    let report = run_all(&MemHarness::default()).await;
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    assert_eq!(report.passed.len(), 7);
}

/// P2, P3 over the memory disk: a YES vote is durable. After a crash (unsynced writes lost)
/// and a reopen on the same disk, the transaction is in doubt with its keys locked, and its
/// commit applies the writes; staged work that never voted is gone (P4).
#[tokio::test]
async fn memory_prepared_survives_a_crash() {
    let disk = MemDisk::new();
    let t = TxnId::new_v7();
    let staged_only = TxnId::new_v7();
    {
        let store = open_mem(&disk);
        stage(&store, t, b"a", b"1").await;
        stage(&store, t, b"b", b"2").await;
        stage(&store, staged_only, b"c", b"3").await;
        assert_eq!(store.prepare(t).await.expect("prepare"), Vote::Yes);
        // Power loss while the process still runs; the old store is never used again.
        disk.crash();
    }
    let store = open_mem(&disk);
    assert_eq!(
        in_doubt(&store).await,
        vec![t],
        "the prepared transaction is back"
    );
    assert_eq!(store.locked_keys(), 2, "its keys are locked again");
    assert!(
        matches!(
            store.txn(&ctx(TxnId::new_v7())).expect("begin").put(b"a", b"x").await,
            Err(Error::Conflict { holder, .. }) if holder == t
        ),
        "another transaction cannot write an in-doubt key"
    );
    assert_eq!(store.read_committed(b"a").expect("read"), None);
    assert!(
        matches!(
            store.prepare(staged_only).await.expect("prepare"),
            Vote::No {
                reason: NoReason::UnknownTxn,
                ..
            }
        ),
        "staged work from before the crash is gone, and votes NO"
    );
    assert_eq!(store.prepare(t).await.expect("prepare again"), Vote::Yes);
    assert_eq!(store.commit(t).await.expect("commit"), AckStatus::Applied);
    assert_eq!(
        store.read_committed(b"a").expect("read"),
        Some((1, b"1".to_vec()))
    );
    assert_eq!(
        store.read_committed(b"b").expect("read"),
        Some((1, b"2".to_vec()))
    );
    assert_eq!(store.read_committed(b"c").expect("read"), None);
    assert_eq!(store.locked_keys(), 0);
    assert!(in_doubt(&store).await.is_empty());
}

/// P8 over the memory disk: commits, one-phase commits and aborts are durable before they
/// answer, so a crash right after keeps them, and duplicates after the restart answer from
/// the records (P7).
#[tokio::test]
async fn memory_committed_data_survives_a_crash() {
    let disk = MemDisk::new();
    let (t, one, gone) = (TxnId::new_v7(), TxnId::new_v7(), TxnId::new_v7());
    {
        let store = open_mem(&disk);
        stage(&store, t, b"k", b"v1").await;
        assert_eq!(store.prepare(t).await.expect("prepare"), Vote::Yes);
        assert_eq!(store.commit(t).await.expect("commit"), AckStatus::Applied);
        stage(&store, one, b"p/1", b"x").await;
        stage(&store, one, b"p/2", b"y").await;
        assert_eq!(
            store.commit_one_phase(one).await.expect("1pc"),
            OnePhaseOutcome::Committed
        );
        stage(&store, gone, b"k", b"never").await;
        assert_eq!(store.abort(gone).await.expect("abort"), AckStatus::Applied);
        let (_, syncs, _) = disk.counters();
        assert!(
            store
                .stats()
                .fsyncs
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 3,
            "each durable answer synced ({syncs} disk syncs)"
        );
        disk.crash();
    }
    let store = open_mem(&disk);
    assert_eq!(
        store.read_committed(b"k").expect("read"),
        Some((1, b"v1".to_vec()))
    );
    assert_eq!(
        store.scan_committed(b"p/", 10).expect("scan"),
        vec![
            (b"p/1".to_vec(), b"x".to_vec()),
            (b"p/2".to_vec(), b"y".to_vec())
        ]
    );
    assert_eq!(
        store.recorded(t).expect("record"),
        Some(Recorded::Committed)
    );
    assert_eq!(
        store.recorded(gone).expect("record"),
        Some(Recorded::Aborted)
    );
    assert_eq!(
        store.commit(t).await.expect("commit again"),
        AckStatus::AlreadyApplied
    );
    assert_eq!(
        store.abort(gone).await.expect("abort again"),
        AckStatus::AlreadyApplied
    );
    assert!(in_doubt(&store).await.is_empty());
    assert_eq!(store.locked_keys(), 0);
}

/// Prefix scans over the memory disk page through it in chunks: more rows than one chunk,
/// the limit, and the prefix's end are all honoured.
#[tokio::test]
async fn memory_scans_cross_chunks() {
    let disk = MemDisk::new();
    let store = open_mem(&disk);
    let t = TxnId::new_v7();
    let txn = store.txn(&ctx(t)).expect("begin");
    for i in 0..600u32 {
        txn.put(format!("s/{i:04}").as_bytes(), b"v")
            .await
            .expect("stage");
    }
    txn.put(b"t/after", b"v").await.expect("stage");
    assert_eq!(
        store.commit_one_phase(t).await.expect("1pc"),
        OnePhaseOutcome::Committed
    );
    let all = store.scan_committed(b"s/", 10_000).expect("scan");
    assert_eq!(all.len(), 600);
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "in key order");
    assert_eq!(store.scan_committed(b"s/", 300).expect("scan").len(), 300);
    let txn = store.txn(&ctx(TxnId::new_v7())).expect("begin");
    assert_eq!(
        txn.scan_prefix(b"s/", 10_000).await.expect("scan").len(),
        600
    );
    assert_eq!(store.scan_committed(b"t/", 10).expect("scan").len(), 1);
}

/// Planted bugs (a) and (e) over the memory disk. With no bug switched on the store is correct;
/// with the feature `planted-bugs` and `RATIFY_PLANTED_BUG=yes-without-sync` (a prepared
/// transaction is lost by a crash after its YES) or `=non-idempotent-commit` (a repeated
/// Commit writes the old values again), this test checks that the bug shows.
#[tokio::test]
async fn memory_planted_bugs_show() {
    let disk = MemDisk::new();
    let t = TxnId::new_v7();
    {
        let store = open_mem(&disk);
        stage(&store, t, b"k", b"v").await;
        assert_eq!(store.prepare(t).await.expect("prepare"), Vote::Yes);
        disk.crash();
    }
    let store = open_mem(&disk);
    let lost = !in_doubt(&store).await.contains(&t);
    assert_eq!(
        lost,
        planted::active(Bug::YesWithoutSync),
        "the prepare record survives the crash exactly when bug (a) is off"
    );

    let (first, second) = (TxnId::new_v7(), TxnId::new_v7());
    for (id, value) in [(first, b"first"), (second, b"later")] {
        stage(&store, id, b"x", value).await;
        assert_eq!(store.prepare(id).await.expect("prepare"), Vote::Yes);
        assert_eq!(store.commit(id).await.expect("commit"), AckStatus::Applied);
    }
    let retried = store.commit(first).await.expect("commit again");
    let value = store.read_committed(b"x").expect("read").map(|(_, v)| v);
    if planted::active(Bug::NonIdempotentCommit) {
        assert_eq!(retried, AckStatus::Applied);
        assert_eq!(
            value,
            Some(b"first".to_vec()),
            "bug (e) wrote the old value again"
        );
    } else {
        assert_eq!(retried, AckStatus::AlreadyApplied);
        assert_eq!(value, Some(b"later".to_vec()));
    }
}

/// P9: shared locks coexist; a write conflicts with another's read or write and fails fast
/// with `Conflict { key }`; reads see the transaction's own writes. (The conflicts here are
/// probed through `harmless_errors`, so they doom nothing: see
/// `a_failed_operation_dooms_the_transaction` for the default.)
#[tokio::test]
async fn lock_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (a, b) = older_younger();
    let ta = store.txn(&ctx(a)).expect("begin a");
    let tb = store.txn(&ctx(b)).expect("begin b");
    assert_eq!(ta.get(b"x").await.expect("a reads"), None);
    assert_eq!(tb.get(b"x").await.expect("b reads too: shared"), None);
    let (ta_probe, tb_probe) = (ta.clone().harmless_errors(), tb.clone().harmless_errors());
    match tb_probe.put(b"x", b"1").await {
        Err(Error::Conflict {
            key, holder, died, ..
        }) => {
            assert_eq!(key.0, b"x".to_vec());
            assert_eq!(holder, a);
            assert!(!died, "no wait was asked: a plain conflict");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    ta.put(b"y", b"own").await.expect("a writes y");
    assert_eq!(
        ta.get(b"y").await.expect("read own write"),
        Some(b"own".to_vec())
    );
    assert!(
        matches!(tb_probe.get(b"y").await, Err(Error::Conflict { .. })),
        "b cannot read a's write lock"
    );
    // Upgrade: b also reads x, so a cannot write it yet.
    assert!(
        matches!(ta_probe.put(b"x", b"2").await, Err(Error::Conflict { holder, .. }) if holder == b),
        "no upgrade while another transaction reads"
    );
    assert_eq!(store.abort(b).await.expect("abort b"), AckStatus::Applied);
    ta.put(b"x", b"2")
        .await
        .expect("sole reader: upgrade shared to exclusive");
    assert_eq!(store.prepare(a).await.expect("prepare"), Vote::Yes);
    assert_eq!(store.commit(a).await.expect("commit"), AckStatus::Applied);
    assert_eq!(store.locked_keys(), 0, "every lock released");
    assert_eq!(
        store.read_committed(b"x").expect("read"),
        Some((1, b"2".to_vec()))
    );
}

/// P10: a failed read or write (here a lock conflict, then a limit) dooms the transaction at
/// this participant: its staged writes and locks go at once, its later calls fail naming the
/// first failure, and Prepare votes NO with it — so an initiator that commits after the error
/// gets ABORTED. Through `harmless_errors` the same failure dooms nothing.
#[tokio::test]
async fn a_failed_operation_dooms_the_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (a, b) = older_younger();
    let ta = store.txn(&ctx(a)).expect("begin a");
    ta.put(b"x", b"a").await.expect("a writes x");
    let tb = store.txn(&ctx(b)).expect("begin b");
    tb.put(b"y", b"b").await.expect("b writes y");

    // Probed on purpose: b stays alive, with its lock on y.
    assert!(matches!(
        tb.clone().harmless_errors().get(b"x").await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        ta.clone().harmless_errors().get(b"y").await,
        Err(Error::Conflict { .. })
    ));
    tb.get(b"y")
        .await
        .expect("b still works after a harmless failure");

    // Not probed: b is doomed by the conflict.
    assert!(matches!(tb.get(b"x").await, Err(Error::Conflict { .. })));
    ta.get(b"y")
        .await
        .expect("b's lock on y went with it, at once");
    match tb.put(b"z", b"b").await {
        Err(Error::TxnAborted { why, .. }) => {
            assert!(
                why.contains("conflict on key"),
                "names the first failure: {why}"
            )
        }
        other => panic!("a doomed transaction's later calls fail at once, got {other:?}"),
    }
    assert!(matches!(store.txn(&ctx(b)), Err(Error::TxnAborted { .. })));
    match store.prepare(b).await.expect("prepare") {
        Vote::No { reason, message } => {
            assert_eq!(reason, NoReason::Conflict);
            assert!(message.contains("conflict on key"), "{message}");
        }
        other => panic!("a doomed transaction votes NO, got {other:?}"),
    }
    assert_eq!(store.prepare(a).await.expect("prepare a"), Vote::Yes);
    assert_eq!(store.commit(a).await.expect("commit a"), AckStatus::Applied);
    assert_eq!(store.locked_keys(), 0);

    // A limit dooms too; the one-phase path aborts it.
    let c = TxnId::new_v7();
    let tc = store.txn(&ctx(c)).expect("begin");
    tc.put(b"k", b"v").await.expect("stage");
    assert!(matches!(
        tc.put(&[b'k'; 5000], b"v").await,
        Err(Error::LimitExceeded { .. })
    ));
    match store.commit_one_phase(c).await.expect("one phase") {
        OnePhaseOutcome::Aborted { reason, message } => {
            assert_eq!(reason, NoReason::LimitExceeded);
            assert!(message.contains("key_bytes_max"), "{message}");
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    assert_eq!(store.read_committed(b"k").expect("read"), None);
}

/// Wait until `n` lock requests are blocked in `store` (observable state, not a timer), for
/// at most 10 s.
async fn until_waiting(store: &RocksStore, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.lock_waiters() != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} lock waiters never appeared ({} now)",
            store.lock_waiters()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// P9 (wound-wait, the default): a younger transaction waits for an older holder instead of
/// dying; an older one aborts a younger holder that has not prepared and takes the lock at once
/// (the wounded one's next call and its Prepare are refused); a prepared holder is waited for.
#[tokio::test]
async fn wound_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let wait = Some(Duration::from_secs(5));

    // A younger requester waits for the older holder.
    let (old, young) = older_younger();
    let t_old = store.txn(&ctx(old)).expect("begin").with_lock_wait(wait);
    t_old.put(b"k", b"old").await.expect("old writes");
    let t_young = store.txn(&ctx(young)).expect("begin").with_lock_wait(wait);
    let waiter = tokio::spawn(async move { t_young.put(b"k", b"young").await });
    until_waiting(&store, 1).await;
    assert!(!waiter.is_finished(), "the younger transaction waits");
    assert_eq!(store.prepare(old).await.expect("prepare"), Vote::Yes);
    assert_eq!(store.commit(old).await.expect("commit"), AckStatus::Applied);
    waiter.await.expect("joined").expect("young got the lock");
    assert_eq!(store.prepare(young).await.expect("prepare"), Vote::Yes);
    assert_eq!(
        store.commit(young).await.expect("commit"),
        AckStatus::Applied
    );

    // An older requester wounds a younger holder that has not prepared.
    let (older, younger) = older_younger();
    let t_younger = store
        .txn(&ctx(younger))
        .expect("begin")
        .with_lock_wait(wait);
    t_younger
        .put(b"k", b"younger")
        .await
        .expect("younger writes");
    let t_older = store.txn(&ctx(older)).expect("begin").with_lock_wait(wait);
    let started = std::time::Instant::now();
    t_older
        .put(b"k", b"older")
        .await
        .expect("older takes the lock");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "wounding does not wait"
    );
    assert!(
        matches!(
            t_younger.put(b"j", b"x").await,
            Err(Error::TxnAborted { .. })
        ),
        "the wounded transaction is aborted here"
    );
    assert!(matches!(
        store.prepare(younger).await.expect("prepare"),
        Vote::No { .. }
    ));

    // A prepared holder is not wounded: the older requester waits for it.
    assert_eq!(store.prepare(older).await.expect("prepare"), Vote::Yes);
    let (oldest, _) = older_younger();
    // `oldest` is younger than `older` by construction; make a truly older one wait instead:
    // the id created before `older` is `older` itself, so use a retry that keeps an old age.
    let ctx_old = TxnContext {
        first_attempt: Some(old),
        ..ctx(oldest)
    };
    let t_oldest = store.txn(&ctx_old).expect("begin").with_lock_wait(wait);
    let waiter = tokio::spawn(async move { t_oldest.put(b"k", b"oldest").await });
    until_waiting(&store, 1).await;
    assert!(
        !waiter.is_finished(),
        "a prepared holder is waited for, not wounded"
    );
    assert_eq!(
        store.commit(older).await.expect("commit"),
        AckStatus::Applied
    );
    waiter
        .await
        .expect("joined")
        .expect("got the lock after the commit");
}

/// P9: a retry keeps its first attempt's age. The youngest transaction dies against an older
/// holder; its retry, begun later still but carrying the first attempt's id, outranks a holder
/// that began after that first attempt, so it waits for it instead of dying again.
#[tokio::test]
async fn a_retry_keeps_its_first_attempts_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_wait_die(dir.path());
    let wait = Some(Duration::from_secs(5));
    let first = TxnId::new_v7();
    std::thread::sleep(Duration::from_millis(2));
    let holder = TxnId::new_v7();
    std::thread::sleep(Duration::from_millis(2));
    let retry = TxnId::new_v7();
    assert!(first < holder && holder < retry);
    let t_holder = store.txn(&ctx(holder)).expect("begin").with_lock_wait(wait);
    t_holder
        .put(b"hot", b"holder")
        .await
        .expect("holder writes");

    // Without its first attempt's age, the retry is the youngest: it dies.
    let plain = store.txn(&ctx(retry)).expect("begin").with_lock_wait(wait);
    match plain.put(b"hot", b"retry").await {
        Err(Error::Conflict { died: true, .. }) => {}
        other => panic!("expected the youngest to die, got {other:?}"),
    }
    store.abort(retry).await.expect("abort");

    // With it, a second retry outranks the holder and waits for it.
    let retry2 = TxnId::new_v7();
    let ctx2 = TxnContext {
        first_attempt: Some(first),
        ..ctx(retry2)
    };
    assert_eq!(ctx2.age(), first);
    let t_retry = store.txn(&ctx2).expect("begin").with_lock_wait(wait);
    let waiter = tokio::spawn(async move { t_retry.put(b"hot", b"retry").await });
    until_waiting(&store, 1).await;
    assert!(
        !waiter.is_finished(),
        "the retry waits for the younger holder"
    );
    // And the holder, now younger than the waiting retry, would die if it asked for a lock the
    // retry holds: the order is total, so there is no cycle.
    assert_eq!(store.prepare(holder).await.expect("prepare"), Vote::Yes);
    assert_eq!(
        store.commit(holder).await.expect("commit"),
        AckStatus::Applied
    );
    waiter
        .await
        .expect("joined")
        .expect("the retry got the lock once the holder committed");
}

/// P9 wait-die: an older transaction waits (bounded) for a younger holder; a younger one that
/// would wait for an older holder dies at once. No deadlock is possible.
#[tokio::test]
async fn wait_die() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_wait_die(dir.path());
    let (old, young) = older_younger();
    let wait = Some(Duration::from_secs(5));
    let t_old = store.txn(&ctx(old)).expect("begin").with_lock_wait(wait);
    let t_young = store.txn(&ctx(young)).expect("begin").with_lock_wait(wait);

    // Young holds k; old waits for it and gets it when young finishes.
    t_young.put(b"k", b"young").await.expect("young writes");
    let waiter = {
        let t_old = t_old.clone();
        tokio::spawn(async move { t_old.put(b"k", b"old").await })
    };
    until_waiting(&store, 1).await;
    assert!(!waiter.is_finished(), "the older transaction waits");
    assert_eq!(store.prepare(young).await.expect("prepare"), Vote::Yes);
    assert_eq!(
        store.commit(young).await.expect("commit"),
        AckStatus::Applied
    );
    waiter
        .await
        .expect("joined")
        .expect("old got the lock after young committed");

    // Old holds k now; a younger transaction dies instead of waiting.
    let (_, younger) = older_younger();
    let t = store
        .txn(&ctx(younger))
        .expect("begin")
        .with_lock_wait(wait);
    let started = std::time::Instant::now();
    match t.put(b"k", b"x").await {
        Err(Error::Conflict {
            died: true, holder, ..
        }) => assert_eq!(holder, old),
        other => panic!("expected wait-die to refuse, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "dying does not wait"
    );
}

/// P9: anyone may wait for a PREPARED holder, whatever the ages: a prepared transaction waits
/// for no lock, so no cycle can form. (The client's next transaction after a commit must not
/// die on the keys phase 2 has not released yet.) Under wait-die, where a younger transaction
/// would otherwise die; wound-wait lets it wait anyway (see `wound_wait`).
#[tokio::test]
async fn younger_transactions_wait_for_prepared_holders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_wait_die(dir.path());
    let (old, young) = older_younger();
    store
        .txn(&ctx(old))
        .expect("begin")
        .put(b"k", b"old")
        .await
        .expect("stage");
    assert_eq!(store.prepare(old).await.expect("prepare"), Vote::Yes);
    let t_young = store
        .txn(&ctx(young))
        .expect("begin")
        .with_lock_wait(Some(Duration::from_secs(5)));
    let waiter = tokio::spawn(async move { t_young.get(b"k").await });
    until_waiting(&store, 1).await;
    assert!(
        !waiter.is_finished(),
        "the younger transaction waits instead of dying"
    );
    assert_eq!(store.commit(old).await.expect("commit"), AckStatus::Applied);
    assert_eq!(
        waiter
            .await
            .expect("joined")
            .expect("read after the commit"),
        Some(b"old".to_vec()),
        "it reads the committed value"
    );
}

/// P9: waiting is bounded by the caller's limit (under wound-wait, a younger transaction
/// waits for an older holder).
#[tokio::test]
async fn lock_waits_are_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (old, young) = older_younger();
    store
        .txn(&ctx(old))
        .expect("begin")
        .put(b"k", b"v")
        .await
        .expect("old writes");
    let t_young = store
        .txn(&ctx(young))
        .expect("begin")
        .with_lock_wait(Some(Duration::from_millis(100)));
    match t_young.put(b"k", b"w").await {
        Err(Error::Conflict {
            waited,
            died: false,
            ..
        }) => assert!(waited >= Duration::from_millis(100)),
        other => panic!("expected a timed-out wait, got {other:?}"),
    }
}

/// P4: staged work older than the staged timeout is aborted locally: a later Prepare votes NO
/// and the transaction's locks are free. (Staged ages are on tokio's clock, paused here: the
/// 80 ms pass at once and exactly.)
#[tokio::test(start_paused = true)]
async fn staged_timeout_aborts_locally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        staged_timeout: Duration::from_millis(50),
        ..StoreConfig::default()
    };
    let store = RocksStore::open(dir.path(), config).expect("open");
    let t = TxnId::new_v7();
    store
        .txn(&ctx(t))
        .expect("begin")
        .put(b"k", b"v")
        .await
        .expect("stage");
    tokio::time::advance(Duration::from_millis(80)).await;
    assert!(matches!(
        store.prepare(t).await.expect("prepare"),
        Vote::No {
            reason: NoReason::StagedTimeout,
            ..
        }
    ));
    assert_eq!(store.locked_keys(), 0);

    // The reaper does the same without a Prepare, and the tombstone refuses late work (P5).
    let u = TxnId::new_v7();
    store
        .txn(&ctx(u))
        .expect("begin")
        .put(b"k", b"v")
        .await
        .expect("stage");
    tokio::time::advance(Duration::from_millis(80)).await;
    assert_eq!(store.reap_expired(), 1);
    assert_eq!(store.locked_keys(), 0);
    assert!(matches!(store.txn(&ctx(u)), Err(Error::TxnAborted { .. })));
    assert!(matches!(
        store.prepare(u).await.expect("prepare"),
        Vote::No {
            reason: NoReason::AlreadyAborted,
            ..
        }
    ));
}

/// P4: after a restart, a transaction that began before it is refused (its staged work here
/// was in memory and is gone); one that begins after is accepted.
#[tokio::test]
async fn transactions_begun_before_a_restart_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = TxnId::new_v7();
    {
        let store = open(dir.path());
        store
            .txn(&ctx(before))
            .expect("begin")
            .put(b"k", b"v")
            .await
            .expect("stage");
    }
    let config = StoreConfig {
        clock_skew_max: Duration::ZERO,
        ..StoreConfig::default()
    };
    let store = RocksStore::open(dir.path(), config).expect("reopen");
    assert!(matches!(
        store.txn(&ctx(before)),
        Err(Error::TxnAborted { .. })
    ));
    assert!(matches!(
        store.prepare(before).await.expect("prepare"),
        Vote::No {
            reason: NoReason::UnknownTxn,
            ..
        }
    ));
    store
        .txn(&ctx(TxnId::new_v7()))
        .expect("a new transaction is fine");
}

/// P5 and P7: duplicate messages are idempotent; a finished transaction takes no more work.
#[tokio::test]
async fn duplicates_are_idempotent_and_finished_transactions_refuse_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = TxnId::new_v7();
    store
        .txn(&ctx(t))
        .expect("begin")
        .put(b"k", b"v")
        .await
        .expect("stage");
    assert_eq!(store.prepare(t).await.expect("prepare"), Vote::Yes);
    assert!(
        matches!(store.txn(&ctx(t)), Err(Error::TxnNotActive { .. })),
        "prepared: no more work"
    );
    for _ in 0..3 {
        assert_eq!(store.prepare(t).await.expect("prepare again"), Vote::Yes);
    }
    assert_eq!(store.commit(t).await.expect("commit"), AckStatus::Applied);
    for _ in 0..3 {
        assert_eq!(
            store.commit(t).await.expect("commit again"),
            AckStatus::AlreadyApplied
        );
    }
    assert_eq!(
        store.read_committed(b"k").expect("read"),
        Some((1, b"v".to_vec())),
        "applied exactly once"
    );
    assert!(matches!(
        store.txn(&ctx(t)),
        Err(Error::TxnNotActive { .. })
    ));
    assert_eq!(
        store
            .stats()
            .committed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Limits are enforced with clear errors, and the operation did nothing.
#[tokio::test]
async fn limits_are_enforced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        key_bytes_max: 8,
        value_bytes_max: 16,
        keys_per_txn_max: 2,
        staged_bytes_per_txn_max: 30,
        concurrent_txns_max: 2,
        ..StoreConfig::default()
    };
    let store = RocksStore::open(dir.path(), config).expect("open");
    // Probing the limits on purpose: the failures doom nothing (P10).
    let t = store
        .txn(&ctx(TxnId::new_v7()))
        .expect("begin")
        .harmless_errors();
    let limit = |r: Result<(), Error>| match r {
        Err(Error::LimitExceeded { limit, .. }) => limit,
        other => panic!("expected a limit error, got {other:?}"),
    };
    assert_eq!(
        limit(t.put(b"much-too-long-key", b"v").await),
        "key_bytes_max"
    );
    assert_eq!(limit(t.put(b"k", &[0u8; 17]).await), "value_bytes_max");
    t.put(b"k1", &[0u8; 16]).await.expect("fits");
    assert_eq!(
        limit(t.put(b"k2", &[0u8; 16]).await),
        "staged_bytes_per_txn_max"
    );
    t.put(b"k2", b"small").await.expect("fits");
    assert_eq!(limit(t.put(b"k3", b"v").await), "keys_per_txn_max");
    t.put(b"k1", b"replaced")
        .await
        .expect("replacing a key adds no key");
    store
        .txn(&ctx(TxnId::new_v7()))
        .expect("second transaction");
    assert!(matches!(
        store.txn(&ctx(TxnId::new_v7())),
        Err(Error::LimitExceeded {
            limit: "concurrent_txns_max",
            ..
        })
    ));
}

/// Read-only participants vote READ_ONLY and release their read locks at prepare (P9, C3).
#[tokio::test]
async fn read_only_releases_locks_at_prepare() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = TxnId::new_v7();
    store
        .txn(&ctx(t))
        .expect("begin")
        .get(b"k")
        .await
        .expect("read");
    assert_eq!(store.locked_keys(), 1);
    assert_eq!(store.prepare(t).await.expect("prepare"), Vote::ReadOnly);
    assert_eq!(store.locked_keys(), 0);
}

/// Group commit: concurrent transactions share fsyncs (fewer than one per operation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let n = 64;
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let t = TxnId::new_v7();
            let key = format!("k{i}");
            store
                .txn(&ctx(t))
                .expect("begin")
                .put(key.as_bytes(), b"v")
                .await
                .expect("stage");
            assert_eq!(store.prepare(t).await.expect("prepare"), Vote::Yes);
            assert_eq!(store.commit(t).await.expect("commit"), AckStatus::Applied);
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let fsyncs = store
        .stats()
        .fsyncs
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        fsyncs <= 2 * n,
        "at most one fsync per prepare and per commit: {fsyncs}"
    );
    assert_eq!(
        store
            .stats()
            .committed
            .load(std::sync::atomic::Ordering::Relaxed),
        n
    );
}
