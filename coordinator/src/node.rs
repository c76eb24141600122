//! A coordinator node: storage, Raft and the gRPC server, started together and stopped
//! gracefully.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{InitializeError, RaftError};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::{ConfigError, NodeConfig};
use crate::raft::log_store::LogStore;
use crate::raft::network::NetworkFactory;
use crate::raft::state_machine::{StateMachineStore, StateView};
use crate::raft::store::{Db, StoreError};
use crate::raft::{Raft, raft_config};
use crate::state::ApplyRules;
use crate::txn::driver::DriverConfig;
use crate::txn::runtime::{self, Participants, RuntimeConfig};
use crate::{limits, server};

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The data directory could not be created or opened.
    #[error("data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The Raft settings were refused.
    #[error("raft settings: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    /// openraft could not start.
    #[error("raft: {0}")]
    RaftStart(#[from] openraft::error::Fatal<u64>),
    /// openraft refused to initialize the cluster.
    #[error("raft initialize: {0}")]
    RaftInitialize(#[from] RaftError<u64, InitializeError<u64, BasicNode>>),
    /// The gRPC server task failed (panicked or was cancelled).
    #[error("grpc server task: {0}")]
    ServerTask(#[from] tokio::task::JoinError),
    /// The listening socket failed.
    #[error("listen: {0}")]
    Listen(std::io::Error),
    /// The gRPC server failed.
    #[error("grpc server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// Completes when the server should stop accepting calls.
pub type ShutdownSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// A running gRPC server (see [`Node::start_with`]).
pub type ServeTask =
    std::pin::Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// A running node.
pub struct Node {
    /// This node's id.
    pub node_id: u64,
    /// The openraft handle.
    pub raft: Raft,
    /// The applied state.
    pub view: StateView,
    /// The address the server listens on.
    pub local_addr: SocketAddr,
    /// The address metrics are served on, if they are.
    pub metrics_addr: Option<SocketAddr>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_server: oneshot::Sender<()>,
    stop_runtime: watch::Sender<bool>,
    metrics_task: Option<JoinHandle<()>>,
}

impl Node {
    /// Open storage, start Raft and serve on `listener`. With `config.init`, initialize the
    /// cluster from `config.peers` if this node has never been part of one.
    pub async fn start(config: NodeConfig, listener: TcpListener) -> Result<Self, NodeError> {
        config.validate()?;
        let local_addr = listener.local_addr().map_err(NodeError::Listen)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            dir: config.data_dir.display().to_string(),
            source,
        })?;
        let db = crate::raft::store::open(&config.data_dir)?;
        let server = Box::new(move |services, stopped| {
            let serve: ServeTask = Box::pin(server::serve(listener, services, stopped));
            serve
        });
        Self::start_with(config, db, local_addr, server).await
    }

    /// As [`Node::start`], over an opened database (RocksDB, or the simulation's memory
    /// disk) and serving on whatever `serve` listens on (`local_addr` is its address). The
    /// deterministic simulation starts its nodes this way; everything else is shared.
    pub async fn start_with(
        config: NodeConfig,
        db: Arc<Db>,
        local_addr: SocketAddr,
        serve: Box<dyn FnOnce(server::Services, ShutdownSignal) -> ServeTask + Send>,
    ) -> Result<Self, NodeError> {
        config.validate()?;
        let log_store = LogStore::new(db.clone())?;
        // Planted bugs (selftest builds only) are read once, into configuration.
        let planted = ratify_proto::planted::current();
        let (feed, feed_rx) = runtime::apply_feed();
        let rules = ApplyRules {
            last_wins: planted == Some(ratify_proto::planted::Bug::LastWins),
        };
        let sm = StateMachineStore::open(db.clone())?.with_feed(feed, rules);
        let view = sm.view();
        let raft_cfg = raft_config(&config.cluster_name, config.snapshot_every, config.log_keep)?;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_cfg),
            NetworkFactory {
                node_id: config.node_id,
            },
            log_store,
            sm,
        )
        .await?;

        let (stop_runtime, runtime_stopped) = watch::channel(false);
        let participants = Arc::new(Participants::new(
            view.clone(),
            limits::PEER_CONNECT_TIMEOUT,
        ));
        let runtime_config = RuntimeConfig {
            driver: DriverConfig {
                planted,
                ..DriverConfig::default()
            },
            ..RuntimeConfig::default()
        };
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let txn = runtime::spawn(
            runtime::RuntimeParts {
                node_id: config.node_id,
                raft: raft.clone(),
                view: view.clone(),
                feed: feed_rx,
                participants: participants.clone(),
                metrics: metrics.clone(),
            },
            runtime_config,
            runtime_stopped,
        );
        let mut metrics_addr = None;
        let metrics_task = match config.metrics_listen {
            None => None,
            Some(addr) => {
                let listener = TcpListener::bind(addr).await.map_err(NodeError::Listen)?;
                let bound = listener.local_addr().map_err(NodeError::Listen)?;
                metrics_addr = Some(bound);
                tracing::info!(%bound, "serving metrics on GET /metrics");
                let (metrics, raft, view, node_id) =
                    (metrics.clone(), raft.clone(), view.clone(), config.node_id);
                let render: Arc<dyn Fn() -> String + Send + Sync> =
                    Arc::new(move || metrics.render(node_id, &raft, &view, server::now_unix_ms()));
                Some(tokio::spawn(crate::metrics::serve(listener, render)))
            }
        };
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            server::Services {
                node_id: config.node_id,
                raft: raft.clone(),
                view: view.clone(),
                db,
                txn,
                metrics,
            },
            Box::pin(async move {
                let _ = stopped.await;
            }),
        ));

        if config.init {
            let members: BTreeMap<u64, BasicNode> = config
                .peers
                .iter()
                .map(|p| {
                    (
                        p.node_id,
                        BasicNode {
                            addr: p.endpoint.to_string(),
                        },
                    )
                })
                .collect();
            match raft.initialize(members).await {
                Ok(()) => tracing::info!(node_id = config.node_id, "initialized a new cluster"),
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
                    tracing::info!(
                        node_id = config.node_id,
                        "already initialized; --init ignored"
                    )
                }
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(node_id = config.node_id, %local_addr, advertise = %config.advertised(local_addr), "coordinator node started");
        Ok(Self {
            node_id: config.node_id,
            raft,
            view,
            local_addr,
            metrics_addr,
            server,
            stop_server,
            stop_runtime,
            metrics_task,
        })
    }

    /// Run until `shutdown` completes (or the server fails), then stop gracefully: stop
    /// accepting calls, let in-flight ones finish (bounded), stop Raft, close storage.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let Node {
            node_id,
            raft,
            server,
            stop_server,
            stop_runtime,
            metrics_task,
            ..
        } = self;
        let mut server = server;
        let server_result = tokio::select! {
            () = shutdown => None,
            r = &mut server => Some(r),
        };
        let result = match server_result {
            Some(Ok(r)) => r.map_err(NodeError::from),
            Some(Err(join)) => Err(NodeError::from(join)),
            None => {
                tracing::info!(node_id, "shutting down");
                let _ = stop_server.send(());
                match tokio::time::timeout(limits::SHUTDOWN_GRACE, server).await {
                    Ok(Ok(r)) => r.map_err(NodeError::from),
                    Ok(Err(join)) => Err(NodeError::from(join)),
                    Err(_) => {
                        tracing::warn!(
                            node_id,
                            "in-flight calls did not finish within the grace period"
                        );
                        Ok(())
                    }
                }
            }
        };
        let _ = stop_runtime.send(true);
        if let Some(t) = metrics_task {
            t.abort();
        }
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(node_id, error = %e, "raft did not shut down cleanly");
        }
        tracing::info!(node_id, "stopped");
        result
    }
}
