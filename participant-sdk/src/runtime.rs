//! The participant runtime: the `ratify.participant.v1.Participant` gRPC service over a
//! [`Resource`], registration with the coordinator cluster, and the background work — the
//! resolver for in-doubt transactions (P3) and the store's maintenance (staged timeouts,
//! outcome retention).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use ratify_proto::convert;
use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::leader::{CallError, LeaderFollower, RetryPolicy};
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::coordinator_client::CoordinatorClient;
use ratify_proto::pb::participant as pbp;
use ratify_proto::pb::participant::participant_server::{
    Participant as ParticipantApi, ParticipantServer,
};
use ratify_proto::types::coordinator::{
    RegisterParticipantRequest, ResolveRequest, ResolveResponse,
};
use ratify_proto::types::participant::{
    AckResult, AckStatus, OnePhaseOutcome, OnePhaseResult, PrepareBatch, PrepareResult, TxnBatch,
};
use ratify_proto::types::{Endpoint, FinalDecision, NoReason, ParticipantId, TxnId, Vote};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::calls::{CallLimits, Calls};
use crate::error::Error;
use crate::guard::{Guarded, Kept};
use crate::resource::Resource;

/// Failpoint: a participant crashes when a Commit arrives, before applying it (it voted YES
/// earlier; on restart it finds the transaction in doubt and resolves it).
pub const FAILPOINT_BEFORE_COMMIT: &str = "participant_before_commit";
/// Failpoint: a participant crashes after its prepare is durable, before answering YES.
pub const FAILPOINT_AFTER_PREPARE: &str = "participant_after_prepare";

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct ParticipantConfig {
    /// This participant's stable name.
    pub participant_id: ParticipantId,
    /// Where the coordinator reaches this participant's gRPC service.
    pub advertise: Endpoint,
    /// The coordinator cluster (any nodes).
    pub coordinators: Vec<Endpoint>,
    /// A prepared transaction without a decision for this long is resolved with the
    /// coordinator (P3). Transactions found prepared at start-up are resolved at once.
    pub resolve_after: Duration,
    /// How often the background loop looks for work.
    pub tick: Duration,
    /// First retry pause of a Resolve; doubles up to `resolve_backoff_max`.
    pub resolve_backoff_min: Duration,
    /// Longest retry pause of a Resolve.
    pub resolve_backoff_max: Duration,
    /// Resolves in flight at once, at most.
    pub resolves_in_flight_max: usize,
    /// Transactions per Prepare/Commit/Abort/CommitOnePhase call, at most.
    pub batch_txns_max: usize,
    /// How long one call to the coordinator cluster (registration, Resolve) may take, leader
    /// hints and retries included.
    pub coordinator_call_timeout: Duration,
    /// Limits of the record of business calls ([`Participant::guard`], P10).
    pub calls: CallLimits,
}

impl ParticipantConfig {
    /// Settings with defaults for everything but the identity and the addresses.
    pub fn new(
        participant_id: ParticipantId,
        advertise: Endpoint,
        coordinators: Vec<Endpoint>,
    ) -> Self {
        Self {
            participant_id,
            advertise,
            coordinators,
            resolve_after: Duration::from_secs(5),
            tick: Duration::from_millis(200),
            resolve_backoff_min: Duration::from_millis(100),
            resolve_backoff_max: Duration::from_secs(5),
            resolves_in_flight_max: 64,
            batch_txns_max: 1_024,
            coordinator_call_timeout: Duration::from_secs(10),
            calls: CallLimits::default(),
        }
    }
}

/// The gRPC service the coordinator calls (Prepare / Commit / Abort / CommitOnePhase).
pub struct ParticipantService<R> {
    resource: Arc<R>,
    batch_txns_max: usize,
    calls: Arc<Calls<Arc<Kept>>>,
}

/// A batch's transactions, checked against the batch limit.
trait Batch {
    fn len(&self) -> usize;
}

impl Batch for TxnBatch {
    fn len(&self) -> usize {
        self.txn_ids.len()
    }
}

impl Batch for PrepareBatch {
    fn len(&self) -> usize {
        self.txn_ids.len()
    }
}

#[allow(clippy::result_large_err)] // tonic::Status is the error type of every handler
fn batch<W, B>(request: Request<W>, max: usize) -> Result<B, Status>
where
    B: Batch + TryFrom<W, Error = ratify_proto::error::ConvertError>,
{
    let batch = B::try_from(request.into_inner())?;
    if batch.len() > max {
        let mut d = ErrorDetail::new(
            ErrorCode::LimitExceeded,
            format!("{} transactions in one call; at most {max}", batch.len()),
        );
        d.limit = Some(format!("batch_txns_max={max}"));
        return Err(d.into_status());
    }
    Ok(batch)
}

fn vote_for_error(e: &Error) -> Vote {
    let reason = match e {
        Error::LimitExceeded { .. } => NoReason::LimitExceeded,
        Error::Conflict { .. } => NoReason::Conflict,
        _ => NoReason::StorageError,
    };
    Vote::No {
        reason,
        message: e.to_string(),
    }
}

/// Run a handler's work on the resource to the end in a task of its own. tonic drops a
/// handler's future when the caller gives up (its deadline passes, its connection breaks); a
/// phase transition dropped between its in-memory step and its durable write would leave the
/// transaction stuck half-way (locks held, the next Prepare or Commit answered wrongly). Done
/// here, once, so no `Resource` implementation has to be cancel-safe.
/// The commit of `txn_id` begins here (Prepare, or a one-phase commit): close its call record
/// (no more calls) and, if a call failed, was still running, or the initiator's count of its
/// calls here does not match the calls completed here, doom it first (P10) — the resource
/// then votes NO. `Err` (the runtime votes NO) when the doom could not be recorded.
async fn check_calls<R: Resource>(
    resource: &R,
    calls: &Calls<Arc<Kept>>,
    txn_id: TxnId,
    expected_calls: Option<u32>,
) -> crate::error::Result<()> {
    let closed = calls.close(txn_id, Instant::now());
    match closed.refusal(expected_calls) {
        None => Ok(()),
        Some(why) => {
            tracing::debug!(%txn_id, why = %why, "the transaction's calls do not allow it to commit here");
            resource.doom(txn_id, why).await
        }
    }
}

async fn to_completion<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, Status> {
    tokio::spawn(work)
        .await
        .map_err(|e| Status::internal(format!("the participant's work stopped: {e}")))
}

#[tonic::async_trait]
impl<R: Resource> ParticipantApi for ParticipantService<R> {
    async fn prepare(
        &self,
        request: Request<pbp::PrepareRequest>,
    ) -> Result<Response<pbp::PrepareResponse>, Status> {
        let batch: PrepareBatch = batch(request, self.batch_txns_max)?;
        let resource = self.resource.clone();
        let calls = self.calls.clone();
        // Concurrently: the store's group commit then covers the whole batch with one fsync.
        let votes = to_completion(async move {
            let (resource, calls, counts) = (&resource, &calls, &batch.call_counts);
            join_all(batch.txn_ids.iter().map(|&txn_id| async move {
                let checked =
                    check_calls(&**resource, calls, txn_id, counts.get(&txn_id).copied()).await;
                let prepared = match checked {
                    Ok(()) => resource.prepare(txn_id).await,
                    Err(e) => Err(e),
                };
                // Any vote is final (an error votes NO): the record has served.
                calls.forget(txn_id);
                let vote = match prepared {
                    Ok(v) => {
                        if v == Vote::Yes {
                            ratify_proto::failpoint::hit(FAILPOINT_AFTER_PREPARE);
                        }
                        v
                    }
                    Err(e) => {
                        tracing::warn!(%txn_id, error = %e, "prepare failed; voting NO");
                        vote_for_error(&e)
                    }
                };
                PrepareResult { txn_id, vote }
            }))
            .await
        })
        .await?;
        Ok(Response::new(convert::prepare_results_to_wire(votes)))
    }

    async fn commit(
        &self,
        request: Request<pbp::CommitRequest>,
    ) -> Result<Response<pbp::CommitResponse>, Status> {
        let batch: TxnBatch = batch(request, self.batch_txns_max)?;
        ratify_proto::failpoint::hit(FAILPOINT_BEFORE_COMMIT);
        for txn_id in &batch.txn_ids {
            self.calls.forget(*txn_id);
        }
        let acks = phase_two(self.resource.clone(), batch.txn_ids, PhaseTwo::Commit).await?;
        Ok(Response::new(convert::commit_acks_to_wire(acks)))
    }

    async fn abort(
        &self,
        request: Request<pbp::AbortRequest>,
    ) -> Result<Response<pbp::AbortResponse>, Status> {
        let batch: TxnBatch = batch(request, self.batch_txns_max)?;
        for txn_id in &batch.txn_ids {
            self.calls.forget(*txn_id);
        }
        let acks = phase_two(self.resource.clone(), batch.txn_ids, PhaseTwo::Abort).await?;
        Ok(Response::new(convert::abort_acks_to_wire(acks)))
    }

    async fn commit_one_phase(
        &self,
        request: Request<pbp::CommitOnePhaseRequest>,
    ) -> Result<Response<pbp::CommitOnePhaseResponse>, Status> {
        let batch: PrepareBatch = batch(request, self.batch_txns_max)?;
        let resource = self.resource.clone();
        let calls = self.calls.clone();
        let results = to_completion(async move {
            let (resource, calls, counts) = (&resource, &calls, &batch.call_counts);
            join_all(batch.txn_ids.iter().map(|&txn_id| async move {
            let checked = check_calls(&**resource, calls, txn_id, counts.get(&txn_id).copied()).await;
            let committed = match checked {
                Ok(()) => resource.commit_one_phase(txn_id).await,
                Err(e) => Err(e),
            };
            let outcome = match committed {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(%txn_id, error = %e, "one-phase commit failed; outcome unknown");
                    OnePhaseOutcome::Unknown {
                        message: e.to_string(),
                    }
                }
            };
            // The record has served once the outcome is final. Not after an unknown one: the
            // coordinator retries, and until then the record stays closed — no new call runs,
            // no repeat runs again — and its count stands (it expires with `idle_ttl`).
            if !matches!(outcome, OnePhaseOutcome::Unknown { .. }) {
                calls.forget(txn_id);
            }
            OnePhaseResult { txn_id, outcome }
        }))
        .await
        })
        .await?;
        Ok(Response::new(convert::one_phase_results_to_wire(results)))
    }
}

/// Which phase-2 message.
#[derive(Clone, Copy)]
enum PhaseTwo {
    Commit,
    Abort,
}

/// Apply a phase-2 batch concurrently (one group-committed fsync covers it), run to
/// completion whatever the caller does.
async fn phase_two<R: Resource>(
    resource: Arc<R>,
    txn_ids: Vec<TxnId>,
    op: PhaseTwo,
) -> Result<Vec<AckResult>, Status> {
    to_completion(async move {
        let resource = &resource;
        join_all(txn_ids.iter().map(|&txn_id| async move {
            let result = match op {
                PhaseTwo::Commit => resource.commit(txn_id).await,
                PhaseTwo::Abort => resource.abort(txn_id).await,
            };
            ack(txn_id, result)
        }))
        .await
    })
    .await
}

fn ack(txn_id: TxnId, result: crate::error::Result<AckStatus>) -> AckResult {
    match result {
        Ok(status) => AckResult {
            txn_id,
            status,
            message: String::new(),
        },
        Err(e) => {
            tracing::warn!(%txn_id, error = %e, "phase-2 message failed; the coordinator will retry");
            AckResult {
                txn_id,
                status: AckStatus::Retry,
                message: e.to_string(),
            }
        }
    }
}

/// A participant's background work running in its own task ([`Participant::spawn_background`]).
pub struct Background {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Stop it and wait until it has stopped.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A participant: the gRPC service, the call guard for the service's own API, and the
/// background work, over one resource.
pub struct Participant<R> {
    resource: Arc<R>,
    config: ParticipantConfig,
    coordinators: Arc<LeaderFollower>,
    calls: Arc<Calls<Arc<Kept>>>,
    /// The guard's buffer budget (`calls.buffer_bytes_max`).
    buffers: Arc<tokio::sync::Semaphore>,
}

impl<R> Clone for Participant<R> {
    fn clone(&self) -> Self {
        Self {
            resource: self.resource.clone(),
            config: self.config.clone(),
            coordinators: self.coordinators.clone(),
            calls: self.calls.clone(),
            buffers: self.buffers.clone(),
        }
    }
}

struct Retry {
    /// When the next attempt is due; `None` while an attempt is in flight.
    next_at: Option<Instant>,
    backoff: Duration,
}

impl<R: Resource> Participant<R> {
    /// A participant over `resource`.
    pub fn new(resource: Arc<R>, config: ParticipantConfig) -> crate::error::Result<Self> {
        config
            .calls
            .validate()
            .map_err(|e| Error::Context(format!("participant config: {e}")))?;
        if let Some(staged) = resource.staged_timeout()
            && config.calls.idle_ttl < staged
        {
            return Err(Error::Context(format!(
                "participant config: calls.idle_ttl ({:?}) must be at least the store's staged timeout ({staged:?}): a repeated call must find its record as long as its transaction can commit",
                config.calls.idle_ttl
            )));
        }
        let coordinators = LeaderFollower::new(config.coordinators.clone(), RetryPolicy::default())
            .map_err(Error::Coordinator)?;
        Ok(Self {
            resource,
            calls: Arc::new(Calls::new(config.calls.clone())),
            buffers: Arc::new(tokio::sync::Semaphore::new(
                config
                    .calls
                    .buffer_bytes_max
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            )),
            config,
            coordinators: Arc::new(coordinators),
        })
    }

    /// The gRPC service the coordinator calls, to add to the service's tonic server.
    pub fn service(&self) -> ParticipantServer<ParticipantService<R>> {
        ParticipantServer::new(ParticipantService {
            resource: self.resource.clone(),
            batch_txns_max: self.config.batch_txns_max,
            calls: self.calls.clone(),
        })
    }

    /// The service's own gRPC service (`BankServer::new(..)`, say) behind the call guard
    /// (docs/protocol.md P10; [`crate::guard`]): an error a handler returns for a call in a
    /// transaction dooms the transaction here unless declared [`crate::harmless`], a retried
    /// call (same `ratify-call-id`) is answered from its first attempt instead of running
    /// twice, handlers run to completion when the caller goes away, and no call runs once the
    /// commit has begun. Add it to the tonic server in place of the bare service.
    pub fn guard<S>(&self, service: S) -> Guarded<S, R> {
        Guarded::new(
            service,
            self.resource.clone(),
            self.calls.clone(),
            self.buffers.clone(),
        )
    }

    /// Transactions with a record of business calls here (for tests and metrics).
    pub fn calls_tracked(&self) -> usize {
        self.calls.len()
    }

    /// The resource.
    pub fn resource(&self) -> &Arc<R> {
        &self.resource
    }

    /// Register `{participant_id → advertise}` with the coordinator cluster, retrying until it
    /// succeeds or `shutdown` completes. Returns whether it registered.
    pub async fn register(&self, shutdown: impl std::future::Future<Output = ()>) -> bool {
        let req: pbco::RegisterParticipantRequest = RegisterParticipantRequest {
            participant: self.config.participant_id.clone(),
            endpoint: self.config.advertise.clone(),
        }
        .into();
        tokio::pin!(shutdown);
        let mut pause = self.config.resolve_backoff_min;
        loop {
            let attempt = self.coordinators.call(
                Instant::now() + self.config.coordinator_call_timeout,
                |ch| {
                    let req = req.clone();
                    async move { CoordinatorClient::new(ch).register_participant(req).await }
                },
            );
            tokio::select! {
                () = &mut shutdown => return false,
                r = attempt => match r {
                    Ok(_) => {
                        tracing::info!(participant_id = %self.config.participant_id, endpoint = %self.config.advertise, "registered with the coordinator");
                        return true;
                    }
                    Err(e) => tracing::warn!(error = %e, "registration failed; retrying"),
                },
            }
            tokio::select! {
                () = &mut shutdown => return false,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(self.config.resolve_backoff_max);
        }
    }

    /// Ask the coordinator for the decision on `txn_id` (recording ABORT if none exists).
    pub async fn resolve(&self, txn_id: TxnId) -> Result<FinalDecision, CallError> {
        let req: pbco::ResolveRequest = ResolveRequest {
            txn_id,
            participant: self.config.participant_id.clone(),
        }
        .into();
        let reply = self
            .coordinators
            .call(
                Instant::now() + self.config.coordinator_call_timeout,
                |ch| {
                    let req = req.clone();
                    async move { CoordinatorClient::new(ch).resolve(req).await }
                },
            )
            .await?;
        ResolveResponse::try_from(reply)
            .map(|r| r.decision)
            .map_err(|e| CallError::Refused {
                endpoint: "coordinator".into(),
                status: Status::internal(format!("malformed Resolve reply: {e}")),
            })
    }

    async fn resolve_and_apply(&self, txn_id: TxnId) -> Result<(), String> {
        if ratify_proto::planted::active(ratify_proto::planted::Bug::AbortAfterYes) {
            // Planted bug (b): decide alone after voting YES.
            tracing::warn!(%txn_id, "planted bug: aborting an in-doubt transaction without asking");
            return match self.resource.abort(txn_id).await {
                Ok(AckStatus::Retry) => Err("the store asked to retry".into()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            };
        }
        let decision = self.resolve(txn_id).await.map_err(|e| e.to_string())?;
        let applied = match &decision {
            FinalDecision::Commit => self.resource.commit(txn_id).await,
            FinalDecision::Abort(_) => self.resource.abort(txn_id).await,
        }
        .map_err(|e| e.to_string())?;
        tracing::info!(%txn_id, decision = ?decision.decision(), ?applied, "resolved an in-doubt transaction");
        match applied {
            AckStatus::Retry => Err("the store asked to retry".into()),
            _ => Ok(()),
        }
    }

    /// [`Self::run_background`] in a task of its own, until [`Background::stop`].
    pub fn spawn_background(&self) -> Background {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let participant = self.clone();
        let task = tokio::spawn(async move {
            participant
                .run_background(async move {
                    let _ = stopped.changed().await;
                })
                .await;
        });
        Background { stop, task }
    }

    /// The background work, until `shutdown`: registration, then every `tick` the store's
    /// maintenance and the resolver. Transactions found in doubt at start are resolved at once;
    /// later ones after `resolve_after`. A Resolve that fails is retried with backoff — the
    /// participant never decides on its own (P1).
    pub async fn run_background(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        // In doubt at start: nobody will tell us, so ask at once.
        let mut retries: BTreeMap<TxnId, Retry> = match self.resource.in_doubt().await {
            Ok(list) => list
                .into_iter()
                .map(|d| {
                    (
                        d.txn_id,
                        Retry {
                            next_at: Some(Instant::now()),
                            backoff: self.config.resolve_backoff_min,
                        },
                    )
                })
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list in-doubt transactions");
                BTreeMap::new()
            }
        };
        if !retries.is_empty() {
            tracing::info!(
                count = retries.len(),
                "transactions in doubt at start; resolving"
            );
        }
        let registered = self.register(&mut shutdown).await;
        if !registered {
            return;
        }
        let mut in_flight = FuturesUnordered::new();
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                Some((txn_id, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(()) => { retries.remove(&txn_id); }
                        Err(e) => {
                            let r = retries.entry(txn_id).or_insert(Retry { next_at: Some(Instant::now()), backoff: self.config.resolve_backoff_min });
                            tracing::warn!(%txn_id, error = %e, retry_in = ?r.backoff, "resolving failed; will retry");
                            r.next_at = Some(Instant::now() + r.backoff);
                            r.backoff = (r.backoff * 2).min(self.config.resolve_backoff_max);
                        }
                    }
                }
                _ = ticker.tick() => {
                    self.resource.maintain().await;
                    let expired = self.calls.expire(Instant::now());
                    if expired > 0 {
                        tracing::debug!(expired, "dropped idle call records");
                    }
                    let now_ms = ratify_proto::hooks::now_unix_ms();
                    let after_ms = self.config.resolve_after.as_millis() as u64;
                    if let Ok(list) = self.resource.in_doubt().await {
                        let present: std::collections::HashSet<TxnId> = list.iter().map(|d| d.txn_id).collect();
                        // Decided meanwhile (phase 2 arrived): stop tracking.
                        retries.retain(|id, _| present.contains(id));
                        for d in list {
                            if d.prepared_at_unix_ms + after_ms <= now_ms {
                                retries.entry(d.txn_id).or_insert(Retry { next_at: Some(Instant::now()), backoff: self.config.resolve_backoff_min });
                            }
                        }
                    }
                    let now = Instant::now();
                    let due: Vec<TxnId> = retries
                        .iter()
                        .filter(|(_, r)| r.next_at.is_some_and(|at| at <= now))
                        .map(|(id, _)| *id)
                        .take(self.config.resolves_in_flight_max.saturating_sub(in_flight.len()))
                        .collect();
                    for txn_id in due {
                        // Not due again until this attempt finishes.
                        if let Some(r) = retries.get_mut(&txn_id) {
                            r.next_at = None;
                        }
                        let this = self.clone();
                        in_flight.push(async move { (txn_id, this.resolve_and_apply(txn_id).await) });
                    }
                }
            }
        }
    }
}
