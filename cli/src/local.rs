//! `ratify local`: a local cluster of real coordinator processes, shown working.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ratify_devtools::local_cluster::LocalCluster;

use crate::print;

/// How long each step may take before the run fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Args)]
pub struct LocalArgs {
    /// Number of coordinator nodes (1 to 7; odd numbers make sense).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Directory for the nodes' data and logs [default: a new temporary directory, removed
    /// afterwards unless something failed or --keep].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Do not demonstrate failover (SIGKILL of the leader, election, restart, catch-up).
    #[arg(long)]
    no_faults: bool,
    /// Leave the cluster running until Ctrl-C, and print how to talk to it.
    #[arg(long)]
    keep: bool,
}

pub async fn run(args: LocalArgs) -> Result<()> {
    ensure!((1..=7).contains(&args.nodes), "--nodes must be 1 to 7");
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ratify-local-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bin = std::env::current_exe().context("cannot find the ratify binary")?;

    println!(
        "Starting {} coordinator processes (data and logs in {}) ...",
        args.nodes,
        dir.display()
    );
    let started = Instant::now();
    let mut cluster = LocalCluster::start(&bin, &dir, args.nodes).await?;
    let result = demonstrate(&mut cluster, &args, started).await;
    match &result {
        Ok(()) if args.keep => {
            let endpoints: Vec<String> =
                cluster.endpoints().iter().map(|e| e.to_string()).collect();
            println!();
            println!("The cluster keeps running; Ctrl-C stops it. Try, in another terminal:");
            println!("  ratify cluster status --endpoint {}", endpoints.join(","));
            println!("  ratify txn list --endpoint {}", endpoints.join(","));
            println!(
                "  grpcurl -plaintext {} list",
                endpoints[0].trim_start_matches("http://")
            );
            tokio::signal::ctrl_c().await?;
        }
        Ok(()) => {}
        Err(e) => println!("\nFAILED: {e:#}\nNode logs are in {}", dir.display()),
    }
    cluster.stop_all().await;
    drop(cluster);
    if result.is_ok() && !args.keep && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn show(cluster: &LocalCluster) {
    let mut rows = Vec::new();
    for (id, node) in cluster.nodes() {
        let status = if node.is_running() {
            cluster.status_of(id).await.map_err(|e| e.to_string())
        } else {
            Err("(killed)".to_owned())
        };
        rows.push((id, node.pid(), status));
    }
    print::nodes(&rows);
}

async fn demonstrate(cluster: &mut LocalCluster, args: &LocalArgs, started: Instant) -> Result<()> {
    let status = cluster.wait_for_leader(STEP_TIMEOUT, None).await?;
    let leader = status
        .leader
        .as_ref()
        .map(|l| l.node_id)
        .context("no leader")?;
    println!(
        "Cluster formed: node {leader} leads in term {} ({} ms after start).",
        status.term,
        started.elapsed().as_millis()
    );
    show(cluster).await;
    if args.no_faults || args.nodes < 3 {
        println!("\nOK: {} nodes agree on leader {leader}.", args.nodes);
        return Ok(());
    }

    let pid = cluster.node(leader)?.pid().unwrap_or(0);
    println!("\nSIGKILL the leader, node {leader} (pid {pid}) ...");
    cluster.kill(leader).await?;
    let killed_at = Instant::now();
    let after = cluster.wait_for_leader(STEP_TIMEOUT, Some(leader)).await?;
    let new_leader = after
        .leader
        .as_ref()
        .map(|l| l.node_id)
        .context("no leader")?;
    if after.term <= status.term {
        bail!(
            "the new leader's term {} is not above the old one's {}",
            after.term,
            status.term
        );
    }
    println!(
        "Node {new_leader} took over in term {} after {} ms; the remaining majority keeps serving.",
        after.term,
        killed_at.elapsed().as_millis()
    );
    show(cluster).await;

    println!("\nRestarting node {leader} on its own data directory ...");
    cluster.restart(leader).await?;
    let caught_up = cluster
        .wait_for_applied(leader, after.last_applied_index, STEP_TIMEOUT)
        .await?;
    let rejoined_leader = caught_up.leader.as_ref().map(|l| l.node_id);
    ensure!(
        rejoined_leader.is_some(),
        "node {leader} restarted but knows no leader"
    );
    println!(
        "Node {leader} rejoined as a follower of node {} and applied the log up to index {}.",
        rejoined_leader.unwrap_or(0),
        caught_up.last_applied_index
    );
    let settled = cluster.wait_for_leader(STEP_TIMEOUT, None).await?;
    show(cluster).await;
    println!(
        "\nOK: {} nodes; survived the loss of the leader; term {} leader node {}.",
        args.nodes,
        settled.term,
        settled.leader.as_ref().map_or(0, |l| l.node_id)
    );
    Ok(())
}
