//! Crash safety of the participant store with real processes: a child process drives the
//! store and is SIGKILLed; the test reopens the same RocksDB directory.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use ratify_devtools::{helper_bin, test_dir};
use ratify_participant::{Error, Resource, RocksStore, StoreConfig, TxnContext};
use ratify_proto::types::TxnId;
use ratify_proto::types::participant::AckStatus;

/// Run the helper until it prints `expect`, then SIGKILL it.
fn run_then_kill(args: &[&str], expect: &str) {
    let mut child = Command::new(helper_bin("store-crash-helper"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the helper");
    let stdout = child.stdout.take().expect("piped");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == expect => break,
            Some(Ok(_)) => continue,
            other => panic!(
                "the helper ended before printing {expect:?}: {other:?} {:?}",
                child.wait()
            ),
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
}

fn reopen(dir: &std::path::Path) -> RocksStore {
    // One machine, one clock: transactions begun after the reopen are not refused (P4).
    let config = StoreConfig {
        clock_skew_max: std::time::Duration::ZERO,
        ..StoreConfig::default()
    };
    RocksStore::open(dir, config).expect("reopen")
}

/// P2, P3, P8: a transaction prepared by a process that was SIGKILLed is in doubt after reopen,
/// with its keys locked; a later Commit makes its write visible exactly once.
#[tokio::test]
async fn prepared_then_killed_then_committed_exactly_once() {
    let dir = test_dir("crash-commit");
    let data = dir.path().join("store");
    let t = TxnId::new_v7();
    run_then_kill(
        &[
            "prepare",
            data.to_str().expect("utf-8"),
            &t.to_string(),
            "k",
            "v",
        ],
        "prepared",
    );

    let store = reopen(&data);
    let in_doubt: Vec<TxnId> = store
        .in_doubt()
        .await
        .expect("list")
        .into_iter()
        .map(|d| d.txn_id)
        .collect();
    assert_eq!(
        in_doubt,
        vec![t],
        "the prepared transaction survived the crash"
    );
    assert_eq!(
        store.read_committed(b"k").expect("read"),
        None,
        "not visible before the decision"
    );
    let other = store.txn(&TxnContext::new(TxnId::new_v7())).expect("begin");
    assert!(
        matches!(other.put(b"k", b"other").await, Err(Error::Conflict { holder, .. }) if holder == t),
        "the in-doubt transaction holds its key's lock"
    );
    assert_eq!(store.commit(t).await.expect("commit"), AckStatus::Applied);
    assert_eq!(
        store.commit(t).await.expect("commit again"),
        AckStatus::AlreadyApplied
    );
    assert_eq!(
        store.read_committed(b"k").expect("read"),
        Some((1, b"v".to_vec())),
        "applied once"
    );
    drop(other);
    drop(store);
    let store = reopen(&data);
    assert_eq!(
        store.read_committed(b"k").expect("read"),
        Some((1, b"v".to_vec())),
        "durable"
    );
    assert!(store.in_doubt().await.expect("list").is_empty());
}

/// P2, P3, P5, P8: the same, decided ABORT: nothing becomes visible, a tombstone remains.
#[tokio::test]
async fn prepared_then_killed_then_aborted() {
    let dir = test_dir("crash-abort");
    let data = dir.path().join("store");
    let t = TxnId::new_v7();
    run_then_kill(
        &[
            "prepare",
            data.to_str().expect("utf-8"),
            &t.to_string(),
            "k",
            "v",
        ],
        "prepared",
    );

    let store = reopen(&data);
    assert_eq!(store.in_doubt().await.expect("list").len(), 1);
    assert_eq!(store.abort(t).await.expect("abort"), AckStatus::Applied);
    assert_eq!(
        store.abort(t).await.expect("abort again"),
        AckStatus::AlreadyApplied
    );
    assert_eq!(store.read_committed(b"k").expect("read"), None);
    assert_eq!(store.locked_keys(), 0, "locks released");
    assert!(
        matches!(
            store.txn(&TxnContext::new(t)),
            Err(Error::TxnAborted { .. })
        ),
        "tombstone"
    );
}

/// P7, P8: a crash between the durable commit batch and its acknowledgement leaves a state in
/// which the coordinator's repeated Commit is a no-op.
#[tokio::test]
async fn killed_between_commit_batch_and_ack_then_repeated_commit_is_a_no_op() {
    let dir = test_dir("crash-ack");
    let data = dir.path().join("store");
    let data_s = data.to_str().expect("utf-8");
    let t = TxnId::new_v7();
    run_then_kill(&["prepare", data_s, &t.to_string(), "k", "v"], "prepared");
    run_then_kill(&["commit", data_s, &t.to_string()], "committed");

    let store = reopen(&data);
    assert!(
        store.in_doubt().await.expect("list").is_empty(),
        "the commit batch was durable"
    );
    assert_eq!(
        store.commit(t).await.expect("repeated commit"),
        AckStatus::AlreadyApplied
    );
    assert_eq!(
        store.read_committed(b"k").expect("read"),
        Some((1, b"v".to_vec())),
        "applied exactly once"
    );
}
