//! Thin tonic adapters: convert a request to domain types, call the node, convert back. The
//! only place in the coordinator that builds a `tonic::Status` (through
//! [`ratify_proto::error::ErrorDetail`], so every error carries machine-readable details).

pub mod admin;
pub mod coordinator;
pub mod forward;
pub mod raft;

use std::future::Future;
use std::sync::Arc;

use openraft::BasicNode;
use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::pb::coordinator::admin_server::AdminServer;
use ratify_proto::pb::coordinator::coordinator_server::CoordinatorServer;
use ratify_proto::pb::raft::raft_server::RaftServer;
use ratify_proto::types::Endpoint;
use tokio::net::TcpListener;
use tonic::Status;

use crate::limits;
use crate::raft::Raft;
use crate::raft::state_machine::StateView;
use crate::raft::store::Db;
use crate::txn::runtime::TxnHandle;

/// A failed `client_write` / `change_membership` on openraft.
pub struct ClientWriteFailure(pub RaftError<u64, ClientWriteError<u64, BasicNode>>);

impl ClientWriteFailure {
    /// The status for the caller: NOT_LEADER with the leader's address when this node is not
    /// the leader, PRECONDITION for a refused membership change, UNAVAILABLE otherwise.
    pub fn into_status(self, raft: &Raft) -> Status {
        match self.0 {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                let leader_node = f.leader_node.or_else(|| {
                    let id = f.leader_id?;
                    raft.metrics()
                        .borrow()
                        .membership_config
                        .membership()
                        .get_node(&id)
                        .cloned()
                });
                not_leader(f.leader_id, leader_node.as_ref())
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                let code = match e {
                    ChangeMembershipError::LearnerNotFound(_) => ErrorCode::InvalidField,
                    _ => ErrorCode::Precondition,
                };
                ErrorDetail::new(code, e.to_string()).into_status()
            }
            RaftError::Fatal(e) => ErrorDetail::new(
                ErrorCode::Unavailable,
                format!("raft node is not running: {e}"),
            )
            .into_status(),
        }
    }
}

/// NOT_LEADER, naming the leader when known.
pub fn not_leader(leader_id: Option<u64>, leader_node: Option<&BasicNode>) -> Status {
    let mut d = ErrorDetail::new(
        ErrorCode::NotLeader,
        match leader_id {
            Some(id) => format!("not the leader; node {id} is"),
            None => "not the leader, and no leader is known yet; retry shortly".to_owned(),
        },
    );
    d.leader_id = leader_id;
    d.leader_endpoint = leader_node.and_then(|n| Endpoint::new(n.addr.clone()).ok());
    d.into_status()
}

/// Bound an admin call by [`limits::ADMIN_CALL_TIMEOUT`].
pub async fn with_timeout<T>(fut: impl Future<Output = T>) -> Result<T, Status> {
    tokio::time::timeout(limits::ADMIN_CALL_TIMEOUT, fut)
        .await
        .map_err(|_| {
            ErrorDetail::new(
                ErrorCode::Unavailable,
                format!(
                    "no answer from the cluster within {:?} (no quorum?)",
                    limits::ADMIN_CALL_TIMEOUT
                ),
            )
            .into_status()
        })
}

/// Wall-clock ms since the Unix epoch: only ever stamped into a proposal by the leader
/// (`Command::proposed_at_unix_ms`), never read while applying.
pub fn now_unix_ms() -> u64 {
    ratify_proto::hooks::now_unix_ms()
}

/// What the servers need from the node.
pub struct Services {
    /// This node.
    pub node_id: u64,
    /// Its Raft handle.
    pub raft: Raft,
    /// Its applied state.
    pub view: StateView,
    /// Its database (for the admin API's log positions).
    pub db: Arc<Db>,
    /// The 2PC runtime.
    pub txn: TxnHandle,
    /// Metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Serve every coordinator gRPC service on `listener` until `shutdown` completes: the client
/// API, the Raft transport, the admin API, gRPC health and reflection.
pub async fn serve(
    listener: TcpListener,
    services: Services,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    // tonic's own incoming stream, so accepted connections get TCP_NODELAY (a plain
    // listener stream would leave Nagle on: 40 ms stalls against delayed ACKs).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    serve_incoming(incoming, services, shutdown).await
}

/// As [`serve`], on any stream of accepted connections (the simulation's network).
pub async fn serve_incoming<I, IO, IE>(
    incoming: I,
    services: Services,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    I: futures_util::Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Services {
        node_id,
        raft,
        view,
        db,
        txn,
        metrics,
    } = services;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<RaftServer<raft::RaftService>>()
        .await;
    health_reporter
        .set_serving::<AdminServer<admin::AdminService>>()
        .await;
    health_reporter
        .set_serving::<CoordinatorServer<coordinator::CoordinatorService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ratify_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let raft_service = RaftServer::new(raft::RaftService::new(raft.clone()))
        .max_decoding_message_size(limits::RAFT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(limits::RAFT_MESSAGE_BYTES_MAX);
    let route = forward::LeaderRoute::new(node_id, raft.clone());
    let coordinator_service = forward::AtLeader::new(
        CoordinatorServer::new(coordinator::CoordinatorService::new(
            raft.clone(),
            view.clone(),
            txn.clone(),
            route.clone(),
            metrics,
        ))
        .max_decoding_message_size(limits::API_MESSAGE_BYTES_MAX),
        route.clone(),
    );
    let admin_service = AdminServer::new(admin::AdminService::new(
        node_id, raft, view, db, txn, route,
    ))
    .max_decoding_message_size(limits::API_MESSAGE_BYTES_MAX);
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health)
        .add_service(reflection)
        .add_service(raft_service)
        .add_service(coordinator_service)
        .add_service(admin_service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
