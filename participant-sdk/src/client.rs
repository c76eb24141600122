//! The initiator's client: begin a transaction, call participant services with its context,
//! and ask the coordinator cluster to commit it.
//!
//! Leader discovery and retries across coordinator nodes are the client's job: `commit`
//! retries with the same transaction id (safe: Commit is idempotent by id, rule C10) until the
//! transaction's deadline plus `commit_grace`, and answers [`Outcome::Unknown`] — never a guess —
//! if it cannot learn the outcome by then.
//!
//! # The initiator's side of the call contract (docs/protocol.md P10)
//!
//! - Every call gets its own call id (`ratify-call-id`); [`Transaction::call`] retries a call
//!   whose answer was lost with the same id, and the participant answers the retry from the
//!   first attempt instead of running it twice.
//! - The transaction remembers every call that failed. [`Transaction::commit`] after a failed
//!   call does not commit: it aborts and answers `Aborted`, naming the call — PostgreSQL's rule
//!   (after an error, COMMIT is ROLLBACK). [`Transaction::forgive_failures`] says otherwise
//!   (the participant that failed a call still votes NO unless it declared the error harmless).
//! - Commit tells the coordinator how many calls were made to each participant; a participant
//!   that did not complete exactly that many (a call never arrived, or was still running)
//!   votes NO. So even a commit after a lost call cannot leave that call out.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ratify_proto::error::ErrorDetail;
use ratify_proto::leader::{CallError, LeaderFollower, RetryPolicy};
use ratify_proto::metadata::{CALL_ID, DOOMED, HARMLESS};
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::coordinator::coordinator_client::CoordinatorClient;
use ratify_proto::types::coordinator::{
    AbortRequest, AbortResponse, CommitRequest, CommitResponse, StatusRequest, StatusResponse,
};
use ratify_proto::types::{AbortCause, AbortInfo, Endpoint, Outcome, ParticipantId, TxnId};
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
    /// Attempts of one business call by [`Transaction::call`] when its answer is lost (the
    /// participant unreachable, the call timed out), at most; each retry has the same call id.
    pub call_attempts_max: u32,
    /// First pause before retrying a call; doubles with each retry.
    pub call_backoff: Duration,
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
            call_attempts_max: 3,
            call_backoff: Duration::from_millis(50),
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
            log: Arc::new(Mutex::new(CallLog::default())),
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
    /// for retrying a commit from another process), without call counts.
    /// `Ok(Outcome::Unknown)` when the outcome could not be learned before `deadline_unix_ms`
    /// plus the grace; `Err` when the coordinator refused the request itself (malformed,
    /// unknown participant).
    pub async fn commit_txn(
        &self,
        txn_id: TxnId,
        participants: Vec<ParticipantId>,
        deadline_unix_ms: u64,
    ) -> Result<Outcome> {
        self.commit_request(CommitRequest {
            txn_id,
            participants,
            deadline_unix_ms: Some(deadline_unix_ms),
            call_counts: Vec::new(),
        })
        .await
    }

    /// Send a Commit as given (see [`Transaction::commit_request`] for the one a transaction
    /// sends, which can be sent again to retry it). As [`Client::commit_txn`] otherwise; a
    /// request with no deadline gets the client's `txn_timeout` from now.
    pub async fn commit_request(&self, mut request: CommitRequest) -> Result<Outcome> {
        let deadline_unix_ms = *request
            .deadline_unix_ms
            .get_or_insert_with(|| unix_ms() + self.inner.config.txn_timeout.as_millis() as u64);
        let txn_id = request.txn_id;
        let req: pbco::CommitRequest = request.into();
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

/// A business call of a transaction that failed, as the initiator saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFailure {
    /// The participant called.
    pub participant: ParticipantId,
    /// The call's id (`ratify-call-id`).
    pub call_id: String,
    /// The gRPC code it failed with.
    pub code: tonic::Code,
    /// The error's message.
    pub message: String,
    /// The participant said the transaction is doomed there (`ratify-doomed`): it will vote
    /// NO whatever the initiator does. False when the answer never came (the call may or may
    /// not have run there).
    pub doomed: bool,
}

impl std::fmt::Display for CallFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "call {} to {} failed: {:?}: {}",
            self.call_id, self.participant, self.code, self.message
        )
    }
}

/// What a transaction's calls have been so far.
#[derive(Debug, Default)]
struct CallLog {
    participants: BTreeMap<ParticipantId, u32>,
    next_call: u64,
    failures: Vec<CallFailure>,
    running: usize,
    /// A participant was enlisted by hand: its calls are not all counted here (a service
    /// calling it inside the transaction, say), so the commit reports no counts.
    uncounted: bool,
}

/// One call of [`Transaction::call`] running: counted until it ends, however it ends (its
/// future may be dropped).
struct Running<'a>(&'a Transaction);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut log = self.0.log();
        log.running = log.running.saturating_sub(1);
    }
}

/// Failures kept per transaction (the first ones; later ones are counted only).
const FAILURES_KEPT_MAX: usize = 16;

/// A transaction in progress at the initiator. Clones share the participant list and the call
/// log, so concurrent calls to several services can each enlist theirs.
#[derive(Clone)]
pub struct Transaction {
    client: Client,
    ctx: TxnContext,
    log: Arc<Mutex<CallLog>>,
}

/// Whether a failed call's answer was lost on the way — the transport failed, the call timed
/// out — rather than given by the participant (whose errors carry an `ErrorDetail` or
/// `ratify-doomed`). Such a call may be sent again with the same call id.
pub fn answer_lost(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
            | tonic::Code::Unknown
    ) && ErrorDetail::from_status(status).is_none()
        && !status.metadata().contains_key(DOOMED)
}

impl Transaction {
    fn log(&self) -> std::sync::MutexGuard<'_, CallLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

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

    /// Record `participant` as taking part when this initiator does not make its calls
    /// itself (a service calls it inside the transaction): the commit then reports no call
    /// counts, since they would not be all of its calls (P10). [`Transaction::request`] and
    /// [`Transaction::call`] enlist and count for you.
    pub fn enlist(&self, participant: &ParticipantId) {
        let mut log = self.log();
        log.participants.entry(participant.clone()).or_insert(0);
        log.uncounted = true;
    }

    /// The participants enlisted so far.
    pub fn participants(&self) -> Vec<ParticipantId> {
        self.log().participants.keys().cloned().collect()
    }

    /// The calls made to each enlisted participant so far, in the order of
    /// [`Transaction::participants`] (what Commit reports, P10, unless a participant was
    /// enlisted by hand).
    pub fn call_counts(&self) -> Vec<u32> {
        self.log().participants.values().copied().collect()
    }

    /// The calls that failed so far (the first few).
    pub fn failures(&self) -> Vec<CallFailure> {
        self.log().failures.clone()
    }

    /// A request to `participant`'s service carrying this transaction's context and a new
    /// call id; the participant is enlisted and the call counted (P10: build one request per
    /// call you make, and send it — a counted call that never reaches the participant makes
    /// it vote NO). To retry the same call, resend this request's metadata as it is.
    /// [`Transaction::call`] does all of that, and remembers failures; a failure of a call
    /// sent with a bare `request` is yours to report ([`Transaction::record_failure`]).
    pub fn request<T>(&self, participant: &ParticipantId, message: T) -> tonic::Request<T> {
        let call_id = {
            let mut log = self.log();
            log.next_call += 1;
            *log.participants.entry(participant.clone()).or_insert(0) += 1;
            log.next_call
        };
        self.request_with_id(message, &call_id.to_string())
    }

    fn request_with_id<T>(&self, message: T, call_id: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        self.ctx.attach(request.metadata_mut());
        request.metadata_mut().insert(
            CALL_ID,
            tonic::metadata::MetadataValue::try_from(call_id)
                .expect("a decimal call id is valid metadata"),
        );
        request
    }

    /// Make one business call to `participant`: `send` sends the request it is given (e.g.
    /// `|r| { let mut c = bank.clone(); async move { c.deposit(r).await } }`). A call whose
    /// answer is lost (unreachable, timed out) is sent again with the same call id, up to
    /// `call_attempts_max` times within the transaction's deadline — the participant runs it
    /// once and answers every attempt alike. A call that fails is remembered, and
    /// [`Transaction::commit`] will then abort, unless the participant declared the error
    /// harmless ([`crate::harmless`]).
    pub async fn call<T, R, F, Fut>(
        &self,
        participant: &ParticipantId,
        message: T,
        mut send: F,
    ) -> Result<tonic::Response<R>, tonic::Status>
    where
        T: Clone,
        F: FnMut(tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let call_id = {
            let mut log = self.log();
            log.next_call += 1;
            *log.participants.entry(participant.clone()).or_insert(0) += 1;
            log.running += 1;
            log.next_call.to_string()
        };
        let running = Running(self);
        let config = &self.client.inner.config;
        let mut backoff = config.call_backoff;
        let mut attempt = 1;
        let result = loop {
            let r = send(self.request_with_id(message.clone(), &call_id)).await;
            match r {
                Err(status)
                    if answer_lost(&status)
                        && attempt < config.call_attempts_max
                        && self
                            .ctx
                            .deadline_unix_ms
                            .is_none_or(|d| unix_ms() + (backoff.as_millis() as u64) < d) =>
                {
                    tracing::debug!(txn_id = %self.ctx.txn_id, %participant, call_id, attempt, error = %status, "a call's answer was lost; retrying it");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        };
        if let Err(status) = &result
            && !status.metadata().contains_key(HARMLESS)
        {
            self.note_failure(participant, &call_id, status);
        }
        drop(running);
        result
    }

    fn note_failure(&self, participant: &ParticipantId, call_id: &str, status: &tonic::Status) {
        let mut log = self.log();
        if log.failures.len() < FAILURES_KEPT_MAX {
            log.failures.push(CallFailure {
                participant: participant.clone(),
                call_id: call_id.to_owned(),
                code: status.code(),
                message: ratify_proto::types::truncate_utf8(
                    status.message(),
                    ratify_proto::types::MESSAGE_LEN_MAX,
                )
                .to_owned(),
                doomed: status.metadata().contains_key(DOOMED),
            });
        }
    }

    /// Report a call made with [`Transaction::request`] that failed (with `status`), as
    /// [`Transaction::call`] does by itself: [`Transaction::commit`] will then abort. An error
    /// the participant declared harmless is not a failure and is ignored here.
    pub fn record_failure(&self, participant: &ParticipantId, status: &tonic::Status) {
        if status.metadata().contains_key(HARMLESS) {
            return;
        }
        self.note_failure(participant, "(unnumbered)", status);
    }

    /// Forget the failures seen so far: a later [`Transaction::commit`] asks the coordinator to
    /// commit anyway. For an initiator that handled a failure itself (and made another call
    /// instead, say). Safe: a participant where a call failed has doomed the transaction and
    /// votes NO, unless it declared the error harmless; the call counts make a participant
    /// vote NO if a counted call never ran there.
    pub fn forgive_failures(&self) {
        self.log().failures.clear();
    }

    /// The Commit this transaction sends: its participants, the calls made to each (P10), its
    /// deadline. Send it again with [`Client::commit_request`] to retry a commit whose
    /// outcome was unknown.
    pub fn commit_request(&self) -> CommitRequest {
        let log = self.log();
        CommitRequest {
            txn_id: self.ctx.txn_id,
            participants: log.participants.keys().cloned().collect(),
            call_counts: if log.uncounted {
                Vec::new()
            } else {
                log.participants.values().copied().collect()
            },
            deadline_unix_ms: Some(self.ctx.deadline_unix_ms.unwrap_or_else(unix_ms)),
        }
    }

    /// Commit: the coordinator runs two-phase commit over the enlisted participants and
    /// answers with the applied decision. `Ok(Outcome::Unknown)` if the outcome could not be
    /// learned in time (ask [`Client::status`] later); `Err` if the coordinator refused the
    /// request itself.
    ///
    /// After a failed call (see [`Transaction::call`]), or with a call still running, it does
    /// not commit: it aborts (telling the coordinator, so participants release their locks
    /// early) and answers `Aborted` naming the call (P10) — unless
    /// [`Transaction::forgive_failures`] was called.
    pub async fn commit(self) -> Result<Outcome> {
        let (first_failure, running) = {
            let log = self.log();
            (log.failures.first().cloned(), log.running)
        };
        let refusal = match (first_failure, running) {
            (Some(f), _) => Some((Some(f.participant.clone()), f.to_string())),
            (None, n) if n > 0 => Some((
                None,
                format!("{n} call(s) of the transaction were still running at commit"),
            )),
            (None, _) => None,
        };
        if let Some((participant, why)) = refusal {
            let why = format!("not committed: {why}");
            let told = tokio::time::timeout(
                self.client.inner.config.call_timeout,
                self.client
                    .abort_txn(self.ctx.txn_id, self.participants(), why.clone()),
            )
            .await;
            return Ok(match told {
                // A commit nobody asked for cannot have won, but say what the coordinator says.
                Ok(Ok(outcome @ (Outcome::Aborted(_) | Outcome::Committed))) => outcome,
                // The coordinator did not answer: Commit was never sent, so it cannot commit.
                _ => Outcome::Aborted(AbortInfo {
                    cause: AbortCause::ClientAbort,
                    participant,
                    no_reason: None,
                    message: why,
                }),
            });
        }
        let request = self.commit_request();
        let max = self.client.inner.config.participants_per_txn_max;
        if request.participants.len() > max {
            return Err(Error::LimitExceeded {
                limit: "participants_per_txn_max",
                max,
                asked: request.participants.len(),
            });
        }
        self.client.commit_request(request).await
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
