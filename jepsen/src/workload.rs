//! Workloads: what the client workers do, and how each operation lands in the history.
//!
//! - **bank**: `accounts_per_participant` accounts on every participant, each opened with
//!   [`INITIAL_BALANCE`]. `transfer` moves 1–5 between two accounts on different
//!   participants (the withdrawal refuses to go negative: that participant votes NO); `read`
//!   reads every account of every participant in one read-only transaction.
//! - **atomic-marker**: `marker` writes `marker/<txn id>` on 2–3 random participants.
//! - **list-append**: `txn` runs 1–4 micro-operations (append a unique value / read a list)
//!   on integer keys spread over the participants (key K lives on participant K mod M). A key
//!   takes at most [`APPENDS_PER_KEY_MAX`] appends, then a fresh key replaces it (Elle's
//!   practice: short lists keep reads cheap and the version order dense).
//!
//! Outcome rules (the history's `type`): `ok` only when the coordinator answered COMMITTED;
//! `fail` when it answered ABORTED, or when commit was never asked (a business call failed
//! and the transaction was abandoned: only a client's Commit can commit, so it cannot
//! have); `info` when the commit outcome is unknown after one retry with the same txn id.
//!
//! Client modes ([`ClientMode`], docs/protocol.md P10) — real clients misbehave:
//! - **careful**: a failed call abandons the transaction (it is aborted).
//! - **reckless**: after a failed call it commits anyway (forgiving the failures, as
//!   `transfer.py` does), or walks away without a word (no commit, no abort); list-append
//!   keeps issuing its remaining micro-operations first. An `ok` then records every append it
//!   attempted (a committed transaction applied them all) and the reads it learned.
//! - **retrying**: sends calls again with the same call id — at once (as a gRPC retry policy
//!   may) or after the answer came (as after a timeout) — and notes any attempt answered
//!   differently from the first; otherwise careful.
//!
//! Every completion carries the call notes the `calls` checker reads: a call answered with
//! `ratify-doomed`, a retry answered differently.

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use ratify_check::OpType;
use ratify_participant::client::answer_lost;
use ratify_participant::{Client, Transaction};
use ratify_proto::metadata::DOOMED;
use ratify_proto::pb::jepsen as pbj;
use ratify_proto::pb::jepsen::jepsen_kv_client::JepsenKvClient;
use ratify_proto::types::{Outcome, ParticipantId};
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::recorder::Recorder;
use crate::rng::Rng;

/// Every account's opening balance.
pub const INITIAL_BALANCE: i64 = 100;
/// Appends per list-append key before it is retired.
pub const APPENDS_PER_KEY_MAX: u64 = 128;
/// List-append keys in use at once.
pub const ACTIVE_KEYS: usize = 8;
/// Grace for a retried commit of an unknown outcome.
pub const COMMIT_RETRY_DEADLINE: Duration = Duration::from_secs(3);
/// Reckless clients walk away (no commit, no abort) after a failed call this often; else they
/// commit anyway.
pub const WALK_AWAY_CHANCE: f64 = 0.02;
/// Retrying clients send a call twice at once this often, and again after its answer as often.
pub const DUPLICATE_CHANCE: f64 = 0.25;

/// Which workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Transfers and whole-bank reads.
    Bank,
    /// Unique markers on 2–3 participants per transaction.
    AtomicMarker,
    /// Elle list-append transactions.
    ListAppend,
}

impl Kind {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bank => "bank",
            Kind::AtomicMarker => "atomic-marker",
            Kind::ListAppend => "list-append",
        }
    }

    /// The key prefix of its data at the participants.
    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Bank => "acct/",
            Kind::AtomicMarker => "marker/",
            Kind::ListAppend => "list/",
        }
    }
}

/// How the client behaves around failed calls (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMode {
    /// A failed call abandons (aborts) the transaction.
    #[default]
    Careful,
    /// After a failed call: commit anyway, or walk away.
    Reckless,
    /// Calls are sent again with the same call id; otherwise careful.
    Retrying,
}

impl ClientMode {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            ClientMode::Careful => "careful",
            ClientMode::Reckless => "reckless",
            ClientMode::Retrying => "retrying",
        }
    }
}

/// How one call is sent (retrying clients): once, twice at once, or again after its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sends {
    Once,
    Concurrent,
    Again,
}

/// What one transaction's calls showed.
#[derive(Default)]
struct Calls {
    /// The first failure (for the history's `error`).
    failed: Option<String>,
    /// For the `calls` checker (see `Op::call_notes`).
    notes: Vec<String>,
}

impl Calls {
    fn note_failure(&mut self, participant: &str, status: &tonic::Status) {
        let what = format!("{participant}: {}", status_text(status));
        if status.metadata().contains_key(DOOMED) {
            self.notes.push(format!("doomed: {what}"));
        }
        self.failed.get_or_insert(what);
    }
}

/// A second attempt of `r`: the same message and metadata (so the same call id).
fn again<T: Clone>(r: &tonic::Request<T>) -> tonic::Request<T> {
    tonic::Request::from_parts(
        r.metadata().clone(),
        tonic::Extensions::new(),
        r.get_ref().clone(),
    )
}

/// `None` when two attempts of one call agree (or one answer was lost), else how they differ.
fn differ<R: PartialEq + std::fmt::Debug>(
    a: &Result<tonic::Response<R>, tonic::Status>,
    b: &Result<tonic::Response<R>, tonic::Status>,
) -> Option<String> {
    match (a, b) {
        (Err(x), _) | (_, Err(x)) if answer_lost(x) => None,
        (Ok(x), Ok(y)) if x.get_ref() == y.get_ref() => None,
        (Err(x), Err(y)) if x.code() == y.code() && x.message() == y.message() => None,
        (a, b) => Some(format!(
            "first {:?}, retry {:?}",
            a.as_ref().map(|r| r.get_ref()).map_err(status_text),
            b.as_ref().map(|r| r.get_ref()).map_err(status_text)
        )),
    }
}

struct ListState {
    active: Vec<(u64, u64)>, // (key, appends so far)
    next_key: u64,
    next_value: u64,
}

impl ListState {
    fn new() -> Self {
        Self {
            active: (0..ACTIVE_KEYS as u64).map(|k| (k, 0)).collect(),
            next_key: ACTIVE_KEYS as u64,
            next_value: 1,
        }
    }

    /// 1–4 micro-operations: `(is_append, key, value)`; values are unique, and a key that has
    /// taken [`APPENDS_PER_KEY_MAX`] appends is replaced by a fresh one.
    fn next_ops(&mut self, rng: &mut Rng) -> Vec<(bool, u64, u64)> {
        let n = rng.range(1, 4);
        let mut ops = Vec::new();
        for _ in 0..n {
            let slot = rng.below(self.active.len() as u64) as usize;
            let key = self.active[slot].0;
            if rng.chance(0.5) {
                let v = self.next_value;
                self.next_value += 1;
                self.active[slot].1 += 1;
                if self.active[slot].1 >= APPENDS_PER_KEY_MAX {
                    self.active[slot] = (self.next_key, 0);
                    self.next_key += 1;
                }
                ops.push((true, key, v));
            } else {
                ops.push((false, key, 0));
            }
        }
        ops
    }
}

/// What every worker shares.
pub struct Workload {
    /// Which.
    pub kind: Kind,
    /// How the client behaves around failed calls.
    pub mode: ClientMode,
    /// Whether commits report the calls made to each participant (P10). Off: an initiator
    /// that does not (as a non-Rust one may), leaving the participants' own checks alone.
    pub call_counts: bool,
    client: Client,
    kvs: Vec<JepsenKvClient<Channel>>,
    names: Vec<String>,
    /// Bank: accounts per participant.
    pub accounts_per_participant: usize,
    list: Mutex<ListState>,
    recorder: Arc<Recorder>,
}

fn pid(name: &str) -> ParticipantId {
    ParticipantId::new(name).expect("slot names are valid participant ids")
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// What to do after a failed call.
enum AfterFailure {
    /// Abort (careful, retrying).
    Abandon,
    /// Commit anyway (reckless).
    CommitAnyway,
    /// Neither commit nor abort (reckless).
    WalkAway,
}

impl Workload {
    /// A workload over these participants (`names[i]` served by `kvs[i]`), with careful clients.
    pub fn new(
        kind: Kind,
        client: Client,
        kvs: Vec<JepsenKvClient<Channel>>,
        names: Vec<String>,
        recorder: Arc<Recorder>,
    ) -> Self {
        Self {
            kind,
            mode: ClientMode::Careful,
            call_counts: true,
            client,
            kvs,
            names,
            accounts_per_participant: 4,
            list: Mutex::new(ListState::new()),
            recorder,
        }
    }

    /// The same with clients in `mode`.
    pub fn with_mode(mut self, mode: ClientMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same with commits that report no call counts (P10).
    pub fn without_call_counts(mut self) -> Self {
        self.call_counts = false;
        self
    }

    /// Bank: every account, as `participant/account`.
    pub fn accounts(&self) -> Vec<String> {
        self.names
            .iter()
            .flat_map(|p| (0..self.accounts_per_participant).map(move |a| format!("{p}/a{a}")))
            .collect()
    }

    /// How a retrying client sends its next call.
    fn sends(&self, rng: &mut Rng) -> Sends {
        if self.mode != ClientMode::Retrying {
            return Sends::Once;
        }
        match rng.below(100) {
            n if (n as f64) < DUPLICATE_CHANCE * 100.0 => Sends::Concurrent,
            n if (n as f64) < DUPLICATE_CHANCE * 200.0 => Sends::Again,
            _ => Sends::Once,
        }
    }

    /// What this client does after a failed call.
    fn choose_after_failure(&self, rng: &mut Rng) -> AfterFailure {
        match self.mode {
            ClientMode::Reckless if rng.chance(WALK_AWAY_CHANCE) => AfterFailure::WalkAway,
            ClientMode::Reckless => AfterFailure::CommitAnyway,
            ClientMode::Careful | ClientMode::Retrying => AfterFailure::Abandon,
        }
    }

    /// One business call of `txn` to participant `i` through the transaction (its call id,
    /// its failure log), sent as `sends` says; what it showed goes into `calls`.
    async fn call<T, R, F, Fut>(
        &self,
        txn: &Transaction,
        i: usize,
        message: T,
        sends: Sends,
        calls: &Mutex<Calls>,
        send: F,
    ) -> Result<R, tonic::Status>
    where
        T: Clone,
        R: PartialEq + std::fmt::Debug,
        F: Fn(JepsenKvClient<Channel>, tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        let name = &self.names[i];
        let kv = &self.kvs[i];
        let result = txn
            .call(&pid(name), message, |r| {
                let (first, second) = match sends {
                    Sends::Once => (send(kv.clone(), r), None),
                    Sends::Concurrent | Sends::Again => {
                        let copy = again(&r);
                        (send(kv.clone(), r), Some(send(kv.clone(), copy)))
                    }
                };
                async move {
                    let (a, b) = match (sends, second) {
                        (Sends::Concurrent, Some(second)) => {
                            let (a, b) = futures_util::future::join(first, second).await;
                            (a, Some(b))
                        }
                        (_, Some(second)) => {
                            let a = first.await;
                            (a, Some(second.await))
                        }
                        (_, None) => (first.await, None),
                    };
                    if let Some(b) = &b
                        && let Some(how) = differ(&a, b)
                    {
                        lock(calls)
                            .notes
                            .push(format!("retry-differs: {name}: {how}"));
                    }
                    a
                }
            })
            .await;
        match result {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => {
                lock(calls).note_failure(name, &s);
                Err(s)
            }
        }
    }

    /// Before the run: open the bank's accounts (one transaction per participant, retried
    /// until it commits). Not part of the history; the checker knows the opening balances.
    pub async fn setup(&self) -> anyhow::Result<()> {
        if self.kind != Kind::Bank {
            return Ok(());
        }
        for (i, name) in self.names.iter().enumerate() {
            let mut attempts = 0;
            loop {
                attempts += 1;
                // Idempotent: an earlier attempt whose outcome was lost may have committed, so
                // each account is topped up to the opening balance, not added to.
                let txn = self.client.begin();
                let calls = Mutex::new(Calls::default());
                let keys: Vec<String> = (0..self.accounts_per_participant)
                    .map(|a| format!("acct/a{a}"))
                    .collect();
                let current = self
                    .call(
                        &txn,
                        i,
                        pbj::ReadRequest { keys: keys.clone() },
                        Sends::Once,
                        &calls,
                        |mut kv, r| async move { kv.read_ints(r).await },
                    )
                    .await
                    .map(|r| r.values);
                let mut ok = current.is_ok();
                let current = current.unwrap_or_default();
                for key in keys.iter().filter(|_| ok) {
                    let delta = INITIAL_BALANCE - current.get(key).copied().unwrap_or(0);
                    if delta == 0 {
                        continue;
                    }
                    let req = pbj::AddRequest {
                        key: key.clone(),
                        delta,
                        has_floor: false,
                        floor: 0,
                    };
                    let added = self
                        .call(&txn, i, req, Sends::Once, &calls, |mut kv, r| async move {
                            kv.add(r).await
                        })
                        .await;
                    if added.is_err() {
                        ok = false;
                        break;
                    }
                }
                let outcome = if ok { txn.commit().await.ok() } else { None };
                if outcome == Some(Outcome::Committed) {
                    break;
                }
                if attempts >= 20 {
                    anyhow::bail!("could not open the accounts of {name}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// One operation by `process`: invoke, run, complete. Returns whether it ended `info`.
    pub async fn run_one(&self, process: u64, rng: &mut Rng) -> bool {
        match self.kind {
            Kind::Bank => {
                if rng.chance(0.2) {
                    self.bank_read(process, rng).await
                } else {
                    self.transfer(process, rng).await
                }
            }
            Kind::AtomicMarker => self.marker(process, rng).await,
            Kind::ListAppend => self.list_txn(process, rng).await,
        }
    }

    /// Commit and classify: (`type`, error). One retry with the same id when unknown.
    async fn finish(&self, txn: Transaction) -> (OpType, Option<String>) {
        let id = txn.id();
        let mut request = txn.commit_request();
        let outcome = if self.call_counts {
            txn.commit().await
        } else {
            // What `commit` sends, without the counts (no call failed or runs: the caller
            // checked, or forgave).
            request.call_counts.clear();
            self.client.commit_request(request.clone()).await
        };
        let outcome = match outcome {
            Ok(Outcome::Unknown) => {
                request.deadline_unix_ms =
                    Some(unix_ms() + COMMIT_RETRY_DEADLINE.as_millis() as u64);
                self.client.commit_request(request).await
            }
            other => other,
        };
        match outcome {
            Ok(Outcome::Committed) => (OpType::Ok, None),
            Ok(Outcome::Aborted(info)) => (OpType::Fail, Some(format!("aborted: {info:?}"))),
            Ok(Outcome::Unknown) => (OpType::Info, Some("commit outcome unknown".into())),
            // The call failed for a reason the client does not retry; an earlier attempt may
            // still have started two-phase commit, so ask before calling it anything.
            Err(e) => match self.client.status(id).await.map(|s| s.outcome) {
                Ok(Outcome::Committed) => (
                    OpType::Ok,
                    Some(format!("commit call failed ({e}); status: committed")),
                ),
                Ok(Outcome::Aborted(info)) => (
                    OpType::Fail,
                    Some(format!(
                        "commit call failed ({e}); status: aborted {info:?}"
                    )),
                ),
                _ => (OpType::Info, Some(format!("commit call failed: {e}"))),
            },
        }
    }

    /// A business call failed: abandon the transaction (careful: commit is never asked, so it
    /// cannot commit, and the coordinator is told so participants release locks early), commit
    /// anyway or walk away (reckless). `may_commit: false` turns a reckless commit into a
    /// walk-away (for operations whose result could not be recorded).
    async fn after_failure(
        &self,
        txn: Transaction,
        why: String,
        rng: &mut Rng,
        may_commit: bool,
    ) -> (OpType, Option<String>) {
        match self.after_failure_choice(rng, may_commit) {
            AfterFailure::Abandon => {
                let _ = tokio::time::timeout(Duration::from_secs(2), txn.abort(&why)).await;
                (OpType::Fail, Some(why))
            }
            AfterFailure::WalkAway => {
                drop(txn);
                (
                    OpType::Fail,
                    Some(format!("{why}; walked away (no commit, no abort)")),
                )
            }
            AfterFailure::CommitAnyway => {
                txn.forgive_failures();
                let (kind, error) = self.finish(txn).await;
                let error = Some(match error {
                    Some(e) => format!("committed anyway after {why}: {e}"),
                    None => format!("committed anyway after {why}"),
                });
                (kind, error)
            }
        }
    }

    fn after_failure_choice(&self, rng: &mut Rng, may_commit: bool) -> AfterFailure {
        match self.choose_after_failure(rng) {
            AfterFailure::CommitAnyway if !may_commit => AfterFailure::WalkAway,
            other => other,
        }
    }

    async fn transfer(&self, process: u64, rng: &mut Rng) -> bool {
        let m = self.names.len() as u64;
        let fp = rng.below(m) as usize;
        let tp = (fp + 1 + rng.below(m - 1) as usize) % m as usize;
        let fa = rng.below(self.accounts_per_participant as u64);
        let ta = rng.below(self.accounts_per_participant as u64);
        let amount = rng.range(1, 5) as i64;
        let value = json!({
            "from": format!("{}/a{fa}", self.names[fp]),
            "to": format!("{}/a{ta}", self.names[tp]),
            "amount": amount,
        });
        let txn = self.client.begin();
        let txn_id = Some(txn.id().to_string());
        self.recorder.record(
            process,
            OpType::Invoke,
            "transfer",
            value.clone(),
            None,
            txn_id.clone(),
        );
        let calls = Mutex::new(Calls::default());
        let (s1, s2) = (self.sends(rng), self.sends(rng));
        let add = |mut kv: JepsenKvClient<Channel>, r| async move { kv.add(r).await };
        let withdraw = self.call(
            &txn,
            fp,
            pbj::AddRequest {
                key: format!("acct/a{fa}"),
                delta: -amount,
                has_floor: true,
                floor: 0,
            },
            s1,
            &calls,
            add,
        );
        let deposit = self.call(
            &txn,
            tp,
            pbj::AddRequest {
                key: format!("acct/a{ta}"),
                delta: amount,
                has_floor: false,
                floor: 0,
            },
            s2,
            &calls,
            add,
        );
        let _ = tokio::join!(withdraw, deposit);
        let failed = lock(&calls).failed.clone();
        let (kind, error) = match failed {
            None => self.finish(txn).await,
            Some(why) => self.after_failure(txn, why, rng, true).await,
        };
        let notes = std::mem::take(&mut lock(&calls).notes);
        self.recorder
            .complete(process, kind, "transfer", value, error, txn_id, notes);
        kind == OpType::Info
    }

    async fn bank_read(&self, process: u64, rng: &mut Rng) -> bool {
        let txn = self.client.begin();
        let txn_id = Some(txn.id().to_string());
        self.recorder.record(
            process,
            OpType::Invoke,
            "read",
            Value::Null,
            None,
            txn_id.clone(),
        );
        let keys: Vec<String> = (0..self.accounts_per_participant)
            .map(|a| format!("acct/a{a}"))
            .collect();
        let calls = Mutex::new(Calls::default());
        let sends: Vec<Sends> = self.names.iter().map(|_| self.sends(rng)).collect();
        let reads = self.names.iter().enumerate().map(|(i, name)| {
            let (txn, calls, keys, sends) = (&txn, &calls, keys.clone(), sends[i]);
            async move {
                self.call(
                    txn,
                    i,
                    pbj::ReadRequest { keys },
                    sends,
                    calls,
                    |mut kv, r| async move { kv.read_ints(r).await },
                )
                .await
                .map(|r| (name.clone(), r))
            }
        });
        let replies = futures_util::future::join_all(reads).await;
        let mut values = serde_json::Map::new();
        for (name, reply) in replies.into_iter().flatten() {
            for (k, v) in reply.values {
                let account = k.strip_prefix("acct/").unwrap_or(&k).to_owned();
                values.insert(format!("{name}/{account}"), json!(v));
            }
        }
        let failed = lock(&calls).failed.clone();
        let (kind, error) = match failed {
            // A read whose every value is not known cannot be recorded as `ok`: no commit.
            Some(why) => self.after_failure(txn, why, rng, false).await,
            None => self.finish(txn).await,
        };
        let value = if kind == OpType::Ok {
            Value::Object(values)
        } else {
            Value::Null
        };
        let notes = std::mem::take(&mut lock(&calls).notes);
        self.recorder
            .complete(process, kind, "read", value, error, txn_id, notes);
        kind == OpType::Info
    }

    async fn marker(&self, process: u64, rng: &mut Rng) -> bool {
        let mut idx: Vec<usize> = (0..self.names.len()).collect();
        rng.shuffle(&mut idx);
        let n = (rng.range(2, 3) as usize).min(idx.len());
        idx.truncate(n);
        idx.sort_unstable();
        let value = json!({ "participants": idx.iter().map(|&i| self.names[i].clone()).collect::<Vec<_>>() });
        let txn = self.client.begin();
        let id = txn.id().to_string();
        let txn_id = Some(id.clone());
        self.recorder.record(
            process,
            OpType::Invoke,
            "marker",
            value.clone(),
            None,
            txn_id.clone(),
        );
        let calls = Mutex::new(Calls::default());
        let sends: Vec<Sends> = idx.iter().map(|_| self.sends(rng)).collect();
        let puts = idx.iter().zip(sends).map(|(&i, sends)| {
            let (txn, calls, id) = (&txn, &calls, id.clone());
            async move {
                self.call(
                    txn,
                    i,
                    pbj::PutRequest {
                        key: format!("marker/{id}"),
                        value: id.clone(),
                    },
                    sends,
                    calls,
                    |mut kv, r| async move { kv.put(r).await },
                )
                .await
            }
        });
        futures_util::future::join_all(puts).await;
        let failed = lock(&calls).failed.clone();
        let (kind, error) = match failed {
            Some(why) => self.after_failure(txn, why, rng, true).await,
            None => self.finish(txn).await,
        };
        let notes = std::mem::take(&mut lock(&calls).notes);
        self.recorder
            .complete(process, kind, "marker", value, error, txn_id, notes);
        kind == OpType::Info
    }

    fn list_ops(&self, rng: &mut Rng) -> Vec<(bool, u64, u64)> {
        self.list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_ops(rng)
    }

    async fn list_txn(&self, process: u64, rng: &mut Rng) -> bool {
        let ops = self.list_ops(rng);
        let m = self.names.len() as u64;
        let invoke: Vec<Value> = ops
            .iter()
            .map(|&(append, k, v)| {
                if append {
                    json!(["append", k, v])
                } else {
                    json!(["r", k, null])
                }
            })
            .collect();
        let txn = self.client.begin();
        let txn_id = Some(txn.id().to_string());
        self.recorder.record(
            process,
            OpType::Invoke,
            "txn",
            Value::Array(invoke.clone()),
            None,
            txn_id.clone(),
        );
        let calls = Mutex::new(Calls::default());
        // What a commit would have done: every append attempted (a committed transaction
        // applied them all, P10), every read whose result came back.
        let mut done = Vec::new();
        for &(append, k, v) in &ops {
            let i = (k % m) as usize;
            let key = format!("list/{k}");
            let sends = self.sends(rng);
            let result = if append {
                self.call(
                    &txn,
                    i,
                    pbj::AppendRequest { key, element: v },
                    sends,
                    &calls,
                    |mut kv, r| async move { kv.append(r).await },
                )
                .await
                .map(|_| json!(["append", k, v]))
            } else {
                self.call(
                    &txn,
                    i,
                    pbj::ReadRequest {
                        keys: vec![key.clone()],
                    },
                    sends,
                    &calls,
                    |mut kv, r| async move { kv.read_lists(r).await },
                )
                .await
                .map(|mut r| {
                    let list = r.lists.remove(&key).map(|l| l.elements).unwrap_or_default();
                    json!(["r", k, list])
                })
            };
            match result {
                Ok(mop) => done.push(mop),
                Err(_) if append => done.push(json!(["append", k, v])),
                Err(_) => {}
            }
            // Careful and retrying clients stop at the first failure; reckless ones go on.
            if self.mode != ClientMode::Reckless && lock(&calls).failed.is_some() {
                break;
            }
        }
        let failed = lock(&calls).failed.clone();
        let (kind, error) = match failed {
            Some(why) => self.after_failure(txn, why, rng, true).await,
            None => self.finish(txn).await,
        };
        let value = if kind == OpType::Ok {
            Value::Array(done)
        } else {
            Value::Array(invoke)
        };
        let notes = std::mem::take(&mut lock(&calls).notes);
        self.recorder
            .complete(process, kind, "txn", value, error, txn_id, notes);
        kind == OpType::Info
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix_ms() -> u64 {
    ratify_proto::hooks::now_unix_ms()
}

/// Bank: the checker's model of the opening state.
pub fn bank_model(workload: &Workload) -> ratify_check::bank::BankModel {
    ratify_check::bank::BankModel {
        accounts: workload.accounts(),
        initial_balance: INITIAL_BALANCE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appended values are unique, keys retire after their quota, and every operation is
    /// an append or a read of an active key.
    #[test]
    fn list_ops_use_unique_values_and_retire_keys() {
        let mut st = ListState::new();
        let mut rng = Rng::new(9);
        let mut seen = std::collections::BTreeSet::new();
        let mut per_key: std::collections::BTreeMap<u64, u64> = Default::default();
        for _ in 0..5_000 {
            let ops = st.next_ops(&mut rng);
            assert!((1..=4).contains(&ops.len()));
            for (append, k, v) in ops {
                if append {
                    assert!(seen.insert(v), "value {v} appended twice");
                    *per_key.entry(k).or_default() += 1;
                }
            }
        }
        assert!(per_key.values().all(|&n| n <= APPENDS_PER_KEY_MAX));
        assert!(
            st.next_key > ACTIVE_KEYS as u64,
            "keys were retired and replaced"
        );
    }
}
