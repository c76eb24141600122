//! `ratify.raft.v1.Raft`: hands peers' Raft messages to the local openraft node.

use openraft::error::RaftError;
use ratify_proto::pb::raft as pbr;
use ratify_proto::raft as wire;
use tonic::{Request, Response, Status};

use crate::raft::{Raft, TypeConfig};

/// The Raft transport's server side.
pub struct RaftService {
    raft: Raft,
}

impl RaftService {
    /// Serve `raft`.
    pub fn new(raft: Raft) -> Self {
        Self { raft }
    }
}

/// openraft refuses a message only when it is shutting down or has stopped (fatal); the peer
/// treats UNAVAILABLE as unreachable and backs off.
fn fatal(e: RaftError<u64>) -> Status {
    Status::unavailable(format!("raft node is not running: {e}"))
}

#[tonic::async_trait]
impl pbr::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<pbr::AppendEntriesRequest>,
    ) -> Result<Response<pbr::AppendEntriesResponse>, Status> {
        let req = wire::append_entries_from_wire::<TypeConfig>(request.into_inner())?;
        let resp = self.raft.append_entries(req).await.map_err(fatal)?;
        Ok(Response::new(wire::append_entries_response_to_wire(&resp)))
    }

    async fn vote(
        &self,
        request: Request<pbr::VoteRequest>,
    ) -> Result<Response<pbr::VoteResponse>, Status> {
        let req = wire::vote_request_from_wire(request.into_inner())?;
        let resp = self.raft.vote(req).await.map_err(fatal)?;
        Ok(Response::new(wire::vote_response_to_wire(&resp)))
    }

    async fn install_snapshot(
        &self,
        request: Request<pbr::InstallSnapshotRequest>,
    ) -> Result<Response<pbr::InstallSnapshotResponse>, Status> {
        let req = wire::install_snapshot_from_wire::<TypeConfig>(request.into_inner())?;
        match self.raft.install_snapshot(req).await {
            Ok(resp) => Ok(Response::new(wire::install_snapshot_response_to_wire(
                &resp,
            ))),
            Err(RaftError::APIError(e)) => {
                // Travels as JSON so the sender's openraft can act on it (see raft::network).
                let details = serde_json::to_vec(&e).expect("openraft errors serialize");
                Err(Status::with_details(
                    tonic::Code::FailedPrecondition,
                    e.to_string(),
                    details.into(),
                ))
            }
            Err(RaftError::Fatal(e)) => Err(Status::unavailable(format!(
                "raft node is not running: {e}"
            ))),
        }
    }
}
