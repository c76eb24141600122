//! Coordinator cluster tests with real `ratify coordinator` processes on loopback.

use std::time::Duration;

use ratify_devtools::local_cluster::{LocalCluster, ServiceProcess};
use ratify_devtools::{dump_logs, ratify_bin, test_dir, wait};
use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::admin_client::AdminClient as PbAdminClient;
use ratify_proto::types::admin::{
    ForceResolveRequest, ForceResolveResponse, ListTxnsRequest, ListTxnsResponse,
};
use ratify_proto::types::{Decision, FinalDecision, TxnId, TxnPhase};

const STEP: Duration = Duration::from_secs(30);

async fn force(cluster: &LocalCluster, txn_id: TxnId, decision: Decision) -> ForceResolveResponse {
    let req: pbco::ForceResolveRequest = ForceResolveRequest {
        txn_id,
        decision,
        participants: vec![],
        reason: "test".into(),
    }
    .into();
    let reply = cluster
        .admin()
        .call_leader(|mut c| {
            let req = req.clone();
            async move { c.force_resolve(req).await }
        })
        .await
        .expect("the leader records the decision");
    ForceResolveResponse::try_from(reply).expect("well-formed reply")
}

/// One node's admin API (no leader following).
async fn admin_of(node: &ServiceProcess) -> PbAdminClient<tonic::transport::Channel> {
    let endpoint = node
        .endpoint()
        .cloned()
        .expect("running nodes have endpoints");
    ratify_coordinator::admin_client::connect(&endpoint)
        .await
        .expect("connect")
}

/// Every running node's own view of `txn_id` (decided locally, no forwarding).
async fn decisions_on_each_node(
    cluster: &LocalCluster,
    txn_id: TxnId,
) -> Vec<(u64, Option<FinalDecision>)> {
    let mut out = Vec::new();
    for (node_id, node) in cluster.nodes().filter(|(_, n)| n.is_running()) {
        let mut client = admin_of(node).await;
        let req: pbco::ListTxnsRequest = ListTxnsRequest {
            phase: Some(TxnPhase::Completed),
            limit: 1000,
            page_token: String::new(),
            // What this node has applied (the test checks every node).
            local: true,
        }
        .into();
        let list =
            ListTxnsResponse::try_from(client.list_txns(req).await.expect("list").into_inner())
                .expect("well-formed");
        let d = list
            .txns
            .into_iter()
            .find(|t| t.txn_id == txn_id)
            .map(|t| t.decision);
        out.push((node_id, d));
    }
    out
}

/// Guarantee (docs/protocol.md rules R1, R2): a 3-node cluster elects a leader,
/// keeps serving after its leader is SIGKILLed (a new leader in a higher term), and the killed
/// node, restarted on its own RocksDB directory, rejoins and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_elects_a_new_leader_and_the_old_one_rejoins() {
    let dir = test_dir("failover");
    let mut cluster = LocalCluster::start(&ratify_bin(), dir.path(), 3)
        .await
        .expect("start");
    let result = async {
        let first = cluster.wait_for_leader(STEP, None).await?;
        let old = first.leader.as_ref().expect("leader").node_id;
        cluster.kill(old).await?;
        let second = cluster.wait_for_leader(STEP, Some(old)).await?;
        assert!(second.term > first.term, "a new election happened");
        assert_ne!(second.leader.as_ref().expect("leader").node_id, old);
        cluster.restart(old).await?;
        let caught_up = cluster
            .wait_for_applied(old, second.last_applied_index, STEP)
            .await?;
        assert!(caught_up.last_log_index >= second.last_applied_index);
        let settled = cluster.wait_for_leader(STEP, None).await?;
        assert!(settled.term >= second.term);
        Ok::<_, ratify_devtools::local_cluster::LocalError>(())
    }
    .await;
    if let Err(e) = result {
        dump_logs(dir.path());
        panic!("{e}");
    }
    cluster.stop_all().await;
}

/// Guarantee (rules C4, R1, R3): a decision recorded through Raft is first-wins — a later,
/// different decision for the same transaction changes nothing — it is applied identically on
/// every node, and it survives the SIGKILL of the leader that recorded it and a restart of the
/// whole cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_first_wins_replicated_and_survive_failover_and_full_restart() {
    let dir = test_dir("decisions");
    let mut cluster = LocalCluster::start(&ratify_bin(), dir.path(), 3)
        .await
        .expect("start");
    let result = async {
        let status = cluster.wait_for_leader(STEP, None).await?;
        let leader = status.leader.as_ref().expect("leader").node_id;
        let txn = TxnId::new_v7();

        let first = force(&cluster, txn, Decision::Abort).await;
        assert_eq!((first.decision, first.changed), (Decision::Abort, true));
        let second = force(&cluster, txn, Decision::Commit).await;
        assert_eq!(
            (second.decision, second.changed),
            (Decision::Abort, false),
            "first-wins: the ABORT stands"
        );

        // Applied on every node (wait for followers to apply the entry).
        let applied = cluster.status_of(leader).await?.last_applied_index;
        for n in 1..=3 {
            cluster.wait_for_applied(n, applied, STEP).await?;
        }
        for (node, d) in decisions_on_each_node(&cluster, txn).await {
            assert!(
                matches!(d, Some(FinalDecision::Abort(_))),
                "node {node}: {d:?}"
            );
        }
        // C9: a ListTxns that does not ask for `local` is a linearizable read: the leader
        // answers, a follower refuses with NOT_LEADER naming the leader (a follower's applied
        // state may lag).
        for (node_id, node) in cluster.nodes() {
            let mut client = admin_of(node).await;
            let req: pbco::ListTxnsRequest = ListTxnsRequest {
                phase: None,
                limit: 10,
                page_token: String::new(),
                local: false,
            }
            .into();
            let reply = client.list_txns(req).await;
            if node_id == leader {
                let list =
                    ListTxnsResponse::try_from(reply.expect("the leader lists").into_inner())
                        .expect("well-formed");
                assert!(list.txns.iter().any(|t| t.txn_id == txn));
            } else {
                let status = reply.expect_err("a follower refuses a linearizable list");
                let detail = ErrorDetail::from_status(&status).expect("error details");
                assert_eq!(
                    detail.code,
                    ErrorCode::NotLeader,
                    "node {node_id}: {status:?}"
                );
                assert_eq!(detail.leader_id, Some(leader));
            }
        }

        // Kill the leader that recorded it: the new leader still has it, and still refuses a
        // different one.
        cluster.kill(leader).await?;
        cluster.wait_for_leader(STEP, Some(leader)).await?;
        let third = force(&cluster, txn, Decision::Commit).await;
        assert_eq!((third.decision, third.changed), (Decision::Abort, false));

        // Restart every node (SIGTERM all, start all on the same directories).
        cluster.restart(leader).await?;
        cluster.stop_all().await;
        for n in 1..=3 {
            cluster.restart(n).await?;
        }
        cluster.wait_for_leader(STEP, None).await?;
        for (node, d) in decisions_on_each_node(&cluster, txn).await {
            assert!(
                matches!(d, Some(FinalDecision::Abort(_))),
                "after restart, node {node}: {d:?}"
            );
        }
        let fourth = force(&cluster, txn, Decision::Commit).await;
        assert_eq!((fourth.decision, fourth.changed), (Decision::Abort, false));
        Ok::<_, ratify_devtools::local_cluster::LocalError>(())
    }
    .await;
    if let Err(e) = result {
        dump_logs(dir.path());
        panic!("{e}");
    }
    cluster.stop_all().await;
}

/// R4: a node that was down while the others snapshotted and purged their logs catches up by
/// snapshot (InstallSnapshot), and has every decision made while it was away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_snapshot() {
    let dir = test_dir("snapshot");
    let args = ["--snapshot-every", "10", "--log-keep", "2"]
        .into_iter()
        .map(Into::into)
        .collect();
    let mut cluster = LocalCluster::start_with(&ratify_bin(), dir.path(), 3, args, vec![])
        .await
        .expect("start");
    let result = async {
        let status = cluster.wait_for_leader(STEP, None).await?;
        let leader = status.leader.as_ref().expect("leader").node_id;
        let lagging = (1..=3).find(|n| *n != leader).expect("a follower");
        let lagging_last = cluster.status_of(lagging).await?.last_log_index;
        cluster.stop(lagging).await?;
        let mut txns = Vec::new();
        for _ in 0..40 {
            let t = TxnId::new_v7();
            force(&cluster, t, Decision::Abort).await;
            txns.push(t);
        }
        // Snapshots and purges run in the background: wait until the leader no longer has
        // the entries the lagging node needs, so only a snapshot can bring it up to date.
        let leader_status = wait::until(
            &format!("the leader to purge past index {lagging_last}"),
            STEP,
            async || {
                let s = cluster.status_of(leader).await.ok()?;
                (s.purged_index > lagging_last).then_some(s)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            leader_status.snapshot_index > 0,
            "the leader snapshotted: {leader_status:?}"
        );
        cluster.restart(lagging).await?;
        let caught_up = cluster
            .wait_for_applied(lagging, leader_status.last_applied_index, STEP)
            .await?;
        assert!(
            caught_up.snapshot_index > 0,
            "the lagging node installed a snapshot: {caught_up:?}"
        );
        for (node, d) in decisions_on_each_node(&cluster, txns[0]).await {
            assert!(
                matches!(d, Some(FinalDecision::Abort(_))),
                "node {node}: {d:?}"
            );
        }
        Ok::<_, ratify_devtools::local_cluster::LocalError>(())
    }
    .await;
    if let Err(e) = result {
        dump_logs(dir.path());
        panic!("{e}");
    }
    cluster.stop_all().await;
}

/// DESIGN §7 observability: a node started with `--metrics-listen` serves Prometheus text on
/// GET /metrics, and it reflects the cluster (leadership, a recorded outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_serve_prometheus_metrics() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = test_dir("metrics");
    let args = ["--metrics-listen", "127.0.0.1:0"]
        .into_iter()
        .map(Into::into)
        .collect();
    let mut cluster = LocalCluster::start_with(&ratify_bin(), dir.path(), 3, args, vec![])
        .await
        .expect("start");
    let status = cluster.wait_for_leader(STEP, None).await.expect("leader");
    let leader = status.leader.as_ref().expect("leader").node_id;
    force(&cluster, TxnId::new_v7(), Decision::Commit).await;
    let addr = cluster
        .node(leader)
        .expect("node")
        .port_file_entry("metrics")
        .expect("the port file names the metrics address");
    let scrape = || async {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: ratify\r\n\r\n")
            .await
            .expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).await.expect("read");
        text
    };
    wait::until("metrics to show the leader's state", STEP, async || {
        let text = scrape().await;
        assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
        (text.contains("\nratify_raft_is_leader 1\n")
            && text.contains("\nratify_outcomes_retained 1\n"))
        .then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    cluster.stop_all().await;
}
