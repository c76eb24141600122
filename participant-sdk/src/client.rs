//! The initiator's client: begin a transaction, call participant services with its context,
//! and ask the coordinator cluster to commit it.
//!
//! Leader discovery and retries across coordinator nodes are the client's job: `commit`
//! retries with the same transaction id (safe: Commit is idempotent by id, rule C10) until the
//! transaction's deadline plus `commit_grace`, and answers [`Outcome::Unknown`] — never a guess —
//! if it cannot learn the outcome by then.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratify_proto::leader::{CallError, LeaderFollower, RetryPolicy};
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::coordinator_client::CoordinatorClient;
use ratify_proto::types::coordinator::{
    AbortRequest, AbortResponse, CommitRequest, CommitResponse, StatusRequest, StatusResponse,
};
use ratify_proto::types::{Endpoint, Outcome, ParticipantId, TxnId};
use tokio::time::Instant;

use crate::context::TxnContext;
use crate::error::{Error, Result};

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// A transaction's deadline is this long after `begin` (participants abort staged work past
    /// it; the coordinator counts late votes as NO).
    pub txn_timeout: Duration,
    /// How long `commit` keeps trying past the deadline to learn the outcome.
    pub commit_grace: Duration,
    /// How long `status` and `abort` keep trying.
    pub call_timeout: Duration,
    /// Participants per transaction, at most (the coordinator's limit is 64 by default).
    pub participants_per_txn_max: usize,
    /// Retry timing across coordinator nodes.
    pub retry: RetryPolicy,
    /// Where to really connect: `host:port` → `host:port` (a proxy, a tunnel), for the
    /// coordinators given and the leaders they name. Empty: the process's `RATIFY_DIAL_MAP`.
    pub dial_map: std::collections::BTreeMap<String, String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            txn_timeout: Duration::from_secs(10),
            commit_grace: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
            participants_per_txn_max: 64,
            retry: RetryPolicy::default(),
            dial_map: std::collections::BTreeMap::new(),
        }
    }
}

struct Inner {
    coordinators: LeaderFollower,
    config: ClientConfig,
}

/// A connection to a coordinator cluster. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn unix_ms() -> u64 {
    ratify_proto::hooks::now_unix_ms()
}

fn call_error(e: CallError) -> Error {
    Error::Coordinator(e.to_string())
}

impl Client {
    /// A client for the cluster reachable at `endpoints` (any nodes; the client finds the
    /// leader). Connections are made lazily, so this succeeds while the cluster is down.
    pub fn connect(endpoints: Vec<Endpoint>) -> Result<Self> {
        Self::with_config(endpoints, ClientConfig::default())
    }

    /// As [`Client::connect`], with settings.
    pub fn with_config(endpoints: Vec<Endpoint>, config: ClientConfig) -> Result<Self> {
        let mut coordinators =
            LeaderFollower::new(endpoints, config.retry).map_err(Error::Coordinator)?;
        if !config.dial_map.is_empty() {
            coordinators = coordinators.with_dial_map(config.dial_map.clone());
        }
        Ok(Self {
            inner: Arc::new(Inner {
                coordinators,
                config,
            }),
        })
    }

    /// Begin a transaction: a new time-ordered id and a deadline. No round trip.
    pub fn begin(&self) -> Transaction {
        self.begin_with(None)
    }

    /// Begin a retry of a transaction that aborted (a lock conflict, a NO vote): a new
    /// transaction, with a new id and deadline, that keeps `first_attempt`'s age for the
    /// participants' lock policy (P9) — so a transaction that keeps losing conflicts on hot keys
    /// becomes the oldest and wins, instead of dying as the youngest forever. Pass
    /// [`Transaction::first_attempt`] of the attempt that aborted.
    pub fn begin_retry(&self, first_attempt: TxnId) -> Transaction {
        self.begin_with(Some(first_attempt))
    }

    fn begin_with(&self, first_attempt: Option<TxnId>) -> Transaction {
        let deadline_unix_ms = unix_ms() + self.inner.config.txn_timeout.as_millis() as u64;
        Transaction {
            client: self.clone(),
            ctx: TxnContext {
                txn_id: TxnId::new_v7(),
                deadline_unix_ms: Some(deadline_unix_ms),
                first_attempt,
            },
            participants: Arc::new(Mutex::new(BTreeSet::new())),
        }
    }

    /// A transaction's outcome, linearizable (C9): asks the leader.
    pub async fn status(&self, txn_id: TxnId) -> Result<StatusResponse> {
        let req: pbco::StatusRequest = StatusRequest { txn_id }.into();
        let deadline = Instant::now() + self.inner.config.call_timeout;
        let reply = self
            .inner
            .coordinators
            .call(deadline, |ch| {
                let req = req.clone();
                async move { CoordinatorClient::new(ch).status(req).await }
            })
            .await
            .map_err(call_error)?;
        StatusResponse::try_from(reply)
            .map_err(|e| Error::Coordinator(format!("malformed Status reply: {e}")))
    }

    /// Commit `txn_id` over `participants` (the lower-level form of [`Transaction::commit`],
    /// for retrying a commit from another process). `Ok(Outcome::Unknown)` when the outcome
    /// could not be learned before `deadline_unix_ms` plus the grace; `Err` when the coordinator
    /// refused the request itself (malformed, unknown participant).
    pub async fn commit_txn(
        &self,
        txn_id: TxnId,
        participants: Vec<ParticipantId>,
        deadline_unix_ms: u64,
    ) -> Result<Outcome> {
        let req: pbco::CommitRequest = CommitRequest {
            txn_id,
            participants,
            deadline_unix_ms: Some(deadline_unix_ms),
        }
        .into();
        let remaining = Duration::from_millis(deadline_unix_ms.saturating_sub(unix_ms()));
        let until = Instant::now() + remaining + self.inner.config.commit_grace;
        let reply = self
            .inner
            .coordinators
            .call(until, |ch| {
                let req = req.clone();
                async move { CoordinatorClient::new(ch).commit(req).await }
            })
            .await;
        match reply {
            Ok(r) => Ok(CommitResponse::try_from(r)
                .map_err(|e| Error::Coordinator(format!("malformed Commit reply: {e}")))?
                .outcome),
            Err(CallError::Deadline { last, .. }) => {
                tracing::warn!(%txn_id, last = %last, "commit outcome unknown");
                Ok(Outcome::Unknown)
            }
            Err(e @ CallError::Refused { .. }) => Err(call_error(e)),
        }
    }

    async fn abort_txn(
        &self,
        txn_id: TxnId,
        participants: Vec<ParticipantId>,
        message: String,
    ) -> Result<Outcome> {
        let req: pbco::AbortRequest = AbortRequest {
            txn_id,
            participants,
            message,
        }
        .into();
        let until = Instant::now() + self.inner.config.call_timeout;
        let reply = self
            .inner
            .coordinators
            .call(until, |ch| {
                let req = req.clone();
                async move { CoordinatorClient::new(ch).abort(req).await }
            })
            .await;
        match reply {
            Ok(r) => Ok(AbortResponse::try_from(r)
                .map_err(|e| Error::Coordinator(format!("malformed Abort reply: {e}")))?
                .outcome),
            Err(CallError::Deadline { .. }) => Ok(Outcome::Unknown),
            Err(e) => Err(call_error(e)),
        }
    }
}

/// A transaction in progress at the initiator. Clones share the participant list, so
/// concurrent calls to several services can each enlist theirs.
#[derive(Clone)]
pub struct Transaction {
    client: Client,
    ctx: TxnContext,
    participants: Arc<Mutex<BTreeSet<ParticipantId>>>,
}

impl Transaction {
    /// The transaction id.
    pub fn id(&self) -> TxnId {
        self.ctx.txn_id
    }

    /// The first attempt of the work this transaction does: its own id, or for a retry (see
    /// [`Client::begin_retry`]) the id of the attempt it retries.
    pub fn first_attempt(&self) -> TxnId {
        self.ctx.first_attempt.unwrap_or(self.ctx.txn_id)
    }

    /// Its context (id and deadline), as participants receive it.
    pub fn context(&self) -> TxnContext {
        self.ctx
    }

    /// Record `participant` as taking part (done for you by [`Transaction::request`]).
    pub fn enlist(&self, participant: &ParticipantId) {
        self.participants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(participant.clone());
    }

    /// The participants enlisted so far.
    pub fn participants(&self) -> Vec<ParticipantId> {
        self.participants
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// A request to `participant`'s service carrying this transaction's context; the
    /// participant is enlisted.
    pub fn request<T>(&self, participant: &ParticipantId, message: T) -> tonic::Request<T> {
        self.enlist(participant);
        let mut request = tonic::Request::new(message);
        self.ctx.attach(request.metadata_mut());
        request
    }

    /// Commit: the coordinator runs two-phase commit over the enlisted participants and
    /// answers with the applied decision. `Ok(Outcome::Unknown)` if the outcome could not be
    /// learned in time (ask [`Client::status`] later); `Err` if the coordinator refused the
    /// request itself.
    pub async fn commit(self) -> Result<Outcome> {
        let participants = self.participants();
        let max = self.client.inner.config.participants_per_txn_max;
        if participants.len() > max {
            return Err(Error::LimitExceeded {
                limit: "participants_per_txn_max",
                max,
                asked: participants.len(),
            });
        }
        let deadline = self.ctx.deadline_unix_ms.unwrap_or_else(unix_ms);
        self.client
            .commit_txn(self.ctx.txn_id, participants, deadline)
            .await
    }

    /// Abort: recorded first-wins at the coordinator, which tells the participants.
    /// (`Outcome::Committed` if a commit of this transaction won first.)
    pub async fn abort(self, why: &str) -> Result<Outcome> {
        let participants = self.participants();
        self.client
            .abort_txn(self.ctx.txn_id, participants, why.to_owned())
            .await
    }
}
