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

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use ratify_check::OpType;
use ratify_participant::{Client, Transaction};
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

impl Workload {
    /// A workload over these participants (`names[i]` served by `kvs[i]`).
    pub fn new(
        kind: Kind,
        client: Client,
        kvs: Vec<JepsenKvClient<Channel>>,
        names: Vec<String>,
        recorder: Arc<Recorder>,
    ) -> Self {
        Self {
            kind,
            client,
            kvs,
            names,
            accounts_per_participant: 4,
            list: Mutex::new(ListState::new()),
            recorder,
        }
    }

    /// Bank: every account, as `participant/account`.
    pub fn accounts(&self) -> Vec<String> {
        self.names
            .iter()
            .flat_map(|p| (0..self.accounts_per_participant).map(move |a| format!("{p}/a{a}")))
            .collect()
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
                let mut ok = true;
                let keys: Vec<String> = (0..self.accounts_per_participant)
                    .map(|a| format!("acct/a{a}"))
                    .collect();
                let mut kv = self.kvs[i].clone();
                let current = match kv
                    .read_ints(txn.request(&pid(name), pbj::ReadRequest { keys: keys.clone() }))
                    .await
                {
                    Ok(r) => r.into_inner().values,
                    Err(_) => {
                        ok = false;
                        Default::default()
                    }
                };
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
                    if kv.add(txn.request(&pid(name), req)).await.is_err() {
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
                    self.bank_read(process).await
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
        let participants = txn.participants();
        let outcome = txn.commit().await;
        let outcome = match outcome {
            Ok(Outcome::Unknown) => {
                let deadline = unix_ms() + COMMIT_RETRY_DEADLINE.as_millis() as u64;
                self.client.commit_txn(id, participants, deadline).await
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

    /// A business call failed: abandon the transaction (commit was never asked, so it cannot
    /// commit); tell the coordinator so participants release locks early.
    async fn abandon(&self, txn: Transaction, why: String) -> (OpType, Option<String>) {
        let _ = tokio::time::timeout(Duration::from_secs(2), txn.abort(&why)).await;
        (OpType::Fail, Some(why))
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
        let (mut kv_from, mut kv_to) = (self.kvs[fp].clone(), self.kvs[tp].clone());
        let withdraw = kv_from.add(txn.request(
            &pid(&self.names[fp]),
            pbj::AddRequest {
                key: format!("acct/a{fa}"),
                delta: -amount,
                has_floor: true,
                floor: 0,
            },
        ));
        let deposit = kv_to.add(txn.request(
            &pid(&self.names[tp]),
            pbj::AddRequest {
                key: format!("acct/a{ta}"),
                delta: amount,
                has_floor: false,
                floor: 0,
            },
        ));
        let (w, d) = tokio::join!(withdraw, deposit);
        let (kind, error) = match (w, d) {
            (Ok(_), Ok(_)) => self.finish(txn).await,
            (Err(s), _) | (_, Err(s)) => self.abandon(txn, status_text(&s)).await,
        };
        self.recorder
            .record(process, kind, "transfer", value, error, txn_id);
        kind == OpType::Info
    }

    async fn bank_read(&self, process: u64) -> bool {
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
        let calls = self.names.iter().enumerate().map(|(i, name)| {
            let mut kv = self.kvs[i].clone();
            let req = txn.request(&pid(name), pbj::ReadRequest { keys: keys.clone() });
            async move {
                kv.read_ints(req)
                    .await
                    .map(|r| (name.clone(), r.into_inner()))
            }
        });
        let replies = futures_util::future::join_all(calls).await;
        let mut values = serde_json::Map::new();
        let mut failed = None;
        for r in replies {
            match r {
                Ok((name, reply)) => {
                    for (k, v) in reply.values {
                        let account = k.strip_prefix("acct/").unwrap_or(&k).to_owned();
                        values.insert(format!("{name}/{account}"), json!(v));
                    }
                }
                Err(s) => failed = Some(status_text(&s)),
            }
        }
        let (kind, error) = match failed {
            Some(why) => self.abandon(txn, why).await,
            None => self.finish(txn).await,
        };
        let value = if kind == OpType::Ok {
            Value::Object(values)
        } else {
            Value::Null
        };
        self.recorder
            .record(process, kind, "read", value, error, txn_id);
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
        let calls = idx.iter().map(|&i| {
            let mut kv = self.kvs[i].clone();
            let req = txn.request(
                &pid(&self.names[i]),
                pbj::PutRequest {
                    key: format!("marker/{id}"),
                    value: id.clone(),
                },
            );
            async move { kv.put(req).await }
        });
        let failed = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .find_map(|r| r.err());
        let (kind, error) = match failed {
            Some(s) => self.abandon(txn, status_text(&s)).await,
            None => self.finish(txn).await,
        };
        self.recorder
            .record(process, kind, "marker", value, error, txn_id);
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
        let mut done = Vec::new();
        let mut failed = None;
        for &(append, k, v) in &ops {
            let i = (k % m) as usize;
            let name = pid(&self.names[i]);
            let key = format!("list/{k}");
            let mut kv = self.kvs[i].clone();
            if append {
                match kv
                    .append(txn.request(&name, pbj::AppendRequest { key, element: v }))
                    .await
                {
                    Ok(_) => done.push(json!(["append", k, v])),
                    Err(s) => {
                        failed = Some(status_text(&s));
                        break;
                    }
                }
            } else {
                match kv
                    .read_lists(txn.request(
                        &name,
                        pbj::ReadRequest {
                            keys: vec![key.clone()],
                        },
                    ))
                    .await
                {
                    Ok(r) => {
                        let list = r
                            .into_inner()
                            .lists
                            .remove(&key)
                            .map(|l| l.elements)
                            .unwrap_or_default();
                        done.push(json!(["r", k, list]));
                    }
                    Err(s) => {
                        failed = Some(status_text(&s));
                        break;
                    }
                }
            }
        }
        let (kind, error) = match failed {
            Some(why) => self.abandon(txn, why).await,
            None => self.finish(txn).await,
        };
        let value = if kind == OpType::Ok {
            Value::Array(done)
        } else {
            Value::Array(invoke)
        };
        self.recorder
            .record(process, kind, "txn", value, error, txn_id);
        kind == OpType::Info
    }
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
