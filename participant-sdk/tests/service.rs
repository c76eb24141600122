//! The participant gRPC service with malformed and hostile input, over a real loopback
//! connection (rule W6: refused whole with INVALID_ARGUMENT naming the field; nothing applied;
//! no panic).

use std::sync::Arc;

use ratify_participant::{
    Participant, ParticipantConfig, Resource, RocksStore, StoreConfig, TxnContext,
};
use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::pb::participant as pbp;
use ratify_proto::pb::participant::participant_client::ParticipantClient;
use ratify_proto::types::{Endpoint, ParticipantId, TxnId};
use tonic::transport::Channel;

struct Served {
    client: ParticipantClient<Channel>,
    store: Arc<RocksStore>,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(RocksStore::open(dir.path(), StoreConfig::default()).expect("open"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let mut config = ParticipantConfig::new(
        ParticipantId::new("p1").expect("valid"),
        Endpoint::new(format!("http://{addr}")).expect("valid"),
        // Not contacted in these tests: registration runs in run_background, not started here.
        vec![Endpoint::new("http://127.0.0.1:1").expect("valid")],
    );
    config.batch_txns_max = 8;
    let participant = Participant::new(store.clone(), config).expect("participant");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(participant.service())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let client = ParticipantClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Served {
        client,
        store,
        _dir: dir,
        _stop: stop,
    }
}

fn detail(status: &tonic::Status) -> ErrorDetail {
    ErrorDetail::from_status(status).expect("every Ratify error carries an ErrorDetail")
}

#[tokio::test]
async fn malformed_txn_ids_are_refused_whole() {
    let mut s = serve().await;
    let good = TxnId::new_v7();
    s.store
        .txn(&TxnContext::new(good))
        .expect("begin")
        .put(b"k", b"v")
        .await
        .expect("stage");
    let status = s
        .client
        .prepare(pbp::PrepareRequest {
            call_counts: Default::default(),
            txn_ids: vec![good.to_string(), "not-a-uuid".into()],
            coordinator_node_id: 1,
        })
        .await
        .expect_err("malformed id");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let d = detail(&status);
    assert_eq!(d.code, ErrorCode::MalformedTxnId);
    assert_eq!(d.field.as_deref(), Some("txn_ids[1]"));
    // Nothing was applied: the good transaction is still staged (not prepared).
    assert!(s.store.in_doubt().await.expect("in doubt").is_empty());
}

#[tokio::test]
async fn oversized_batches_are_refused() {
    let mut s = serve().await;
    let ids: Vec<String> = (0..9).map(|_| TxnId::new_v7().to_string()).collect();
    let status = s
        .client
        .commit(pbp::CommitRequest {
            txn_ids: ids,
            coordinator_node_id: 1,
        })
        .await
        .expect_err("too many");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let d = detail(&status);
    assert_eq!(d.code, ErrorCode::LimitExceeded);
    assert_eq!(d.limit.as_deref(), Some("batch_txns_max=8"));
}

#[tokio::test]
async fn unknown_transactions_get_clear_answers() {
    let mut s = serve().await;
    let t = TxnId::new_v7();
    let commit = s
        .client
        .commit(pbp::CommitRequest {
            txn_ids: vec![t.to_string()],
            coordinator_node_id: 1,
        })
        .await
        .expect("a batch answer")
        .into_inner();
    assert_eq!(commit.results[0].status, pbp::AckStatus::NotPrepared as i32);
    let prepare = s
        .client
        .prepare(pbp::PrepareRequest {
            call_counts: Default::default(),
            txn_ids: vec![t.to_string()],
            coordinator_node_id: 1,
        })
        .await
        .expect("a batch answer")
        .into_inner();
    assert_eq!(
        prepare.results[0].vote,
        ratify_proto::pb::common::Vote::No as i32
    );
    assert_eq!(
        prepare.results[0].no_reason,
        ratify_proto::pb::common::NoReason::UnknownTxn as i32
    );
    let empty = s
        .client
        .abort(pbp::AbortRequest {
            txn_ids: vec![],
            coordinator_node_id: 1,
        })
        .await
        .expect("an empty batch is fine")
        .into_inner();
    assert!(empty.results.is_empty());
}

#[tokio::test]
async fn garbage_ids_do_not_panic_the_server() {
    let s = serve().await;
    let mut client = s.client.clone();
    // Control characters and a non-ASCII id, from a coordinator id no cluster uses.
    let status = client
        .prepare(pbp::PrepareRequest {
            call_counts: Default::default(),
            txn_ids: vec!["\u{0}\u{1}garbage\u{ffff}".into()],
            coordinator_node_id: u64::MAX,
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    // The server is still up.
    client
        .abort(pbp::AbortRequest {
            txn_ids: vec![],
            coordinator_node_id: 1,
        })
        .await
        .expect("still serving");
}

/// P2, P7: a Prepare or Commit whose caller gives up (its deadline passes, so the server drops
/// the handler) still runs to the end, so the retry finds the transaction prepared (then
/// committed), not stuck half-way. Found by the fault-injection harness: a participant
/// panicked on a retried Prepare after its first one was cancelled between the in-memory step
/// and the fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_prepare_and_commit_complete() {
    let mut s = serve().await;
    for i in 0..100u64 {
        let id = TxnId::new_v7();
        let key = format!("k{i}");
        let txn = s.store.txn(&TxnContext::new(id)).expect("begin");
        txn.put(key.as_bytes(), b"v").await.expect("stage");
        drop(txn);
        let ids = vec![id.to_string()];
        // Deadlines from 0 to ~1 ms: the caller gives up at some point of the work.
        let mut req = tonic::Request::new(pbp::PrepareRequest {
            call_counts: Default::default(),
            coordinator_node_id: 1,
            txn_ids: ids.clone(),
        });
        req.set_timeout(std::time::Duration::from_micros(i * 10));
        let _ = s.client.prepare(req).await;
        let votes = s
            .client
            .prepare(pbp::PrepareRequest {
                call_counts: Default::default(),
                coordinator_node_id: 1,
                txn_ids: ids.clone(),
            })
            .await
            .expect("retried prepare")
            .into_inner();
        assert_eq!(
            votes.results[0].vote,
            ratify_proto::pb::common::Vote::Yes as i32,
            "round {i}: {votes:?}"
        );
        let mut req = tonic::Request::new(pbp::CommitRequest {
            coordinator_node_id: 1,
            txn_ids: ids.clone(),
        });
        req.set_timeout(std::time::Duration::from_micros(i * 10));
        let _ = s.client.commit(req).await;
        let acks = s
            .client
            .commit(pbp::CommitRequest {
                coordinator_node_id: 1,
                txn_ids: ids,
            })
            .await
            .expect("retried commit")
            .into_inner();
        assert!(
            acks.results[0].status == pbp::AckStatus::Applied as i32
                || acks.results[0].status == pbp::AckStatus::AlreadyApplied as i32,
            "round {i}: {acks:?}"
        );
        assert_eq!(
            s.store
                .read_committed(key.as_bytes())
                .expect("read")
                .map(|(_, v)| v),
            Some(b"v".to_vec()),
            "round {i}"
        );
    }
}
