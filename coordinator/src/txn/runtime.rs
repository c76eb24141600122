//! Runs the 2PC [`Driver`] on this node: one task owns the driver and feeds it events (requests
//! from the gRPC server, votes, one-phase results, acknowledgements, ticks, leadership changes,
//! and the apply feed — every change the state machine applies); the actions it returns become
//! RPCs to participants (spawned tasks that report back) and proposals to Raft (a proposer task
//! that batches decisions into entries — group commit). This file is the only one in the
//! coordinator that proposes to Raft (docs/architecture.md), and it decides nothing: it
//! carries out the driver's actions.

use ratify_proto::hooks::EndpointExt as _;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use openraft::ServerState;
use ratify_proto::convert;
use ratify_proto::pb::participant as pbp;
use ratify_proto::pb::participant::participant_client::ParticipantClient;
use ratify_proto::types::command::{Command, CommandKind, DecideItem, PhaseTwoAck};
use ratify_proto::types::participant::{AckStatus, OnePhaseOutcome, PrepareBatch, TxnBatch};
use ratify_proto::types::{Decision, Endpoint, ParticipantId, TxnId};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;

use super::driver::{Action, Answer, Driver, DriverConfig, Input, PendingPhase2, ReplyId};
use super::failpoints;
use crate::limits;
use crate::metrics::Metrics;
use crate::raft::Raft;
use crate::raft::state_machine::StateView;
use crate::state::Effect;
use ratify_proto::hooks::now_unix_ms;

/// The runtime's limits and timings (defaults from [`crate::limits`]).
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The driver's.
    pub driver: DriverConfig,
    /// How often the driver gets a tick (deadlines, retries, compaction).
    pub tick: Duration,
    /// Events queued for the driver, at most (callers wait beyond).
    pub events_queue_max: usize,
    /// Events the driver takes in one round before acting, at most.
    pub events_per_round_max: usize,
    /// Decisions in one Raft entry, at most.
    pub decide_batch_max: usize,
    /// Raft proposals in flight at once, at most.
    pub proposals_in_flight_max: usize,
    /// Transactions per Prepare/phase-2 RPC, at most (a participant's `batch_txns_max`).
    pub participant_batch_max: usize,
    /// Longest phase-2 RPC.
    pub phase2_rpc_timeout: Duration,
    /// Connecting to a participant gives up after this long.
    pub participant_connect_timeout: Duration,
    /// Pause between attempts of a new leader's catch-up (read index) while it still leads.
    pub leader_ready_retry: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            driver: DriverConfig::default(),
            tick: limits::DRIVER_TICK,
            events_queue_max: limits::DRIVER_EVENTS_QUEUE_MAX,
            events_per_round_max: limits::DRIVER_EVENTS_PER_ROUND_MAX,
            decide_batch_max: limits::DECIDE_BATCH_MAX,
            proposals_in_flight_max: limits::PROPOSALS_IN_FLIGHT_MAX,
            participant_batch_max: limits::PARTICIPANT_BATCH_TXNS_MAX,
            phase2_rpc_timeout: limits::PHASE2_RPC_TIMEOUT,
            participant_connect_timeout: limits::PEER_CONNECT_TIMEOUT,
            leader_ready_retry: limits::LEADER_READY_RETRY,
        }
    }
}

/// The apply feed's sending end, held by the state machine: every apply hands the driver what
/// it changed ([`Effect`]s, in log order). Bounded ([`limits::APPLY_FEED_QUEUE_MAX`]): apply
/// waits when the driver is behind, so no change is ever dropped.
///
/// Only while this node leads is anything sent — from the moment the runtime sees itself
/// leader, before its catch-up read of the state, so every change is either in that read or in
/// the feed after it. A follower's driver keeps nothing; waking it on every apply would only
/// cost CPU.
#[derive(Clone)]
pub struct ApplyFeed {
    tx: mpsc::Sender<Vec<Effect>>,
    leading: Arc<AtomicBool>,
}

impl ApplyFeed {
    /// Whether the driver wants this apply's effects (this node leads).
    pub fn wanted(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Hand `effects` to the driver, waiting while it is behind. Nothing if the runtime has
    /// stopped.
    pub async fn send(&self, effects: Vec<Effect>) {
        let _ = self.tx.send(effects).await;
    }
}

/// The apply feed's receiving end, for [`spawn`].
pub struct FeedReceiver {
    rx: mpsc::Receiver<Vec<Effect>>,
    leading: Arc<AtomicBool>,
}

/// A new apply feed: the sender for the state machine, the receiver for [`spawn`].
pub fn apply_feed() -> (ApplyFeed, FeedReceiver) {
    let (tx, rx) = mpsc::channel(limits::APPLY_FEED_QUEUE_MAX);
    let leading = Arc::new(AtomicBool::new(false));
    (
        ApplyFeed {
            tx,
            leading: leading.clone(),
        },
        FeedReceiver { rx, leading },
    )
}

type MakeInput = Box<dyn FnOnce(ReplyId) -> Input + Send>;

enum Event {
    /// A caller's request; the answer goes to `reply`.
    Request {
        make: MakeInput,
        reply: oneshot::Sender<Answer>,
    },
    /// A result from a task.
    Input(Input),
    /// This node, leader in `term`, has applied the whole log.
    LeaderReady { term: u64 },
}

/// The server's handle on the runtime.
#[derive(Clone)]
pub struct TxnHandle {
    tx: mpsc::Sender<Event>,
}

impl TxnHandle {
    /// Hand a request to the driver and wait for its answer. `make` builds the driver input
    /// from the reply id. If the runtime has stopped, the answer is `NotLeader`.
    pub async fn request(&self, make: impl FnOnce(ReplyId) -> Input + Send + 'static) -> Answer {
        let (reply, rx) = oneshot::channel();
        let event = Event::Request {
            make: Box::new(make),
            reply,
        };
        if self.tx.send(event).await.is_err() {
            return Answer::NotLeader;
        }
        rx.await.unwrap_or(Answer::NotLeader)
    }
}

/// Why no channel to a participant could be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The participant is not in the replicated registry.
    #[error("participant {0} is not registered")]
    NotRegistered(ParticipantId),
    /// Its registered endpoint is not a URI tonic accepts.
    #[error("{endpoint}: {source}")]
    BadEndpoint {
        /// The endpoint.
        endpoint: Endpoint,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// Channels to participants, by their registered endpoint.
pub struct Participants {
    view: StateView,
    channels: Mutex<HashMap<Endpoint, Channel>>,
    connect_timeout: Duration,
}

impl Participants {
    /// Over the registry in `view`.
    pub fn new(view: StateView, connect_timeout: Duration) -> Self {
        Self {
            view,
            channels: Mutex::new(HashMap::new()),
            connect_timeout,
        }
    }

    /// A client for `participant`, from the replicated registry.
    pub fn client(
        &self,
        participant: &ParticipantId,
    ) -> Result<ParticipantClient<Channel>, ChannelError> {
        let endpoint = self
            .view
            .read()
            .state
            .participants
            .get(participant)
            .map(|r| r.endpoint.clone())
            .ok_or_else(|| ChannelError::NotRegistered(participant.clone()))?;
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&endpoint) {
            Some(c) => c.clone(),
            None => {
                let c = tonic::transport::Endpoint::from_shared(ratify_proto::dial::target(
                    endpoint.as_str(),
                ))
                .map_err(|source| ChannelError::BadEndpoint {
                    endpoint: endpoint.clone(),
                    source,
                })?
                .connect_timeout(self.connect_timeout)
                .tcp_nodelay(true)
                .lazy_channel();
                channels.insert(endpoint, c.clone());
                c
            }
        };
        Ok(ParticipantClient::new(channel))
    }
}

enum Job {
    Decide(Vec<DecideItem>),
    Forget(Vec<PhaseTwoAck>),
    Compact {
        before_unix_ms: u64,
    },
    Register {
        participant: ParticipantId,
        endpoint: Endpoint,
    },
}

/// What [`spawn`] needs from the node.
pub struct RuntimeParts {
    /// This node.
    pub node_id: u64,
    /// Its Raft handle.
    pub raft: Raft,
    /// Its applied state.
    pub view: StateView,
    /// The apply feed's receiving end (from [`apply_feed`]).
    pub feed: FeedReceiver,
    /// Channels to participants.
    pub participants: Arc<Participants>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Start the runtime; it stops when `shutdown` turns true.
pub fn spawn(
    parts: RuntimeParts,
    config: RuntimeConfig,
    shutdown: watch::Receiver<bool>,
) -> TxnHandle {
    let RuntimeParts {
        node_id,
        raft,
        view,
        feed,
        participants,
        metrics,
    } = parts;
    let (tx, rx) = mpsc::channel(config.events_queue_max);
    let (jobs_tx, jobs_rx) = mpsc::channel(limits::PROPOSAL_JOBS_QUEUE_MAX);
    tokio::spawn(proposer(
        raft.clone(),
        jobs_rx,
        tx.clone(),
        config.clone(),
        shutdown.clone(),
    ));
    let runtime = Runtime {
        node_id,
        driver: Driver::new(config.driver.clone()),
        raft,
        view,
        participants,
        config,
        tx: tx.clone(),
        replies: HashMap::new(),
        next_reply: 1,
        leader_term: None,
        jobs_tx,
        jobs_backlog: VecDeque::new(),
        metrics,
        leading: feed.leading,
    };
    tokio::spawn(runtime.run(rx, feed.rx, shutdown));
    TxnHandle { tx }
}

struct Runtime {
    node_id: u64,
    driver: Driver,
    raft: Raft,
    view: StateView,
    participants: Arc<Participants>,
    config: RuntimeConfig,
    tx: mpsc::Sender<Event>,
    replies: HashMap<ReplyId, oneshot::Sender<Answer>>,
    next_reply: ReplyId,
    /// The term this node leads in, once it has noticed.
    leader_term: Option<u64>,
    jobs_tx: mpsc::Sender<Job>,
    /// Jobs the proposer could not take yet (the runtime never waits for it).
    jobs_backlog: VecDeque<Job>,
    metrics: Arc<Metrics>,
    /// Shared with the apply feed: whether this node leads (and wants applied changes).
    leading: Arc<AtomicBool>,
}

impl Runtime {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Event>,
        mut feed: mpsc::Receiver<Vec<Effect>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut metrics = self.raft.metrics();
        let mut inputs = Vec::new();
        self.check_leadership(&mut inputs);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some(event) = event else { return };
                    self.accept(event, &mut inputs);
                    while inputs.len() < self.config.events_per_round_max {
                        match rx.try_recv() {
                            Ok(event) => self.accept(event, &mut inputs),
                            Err(_) => break,
                        }
                    }
                }
                effects = feed.recv() => {
                    let Some(effects) = effects else { return }; // The state machine is gone.
                    inputs.push(Input::Applied { effects });
                    while inputs.len() < self.config.events_per_round_max {
                        match feed.try_recv() {
                            Ok(effects) => inputs.push(Input::Applied { effects }),
                            Err(_) => break,
                        }
                    }
                }
                _ = tick.tick() => inputs.push(Input::Tick),
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return; // Raft stopped.
                    }
                    self.check_leadership(&mut inputs);
                }
                _ = shutdown.changed() => {
                    self.step_all(vec![Input::LostLeadership]);
                    return;
                }
            }
            self.step_all(std::mem::take(&mut inputs));
            self.push_jobs();
        }
    }

    fn accept(&mut self, event: Event, inputs: &mut Vec<Input>) {
        match event {
            Event::Request { make, reply } => {
                let id = self.next_reply;
                self.next_reply += 1;
                self.replies.insert(id, reply);
                inputs.push(make(id));
            }
            Event::Input(input) => inputs.push(input),
            Event::LeaderReady { term } => {
                if self.leader_term == Some(term) {
                    // Read the phase-2 work here, in the task that owns the driver: every
                    // decision applied before this read is in it, and every one applied after
                    // it reaches the driver through the apply feed after this input.
                    let pending: Vec<PendingPhase2> = {
                        let v = self.view.read();
                        v.state
                            .decided
                            .iter()
                            .map(|(txn_id, r)| PendingPhase2 {
                                txn_id: *txn_id,
                                decision: r.decision.clone(),
                                pending: r.pending.iter().cloned().collect(),
                            })
                            .collect()
                    };
                    tracing::info!(
                        node_id = self.node_id,
                        term,
                        phase2 = pending.len(),
                        "leading: 2PC driver active"
                    );
                    inputs.push(Input::BecameLeader { pending });
                }
            }
        }
    }

    fn check_leadership(&mut self, inputs: &mut Vec<Input>) {
        let (is_leader, term) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader && m.current_leader == Some(self.node_id),
                m.current_term,
            )
        };
        match (self.leader_term, is_leader) {
            (Some(t), true) if t == term => {}
            (None, false) => {}
            (Some(_), false) => {
                self.leader_term = None;
                self.leading.store(false, Ordering::Release);
                inputs.push(Input::LostLeadership);
            }
            (previous, true) => {
                if previous.is_some() {
                    inputs.push(Input::LostLeadership);
                }
                self.leader_term = Some(term);
                // From now on apply feeds the driver; the catch-up read below covers before.
                self.leading.store(true, Ordering::Release);
                // Before acting as leader: apply everything committed in earlier terms, so
                // the phase-2 work read from the state is complete.
                let raft = self.raft.clone();
                let tx = self.tx.clone();
                let node_id = self.node_id;
                let retry = self.config.leader_ready_retry;
                tokio::spawn(async move {
                    // The catch-up can fail while the node still leads in this term (its
                    // heartbeat round lost to a flaky network): retry until it succeeds or the
                    // term is over. Giving up here would leave this leader's driver inactive
                    // for its whole term (found by the fault-injection harness).
                    while let Err(e) = raft.ensure_linearizable().await {
                        let still_leading = {
                            let m = raft.metrics();
                            let m = m.borrow();
                            m.state == ServerState::Leader
                                && m.current_leader == Some(node_id)
                                && m.current_term == term
                        };
                        if !still_leading {
                            return; // Lost leadership meanwhile; metrics will say so.
                        }
                        tracing::debug!(node_id, term, error = %e, "leader catch-up failed; retrying");
                        tokio::time::sleep(retry).await;
                    }
                    let _ = tx.send(Event::LeaderReady { term }).await;
                });
            }
        }
    }

    fn step_all(&mut self, inputs: Vec<Input>) {
        if inputs.is_empty() {
            return;
        }
        let now = now_unix_ms();
        let mut actions = Vec::new();
        let mut decided = false;
        for input in inputs {
            match &input {
                Input::Applied { effects } => {
                    decided |= self.driver.is_leader()
                        && effects.iter().any(|e| matches!(e, Effect::Decided(_)));
                }
                Input::Votes { votes, .. } => {
                    for (_, vote) in votes {
                        self.metrics.vote(vote);
                    }
                }
                Input::Acks { participant, acks } => {
                    for (txn_id, status) in acks {
                        if matches!(
                            status,
                            AckStatus::NotPrepared | AckStatus::ConflictingOutcome
                        ) {
                            tracing::error!(%txn_id, participant_id = %participant, ?status, "a participant's record contradicts the decision; an operator must look at it");
                        }
                    }
                    failpoints::hit(failpoints::MID_PHASE_TWO);
                }
                Input::LostLeadership => {
                    // Proposals not yet handed to Raft belong to the old term: drop them, so
                    // their failures cannot reach a later term's driver.
                    self.jobs_backlog.clear();
                    actions.retain(|a| {
                        !matches!(
                            a,
                            Action::Propose { .. }
                                | Action::ProposeForget { .. }
                                | Action::ProposeCompact { .. }
                                | Action::ProposeRegister { .. }
                        )
                    });
                }
                _ => {}
            }
            actions.extend(self.driver.step(now, input));
        }
        self.metrics
            .driver_load(self.driver.deciding_len(), self.driver.phase2_backlog());
        self.execute(actions, decided);
    }

    fn execute(&mut self, actions: Vec<Action>, decided: bool) {
        let mut prepares: BTreeMap<ParticipantId, Prepares> = BTreeMap::new();
        let mut decide_items = Vec::new();
        let mut later = Vec::new();
        for action in actions {
            match action {
                Action::Reply { reply, answer } => {
                    if let Some(tx) = self.replies.remove(&reply) {
                        let _ = tx.send(answer);
                    }
                }
                Action::SendPrepare {
                    participant,
                    txn_ids,
                    deadline_unix_ms,
                    call_counts,
                } => {
                    let entry = prepares.entry(participant).or_insert(Prepares {
                        txn_ids: Vec::new(),
                        deadline_unix_ms,
                        call_counts: BTreeMap::new(),
                    });
                    entry.txn_ids.extend(txn_ids);
                    entry.deadline_unix_ms = entry.deadline_unix_ms.min(deadline_unix_ms);
                    entry.call_counts.extend(call_counts);
                }
                Action::Propose { items } => decide_items.extend(items),
                other => later.push(other),
            }
        }
        if decided {
            // Callers have their answers; phase 2 has not started.
            failpoints::hit(failpoints::AFTER_DECISION_APPLIED);
        }
        for chunk in decide_items.chunks(self.config.decide_batch_max) {
            self.jobs_backlog.push_back(Job::Decide(chunk.to_vec()));
        }
        for (participant, p) in prepares {
            for chunk in p.txn_ids.chunks(self.config.participant_batch_max) {
                let call_counts = chunk
                    .iter()
                    .filter_map(|t| p.call_counts.get(t).map(|&n| (*t, n)))
                    .collect();
                tokio::spawn(send_prepare(
                    self.participants.clone(),
                    self.tx.clone(),
                    participant.clone(),
                    PrepareBatch {
                        coordinator_node_id: self.node_id,
                        txn_ids: chunk.to_vec(),
                        call_counts,
                    },
                    p.deadline_unix_ms,
                ));
            }
        }
        for action in later {
            match action {
                Action::SendPhase2 {
                    participant,
                    decision,
                    txn_ids,
                } => {
                    tokio::spawn(send_phase2(
                        self.participants.clone(),
                        self.tx.clone(),
                        self.node_id,
                        participant,
                        decision,
                        txn_ids,
                        self.config.phase2_rpc_timeout,
                    ));
                }
                Action::SendOnePhase {
                    participant,
                    txn_id,
                    call_count,
                    deadline_unix_ms,
                    abort,
                } => {
                    tokio::spawn(send_one_phase(
                        self.participants.clone(),
                        self.tx.clone(),
                        participant,
                        PrepareBatch {
                            coordinator_node_id: self.node_id,
                            txn_ids: vec![txn_id],
                            call_counts: call_count
                                .map(|n| BTreeMap::from([(txn_id, n)]))
                                .unwrap_or_default(),
                        },
                        deadline_unix_ms,
                        abort,
                    ));
                }
                Action::ProposeForget { acks } => self.jobs_backlog.push_back(Job::Forget(acks)),
                Action::ProposeCompact { before_unix_ms } => {
                    self.jobs_backlog.push_back(Job::Compact { before_unix_ms })
                }
                Action::ProposeRegister {
                    participant,
                    endpoint,
                } => self.jobs_backlog.push_back(Job::Register {
                    participant,
                    endpoint,
                }),
                Action::Reply { .. } | Action::SendPrepare { .. } | Action::Propose { .. } => {
                    unreachable!("handled above")
                }
            }
        }
    }

    fn push_jobs(&mut self) {
        while let Some(job) = self.jobs_backlog.pop_front() {
            match self.jobs_tx.try_send(job) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(job)) => {
                    self.jobs_backlog.push_front(job);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

fn remaining_until(deadline_unix_ms: u64) -> Duration {
    Duration::from_millis(deadline_unix_ms.saturating_sub(now_unix_ms()))
}

/// Prepares for one participant, gathered from one step's actions.
struct Prepares {
    txn_ids: Vec<TxnId>,
    deadline_unix_ms: u64,
    call_counts: BTreeMap<TxnId, u32>,
}

async fn send_prepare(
    participants: Arc<Participants>,
    tx: mpsc::Sender<Event>,
    participant: ParticipantId,
    batch: PrepareBatch,
    deadline_unix_ms: u64,
) {
    let failed = |error: String| Input::PrepareFailed {
        participant: participant.clone(),
        txn_ids: batch.txn_ids.clone(),
        error,
    };
    let input = match participants.client(&participant) {
        Err(e) => failed(e.to_string()),
        Ok(mut client) => {
            let req: pbp::PrepareRequest = batch.clone().into();
            match tokio::time::timeout(remaining_until(deadline_unix_ms), client.prepare(req)).await
            {
                Err(_) => failed("no answer before the deadline".into()),
                Ok(Err(status)) => failed(format!("Prepare failed: {}", status.message())),
                Ok(Ok(reply)) => match convert::prepare_results_from_wire(reply.into_inner()) {
                    Err(e) => failed(format!("malformed Prepare reply: {e}")),
                    Ok(results) => {
                        failpoints::hit(failpoints::AFTER_PREPARES_SENT);
                        Input::Votes {
                            participant: participant.clone(),
                            votes: results.into_iter().map(|r| (r.txn_id, r.vote)).collect(),
                        }
                    }
                },
            }
        }
    };
    let _ = tx.send(Event::Input(input)).await;
}

/// C2: one attempt of a one-phase commit (or, with `abort`, of a one-participant transaction's
/// Abort: what the participant did is the outcome); the driver retries on UNKNOWN.
async fn send_one_phase(
    participants: Arc<Participants>,
    tx: mpsc::Sender<Event>,
    participant: ParticipantId,
    batch: PrepareBatch,
    deadline_unix_ms: u64,
    abort: bool,
) {
    let txn_id = batch.txn_ids[0];
    let attempt = async {
        let mut client = participants
            .client(&participant)
            .map_err(|e| e.to_string())?;
        if abort {
            let req = pbp::AbortRequest::from(TxnBatch {
                coordinator_node_id: batch.coordinator_node_id,
                txn_ids: batch.txn_ids,
            });
            let reply = client
                .abort(req)
                .await
                .map_err(|s| s.message().to_owned())?;
            let acks =
                convert::abort_acks_from_wire(reply.into_inner()).map_err(|e| e.to_string())?;
            let status = acks
                .into_iter()
                .find(|a| a.txn_id == txn_id)
                .map(|a| a.status)
                .ok_or_else(|| "no result for the transaction".to_owned())?;
            return Ok(match status {
                AckStatus::Applied | AckStatus::AlreadyApplied => OnePhaseOutcome::Aborted {
                    reason: ratify_proto::types::NoReason::AlreadyAborted,
                    message: String::new(),
                },
                // It had committed in one phase already: that is the outcome.
                AckStatus::ConflictingOutcome => OnePhaseOutcome::Committed,
                AckStatus::Retry | AckStatus::NotPrepared => OnePhaseOutcome::Unknown {
                    message: format!("the participant answered {status:?} to Abort"),
                },
            });
        }
        let req: pbp::CommitOnePhaseRequest = batch.into();
        let reply = client
            .commit_one_phase(req)
            .await
            .map_err(|s| s.message().to_owned())?;
        convert::one_phase_results_from_wire(reply.into_inner())
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|r| r.txn_id == txn_id)
            .map(|r| r.outcome)
            .ok_or_else(|| "no result for the transaction".to_owned())
    };
    let outcome = match tokio::time::timeout(remaining_until(deadline_unix_ms), attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(message)) => OnePhaseOutcome::Unknown { message },
        Err(_) => OnePhaseOutcome::Unknown {
            message: "no answer before the deadline".into(),
        },
    };
    if let OnePhaseOutcome::Unknown { message } = &outcome {
        tracing::debug!(%txn_id, error = %message, "one-phase commit attempt failed; retrying");
    }
    let _ = tx
        .send(Event::Input(Input::OnePhaseResult { txn_id, outcome }))
        .await;
}

async fn send_phase2(
    participants: Arc<Participants>,
    tx: mpsc::Sender<Event>,
    node_id: u64,
    participant: ParticipantId,
    decision: Decision,
    txn_ids: Vec<TxnId>,
    timeout: Duration,
) {
    let failed = |why: String| {
        tracing::debug!(participant_id = %participant, ?decision, error = %why, "phase 2 failed; will retry");
        Input::AcksFailed {
            participant: participant.clone(),
            txn_ids: txn_ids.clone(),
        }
    };
    let batch = TxnBatch {
        coordinator_node_id: node_id,
        txn_ids: txn_ids.clone(),
    };
    let input = match participants.client(&participant) {
        Err(e) => failed(e.to_string()),
        Ok(mut client) => {
            let result = match decision {
                Decision::Commit => {
                    tokio::time::timeout(timeout, client.commit(pbp::CommitRequest::from(batch)))
                        .await
                        .map(|r| r.map(|reply| convert::commit_acks_from_wire(reply.into_inner())))
                }
                Decision::Abort => {
                    tokio::time::timeout(timeout, client.abort(pbp::AbortRequest::from(batch)))
                        .await
                        .map(|r| r.map(|reply| convert::abort_acks_from_wire(reply.into_inner())))
                }
            };
            match result {
                Err(_) => failed("timed out".into()),
                Ok(Err(status)) => failed(status.message().to_owned()),
                Ok(Ok(Err(e))) => failed(format!("malformed reply: {e}")),
                Ok(Ok(Ok(acks))) => Input::Acks {
                    participant: participant.clone(),
                    acks: acks.into_iter().map(|a| (a.txn_id, a.status)).collect(),
                },
            }
        }
    };
    let _ = tx.send(Event::Input(input)).await;
}

/// Proposes decisions and acknowledgements to Raft: takes every queued job, merges them into
/// as few entries as the limits allow (group commit), keeps a bounded number in flight, and
/// reports the applied results to the runtime.
async fn proposer(
    raft: Raft,
    mut jobs: mpsc::Receiver<Job>,
    events: mpsc::Sender<Event>,
    config: RuntimeConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut in_flight = FuturesUnordered::new();
    loop {
        tokio::select! {
            job = jobs.recv(), if in_flight.len() < config.proposals_in_flight_max => {
                let Some(job) = job else { return };
                let mut items = Vec::new();
                let mut acks = Vec::new();
                let mut compact = None;
                let mut registrations = Vec::new();
                let mut next = Some(job);
                while let Some(job) = next.take() {
                    match job {
                        Job::Decide(i) => items.extend(i),
                        Job::Forget(a) => acks.extend(a),
                        Job::Compact { before_unix_ms } => compact = Some(before_unix_ms),
                        Job::Register { participant, endpoint } => {
                            registrations.push((participant, endpoint))
                        }
                    }
                    if items.len() < config.decide_batch_max {
                        next = jobs.try_recv().ok();
                    }
                }
                let now = now_unix_ms();
                if !items.is_empty() {
                    let txn_ids: Vec<TxnId> = items.iter().map(|i| i.txn_id).collect();
                    let cmd = Command { proposed_at_unix_ms: now, kind: CommandKind::Decide(items) };
                    in_flight.push(propose(raft.clone(), cmd, Proposal::Decide(txn_ids)));
                }
                if !acks.is_empty() {
                    let cmd = Command { proposed_at_unix_ms: now, kind: CommandKind::Forget(acks.clone()) };
                    in_flight.push(propose(raft.clone(), cmd, Proposal::Forget(acks)));
                }
                if let Some(before_unix_ms) = compact {
                    let cmd = Command { proposed_at_unix_ms: now, kind: CommandKind::Compact { before_unix_ms } };
                    in_flight.push(propose(raft.clone(), cmd, Proposal::Compact));
                }
                for (participant, endpoint) in registrations {
                    let cmd = Command {
                        proposed_at_unix_ms: now,
                        kind: CommandKind::RegisterParticipant { participant: participant.clone(), endpoint: endpoint.clone() },
                    };
                    in_flight.push(propose(raft.clone(), cmd, Proposal::Register(participant, endpoint)));
                }
            }
            Some((proposal, result)) = in_flight.next(), if !in_flight.is_empty() => {
                // What was applied reaches the driver through the apply feed; only failures
                // are reported from here.
                let input = match (proposal, result) {
                    (_, Ok(())) | (Proposal::Compact, Err(_)) => None,
                    (Proposal::Decide(txn_ids), Err(e)) => {
                        tracing::debug!(error = %e, "proposal failed");
                        Some(Input::ProposeFailed { txn_ids })
                    }
                    (Proposal::Forget(acks), Err(_)) => Some(Input::ForgetFailed { acks }),
                    (Proposal::Register(participant, endpoint), Err(e)) => {
                        tracing::debug!(error = %e, "registration proposal failed");
                        Some(Input::RegisterFailed { participant, endpoint })
                    }
                };
                if let Some(input) = input {
                    let _ = events.send(Event::Input(input)).await;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

enum Proposal {
    Decide(Vec<TxnId>),
    Forget(Vec<PhaseTwoAck>),
    Compact,
    Register(ParticipantId, Endpoint),
}

async fn propose(raft: Raft, cmd: Command, proposal: Proposal) -> (Proposal, Result<(), String>) {
    let rx = match raft.client_write_ff(cmd).await {
        Ok(rx) => rx,
        Err(e) => return (proposal, Err(e.to_string())),
    };
    if matches!(proposal, Proposal::Decide(_)) {
        failpoints::hit(failpoints::AFTER_DECISION_PROPOSED);
    }
    let result = match rx.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("raft dropped the proposal".to_owned()),
    };
    (proposal, result)
}
