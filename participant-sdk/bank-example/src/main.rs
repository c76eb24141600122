//! `ratify-bank`: one bank branch, a participant process. Serves the `Bank` API and the
//! participant API on one port, registers with the coordinator cluster, resolves in-doubt
//! transactions after a crash. SIGTERM or Ctrl-C stops it gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ratify_bank_example::Branch;
use ratify_participant::{LockPolicy, Participant, ParticipantConfig, RocksStore, StoreConfig};
use ratify_proto::pb::bank::bank_server::BankServer;
use ratify_proto::types::{Endpoint, ParticipantId};

#[derive(Parser)]
#[command(
    name = "ratify-bank",
    about = "A bank branch: an example Ratify participant service"
)]
struct Args {
    /// This branch's participant id, e.g. accounts-eu.
    #[arg(long = "id", env = "RATIFY_PARTICIPANT_ID")]
    participant_id: ParticipantId,
    /// Address to serve gRPC on.
    #[arg(long, env = "RATIFY_LISTEN", default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Endpoint the coordinator uses to reach this branch [default: http://LISTEN as bound].
    #[arg(long, env = "RATIFY_ADVERTISE")]
    advertise: Option<Endpoint>,
    /// RocksDB data directory.
    #[arg(long = "data", env = "RATIFY_DATA")]
    data_dir: PathBuf,
    /// Coordinator endpoints (any nodes), comma-separated.
    #[arg(
        long = "coordinator",
        env = "RATIFY_COORDINATORS",
        value_delimiter = ',',
        required = true
    )]
    coordinators: Vec<Endpoint>,
    /// Resolve a prepared transaction with the coordinator after this long without a decision.
    #[arg(long, default_value_t = 3_000)]
    resolve_after_ms: u64,
    /// Abort staged (unprepared) work after this long.
    #[arg(long, default_value_t = 30_000)]
    staged_timeout_ms: u64,
    /// Wait up to this long for a conflicting lock; 0 fails fast.
    #[arg(long, default_value_t = 200)]
    lock_wait_ms: u64,
    /// How lock waits avoid deadlock: `wound-wait` (an older transaction aborts younger
    /// unprepared holders, younger ones wait) or `wait-die` (older ones wait, younger ones get
    /// the conflict at once).
    #[arg(long, value_enum, default_value_t = Policy::WoundWait)]
    lock_policy: Policy,
    /// Write the bound address to this file once serving.
    #[arg(long, env = "RATIFY_PORT_FILE")]
    port_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Policy {
    WoundWait,
    WaitDie,
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler succeeds on Unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    ratify_proto::dial::init_from_env().map_err(anyhow::Error::msg)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("RATIFY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let store_config = StoreConfig {
        staged_timeout: Duration::from_millis(args.staged_timeout_ms),
        lock_policy: match args.lock_policy {
            Policy::WoundWait => LockPolicy::WoundWait,
            Policy::WaitDie => LockPolicy::WaitDie,
        },
        ..StoreConfig::default()
    };
    let store = RocksStore::open(&args.data_dir, store_config)
        .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let advertise = match args.advertise {
        Some(a) => a,
        None => Endpoint::new(format!("http://{bound}"))?,
    };
    let mut config =
        ParticipantConfig::new(args.participant_id.clone(), advertise, args.coordinators);
    config.resolve_after = Duration::from_millis(args.resolve_after_ms);
    let participant = Participant::new(Arc::new(store.clone()), config)?;
    let lock_wait = (args.lock_wait_ms > 0).then(|| Duration::from_millis(args.lock_wait_ms));

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<BankServer<Branch>>().await;
    let background = participant.spawn_background();
    if let Some(path) = &args.port_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{bound}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write port file {}", path.display()))?;
    }
    tracing::info!(participant_id = %args.participant_id, %bound, "bank branch serving");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(participant.service())
        // Behind the call guard: a failed call dooms its transaction here, a retried call runs
        // once (docs/protocol.md P10).
        .add_service(participant.guard(BankServer::new(Branch::new(store, lock_wait))))
        .serve_with_incoming_shutdown(
            // tonic's incoming stream sets TCP_NODELAY on accepted connections.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown_signal(),
        )
        .await?;
    background.stop().await;
    tracing::info!("bank branch stopped");
    Ok(())
}
