//! `ratify-jepsen-node`: the participant process the fault-injection harness runs: the
//! participant SDK's runtime and RocksDB store, serving the `JepsenKv` service and the
//! participant API on one port. Like `ratify-bank`, but with the operations the harness's
//! workloads need. Honors `RATIFY_DIAL_MAP` (the harness's proxies), `RATIFY_FAILPOINTS` and,
//! when built with the `planted-bugs` feature, `RATIFY_PLANTED_BUG`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ratify_jepsen::kv::{DUMP_ENTRIES_MAX, Kv};
use ratify_participant::{Participant, ParticipantConfig, RocksStore, StoreConfig};
use ratify_proto::pb::jepsen::jepsen_kv_server::JepsenKvServer;
use ratify_proto::types::{Endpoint, ParticipantId};

#[derive(Parser)]
#[command(
    name = "ratify-jepsen-node",
    about = "The fault-injection harness's participant service"
)]
struct Args {
    /// This participant's id.
    #[arg(long = "id")]
    participant_id: ParticipantId,
    /// Address to serve gRPC on.
    #[arg(long)]
    listen: SocketAddr,
    /// RocksDB data directory.
    #[arg(long = "data")]
    data_dir: PathBuf,
    /// Coordinator endpoints (any nodes), comma-separated.
    #[arg(long = "coordinator", value_delimiter = ',', required = true)]
    coordinators: Vec<Endpoint>,
    /// Resolve a prepared transaction after this long without a decision.
    #[arg(long, default_value_t = 1_000)]
    resolve_after_ms: u64,
    /// Abort staged (unprepared) work after this long.
    #[arg(long, default_value_t = 10_000)]
    staged_timeout_ms: u64,
    /// Wait up to this long for a conflicting lock; 0 fails fast.
    #[arg(long, default_value_t = 100)]
    lock_wait_ms: u64,
    /// Write the bound address to this file once serving.
    #[arg(long)]
    port_file: Option<PathBuf>,
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
    ratify_proto::planted::announce();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RATIFY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let store_config = StoreConfig {
        staged_timeout: Duration::from_millis(args.staged_timeout_ms),
        scan_rows_max: DUMP_ENTRIES_MAX + 1,
        ..StoreConfig::default()
    };
    let store = RocksStore::open(&args.data_dir, store_config)
        .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let bound = listener.local_addr()?;
    let advertise = Endpoint::new(format!("http://{bound}"))?;
    let mut config =
        ParticipantConfig::new(args.participant_id.clone(), advertise, args.coordinators);
    config.resolve_after = Duration::from_millis(args.resolve_after_ms);
    let participant = Participant::new(Arc::new(store.clone()), config)?;
    let lock_wait = (args.lock_wait_ms > 0).then(|| Duration::from_millis(args.lock_wait_ms));
    let background = participant.spawn_background();
    if let Some(path) = &args.port_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{bound}\n"))
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write port file {}", path.display()))?;
    }
    tracing::info!(participant_id = %args.participant_id, %bound, "jepsen node serving");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(participant.service())
        // Behind the call guard (docs/protocol.md P10): failed calls doom, retries run once.
        .add_service(
            participant.guard(
                JepsenKvServer::new(Kv::new(store, lock_wait))
                    .max_encoding_message_size(ratify_jepsen::kv::DUMP_BYTES_MAX),
            ),
        )
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown_signal(),
        )
        .await?;
    background.stop().await;
    Ok(())
}
