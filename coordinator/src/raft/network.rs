//! The client side of the Raft transport: one lazily-connected tonic channel per peer, every
//! call bounded by openraft's deadline. A refused or broken connection is `Unreachable` (openraft
//! backs off); the channel reconnects by itself on the next call.

// openraft's trait fixes the error type (`RPCError`); it is large, and boxing it is not ours to do.
#![allow(clippy::result_large_err)]

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RPCTypes};
use ratify_proto::hooks::EndpointExt as _;
use ratify_proto::pb::raft::raft_client::RaftClient;
use ratify_proto::raft as wire;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use super::TypeConfig;
use crate::limits;

/// Makes a [`PeerClient`] per peer.
pub struct NetworkFactory {
    /// This node, for error reports.
    pub node_id: u64,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerClient {
        PeerClient::new(self.node_id, target, &node.addr)
    }
}

/// A connection to one peer.
pub struct PeerClient {
    node_id: u64,
    target: u64,
    /// `Err` when the peer's address is malformed; every call then fails as unreachable.
    client: Result<RaftClient<Channel>, String>,
}

impl PeerClient {
    fn new(node_id: u64, target: u64, addr: &str) -> Self {
        let client = Endpoint::from_shared(ratify_proto::dial::target(addr))
            .map(|e| {
                let channel = e
                    .connect_timeout(limits::PEER_CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .lazy_channel();
                RaftClient::new(channel)
                    .max_decoding_message_size(limits::RAFT_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(limits::RAFT_MESSAGE_BYTES_MAX)
            })
            .map_err(|e| format!("malformed address {addr:?} for node {target}: {e}"));
        Self {
            node_id,
            target,
            client,
        }
    }

    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftClient<Channel>, RPCError<u64, BasicNode, E>> {
        self.client
            .clone()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(e))))
    }

    fn timeout<E: std::error::Error>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
    ) -> RPCError<u64, BasicNode, E> {
        RPCError::Timeout(Timeout {
            action,
            id: self.node_id,
            target: self.target,
            timeout: option.hard_ttl(),
        })
    }
}

/// Map a failed call's status to openraft's error kinds.
fn status_error<E: std::error::Error>(
    status: &Status,
    entries: usize,
) -> RPCError<u64, BasicNode, E> {
    match status.code() {
        // Connection refused/reset, peer shutting down: back off.
        Code::Unavailable | Code::Cancelled => RPCError::Unreachable(Unreachable::new(status)),
        // The peer refused a message over its size limit: ask openraft to send fewer entries.
        Code::ResourceExhausted if entries > 1 => {
            RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint((entries / 2) as u64))
        }
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

fn bad_reply<E: std::error::Error>(
    e: impl std::error::Error + 'static,
) -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let mut client = self.client()?;
        let entries = rpc.entries.len();
        let req = wire::append_entries_to_wire(&rpc);
        let reply = tokio::time::timeout(option.hard_ttl(), client.append_entries(req))
            .await
            .map_err(|_| self.timeout(RPCTypes::AppendEntries, &option))?
            .map_err(|s| status_error(&s, entries))?;
        wire::append_entries_response_from_wire(reply.into_inner()).map_err(bad_reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        let mut client = self.client()?;
        let req = wire::install_snapshot_to_wire(&rpc);
        let reply = tokio::time::timeout(option.hard_ttl(), client.install_snapshot(req))
            .await
            .map_err(|_| self.timeout(RPCTypes::InstallSnapshot, &option))?;
        match reply {
            Ok(r) => wire::install_snapshot_response_from_wire(r.into_inner()).map_err(bad_reply),
            Err(status) => {
                // The peer's own refusal (e.g. a chunk at an unexpected offset) travels as JSON
                // in the status details, so openraft can restart the transfer.
                if status.code() == Code::FailedPrecondition
                    && let Ok(e) = serde_json::from_slice::<InstallSnapshotError>(status.details())
                {
                    return Err(RPCError::RemoteError(RemoteError::new(
                        self.target,
                        RaftError::APIError(e),
                    )));
                }
                Err(status_error(&status, 1))
            }
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        let mut client = self.client()?;
        let req = wire::vote_request_to_wire(&rpc);
        let reply = tokio::time::timeout(option.hard_ttl(), client.vote(req))
            .await
            .map_err(|_| self.timeout(RPCTypes::Vote, &option))?
            .map_err(|s| status_error(&s, 0))?;
        wire::vote_response_from_wire(reply.into_inner()).map_err(bad_reply)
    }
}
