//! `ratify.coordinator.v1.Admin`: cluster status and membership, transaction listing, manual
//! resolution. Membership changes and decisions must be made on the leader: a follower answers
//! NOT_LEADER naming the leader, and the CLI retries there.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use ratify_proto::convert::NodeIdRequest;
use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::admin_server::Admin;
use ratify_proto::types::admin::{
    AddLearnerRequest, ClusterStatus, ForceResolveRequest, ForceResolveResponse,
    InitClusterRequest, LeaderHint, ListTxnsRequest, ListTxnsResponse, Member, MemberRole,
    ParticipantInfo, TxnSummary,
};
use ratify_proto::types::{
    AbortCause, AbortInfo, Decision, Endpoint, FinalDecision, TxnId, TxnPhase,
};
use tonic::{Request, Response, Status};

use super::forward::LeaderRoute;
use super::{ClientWriteFailure, not_leader, with_timeout};
use crate::limits;
use crate::raft::state_machine::StateView;
use crate::raft::store::Db;
use crate::raft::{Raft, log_store};
use crate::state::DecisionRecord;
use crate::txn::driver::{Answer, Input};
use crate::txn::runtime::TxnHandle;

/// The admin API.
pub struct AdminService {
    node_id: u64,
    raft: Raft,
    view: StateView,
    db: Arc<Db>,
    txn: TxnHandle,
    route: LeaderRoute,
}

impl AdminService {
    /// Serve the admin API of node `node_id`.
    pub fn new(
        node_id: u64,
        raft: Raft,
        view: StateView,
        db: Arc<Db>,
        txn: TxnHandle,
        route: LeaderRoute,
    ) -> Self {
        Self {
            node_id,
            raft,
            view,
            db,
            txn,
            route,
        }
    }

    /// C9 for admin reads: only the leader answers (others: NOT_LEADER with a hint, which the
    /// admin client follows), after confirming its leadership with a quorum and applying up to
    /// the read index. A follower's applied state may lag — a node just restarted after a
    /// crash listed hundreds of committed decisions as missing (found by the simulation).
    async fn linearizable_read(&self) -> Result<(), Status> {
        if !matches!(self.route.leader(), Some((id, _)) if id == self.node_id) {
            return Err(self.route.not_leader());
        }
        with_timeout(self.raft.ensure_linearizable())
            .await?
            .map_err(|_| not_leader(None, None))?;
        Ok(())
    }

    /// This node's view of the cluster.
    pub fn cluster_status(&self) -> ClusterStatus {
        cluster_status(self.node_id, &self.raft, &self.db)
    }

    async fn change_membership(
        &self,
        change: ChangeMembers<u64, BasicNode>,
    ) -> Result<Response<pbco::ClusterStatusResponse>, Status> {
        let raft = self.raft.clone();
        with_timeout(raft.change_membership(change, false))
            .await?
            .map_err(|e| ClientWriteFailure(e).into_status(&self.raft))?;
        Ok(Response::new(self.cluster_status().into()))
    }
}

/// A node's view of the cluster, from openraft's metrics.
pub fn cluster_status(node_id: u64, raft: &Raft, db: &Db) -> ClusterStatus {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let members = membership
        .nodes()
        .filter_map(|(id, node)| {
            // Stored addresses were validated when they were added; skip one that is not.
            let endpoint = Endpoint::new(node.addr.clone()).ok()?;
            Some(Member {
                node_id: *id,
                endpoint,
                role: if voters.contains(id) {
                    MemberRole::Voter
                } else {
                    MemberRole::Learner
                },
            })
        })
        .collect();
    let leader = m.current_leader.map(|id| LeaderHint {
        node_id: id,
        endpoint: membership
            .get_node(&id)
            .and_then(|n| Endpoint::new(n.addr.clone()).ok()),
    });
    let committed_index = log_store::read_committed_index(db)
        .ok()
        .flatten()
        .unwrap_or(0);
    ClusterStatus {
        node_id,
        leader,
        term: m.current_term,
        members,
        last_log_index: m.last_log_index.unwrap_or(0),
        committed_index: committed_index.max(m.last_applied.map_or(0, |l| l.index)),
        last_applied_index: m.last_applied.map_or(0, |l| l.index),
        snapshot_index: m.snapshot.map_or(0, |l| l.index),
        purged_index: m.purged.map_or(0, |l| l.index),
    }
}

/// Up to `limit + 1` rows of `table` after `after` (one more than a page, to know if there is
/// a next page).
fn page<'a>(
    table: &'a BTreeMap<TxnId, DecisionRecord>,
    phase: TxnPhase,
    after: Option<TxnId>,
    limit: usize,
    rows: &mut Vec<(TxnId, TxnPhase, &'a DecisionRecord)>,
) {
    let range = match after {
        Some(a) => table.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
        None => table.range(..),
    };
    rows.extend(range.take(limit + 1).map(|(id, r)| (*id, phase, r)));
}

fn invalid(field: &str, why: impl Into<String>) -> Status {
    let mut d = ErrorDetail::new(ErrorCode::InvalidField, why);
    d.field = Some(field.to_owned());
    d.into_status()
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn list_txns(
        &self,
        request: Request<pbco::ListTxnsRequest>,
    ) -> Result<Response<pbco::ListTxnsResponse>, Status> {
        let req = ListTxnsRequest::try_from(request.into_inner())?;
        if !req.local {
            self.linearizable_read().await?;
        }
        let limit = match req.limit {
            0 => limits::LIST_TXNS_LIMIT_DEFAULT,
            n => n.min(limits::LIST_TXNS_LIMIT_MAX),
        } as usize;
        let after: Option<TxnId> = if req.page_token.is_empty() {
            None
        } else {
            Some(
                req.page_token
                    .parse()
                    .map_err(|_| invalid("page_token", "not a page token from ListTxns"))?,
            )
        };
        let view = self.view.read();
        let state = &view.state;
        // Both tables are ordered by txn id, and UUIDv7 ids order by creation time.
        let mut rows: Vec<(TxnId, TxnPhase, &DecisionRecord)> = Vec::new();
        if req.phase != Some(TxnPhase::Completed) {
            page(&state.decided, TxnPhase::Decided, after, limit, &mut rows);
        }
        if req.phase != Some(TxnPhase::Decided) {
            page(
                &state.completed,
                TxnPhase::Completed,
                after,
                limit,
                &mut rows,
            );
        }
        rows.sort_by_key(|(id, _, _)| *id);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_page_token = if more {
            rows.last()
                .map(|(id, _, _)| id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let txns = rows
            .into_iter()
            .map(|(txn_id, phase, r)| TxnSummary {
                txn_id,
                phase,
                decision: r.decision.clone(),
                participants: r.participants.clone(),
                pending_participants: r.pending.iter().cloned().collect(),
                decided_at_unix_ms: r.decided_at_unix_ms,
            })
            .collect();
        Ok(Response::new(
            ListTxnsResponse {
                txns,
                next_page_token,
            }
            .into(),
        ))
    }

    async fn force_resolve(
        &self,
        request: Request<pbco::ForceResolveRequest>,
    ) -> Result<Response<pbco::ForceResolveResponse>, Status> {
        let req = ForceResolveRequest::try_from(request.into_inner())?;
        let decision = match req.decision {
            Decision::Commit => FinalDecision::Commit,
            Decision::Abort => {
                FinalDecision::Abort(AbortInfo::new(AbortCause::Operator, req.reason))
            }
        };
        // The driver proposes it, like every decision, and delivers its phase 2.
        let (txn_id, participants) = (req.txn_id, req.participants);
        let answer = with_timeout(self.txn.request(move |reply| Input::ForceResolve {
            txn_id,
            decision,
            participants,
            reply,
        }))
        .await?;
        let (decision, changed) = match answer {
            Answer::Forced { decision, changed } => (decision, changed),
            Answer::Overloaded => {
                return Err(ErrorDetail::new(
                    ErrorCode::Unavailable,
                    "too many transactions being decided; retry shortly",
                )
                .into_status());
            }
            _ => return Err(self.route.not_leader()),
        };
        tracing::warn!(txn_id = %req.txn_id, decision = ?decision.decision(), changed, "operator resolved a transaction");
        Ok(Response::new(
            ForceResolveResponse {
                decision: decision.decision(),
                changed,
            }
            .into(),
        ))
    }

    async fn cluster_status(
        &self,
        _request: Request<pbco::ClusterStatusRequest>,
    ) -> Result<Response<pbco::ClusterStatusResponse>, Status> {
        Ok(Response::new(self.cluster_status().into()))
    }

    async fn init_cluster(
        &self,
        request: Request<pbco::InitClusterRequest>,
    ) -> Result<Response<pbco::ClusterStatusResponse>, Status> {
        let req = InitClusterRequest::try_from(request.into_inner())?;
        if req.members.len() > limits::CLUSTER_MEMBERS_MAX {
            let mut d = ErrorDetail::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{} members; a cluster has at most {}",
                    req.members.len(),
                    limits::CLUSTER_MEMBERS_MAX
                ),
            );
            d.limit = Some(format!(
                "cluster_members_max={}",
                limits::CLUSTER_MEMBERS_MAX
            ));
            return Err(d.into_status());
        }
        if let Some((i, _)) = req
            .members
            .iter()
            .enumerate()
            .find(|(_, m)| m.role != MemberRole::Voter)
        {
            return Err(invalid(
                &format!("members[{i}].role"),
                "a cluster starts with voters only; add learners afterwards",
            ));
        }
        if !req.members.iter().any(|m| m.node_id == self.node_id) {
            return Err(invalid(
                "members",
                format!("must include the node asked (node {})", self.node_id),
            ));
        }
        let nodes: BTreeMap<u64, BasicNode> = req
            .members
            .into_iter()
            .map(|m| {
                (
                    m.node_id,
                    BasicNode {
                        addr: m.endpoint.into(),
                    },
                )
            })
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => {
                tracing::info!(node_id = self.node_id, "initialized the cluster");
                Ok(Response::new(self.cluster_status().into()))
            }
            Err(RaftError::APIError(InitializeError::NotAllowed(e))) => Err(ErrorDetail::new(
                ErrorCode::Precondition,
                format!("this node is already part of an initialized cluster: {e}"),
            )
            .into_status()),
            Err(e) => Err(ErrorDetail::new(ErrorCode::Unavailable, e.to_string()).into_status()),
        }
    }

    async fn add_learner(
        &self,
        request: Request<pbco::AddLearnerRequest>,
    ) -> Result<Response<pbco::ClusterStatusResponse>, Status> {
        let req = AddLearnerRequest::try_from(request.into_inner())?;
        let raft = self.raft.clone();
        let node = BasicNode {
            addr: req.endpoint.into(),
        };
        // Blocking: returns once the learner has caught up with the log (or a snapshot).
        with_timeout(raft.add_learner(req.node_id, node, true))
            .await?
            .map_err(|e| ClientWriteFailure(e).into_status(&self.raft))?;
        tracing::info!(learner = req.node_id, "added a learner");
        Ok(Response::new(self.cluster_status().into()))
    }

    async fn promote(
        &self,
        request: Request<pbco::PromoteRequest>,
    ) -> Result<Response<pbco::ClusterStatusResponse>, Status> {
        let NodeIdRequest(id) = NodeIdRequest::try_from(request.into_inner())?;
        let status = self.cluster_status();
        match status.members.iter().find(|m| m.node_id == id) {
            None => {
                return Err(invalid(
                    "node_id",
                    format!("node {id} is not a member; add it as a learner first"),
                ));
            }
            Some(m) if m.role == MemberRole::Voter => {
                return Ok(Response::new(status.into()));
            }
            Some(_) => {}
        }
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await
    }

    async fn remove_node(
        &self,
        request: Request<pbco::RemoveNodeRequest>,
    ) -> Result<Response<pbco::ClusterStatusResponse>, Status> {
        let NodeIdRequest(id) = NodeIdRequest::try_from(request.into_inner())?;
        let status = self.cluster_status();
        let voters = status
            .members
            .iter()
            .filter(|m| m.role == MemberRole::Voter)
            .count();
        match status.members.iter().find(|m| m.node_id == id) {
            None => Ok(Response::new(status.into())),
            Some(m) if m.role == MemberRole::Voter => {
                if voters <= 1 {
                    return Err(invalid("node_id", "cannot remove the last voter"));
                }
                self.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])))
                    .await
            }
            Some(_) => {
                self.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])))
                    .await
            }
        }
    }

    async fn list_participants(
        &self,
        _request: Request<pbco::ListParticipantsRequest>,
    ) -> Result<Response<pbco::ListParticipantsResponse>, Status> {
        let view = self.view.read();
        let infos: Vec<ParticipantInfo> = view
            .state
            .participants
            .iter()
            .map(|(id, r)| ParticipantInfo {
                participant: id.clone(),
                endpoint: r.endpoint.clone(),
                registered_at_unix_ms: r.registered_at_unix_ms,
            })
            .collect();
        Ok(Response::new(
            ratify_proto::convert::participant_infos_to_wire(infos),
        ))
    }
}
