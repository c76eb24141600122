//! `ratify`: run a coordinator node, administer a cluster, or start a local one.

mod config;
mod local;
mod print;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ratify_coordinator::admin_client::AdminClient;
use ratify_coordinator::config::{NodeConfig, Peer};
use ratify_coordinator::node::Node;
use ratify_proto::convert::NodeIdRequest;
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::types::admin::{
    AddLearnerRequest, ClusterStatus, ForceResolveRequest, InitClusterRequest, ListTxnsRequest,
    ListTxnsResponse, Member, MemberRole,
};
use ratify_proto::types::{Decision, Endpoint, ParticipantId, TxnId, TxnPhase};

#[derive(Parser)]
#[command(
    name = "ratify",
    version,
    about = "Ratify: a Raft-replicated two-phase-commit coordinator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a coordinator node.
    Coordinator(CoordinatorArgs),
    /// Inspect and change a cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Inspect and resolve transactions.
    Txn {
        #[command(subcommand)]
        command: TxnCommand,
    },
    /// Start a local cluster of coordinator processes on loopback, show it working (and
    /// surviving the loss of its leader), then stop it (or keep it with --keep).
    Local(local::LocalArgs),
    /// Ratify's main job on an embedded default: a local cluster and two example bank
    /// branches, transfers under faults, and a check that every transfer was atomic.
    Demo(ratify_devtools::demo::DemoArgs),
}

#[derive(Args)]
struct CoordinatorArgs {
    /// A TOML file with any of these settings (keys as the flags, with `_` for `-`: id,
    /// listen, advertise, data, peers = ["1=http://..."], init, cluster_name, snapshot_every,
    /// log_keep, port_file). Flags and RATIFY_* variables override it.
    #[arg(long, env = "RATIFY_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id: non-zero, unique, never reused.
    #[arg(long = "id", env = "RATIFY_NODE_ID")]
    node_id: Option<u64>,
    /// Address to serve gRPC on (all services share it).
    #[arg(long, env = "RATIFY_LISTEN", default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// Endpoint peers and clients use to reach this node [default: http://LISTEN].
    #[arg(long, env = "RATIFY_ADVERTISE")]
    advertise: Option<Endpoint>,
    /// RocksDB data directory.
    #[arg(long = "data", env = "RATIFY_DATA")]
    data_dir: Option<PathBuf>,
    /// Initial members, ID=ENDPOINT, comma-separated (this node included); used with --init.
    #[arg(long, env = "RATIFY_PEERS", value_delimiter = ',')]
    peers: Vec<Peer>,
    /// Initialize a new cluster from --peers if this node has never been in one.
    #[arg(long, env = "RATIFY_INIT")]
    init: bool,
    /// A name for the cluster.
    #[arg(long, env = "RATIFY_CLUSTER_NAME", default_value = "ratify")]
    cluster_name: String,
    /// Write the bound address to this file once listening (for scripts and --listen :0).
    #[arg(long, env = "RATIFY_PORT_FILE")]
    port_file: Option<PathBuf>,
    /// Build a snapshot every this many applied log entries.
    #[arg(long, env = "RATIFY_SNAPSHOT_EVERY", default_value_t = ratify_coordinator::limits::SNAPSHOT_LOGS_SINCE_LAST)]
    snapshot_every: u64,
    /// Keep this many log entries behind a snapshot before purging (lagging followers within
    /// this distance catch up from the log, the others by snapshot).
    #[arg(long, env = "RATIFY_LOG_KEEP", default_value_t = ratify_coordinator::limits::LOG_ENTRIES_KEPT_AFTER_SNAPSHOT)]
    log_keep: u64,
    /// Serve Prometheus metrics on this address (GET /metrics).
    #[arg(long, env = "RATIFY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

#[derive(Args, Clone)]
struct EndpointArgs {
    /// Any node(s) of the cluster; the CLI finds the leader.
    #[arg(
        long = "endpoint",
        env = "RATIFY_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:7001"
    )]
    endpoints: Vec<Endpoint>,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Show the cluster: leader, term, members, log positions (as the first endpoint sees it).
    Status(EndpointArgs),
    /// List the registered participants.
    Participants(EndpointArgs),
    /// Initialize a new cluster (once) with the given voters.
    Init {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// A voter, ID=ENDPOINT; repeat or comma-separate.
        #[arg(long = "member", value_delimiter = ',', required = true)]
        members: Vec<Peer>,
    },
    /// Add a node as a learner (it catches up, but does not vote).
    AddLearner {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The new node's id.
        #[arg(long = "id")]
        node_id: u64,
        /// The new node's endpoint.
        #[arg(long = "node-endpoint")]
        node_endpoint: Endpoint,
    },
    /// Make a learner a voter.
    Promote {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The learner's id.
        #[arg(long = "id")]
        node_id: u64,
    },
    /// Remove a node from the cluster.
    Remove {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The node's id.
        #[arg(long = "id")]
        node_id: u64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PhaseArg {
    /// Decided, phase 2 not yet acknowledged by every participant.
    Decided,
    /// Decided and acknowledged.
    Completed,
}

#[derive(Subcommand)]
enum TxnCommand {
    /// A transaction's outcome and phase (linearizable: asks the leader).
    Status {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The transaction id.
        txn_id: TxnId,
    },
    /// List decided and completed transactions, oldest first.
    List {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// Only this phase.
        #[arg(long)]
        phase: Option<PhaseArg>,
        /// At most this many (up to 1,000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Record a decision by hand for a stuck transaction (an existing decision stands).
    Resolve {
        #[command(flatten)]
        endpoint: EndpointArgs,
        /// The transaction id.
        txn_id: TxnId,
        /// Decide COMMIT (only if you know every participant voted YES).
        #[arg(long, conflicts_with = "abort", required_unless_present = "abort")]
        commit: bool,
        /// Decide ABORT.
        #[arg(long)]
        abort: bool,
        /// Why, for the record.
        #[arg(long, default_value = "")]
        reason: String,
        /// Participants to tell, if the coordinator has no record of the transaction.
        #[arg(long = "participant", value_delimiter = ',')]
        participants: Vec<ParticipantId>,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RATIFY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// SIGTERM or Ctrl-C.
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
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches)?;
    init_tracing();
    ratify_proto::dial::init_from_env().map_err(anyhow::Error::msg)?;
    ratify_proto::planted::announce();
    match cli.command {
        Command::Coordinator(args) => {
            let sub = matches
                .subcommand_matches("coordinator")
                .expect("clap parsed the coordinator subcommand");
            coordinator(config::merge(args, sub)?).await
        }
        Command::Cluster { command } => cluster(command).await,
        Command::Txn { command } => txn(command).await,
        Command::Local(args) => local::run(args).await,
        Command::Demo(args) => ratify_devtools::demo::run(args).await,
    }
}

async fn coordinator((config, port_file): (NodeConfig, Option<PathBuf>)) -> Result<()> {
    config.validate()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let bound = listener.local_addr()?;
    let node = Node::start(config, listener).await?;
    if let Some(path) = port_file {
        // Written atomically, after the server is up.
        let tmp = path.with_extension("tmp");
        // First line: the gRPC address; then `metrics ADDR` when metrics are served.
        let mut text = format!("{bound}\n");
        if let Some(m) = node.metrics_addr {
            text.push_str(&format!("metrics {m}\n"));
        }
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .with_context(|| format!("cannot write port file {}", path.display()))?;
    }
    node.run_until(shutdown_signal()).await?;
    Ok(())
}

async fn cluster_status(endpoint: &Endpoint) -> Result<ClusterStatus> {
    let mut client = ratify_coordinator::admin_client::connect(endpoint).await?;
    let reply = client.cluster_status(pbco::ClusterStatusRequest {}).await?;
    Ok(ClusterStatus::try_from(reply.into_inner())?)
}

async fn cluster(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Status(e) => {
            let Some(first) = e.endpoints.first() else {
                bail!("give at least one --endpoint");
            };
            let status = cluster_status(first).await?;
            print::cluster_status(&status);
        }
        ClusterCommand::Participants(e) => {
            let reply = AdminClient::new(e.endpoints)
                .call_leader(|mut c| async move {
                    c.list_participants(pbco::ListParticipantsRequest {}).await
                })
                .await?;
            print::participants(&ratify_proto::convert::participant_infos_from_wire(reply)?);
        }
        ClusterCommand::Init { endpoint, members } => {
            let req: pbco::InitClusterRequest = InitClusterRequest {
                members: members
                    .into_iter()
                    .map(|p| Member {
                        node_id: p.node_id,
                        endpoint: p.endpoint,
                        role: MemberRole::Voter,
                    })
                    .collect(),
            }
            .into();
            let reply = AdminClient::new(endpoint.endpoints)
                .call_leader(|mut c| {
                    let req = req.clone();
                    async move { c.init_cluster(req).await }
                })
                .await?;
            print::cluster_status(&ClusterStatus::try_from(reply)?);
        }
        ClusterCommand::AddLearner {
            endpoint,
            node_id,
            node_endpoint,
        } => {
            let req: pbco::AddLearnerRequest = AddLearnerRequest {
                node_id,
                endpoint: node_endpoint,
            }
            .into();
            let reply = AdminClient::new(endpoint.endpoints)
                .call_leader(|mut c| {
                    let req = req.clone();
                    async move { c.add_learner(req).await }
                })
                .await?;
            print::cluster_status(&ClusterStatus::try_from(reply)?);
        }
        ClusterCommand::Promote { endpoint, node_id } => {
            let req: pbco::PromoteRequest = NodeIdRequest(node_id).into();
            let reply = AdminClient::new(endpoint.endpoints)
                .call_leader(|mut c| async move { c.promote(req).await })
                .await?;
            print::cluster_status(&ClusterStatus::try_from(reply)?);
        }
        ClusterCommand::Remove { endpoint, node_id } => {
            let req: pbco::RemoveNodeRequest = NodeIdRequest(node_id).into();
            let reply = AdminClient::new(endpoint.endpoints)
                .call_leader(|mut c| async move { c.remove_node(req).await })
                .await?;
            print::cluster_status(&ClusterStatus::try_from(reply)?);
        }
    }
    Ok(())
}

async fn txn(command: TxnCommand) -> Result<()> {
    match command {
        TxnCommand::Status { endpoint, txn_id } => {
            let req: pbco::StatusRequest =
                ratify_proto::types::coordinator::StatusRequest { txn_id }.into();
            let follower =
                ratify_proto::leader::LeaderFollower::new(endpoint.endpoints, Default::default())
                    .map_err(anyhow::Error::msg)?;
            let deadline =
                tokio::time::Instant::now() + ratify_coordinator::admin_client::ADMIN_CALL_DEADLINE;
            let reply = follower
                .call(deadline, |ch| {
                    let req = req.clone();
                    async move {
                        ratify_proto::pb::coordinator::coordinator_client::CoordinatorClient::new(
                            ch,
                        )
                        .status(req)
                        .await
                    }
                })
                .await?;
            print::txn_status(
                txn_id,
                &ratify_proto::types::coordinator::StatusResponse::try_from(reply)?,
            );
        }
        TxnCommand::List {
            endpoint,
            phase,
            limit,
        } => {
            let req: pbco::ListTxnsRequest = ListTxnsRequest {
                phase: phase.map(|p| match p {
                    PhaseArg::Decided => TxnPhase::Decided,
                    PhaseArg::Completed => TxnPhase::Completed,
                }),
                limit,
                page_token: String::new(),
                local: false,
            }
            .into();
            let reply = AdminClient::new(endpoint.endpoints)
                .call_leader(|mut c| {
                    let req = req.clone();
                    async move { c.list_txns(req).await }
                })
                .await?;
            print::txns(&ListTxnsResponse::try_from(reply)?);
        }
        TxnCommand::Resolve {
            endpoint,
            txn_id,
            commit,
            abort: _,
            reason,
            participants,
        } => {
            let decision = if commit {
                Decision::Commit
            } else {
                Decision::Abort
            };
            let req: pbco::ForceResolveRequest = ForceResolveRequest {
                txn_id,
                decision,
                participants,
                reason,
            }
            .into();
            let reply = AdminClient::new(endpoint.endpoints)
                .call_leader(|mut c| {
                    let req = req.clone();
                    async move { c.force_resolve(req).await }
                })
                .await?;
            let reply = ratify_proto::types::admin::ForceResolveResponse::try_from(reply)?;
            if reply.changed {
                println!("{txn_id}: recorded {:?}", reply.decision);
            } else {
                println!(
                    "{txn_id}: already decided {:?}; the existing decision stands",
                    reply.decision
                );
            }
        }
    }
    Ok(())
}
