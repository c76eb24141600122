//! The participant's record of each transaction's business calls (docs/protocol.md P10): which
//! are running, which completed and with what response — so a retried call is answered from its
//! first attempt, never run twice — which one failed first, and, once Prepare (or a one-phase
//! commit) arrives, that no more calls are admitted and how many completed.
//!
//! Bookkeeping only: no I/O, no clock (times are passed in), one mutex. The call guard
//! ([`crate::guard`]) admits and completes calls; the participant service closes a
//! transaction's record at Prepare and checks it; the runtime's maintenance expires idle
//! records. Generic over the kept response `R` so it can be tested on its own.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use ratify_proto::types::TxnId;
use tokio::sync::watch;
use tokio::time::Instant;

/// Longest call id, in bytes.
pub const CALL_ID_LEN_MAX: usize = 64;

/// A business call's id (`ratify-call-id`, P10): 1–64 bytes of `[A-Za-z0-9._-]`, unique among
/// one transaction's calls; a retry of the call carries the same id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CallId(String);

impl CallId {
    /// A call id, checked.
    pub fn new(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > CALL_ID_LEN_MAX {
            return Err(format!(
                "a call id is 1 to {CALL_ID_LEN_MAX} bytes, got {}",
                raw.len()
            ));
        }
        if let Some(c) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(format!(
                "a call id is made of [A-Za-z0-9._-], got {c:?} in {raw:?}"
            ));
        }
        Ok(Self(raw))
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Limits of the call records. Every field has a default.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Transactions with a call record at once, at most; a call of one more is refused.
    pub txns_max: usize,
    /// Calls of one transaction at this participant, at most.
    pub calls_per_txn_max: usize,
    /// Calls recorded at once over all transactions, at most.
    pub calls_max: usize,
    /// Calls running at once over all transactions, at most.
    pub running_max: usize,
    /// Bytes of requests and responses the guard holds while calls run, at most, over all
    /// calls (it reads each call's request and response whole); a call that does not fit
    /// fails (and dooms its transaction).
    pub buffer_bytes_max: usize,
    /// The largest response kept for answering a retry; a larger one is answered once, and a
    /// retry of that call is refused (the transaction cannot then commit).
    pub response_bytes_max: usize,
    /// Bytes of responses kept for one transaction, at most (beyond, as too large).
    pub kept_bytes_per_txn_max: usize,
    /// Bytes of responses kept for all transactions, at most (beyond, as too large).
    pub kept_bytes_max: usize,
    /// A transaction's record is dropped when no call of it has run for this long. Keep it at
    /// least the store's staged timeout: past that the store has aborted the transaction, so a
    /// retry that finds no record can no longer run twice.
    pub idle_ttl: Duration,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            txns_max: 100_000,
            calls_per_txn_max: 10_000,
            calls_max: 1_000_000,
            running_max: 1_024,
            buffer_bytes_max: 256 << 20,
            response_bytes_max: 4 << 20,
            kept_bytes_per_txn_max: 16 << 20,
            kept_bytes_max: 256 << 20,
            idle_ttl: Duration::from_secs(120),
        }
    }
}

impl CallLimits {
    /// Check the settings.
    pub fn validate(&self) -> Result<(), String> {
        if self.txns_max == 0
            || self.calls_per_txn_max == 0
            || self.calls_max == 0
            || self.running_max == 0
            || self.buffer_bytes_max == 0
        {
            return Err("call limits must be positive".into());
        }
        if self.idle_ttl.is_zero() {
            return Err("idle_ttl must be positive".into());
        }
        Ok(())
    }
}

/// How a call ended, as far as a retry is concerned.
#[derive(Debug, Clone)]
pub enum Finished<R> {
    /// Its response, to answer the retry with.
    Kept(R),
    /// Its response could not be kept (why); the retry must be refused.
    NotKept(String),
}

/// What to do with an arriving call.
#[derive(Debug)]
pub enum Admission<R> {
    /// Run it: its first attempt. Complete the ticket when it ends.
    Run(Ticket),
    /// A retry of a call that ended: answer as the first attempt was answered.
    Replay(R),
    /// A retry of a call still running: wait for it to end.
    Wait(watch::Receiver<Option<Finished<R>>>),
    /// Refuse it without running it.
    Refuse {
        /// Why (for the caller).
        why: String,
        /// Which refusal.
        kind: Refusal,
    },
}

/// Why a call is refused without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The transaction's commit has begun here (Prepare or a one-phase commit arrived).
    Closed,
    /// An earlier call of the transaction failed here: it is doomed already.
    Doomed,
    /// A limit of the records (transactions or calls per transaction).
    Exhausted,
    /// The call id was used before for a different request.
    Reused,
    /// A retry of a call whose response could not be kept.
    NotKept,
}

impl Refusal {
    /// Whether the refusal dooms the transaction: the initiator made a call that did not run
    /// (or whose retry cannot be answered), so it must not commit. Not for a transaction
    /// doomed already, nor one whose commit has begun (its vote stands, P1).
    pub fn dooms(self) -> bool {
        matches!(
            self,
            Refusal::Exhausted | Refusal::Reused | Refusal::NotKept
        )
    }
}

/// A running call, to be completed with [`Calls::complete`].
#[derive(Debug)]
pub struct Ticket {
    txn_id: TxnId,
    /// Which record of the transaction (a record dropped and begun anew is another).
    epoch: u64,
    key: Key,
}

impl Ticket {
    /// The transaction.
    pub fn txn_id(&self) -> TxnId {
        self.txn_id
    }
}

/// A call's key within its transaction: its id, or (a call without one) a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Id(CallId),
    Anonymous(u64),
}

enum Call<R> {
    Running {
        fingerprint: u64,
        what: String,
        done: watch::Sender<Option<Finished<R>>>,
    },
    Ended {
        fingerprint: u64,
        finished: Finished<R>,
    },
}

struct TxnCalls<R> {
    epoch: u64,
    calls: BTreeMap<Key, Call<R>>,
    running: usize,
    /// Calls that ended without failing (OK, or an error declared harmless).
    completed: u32,
    /// The first call that failed, if one did (the transaction is doomed here).
    failed: Option<String>,
    /// Set by Prepare or a one-phase commit: no more calls.
    closed: bool,
    kept_bytes: usize,
    last_active: Instant,
    next_anonymous: u64,
}

impl<R> TxnCalls<R> {
    fn new(epoch: u64, now: Instant) -> Self {
        Self {
            epoch,
            calls: BTreeMap::new(),
            running: 0,
            completed: 0,
            failed: None,
            closed: false,
            kept_bytes: 0,
            last_active: now,
            next_anonymous: 0,
        }
    }
}

/// What Prepare found when it closed a transaction's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Calls still running (described), whose results the initiator cannot have seen.
    pub running: Vec<String>,
    /// Calls that ended without failing.
    pub completed: u32,
    /// The first call that failed, if one did.
    pub failed: Option<String>,
}

impl Closed {
    /// Why the transaction must not commit here, given the initiator's count of its calls to
    /// this participant (P10): a call still running, or a count that does not match.
    pub fn refusal(&self, expected_calls: Option<u32>) -> Option<String> {
        if let Some(failed) = &self.failed {
            return Some(failed.clone());
        }
        if let Some(first) = self.running.first() {
            return Some(format!(
                "{first} was still running when the commit began: the initiator cannot have seen its result{}",
                match self.running.len() {
                    1 => String::new(),
                    n => format!(" ({} more running)", n - 1),
                }
            ));
        }
        match expected_calls {
            Some(n) if n != self.completed => Some(format!(
                "the initiator made {n} call(s) here and {} completed here: a call never arrived, failed or was still running",
                self.completed
            )),
            _ => None,
        }
    }
}

/// The call records of one participant.
pub struct Calls<R> {
    limits: CallLimits,
    inner: Mutex<Inner<R>>,
}

struct Inner<R> {
    txns: BTreeMap<TxnId, TxnCalls<R>>,
    kept_bytes: usize,
    /// Calls recorded, over all transactions.
    calls_total: usize,
    /// Calls running, over all transactions.
    running_total: usize,
    next_epoch: u64,
}

impl<R> Inner<R> {
    fn record(&mut self, txn_id: TxnId, now: Instant) -> &mut TxnCalls<R> {
        let next = &mut self.next_epoch;
        self.txns.entry(txn_id).or_insert_with(|| {
            *next += 1;
            TxnCalls::new(*next, now)
        })
    }
}

impl<R: Clone> Calls<R> {
    /// No records yet.
    pub fn new(limits: CallLimits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Inner {
                txns: BTreeMap::new(),
                kept_bytes: 0,
                calls_total: 0,
                running_total: 0,
                next_epoch: 0,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner<R>> {
        // Every update below leaves the maps consistent between statements that can panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call of `txn_id` arrives: `call_id` (if it carries one), `fingerprint` (a hash of what
    /// it asks: method and request), `what` (for messages).
    pub fn admit(
        &self,
        txn_id: TxnId,
        call_id: Option<&CallId>,
        fingerprint: u64,
        what: &str,
        now: Instant,
    ) -> Admission<R> {
        let mut inner = self.inner();
        let tracked = inner.txns.len();
        if !inner.txns.contains_key(&txn_id) && tracked >= self.limits.txns_max {
            return Admission::Refuse {
                why: format!(
                    "this participant tracks the calls of {tracked} transactions, its limit (txns_max)"
                ),
                kind: Refusal::Exhausted,
            };
        }
        let (calls_total, running_total) = (inner.calls_total, inner.running_total);
        let txn = inner.record(txn_id, now);
        txn.last_active = now;
        let key = match call_id {
            Some(id) => Key::Id(id.clone()),
            None => {
                txn.next_anonymous += 1;
                Key::Anonymous(txn.next_anonymous)
            }
        };
        // A repeat is answered as its first attempt was, even once the commit has begun.
        match txn.calls.get(&key) {
            Some(Call::Running {
                fingerprint: f,
                done,
                ..
            }) if *f == fingerprint => return Admission::Wait(done.subscribe()),
            Some(Call::Ended {
                fingerprint: f,
                finished,
            }) if *f == fingerprint => {
                return match finished {
                    Finished::Kept(r) => Admission::Replay(r.clone()),
                    Finished::NotKept(why) => Admission::Refuse {
                        why: format!("a retry of {what} cannot be answered: {why}"),
                        kind: Refusal::NotKept,
                    },
                };
            }
            Some(_) => {
                return Admission::Refuse {
                    why: format!(
                        "{what} reuses the call id of a different request of this transaction"
                    ),
                    kind: Refusal::Reused,
                };
            }
            None => {}
        }
        if txn.closed {
            return Admission::Refuse {
                why: "its commit has begun here: it takes no more calls".into(),
                kind: Refusal::Closed,
            };
        }
        if let Some(first) = &txn.failed {
            return Admission::Refuse {
                why: format!("an earlier call of this transaction failed here: {first}"),
                kind: Refusal::Doomed,
            };
        }
        if txn.calls.len() >= self.limits.calls_per_txn_max {
            return Admission::Refuse {
                why: format!(
                    "{} calls of this transaction here, the limit (calls_per_txn_max)",
                    txn.calls.len()
                ),
                kind: Refusal::Exhausted,
            };
        }
        if running_total >= self.limits.running_max {
            return Admission::Refuse {
                why: format!("{running_total} calls are running here, the limit (running_max)"),
                kind: Refusal::Exhausted,
            };
        }
        if calls_total >= self.limits.calls_max {
            return Admission::Refuse {
                why: format!("this participant keeps {calls_total} calls, its limit (calls_max)"),
                kind: Refusal::Exhausted,
            };
        }
        let (done, _) = watch::channel(None);
        txn.calls.insert(
            key.clone(),
            Call::Running {
                fingerprint,
                what: what.to_owned(),
                done,
            },
        );
        txn.running += 1;
        let epoch = txn.epoch;
        inner.calls_total += 1;
        inner.running_total += 1;
        Admission::Run(Ticket { txn_id, epoch, key })
    }

    /// The call of `ticket` ended. `failure`: it failed (the transaction is doomed here; the
    /// first failure is kept for messages), or `None` (OK, or an error declared harmless).
    /// `response`: what answers a retry, with its size in bytes; `None` if it cannot be kept.
    pub fn complete(
        &self,
        ticket: Ticket,
        failure: Option<String>,
        response: Result<(R, usize), String>,
        now: Instant,
    ) {
        let mut inner = self.inner();
        let Inner {
            txns,
            kept_bytes,
            running_total,
            ..
        } = &mut *inner;
        let Some(txn) = txns
            .get_mut(&ticket.txn_id)
            .filter(|t| t.epoch == ticket.epoch)
        else {
            // Its record was dropped (Prepare finished with it, or it expired), and maybe
            // begun anew by later calls: this call is not part of that one. Nothing waits
            // on it but a retry, which the store refuses.
            return;
        };
        txn.last_active = now;
        let Some(Call::Running {
            fingerprint, done, ..
        }) = txn.calls.remove(&ticket.key)
        else {
            return;
        };
        let finished = match response {
            Err(why) => Finished::NotKept(why),
            Ok((_, size)) if size > self.limits.response_bytes_max => Finished::NotKept(format!(
                "its response ({size} bytes) was larger than response_bytes_max ({})",
                self.limits.response_bytes_max
            )),
            Ok((_, size))
                if txn.kept_bytes + size > self.limits.kept_bytes_per_txn_max
                    || *kept_bytes + size > self.limits.kept_bytes_max =>
            {
                Finished::NotKept("no room was left to keep its response".into())
            }
            Ok((r, size)) => {
                txn.kept_bytes += size;
                *kept_bytes += size;
                Finished::Kept(r)
            }
        };
        txn.calls.insert(
            ticket.key,
            Call::Ended {
                fingerprint,
                finished: finished.clone(),
            },
        );
        txn.running = txn.running.saturating_sub(1);
        *running_total = running_total.saturating_sub(1);
        let _ = done.send(Some(finished));
        match failure {
            Some(why) => {
                txn.failed.get_or_insert(why);
            }
            None => txn.completed = txn.completed.saturating_add(1),
        }
    }

    /// Prepare or a one-phase commit arrived: admit no more calls of `txn_id`, and say what ran.
    pub fn close(&self, txn_id: TxnId, now: Instant) -> Closed {
        let mut inner = self.inner();
        // Closed even when no call was seen (a call arriving now is refused), so the record
        // exists until `forget`; the transaction limit does not apply to closing.
        let txn = inner.record(txn_id, now);
        txn.closed = true;
        txn.last_active = now;
        Closed {
            running: txn
                .calls
                .values()
                .filter_map(|c| match c {
                    Call::Running { what, .. } => Some(what.clone()),
                    Call::Ended { .. } => None,
                })
                .collect(),
            completed: txn.completed,
            failed: txn.failed.clone(),
        }
    }

    /// The transaction's part here is over (prepared, committed or aborted): drop its record.
    /// A call arriving later runs, and the store refuses it (P5).
    pub fn forget(&self, txn_id: TxnId) {
        let mut inner = self.inner();
        if let Some(txn) = inner.txns.remove(&txn_id) {
            inner.kept_bytes = inner.kept_bytes.saturating_sub(txn.kept_bytes);
            inner.calls_total = inner.calls_total.saturating_sub(txn.calls.len());
            // Its running calls end unrecorded (`complete` finds the record gone).
            inner.running_total = inner.running_total.saturating_sub(txn.running);
        }
    }

    /// Drop the records of transactions with no call running that have been idle longer than
    /// `idle_ttl`. Returns how many were dropped.
    pub fn expire(&self, now: Instant) -> usize {
        let ttl = self.limits.idle_ttl;
        let mut inner = self.inner();
        let before = inner.txns.len();
        let (mut freed, mut calls) = (0, 0);
        inner.txns.retain(|_, t| {
            let keep = t.running > 0 || now.saturating_duration_since(t.last_active) <= ttl;
            if !keep {
                freed += t.kept_bytes;
                calls += t.calls.len();
            }
            keep
        });
        inner.kept_bytes = inner.kept_bytes.saturating_sub(freed);
        inner.calls_total = inner.calls_total.saturating_sub(calls);
        before - inner.txns.len()
    }

    /// Transactions with a record (for tests and metrics).
    pub fn len(&self) -> usize {
        self.inner().txns.len()
    }

    /// True when no transaction has a record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of responses kept (for tests and metrics).
    pub fn kept_bytes(&self) -> usize {
        self.inner().kept_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> CallId {
        CallId::new(s).expect("valid")
    }

    fn calls() -> Calls<String> {
        Calls::new(CallLimits {
            response_bytes_max: 10,
            kept_bytes_per_txn_max: 15,
            ..CallLimits::default()
        })
    }

    fn run(a: Admission<String>) -> Ticket {
        match a {
            Admission::Run(t) => t,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn call_ids_are_checked() {
        assert!(CallId::new("1").is_ok());
        assert!(CallId::new("a.B_c-9").is_ok());
        assert!(CallId::new("").is_err());
        assert!(CallId::new("x".repeat(65)).is_err());
        assert!(CallId::new("a b").is_err());
        assert!(CallId::new("é").is_err());
    }

    /// P10: a retried call (same id, same request) is answered from its first attempt, waits
    /// for it while it runs, and never runs again; the same id for a different request is
    /// refused and dooms.
    #[tokio::test]
    async fn a_retry_is_answered_from_the_first_attempt() {
        let c = calls();
        let t = TxnId::new_v7();
        let now = Instant::now();
        let ticket = run(c.admit(t, Some(&id("1")), 7, "call 1", now));
        let Admission::Wait(mut rx) = c.admit(t, Some(&id("1")), 7, "call 1", now) else {
            panic!("a retry while running waits");
        };
        c.complete(ticket, None, Ok(("reply".into(), 5)), now);
        rx.changed().await.expect("the first attempt ended");
        assert!(matches!(&*rx.borrow(), Some(Finished::Kept(r)) if r == "reply"));
        assert!(
            matches!(c.admit(t, Some(&id("1")), 7, "call 1", now), Admission::Replay(r) if r == "reply")
        );
        assert!(matches!(
            c.admit(t, Some(&id("1")), 8, "call 1", now),
            Admission::Refuse {
                kind: Refusal::Reused | Refusal::NotKept,
                ..
            }
        ));
        let closed = c.close(t, now);
        assert_eq!(
            closed.completed, 1,
            "a call counts once however often it is retried"
        );
        assert_eq!(closed.refusal(Some(1)), None);
    }

    /// P10: what Prepare finds — a call still running, a count that does not match — refuses
    /// the commit; after closing, calls are refused without dooming (the vote stands).
    #[test]
    fn prepare_refuses_running_calls_and_wrong_counts() {
        let c = calls();
        let now = Instant::now();
        let t = TxnId::new_v7();
        let first = run(c.admit(t, Some(&id("1")), 1, "call 1", now));
        c.complete(first, None, Ok(("ok".into(), 2)), now);
        let _running = run(c.admit(t, Some(&id("2")), 2, "call 2 (Deposit)", now));
        let closed = c.close(t, now);
        assert_eq!(closed.running, vec!["call 2 (Deposit)".to_owned()]);
        assert!(
            closed
                .refusal(None)
                .expect("refused")
                .contains("call 2 (Deposit)")
        );
        assert!(matches!(
            c.admit(t, Some(&id("3")), 3, "call 3", now),
            Admission::Refuse {
                kind: Refusal::Closed,
                ..
            }
        ));

        let u = TxnId::new_v7();
        let one = run(c.admit(u, None, 1, "a call", now));
        c.complete(one, None, Ok(("ok".into(), 2)), now);
        let closed = c.close(u, now);
        assert_eq!(closed.refusal(None), None);
        assert_eq!(closed.refusal(Some(1)), None);
        assert!(closed.refusal(Some(2)).expect("refused").contains("made 2"));
        // Never seen at all: one expected call never arrived.
        assert!(c.close(TxnId::new_v7(), now).refusal(Some(1)).is_some());
    }

    /// A failed call is remembered; later new calls are refused at once (the transaction is
    /// doomed) and do not count.
    #[test]
    fn after_a_failure_new_calls_are_refused() {
        let c = calls();
        let now = Instant::now();
        let t = TxnId::new_v7();
        let bad = run(c.admit(t, Some(&id("1")), 1, "call 1", now));
        c.complete(
            bad,
            Some("call 1 failed: NOT_FOUND".into()),
            Ok(("err".into(), 3)),
            now,
        );
        match c.admit(t, Some(&id("2")), 2, "call 2", now) {
            Admission::Refuse { why, kind } => {
                assert!(why.contains("NOT_FOUND"), "{why}");
                assert_eq!(kind, Refusal::Doomed);
                assert!(!kind.dooms(), "already doomed");
            }
            other => panic!("{other:?}"),
        }
        // Its retry still gets its own (failed) answer.
        assert!(
            matches!(c.admit(t, Some(&id("1")), 1, "call 1", now), Admission::Replay(r) if r == "err")
        );
        let closed = c.close(t, now);
        assert_eq!(closed.completed, 0);
        assert!(closed.failed.is_some());
    }

    /// Responses too large to keep are answered once; their retry is refused and dooms.
    /// Memory is bounded per transaction and released when the record goes.
    #[test]
    fn kept_responses_are_bounded() {
        let c = calls();
        let now = Instant::now();
        let t = TxnId::new_v7();
        let big = run(c.admit(t, Some(&id("1")), 1, "call 1", now));
        c.complete(big, None, Ok(("x".repeat(11), 11)), now);
        assert!(matches!(
            c.admit(t, Some(&id("1")), 1, "call 1", now),
            Admission::Refuse {
                kind: Refusal::Reused | Refusal::NotKept,
                ..
            }
        ));
        for (i, size) in [(2, 8), (3, 8)] {
            let call = id(&i.to_string());
            let tk = run(c.admit(t, Some(&call), i, "call", now));
            c.complete(tk, None, Ok(("y".repeat(size), size)), now);
        }
        assert_eq!(
            c.kept_bytes(),
            8,
            "the per-transaction budget (15) kept only one"
        );
        c.forget(t);
        assert_eq!(c.kept_bytes(), 0);
        assert!(c.is_empty());
    }

    /// Idle records expire (not while a call runs); the transaction limit refuses new ones.
    #[test]
    fn records_expire_and_are_limited() {
        let c: Calls<String> = Calls::new(CallLimits {
            txns_max: 1,
            idle_ttl: Duration::from_secs(10),
            ..CallLimits::default()
        });
        let now = Instant::now();
        let (a, b) = (TxnId::new_v7(), TxnId::new_v7());
        let running = run(c.admit(a, None, 1, "a", now));
        assert!(matches!(
            c.admit(b, None, 1, "b", now),
            Admission::Refuse {
                kind: Refusal::Exhausted,
                ..
            }
        ));
        let later = now + Duration::from_secs(11);
        assert_eq!(c.expire(later), 0, "a running call keeps its record");
        c.complete(running, None, Ok(("ok".into(), 2)), now);
        assert_eq!(c.expire(later), 1);
        assert!(matches!(c.admit(b, None, 1, "b", later), Admission::Run(_)));
    }
}
