//! `ratify.coordinator.v1.Coordinator`: the client API. Any node accepts every call (C1): the
//! [`super::forward`] layer in front relays a follower's calls to the leader, so every handler
//! here runs on the leader, and is only decode → driver input → encode. Decisions are the
//! driver's (txn/driver/); a handler reads the replicated state only to hand the driver a
//! recorded decision, and for Status.

use std::time::Duration;

use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::coordinator_server::Coordinator;
use ratify_proto::types::coordinator::{
    AbortRequest, AbortResponse, CommitRequest, CommitResponse, RegisterParticipantRequest,
    ResolveRequest, ResolveResponse, StatusRequest, StatusResponse,
};
use ratify_proto::types::{FinalDecision, Outcome, ParticipantId, TxnId, TxnPhase};
use tonic::{Request, Response, Status};

use super::forward::LeaderRoute;
use super::{now_unix_ms, with_timeout};
use crate::limits;
use crate::metrics::Metrics;
use crate::raft::Raft;
use crate::raft::state_machine::StateView;
use crate::txn::driver::{Answer, Input};
use crate::txn::runtime::TxnHandle;
use std::sync::Arc;

/// The client API.
pub struct CoordinatorService {
    raft: Raft,
    view: StateView,
    txn: TxnHandle,
    route: LeaderRoute,
    metrics: Arc<Metrics>,
}

impl CoordinatorService {
    /// Serve the client API over this node's driver (`txn`).
    pub fn new(
        raft: Raft,
        view: StateView,
        txn: TxnHandle,
        route: LeaderRoute,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            raft,
            view,
            txn,
            route,
            metrics,
        }
    }

    #[allow(clippy::result_large_err)] // tonic::Status
    fn check_participants(&self, participants: &[ParticipantId]) -> Result<(), Status> {
        if participants.len() > limits::PARTICIPANTS_PER_TXN_MAX {
            let mut d = ErrorDetail::new(
                ErrorCode::LimitExceeded,
                format!(
                    "{} participants; a transaction has at most {}",
                    participants.len(),
                    limits::PARTICIPANTS_PER_TXN_MAX
                ),
            );
            d.limit = Some(format!(
                "participants_per_txn_max={}",
                limits::PARTICIPANTS_PER_TXN_MAX
            ));
            d.field = Some("participants".into());
            return Err(d.into_status());
        }
        Ok(())
    }

    #[allow(clippy::result_large_err)] // tonic::Status
    fn check_registered(&self, participants: &[ParticipantId]) -> Result<(), Status> {
        let view = self.view.read();
        if let Some((i, p)) = participants
            .iter()
            .enumerate()
            .find(|(_, p)| !view.state.participants.contains_key(*p))
        {
            let mut d = ErrorDetail::new(
                ErrorCode::UnknownParticipant,
                format!("participant {p} is not registered"),
            );
            d.field = Some(format!("participants[{i}]"));
            d.participant = Some(p.clone());
            return Err(d.into_status());
        }
        Ok(())
    }

    /// The recorded decision, if any (this node's applied state).
    fn recorded(&self, txn_id: &TxnId) -> Option<FinalDecision> {
        self.view
            .read()
            .state
            .lookup(txn_id)
            .map(|(_, r)| r.decision.clone())
    }

    #[allow(clippy::result_large_err)] // tonic::Status
    fn answer_status(&self, answer: Answer) -> Result<Outcome, Status> {
        match answer {
            Answer::Outcome(o) => Ok(o),
            Answer::Decision(d) | Answer::Forced { decision: d, .. } => Ok(d.outcome()),
            Answer::Registered => Err(Status::internal("a registration answer to a commit")),
            Answer::NotLeader => Err(self.route.not_leader()),
            Answer::Overloaded => Err(overloaded()),
        }
    }

    async fn commit_here(&self, request: Request<pbco::CommitRequest>) -> Result<Outcome, Status> {
        let req = CommitRequest::try_from(request.into_inner())?;
        self.check_participants(&req.participants)?;
        self.check_registered(&req.participants)?;
        let now = now_unix_ms();
        let longest = now + limits::PREPARE_TIMEOUT.as_millis() as u64;
        let deadline = req.deadline_unix_ms.unwrap_or(longest).min(longest);
        let recorded = self.recorded(&req.txn_id);
        let wait =
            Duration::from_millis(deadline.saturating_sub(now)) + limits::COMMIT_ANSWER_GRACE;
        let answer = tokio::time::timeout(
            wait,
            self.txn.request(move |reply| Input::Commit {
                txn_id: req.txn_id,
                participants: req.participants,
                deadline_unix_ms: deadline,
                call_counts: req.call_counts,
                recorded,
                reply,
            }),
        )
        .await;
        match answer {
            // C10: never a guess.
            Err(_) => Ok(Outcome::Unknown),
            Ok(answer) => self.answer_status(answer),
        }
    }
}

/// UNAVAILABLE: too many transactions being decided.
fn overloaded() -> Status {
    ErrorDetail::new(
        ErrorCode::Unavailable,
        "too many transactions being decided; retry shortly",
    )
    .into_status()
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn commit(
        &self,
        request: Request<pbco::CommitRequest>,
    ) -> Result<Response<pbco::CommitResponse>, Status> {
        let started = std::time::Instant::now();
        match self.commit_here(request).await {
            Ok(outcome) => {
                self.metrics.commit_answered(&outcome, started.elapsed());
                Ok(Response::new(CommitResponse { outcome }.into()))
            }
            Err(status) => {
                self.metrics.commit_refused();
                Err(status)
            }
        }
    }

    async fn abort(
        &self,
        request: Request<pbco::AbortRequest>,
    ) -> Result<Response<pbco::AbortResponse>, Status> {
        let req = AbortRequest::try_from(request.into_inner())?;
        self.check_participants(&req.participants)?;
        self.check_registered(&req.participants)?;
        let recorded = self.recorded(&req.txn_id);
        let answer = with_timeout(self.txn.request(move |reply| Input::Abort {
            txn_id: req.txn_id,
            participants: req.participants,
            message: req.message,
            recorded,
            reply,
        }))
        .await?;
        let outcome = self.answer_status(answer)?;
        Ok(Response::new(AbortResponse { outcome }.into()))
    }

    async fn status(
        &self,
        request: Request<pbco::StatusRequest>,
    ) -> Result<Response<pbco::StatusResponse>, Status> {
        let req = StatusRequest::try_from(request.into_inner())?;
        // C9: confirm leadership with a quorum and apply up to the read index first.
        with_timeout(self.raft.ensure_linearizable())
            .await?
            .map_err(|_| self.route.not_leader())?;
        let view = self.view.read();
        let resp = match view.state.lookup(&req.txn_id) {
            Some((phase, r)) => StatusResponse {
                outcome: r.decision.outcome(),
                phase,
                pending_participants: r.pending.iter().cloned().collect(),
                decided_at_unix_ms: Some(r.decided_at_unix_ms),
            },
            None => StatusResponse {
                outcome: Outcome::Unknown,
                phase: TxnPhase::Undecided,
                pending_participants: vec![],
                decided_at_unix_ms: None,
            },
        };
        Ok(Response::new(resp.into()))
    }

    async fn resolve(
        &self,
        request: Request<pbco::ResolveRequest>,
    ) -> Result<Response<pbco::ResolveResponse>, Status> {
        let req = ResolveRequest::try_from(request.into_inner())?;
        self.metrics.resolve();
        let recorded = self.recorded(&req.txn_id);
        let answer = with_timeout(self.txn.request(move |reply| Input::Resolve {
            txn_id: req.txn_id,
            participant: req.participant,
            recorded,
            reply,
        }))
        .await?;
        let decision = match answer {
            Answer::Decision(d) | Answer::Forced { decision: d, .. } => d,
            Answer::Outcome(Outcome::Committed) => FinalDecision::Commit,
            Answer::Outcome(Outcome::Aborted(info)) => FinalDecision::Abort(info),
            Answer::Outcome(Outcome::Unknown) | Answer::NotLeader | Answer::Registered => {
                return Err(self.route.not_leader());
            }
            Answer::Overloaded => return Err(overloaded()),
        };
        Ok(Response::new(ResolveResponse { decision }.into()))
    }

    async fn register_participant(
        &self,
        request: Request<pbco::RegisterParticipantRequest>,
    ) -> Result<Response<pbco::RegisterParticipantResponse>, Status> {
        let req = RegisterParticipantRequest::try_from(request.into_inner())?;
        let unchanged = self
            .view
            .read()
            .state
            .participants
            .get(&req.participant)
            .is_some_and(|r| r.endpoint == req.endpoint);
        if unchanged {
            return Ok(Response::new(pbco::RegisterParticipantResponse {}));
        }
        let (participant, endpoint) = (req.participant.clone(), req.endpoint.clone());
        let answer = with_timeout(self.txn.request(move |reply| Input::Register {
            participant,
            endpoint,
            reply,
        }))
        .await?;
        match answer {
            Answer::Registered => {
                tracing::info!(participant_id = %req.participant, endpoint = %req.endpoint, "participant registered");
                Ok(Response::new(pbco::RegisterParticipantResponse {}))
            }
            Answer::Overloaded => Err(overloaded()),
            _ => Err(self.route.not_leader()),
        }
    }
}
