//! `ratify.coordinator.v1.Coordinator`: the client API. Any node accepts every call (C1): a
//! follower forwards it to the leader once (marking it, so a request never bounces between
//! nodes), or answers NOT_LEADER naming the leader when it cannot.

use ratify_proto::hooks::EndpointExt as _;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::coordinator_client::CoordinatorClient;
use ratify_proto::pb::coordinator::coordinator_server::Coordinator;
use ratify_proto::pb::participant as pbp;
use ratify_proto::types::command::{Command, CommandKind};
use ratify_proto::types::coordinator::{
    AbortRequest, AbortResponse, CommitRequest, CommitResponse, RegisterParticipantRequest,
    ResolveRequest, ResolveResponse, StatusRequest, StatusResponse,
};
use ratify_proto::types::participant::{OnePhaseOutcome, PrepareBatch};
use ratify_proto::types::{
    AbortCause, AbortInfo, FinalDecision, Outcome, ParticipantId, TxnId, TxnPhase,
};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{ClientWriteFailure, not_leader, now_unix_ms, with_timeout};
use crate::limits;
use crate::metrics::Metrics;
use crate::raft::Raft;
use crate::raft::state_machine::StateView;
use crate::txn::driver::{Answer, Input};
use crate::txn::runtime::{Participants, TxnHandle};

/// Metadata set on a request a follower forwarded, so the leader never forwards it again.
pub const FORWARDED: &str = "ratify-forwarded";

/// The client API.
pub struct CoordinatorService {
    node_id: u64,
    raft: Raft,
    view: StateView,
    txn: TxnHandle,
    participants: Arc<Participants>,
    channels: Mutex<HashMap<String, Channel>>,
    metrics: Arc<Metrics>,
}

impl CoordinatorService {
    /// Planted bug (d): a Resolve always proposes ABORT, whatever was decided before; with the
    /// state machine's last-wins apply, it overwrites a COMMIT.
    async fn resolve_last_wins(
        &self,
        req: ResolveRequest,
    ) -> Result<Response<pbco::ResolveResponse>, Status> {
        use ratify_proto::types::DecisionSource;
        use ratify_proto::types::command::DecideItem;
        tracing::warn!(txn_id = %req.txn_id, "planted bug: proposing ABORT over any earlier decision");
        let cmd = Command {
            proposed_at_unix_ms: now_unix_ms(),
            kind: CommandKind::Decide(vec![DecideItem {
                txn_id: req.txn_id,
                decision: FinalDecision::Abort(AbortInfo {
                    cause: AbortCause::ResolvedByParticipant,
                    participant: Some(req.participant.clone()),
                    no_reason: None,
                    message: String::new(),
                }),
                source: DecisionSource::Resolve,
                participants: vec![req.participant],
            }]),
        };
        let reply = with_timeout(self.raft.client_write(cmd))
            .await?
            .map_err(|e| ClientWriteFailure(e).into_status(&self.raft))?;
        match reply.data {
            crate::state::CommandReply::Decided(applied) if !applied.is_empty() => {
                let decision = applied[0].decision.clone();
                Ok(Response::new(ResolveResponse { decision }.into()))
            }
            _ => Err(Status::internal(
                "a Decide entry applied without a Decided reply",
            )),
        }
    }
    /// Serve the client API of node `node_id`.
    pub fn new(
        node_id: u64,
        raft: Raft,
        view: StateView,
        txn: TxnHandle,
        participants: Arc<Participants>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            node_id,
            raft,
            view,
            txn,
            participants,
            channels: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The leader, from this node's Raft metrics: `(id, address)`.
    fn leader(&self) -> Option<(u64, Option<openraft::BasicNode>)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        Some((id, m.membership_config.membership().get_node(&id).cloned()))
    }

    fn is_leader(&self) -> bool {
        self.leader().is_some_and(|(id, _)| id == self.node_id)
    }

    fn not_leader(&self) -> Status {
        match self.leader() {
            Some((id, node)) if id != self.node_id => not_leader(Some(id), node.as_ref()),
            _ => not_leader(None, None),
        }
    }

    /// Forward a call to the leader, once; NOT_LEADER when that is not possible.
    async fn forward<Q, A, F, Fut>(
        &self,
        forwarded: bool,
        message: Q,
        call: F,
    ) -> Result<Response<A>, Status>
    where
        F: FnOnce(CoordinatorClient<Channel>, Request<Q>) -> Fut,
        Fut: Future<Output = Result<Response<A>, Status>>,
    {
        let Some((leader_id, Some(node))) = self.leader() else {
            return Err(self.not_leader());
        };
        if forwarded || leader_id == self.node_id {
            // Forwarded to us but we do not lead (any more), or we lead but are not ready.
            return Err(self.not_leader());
        }
        let channel = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get(&node.addr) {
                Some(c) => c.clone(),
                None => {
                    let c = tonic::transport::Endpoint::from_shared(ratify_proto::dial::target(
                        &node.addr,
                    ))
                    .map_err(|_| self.not_leader())?
                    .connect_timeout(limits::PEER_CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .lazy_channel();
                    channels.insert(node.addr.clone(), c.clone());
                    c
                }
            }
        };
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(FORWARDED, MetadataValue::from_static("1"));
        match call(CoordinatorClient::new(channel), request).await {
            // The leader is unreachable from here: let the client try it (or others) itself.
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && ErrorDetail::from_status(&status).is_none() =>
            {
                Err(not_leader(Some(leader_id), Some(&node)))
            }
            other => other,
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

    /// The recorded decision, if any (leader's applied state).
    fn recorded(
        &self,
        txn_id: &TxnId,
    ) -> Option<(TxnPhase, FinalDecision, Vec<ParticipantId>, u64)> {
        let view = self.view.read();
        view.state.lookup(txn_id).map(|(phase, r)| {
            (
                phase,
                r.decision.clone(),
                r.pending.iter().cloned().collect(),
                r.decided_at_unix_ms,
            )
        })
    }

    #[allow(clippy::result_large_err)] // tonic::Status
    fn answer_status(&self, answer: Answer) -> Result<Outcome, Status> {
        match answer {
            Answer::Outcome(o) => Ok(o),
            Answer::Decision(d) => Ok(d.outcome()),
            Answer::NotLeader => Err(self.not_leader()),
            Answer::Overloaded => Err(ErrorDetail::new(
                ErrorCode::Unavailable,
                "too many transactions being decided; retry shortly",
            )
            .into_status()),
        }
    }

    /// C2: one participant — prepare and commit in one step there; nothing logged here. A
    /// retry (here or at another node) gets the participant's recorded outcome.
    async fn one_phase(
        &self,
        txn_id: TxnId,
        participant: ParticipantId,
        expected_calls: Option<u32>,
        deadline_unix_ms: u64,
    ) -> Outcome {
        let mut pause = Duration::from_millis(20);
        loop {
            let remaining = Duration::from_millis(deadline_unix_ms.saturating_sub(now_unix_ms()));
            if remaining.is_zero() {
                return Outcome::Unknown;
            }
            let attempt = async {
                let mut client = self
                    .participants
                    .client(&participant)
                    .map_err(|e| e.to_string())?;
                let req: pbp::CommitOnePhaseRequest = PrepareBatch {
                    coordinator_node_id: self.node_id,
                    txn_ids: vec![txn_id],
                    call_counts: expected_calls
                        .map(|n| BTreeMap::from([(txn_id, n)]))
                        .unwrap_or_default(),
                }
                .into();
                let reply = client
                    .commit_one_phase(req)
                    .await
                    .map_err(|s| s.message().to_owned())?;
                let results =
                    ratify_proto::convert::one_phase_results_from_wire(reply.into_inner())
                        .map_err(|e| e.to_string())?;
                results
                    .into_iter()
                    .find(|r| r.txn_id == txn_id)
                    .map(|r| r.outcome)
                    .ok_or_else(|| "no result for the transaction".to_owned())
            };
            match tokio::time::timeout(remaining, attempt).await {
                Ok(Ok(OnePhaseOutcome::Committed)) => return Outcome::Committed,
                Ok(Ok(OnePhaseOutcome::Aborted { reason, message })) => {
                    return Outcome::Aborted(AbortInfo {
                        cause: AbortCause::VotedNo,
                        participant: Some(participant),
                        no_reason: Some(reason),
                        message,
                    });
                }
                Ok(Ok(OnePhaseOutcome::Unknown { message })) | Ok(Err(message)) => {
                    tracing::debug!(%txn_id, error = %message, "one-phase commit attempt failed; retrying");
                }
                Err(_) => return Outcome::Unknown,
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }
    /// Commit: answered here, or by the leader it was forwarded to.
    async fn commit_here(&self, request: Request<pbco::CommitRequest>) -> Result<Answered, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED);
        let wire = request.into_inner();
        let req = CommitRequest::try_from(wire)?;
        self.check_participants(&req.participants)?;
        if !self.is_leader() {
            return self
                .forward(
                    forwarded,
                    pbco::CommitRequest::from(req),
                    |mut c, r| async move { c.commit(r).await },
                )
                .await
                .map(Answered::Forwarded);
        }
        self.check_registered(&req.participants)?;
        if let Some((_, decision, _, _)) = self.recorded(&req.txn_id) {
            return Ok(Answered::Here(decision.outcome()));
        }
        let now = now_unix_ms();
        let deadline = req
            .deadline_unix_ms
            .unwrap_or(now + limits::PREPARE_TIMEOUT.as_millis() as u64)
            .min(now + limits::PREPARE_TIMEOUT.as_millis() as u64);
        let outcome = match req.participants.len() {
            0 => Outcome::Committed,
            1 => {
                let participant = req.participants[0].clone();
                let expected_calls = req.call_counts.first().copied();
                self.one_phase(req.txn_id, participant, expected_calls, deadline)
                    .await
            }
            _ => {
                let txn_id = req.txn_id;
                let participants = req.participants;
                let call_counts = req.call_counts;
                let wait = Duration::from_millis(deadline.saturating_sub(now))
                    + limits::COMMIT_ANSWER_GRACE;
                let answer = tokio::time::timeout(
                    wait,
                    self.txn.request(move |reply| Input::Commit {
                        txn_id,
                        participants,
                        deadline_unix_ms: deadline,
                        call_counts,
                        reply,
                    }),
                )
                .await;
                match answer {
                    // C10: never a guess.
                    Err(_) => Outcome::Unknown,
                    Ok(answer) => self.answer_status(answer)?,
                }
            }
        };
        Ok(Answered::Here(outcome))
    }
}

/// Who answered a Commit.
enum Answered {
    /// This node (the leader): the outcome.
    Here(Outcome),
    /// The leader it was forwarded to: its response, passed through.
    Forwarded(Response<pbco::CommitResponse>),
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn commit(
        &self,
        request: Request<pbco::CommitRequest>,
    ) -> Result<Response<pbco::CommitResponse>, Status> {
        let started = std::time::Instant::now();
        match self.commit_here(request).await {
            Ok(Answered::Here(outcome)) => {
                self.metrics.commit_answered(&outcome, started.elapsed());
                Ok(Response::new(CommitResponse { outcome }.into()))
            }
            // The leader counts it.
            Ok(Answered::Forwarded(response)) => Ok(response),
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
        let forwarded = request.metadata().contains_key(FORWARDED);
        let wire = request.into_inner();
        let req = AbortRequest::try_from(wire)?;
        self.check_participants(&req.participants)?;
        if !self.is_leader() {
            return self
                .forward(
                    forwarded,
                    pbco::AbortRequest::from(req),
                    |mut c, r| async move { c.abort(r).await },
                )
                .await;
        }
        self.check_registered(&req.participants)?;
        let outcome = match self.recorded(&req.txn_id) {
            Some((_, decision, _, _)) => decision.outcome(),
            None => {
                let AbortRequest {
                    txn_id,
                    participants,
                    message,
                } = req;
                let answer = with_timeout(self.txn.request(move |reply| Input::Abort {
                    txn_id,
                    participants,
                    message,
                    reply,
                }))
                .await?;
                self.answer_status(answer)?
            }
        };
        Ok(Response::new(AbortResponse { outcome }.into()))
    }

    async fn status(
        &self,
        request: Request<pbco::StatusRequest>,
    ) -> Result<Response<pbco::StatusResponse>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED);
        let wire = request.into_inner();
        let req = StatusRequest::try_from(wire)?;
        if !self.is_leader() {
            return self
                .forward(
                    forwarded,
                    pbco::StatusRequest::from(req),
                    |mut c, r| async move { c.status(r).await },
                )
                .await;
        }
        // C9: confirm leadership with a quorum and apply up to the read index first.
        with_timeout(self.raft.ensure_linearizable())
            .await?
            .map_err(|_| self.not_leader())?;
        let resp = match self.recorded(&req.txn_id) {
            Some((phase, decision, pending, decided_at)) => StatusResponse {
                outcome: decision.outcome(),
                phase,
                pending_participants: pending,
                decided_at_unix_ms: Some(decided_at),
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
        let forwarded = request.metadata().contains_key(FORWARDED);
        let wire = request.into_inner();
        let req = ResolveRequest::try_from(wire)?;
        self.metrics.resolve();
        if !self.is_leader() {
            return self
                .forward(
                    forwarded,
                    pbco::ResolveRequest::from(req),
                    |mut c, r| async move { c.resolve(r).await },
                )
                .await;
        }
        if ratify_proto::planted::active(ratify_proto::planted::Bug::LastWins) {
            return self.resolve_last_wins(req).await;
        }
        let decision = match self.recorded(&req.txn_id) {
            Some((_, decision, _, _)) => decision,
            None => {
                let ResolveRequest {
                    txn_id,
                    participant,
                } = req;
                let answer = with_timeout(self.txn.request(move |reply| Input::Resolve {
                    txn_id,
                    participant,
                    reply,
                }))
                .await?;
                match answer {
                    Answer::Decision(d) => d,
                    Answer::Outcome(Outcome::Committed) => FinalDecision::Commit,
                    Answer::Outcome(Outcome::Aborted(info)) => FinalDecision::Abort(info),
                    Answer::Outcome(Outcome::Unknown) | Answer::NotLeader => {
                        return Err(self.not_leader());
                    }
                    Answer::Overloaded => {
                        return Err(ErrorDetail::new(
                            ErrorCode::Unavailable,
                            "overloaded; retry shortly",
                        )
                        .into_status());
                    }
                }
            }
        };
        Ok(Response::new(ResolveResponse { decision }.into()))
    }

    async fn register_participant(
        &self,
        request: Request<pbco::RegisterParticipantRequest>,
    ) -> Result<Response<pbco::RegisterParticipantResponse>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED);
        let wire = request.into_inner();
        let req = RegisterParticipantRequest::try_from(wire)?;
        if !self.is_leader() {
            return self
                .forward(
                    forwarded,
                    pbco::RegisterParticipantRequest::from(req),
                    |mut c, r| async move { c.register_participant(r).await },
                )
                .await;
        }
        let unchanged = self
            .view
            .read()
            .state
            .participants
            .get(&req.participant)
            .is_some_and(|r| r.endpoint == req.endpoint);
        if !unchanged {
            let cmd = Command {
                proposed_at_unix_ms: now_unix_ms(),
                kind: CommandKind::RegisterParticipant {
                    participant: req.participant.clone(),
                    endpoint: req.endpoint.clone(),
                },
            };
            with_timeout(self.raft.client_write(cmd))
                .await?
                .map_err(|e| ClientWriteFailure(e).into_status(&self.raft))?;
            tracing::info!(participant_id = %req.participant, endpoint = %req.endpoint, "participant registered");
        }
        Ok(Response::new(pbco::RegisterParticipantResponse {}))
    }
}
