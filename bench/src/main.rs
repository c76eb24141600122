//! `ratify-bench`: end-to-end measurements on real local processes.
//!
//! `ratify-bench latency [--txns N] [--concurrency C]`: starts 3 coordinators and 2 bank
//! branches on loopback (fsync on, production defaults), opens accounts, then runs N transfers
//! (withdraw at one branch, deposit at the other, commit) with C in flight, and prints the
//! commit latency percentiles and the throughput. The full comparison against etcd and
//! PostgreSQL is issue 7.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use ratify_proto::types::Outcome;
use ratify_tests::deployment::Deployment;

#[derive(Parser)]
#[command(name = "ratify-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Two-participant commit latency and throughput on a local deployment.
    Latency {
        /// Transfers to run (after 50 of warm-up).
        #[arg(long, default_value_t = 500)]
        txns: usize,
        /// Transfers in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
    },
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Latency { txns, concurrency } => latency(txns, concurrency.max(1)).await,
    }
}

async fn latency(txns: usize, concurrency: usize) -> Result<()> {
    let d = Deployment::start("bench", &["eu", "us"], vec![], vec![]).await;
    let accounts = concurrency.max(1);
    for i in 0..accounts {
        d.open_account("eu", &format!("a{i}"), 1_000_000_000).await;
        d.open_account("us", &format!("b{i}"), 0).await;
    }
    let run = |n: usize| {
        let d = &d;
        async move {
            let mut all = Vec::with_capacity(n);
            let mut next = 0usize;
            while next < n {
                let wave = (n - next).min(concurrency);
                let futures = (0..wave).map(|w| {
                    let lane = w % accounts;
                    async move {
                        let txn = d.client.begin();
                        let staged = d
                            .stage_transfer(
                                &txn,
                                ("eu", &format!("a{lane}")),
                                ("us", &format!("b{lane}")),
                                1,
                            )
                            .await;
                        if !staged.is_empty() {
                            return Err(anyhow::anyhow!("staging failed: {staged:?}"));
                        }
                        let start = Instant::now();
                        let outcome = txn.commit().await?;
                        let took = start.elapsed();
                        if outcome != Outcome::Committed {
                            return Err(anyhow::anyhow!("not committed: {outcome:?}"));
                        }
                        Ok(took)
                    }
                });
                for r in futures_util::future::join_all(futures).await {
                    all.push(r?);
                }
                next += wave;
            }
            Ok::<_, anyhow::Error>(all)
        }
    };
    run(50).await?;
    let started = Instant::now();
    let mut lat = run(txns).await?;
    let wall = started.elapsed();
    lat.sort();
    if lat.is_empty() {
        bail!("no transactions ran");
    }
    println!(
        "2-participant commit latency, concurrency {concurrency}, {} transfers: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} transfers/s (business calls included)",
        lat.len(),
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.90).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
        lat.len() as f64 / wall.as_secs_f64()
    );
    d.stop().await;
    Ok(())
}
