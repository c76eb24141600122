//! The data every checker reads.
//!
//! # Operations (`history.jsonl`, one JSON object per line, Jepsen/Elle-compatible)
//!
//! `{"index":0,"time":1234,"process":3,"type":"invoke","f":"transfer","value":{...}}`
//!
//! - `index`: position in the history (0, 1, 2, ...). `time`: nanoseconds since the run began.
//! - `process`: the client worker (a worker runs one operation at a time). After an `info`
//!   completion the worker continues as a new process number (Jepsen's rule: an operation
//!   whose outcome is unknown may still be in flight forever).
//! - `type`: `invoke`, then exactly one of `ok` (committed), `fail` (definitely not committed:
//!   aborted, or never reached commit), `info` (unknown: the commit call timed out, the
//!   coordinator answered UNKNOWN, the connection broke). An `info` is never assumed absent.
//! - `txn_id`: Ratify's transaction id (UUIDv7 text); a retried commit reuses it.
//!
//! Workloads and their `f` / `value`:
//! - bank: `transfer` `{"from":"P/ACCT","to":"P/ACCT","amount":N}` (invoke and completion
//!   carry the same value); `read` (invoke `null`; `ok` value `{"P/ACCT": balance, ...}`,
//!   every account of every participant, read in one read-only transaction).
//! - atomic-marker: `marker` `{"participants":["p1","p2"]}`: the transaction writes the
//!   marker key `marker/<txn_id>` (value: the txn id) at each listed participant.
//! - list-append: `txn` with Elle's micro-operations `[["append",K,V],["r",K,null]]`; an `ok`
//!   completion has every read filled in: `["r",K,[V1,V2,...]]`. Keys are integers, values are
//!   unique integers per key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Kind of history entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation began.
    Invoke,
    /// It committed.
    Ok,
    /// It definitely did not commit.
    Fail,
    /// Its outcome is unknown.
    Info,
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// Position in the history.
    pub index: u64,
    /// Nanoseconds since the run began.
    pub time: u64,
    /// The client process.
    pub process: u64,
    /// invoke / ok / fail / info.
    #[serde(rename = "type")]
    pub kind: OpType,
    /// The operation: `transfer`, `read`, `marker`, `txn`.
    pub f: String,
    /// Its argument or result (see the module docs).
    pub value: serde_json::Value,
    /// Why it failed or is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Ratify's transaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
    /// On a completion: what the client saw of its business calls that a commit must not
    /// survive (docs/protocol.md P10) — a participant that answered a call with
    /// `ratify-doomed` (`"doomed: p1 call 2 ..."`), or a retried call answered differently from
    /// its first attempt (`"retry-differs: ..."`). The `calls` checker reads them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub call_notes: Vec<String>,
}

/// Start or end of a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NemesisPhase {
    /// The fault begins (an interval opens).
    Start,
    /// The fault ends (the interval with the same `id` closes).
    Stop,
    /// An instantaneous event (a kill, a restart, a failpoint crash).
    Info,
}

/// One entry of the nemesis timeline (`nemesis.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// Nanoseconds since the run began (same clock as [`Op::time`]).
    pub time: u64,
    /// Start / stop / info.
    pub phase: NemesisPhase,
    /// Pairs a start with its stop.
    pub id: u64,
    /// The nemesis: `partition-leader`, `kill-random`, `delay`, ...
    pub f: String,
    /// What exactly: the nodes, links, parameters.
    pub value: serde_json::Value,
}

/// A coordinator decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Committed.
    Commit,
    /// Aborted.
    Abort,
}

/// What one participant holds after the final heal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParticipantState {
    /// Whether the final read reached it (false: its data is unknown).
    pub reachable: bool,
    /// Committed data: key → value. Bank: `acct/NAME` → balance (integer); marker:
    /// `marker/TXN` → the txn id (string); list-append: `list/K` → `[V, ...]`.
    pub data: BTreeMap<String, serde_json::Value>,
    /// Transactions it still holds prepared (in doubt) after the heal.
    pub in_doubt: Vec<String>,
}

/// Everything read after the final heal.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FinalState {
    /// By participant id.
    pub participants: BTreeMap<String, ParticipantState>,
    /// The coordinator's replicated decisions (txn id → decision), read from the leader.
    /// `None` when the dump could not be read (checkers that need it say `unknown`).
    pub decisions: Option<BTreeMap<String, Decision>>,
    /// Decided transactions whose phase 2 the leader had not finished when the recovery wait
    /// ended (one line each: id, decision, participants it waits for).
    #[serde(default)]
    pub unfinished: Vec<String>,
}

/// A verdict: Jepsen's `true` / `false` / `"unknown"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valid {
    /// Every property held.
    True,
    /// At least one anomaly.
    False,
    /// Could not be decided (missing data, liveness not reached).
    Unknown,
}

impl Valid {
    /// Combine two verdicts: false wins, then unknown.
    pub fn and(self, other: Valid) -> Valid {
        match (self, other) {
            (Valid::False, _) | (_, Valid::False) => Valid::False,
            (Valid::Unknown, _) | (_, Valid::Unknown) => Valid::Unknown,
            _ => Valid::True,
        }
    }
}

impl Serialize for Valid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Valid::True => s.serialize_bool(true),
            Valid::False => s.serialize_bool(false),
            Valid::Unknown => s.serialize_str("unknown"),
        }
    }
}

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Bool(true) => Ok(Valid::True),
            serde_json::Value::Bool(false) => Ok(Valid::False),
            serde_json::Value::String(s) if s == "unknown" => Ok(Valid::Unknown),
            other => Err(serde::de::Error::custom(format!(
                "valid: expected true, false or \"unknown\", got {other}"
            ))),
        }
    }
}

/// One thing a checker found wrong (or could not decide).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Its kind: `wrong-total`, `negative`, `partial`, `lost-commit`, `G1c`, ...
    pub kind: String,
    /// A human explanation (for a cycle: the witness, step by step).
    pub detail: String,
    /// History indices involved.
    #[serde(default)]
    pub ops: Vec<u64>,
    /// The transaction involved, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
}

/// A checker's verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Which checker.
    pub checker: String,
    /// true / false / unknown.
    pub valid: Valid,
    /// One line for humans.
    pub summary: String,
    /// What was found (at most a bounded number per kind; `counts` has the totals).
    pub anomalies: Vec<Anomaly>,
    /// Totals by anomaly kind, and other figures the checker wants to show.
    pub counts: BTreeMap<String, u64>,
}

/// How many anomalies of one kind a checker lists; the rest are only counted (in `counts`).
pub const ANOMALIES_PER_KIND_MAX: u64 = 8;

/// Collects a checker's anomalies (bounded per kind), its figures and its verdict.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    valid: Option<Valid>,
    anomalies: Vec<Anomaly>,
    /// Totals by anomaly kind (all of them, listed or not).
    kinds: BTreeMap<String, u64>,
    /// Other figures (`transfers-ok`, `edges-ww`, ...).
    figures: BTreeMap<String, u64>,
}

impl Findings {
    /// Records an anomaly that makes the verdict at most `valid` (`False` or `Unknown`).
    pub(crate) fn add(
        &mut self,
        valid: Valid,
        kind: &str,
        detail: String,
        ops: Vec<u64>,
        txn_id: Option<&str>,
    ) {
        self.valid = Some(self.valid.unwrap_or(Valid::True).and(valid));
        let total = self.kinds.entry(kind.to_string()).or_insert(0);
        *total += 1;
        if *total <= ANOMALIES_PER_KIND_MAX {
            self.anomalies.push(Anomaly {
                kind: kind.to_string(),
                detail,
                ops,
                txn_id: txn_id.map(str::to_string),
            });
        }
    }

    /// Adds `n` to the figure `name`.
    pub(crate) fn figure(&mut self, name: &str, n: u64) {
        *self.figures.entry(name.to_string()).or_insert(0) += n;
    }

    /// How many anomalies of `kind` were recorded.
    pub(crate) fn total(&self, kind: &str) -> u64 {
        self.kinds.get(kind).copied().unwrap_or(0)
    }

    /// The figure `name` so far (0 if never set).
    pub(crate) fn figure_value(&self, name: &str) -> u64 {
        self.figures.get(name).copied().unwrap_or(0)
    }

    /// The verdict so far (`True` if nothing was recorded).
    pub(crate) fn valid(&self) -> Valid {
        self.valid.unwrap_or(Valid::True)
    }

    /// The result: the summary is the verdict, the anomaly totals, then `about` (the figures
    /// a human wants first).
    pub(crate) fn finish(self, checker: &str, about: &str) -> CheckResult {
        let valid = self.valid();
        let verdict = match valid {
            Valid::True => "valid",
            Valid::False => "INVALID",
            Valid::Unknown => "unknown",
        };
        let found = if self.kinds.is_empty() {
            "no anomalies".to_string()
        } else {
            self.kinds
                .iter()
                .map(|(kind, n)| format!("{n} {kind}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut counts = self.figures;
        for (kind, n) in self.kinds {
            *counts.entry(kind).or_insert(0) += n;
        }
        CheckResult {
            checker: checker.to_string(),
            valid,
            summary: format!("{verdict}: {found}; {about}"),
            anomalies: self.anomalies,
            counts,
        }
    }
}

/// One operation: its invocation and, unless the history ended first, its completion.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paired<'a> {
    pub(crate) invoke: &'a Op,
    pub(crate) completion: Option<&'a Op>,
}

impl<'a> Paired<'a> {
    /// `Ok`, `Fail` or `Info`; an operation the history ended before completing is `Info`.
    pub(crate) fn outcome(&self) -> OpType {
        self.completion.map_or(OpType::Info, |c| c.kind)
    }

    /// The invocation's transaction id, else the completion's.
    pub(crate) fn txn_id(&self) -> Option<&'a str> {
        self.invoke
            .txn_id
            .as_deref()
            .or_else(|| self.completion.and_then(|c| c.txn_id.as_deref()))
    }

    /// The index that names the operation: its completion's, else its invocation's.
    pub(crate) fn index(&self) -> u64 {
        self.completion.map_or(self.invoke.index, |c| c.index)
    }

    /// Both indices (invocation, then completion if any), for [`Anomaly::ops`].
    pub(crate) fn indices(&self) -> Vec<u64> {
        let mut ops = vec![self.invoke.index];
        ops.extend(self.completion.map(|c| c.index));
        ops
    }
}

/// Pairs every invocation with the next completion of the same process, in history order.
/// Returns the pairs (in invocation order) with the shape errors found (`malformed-op`): a
/// completion with no pending invocation, a second invocation while one is pending (the first
/// is kept as never completed), a completion whose `f` differs from its invocation's.
pub(crate) fn pair_ops(history: &[Op]) -> (Vec<Paired<'_>>, Vec<Anomaly>) {
    let mut pairs: Vec<Paired<'_>> = Vec::new();
    let mut errors = Vec::new();
    // process → position in `pairs` of its pending invocation.
    let mut pending: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let malformed = |detail: String, op: &Op| Anomaly {
        kind: "malformed-op".to_string(),
        detail,
        ops: vec![op.index],
        txn_id: op.txn_id.clone(),
    };
    for op in history {
        match op.kind {
            OpType::Invoke => {
                if let Some(previous) = pending.insert(op.process, pairs.len()) {
                    let first = pairs[previous].invoke.index;
                    errors.push(malformed(
                        format!(
                            "process {} invoked again at index {} while index {first} was pending",
                            op.process, op.index
                        ),
                        op,
                    ));
                }
                pairs.push(Paired {
                    invoke: op,
                    completion: None,
                });
            }
            OpType::Ok | OpType::Fail | OpType::Info => match pending.remove(&op.process) {
                None => errors.push(malformed(
                    format!(
                        "completion at index {} of process {} has no invocation",
                        op.index, op.process
                    ),
                    op,
                )),
                Some(at) => {
                    if pairs[at].invoke.f != op.f {
                        errors.push(malformed(
                            format!(
                                "completion at index {} is `{}` but its invocation (index {}) is `{}`",
                                op.index, op.f, pairs[at].invoke.index, pairs[at].invoke.f
                            ),
                            op,
                        ));
                    }
                    pairs[at].completion = Some(op);
                }
            },
        }
    }
    (pairs, errors)
}

/// Shortens a list for an anomaly's detail: `[1, 2, 3]`, or `[1, 2, .. 9, 10] (12 elements)`.
pub(crate) fn show_list<T: std::fmt::Display>(list: &[T]) -> String {
    const HEAD: usize = 4;
    const TAIL: usize = 4;
    let join = |xs: &[T]| {
        xs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if list.len() <= HEAD + TAIL + 1 {
        format!("[{}]", join(list))
    } else {
        format!(
            "[{} .. {}] ({} elements)",
            join(&list[..HEAD]),
            join(&list[list.len() - TAIL..]),
            list.len()
        )
    }
}

/// How many operations completed ok, fail and info.
pub fn outcome_counts(history: &[Op]) -> (u64, u64, u64) {
    history
        .iter()
        .fold((0, 0, 0), |(o, f, i), op| match op.kind {
            OpType::Ok => (o + 1, f, i),
            OpType::Fail => (o, f + 1, i),
            OpType::Info => (o, f, i + 1),
            OpType::Invoke => (o, f, i),
        })
}

/// Hand-built histories for the checkers' unit tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::{CheckResult, Op, OpType};
    use serde_json::Value;

    /// Appends operations with consecutive indices and times.
    #[derive(Debug, Default)]
    pub(crate) struct OpsBuilder {
        pub(crate) ops: Vec<Op>,
    }

    impl OpsBuilder {
        fn push(
            &mut self,
            process: u64,
            kind: OpType,
            f: &str,
            value: Value,
            txn_id: Option<&str>,
        ) -> u64 {
            let index = self.ops.len() as u64;
            self.ops.push(Op {
                index,
                time: index * 1_000,
                process,
                kind,
                f: f.to_string(),
                value,
                error: None,
                txn_id: txn_id.map(str::to_string),
                call_notes: Vec::new(),
            });
            index
        }

        /// An invocation only; returns its index.
        pub(crate) fn invoke(
            &mut self,
            process: u64,
            f: &str,
            value: Value,
            txn_id: Option<&str>,
        ) -> u64 {
            self.push(process, OpType::Invoke, f, value, txn_id)
        }

        /// A completion of `process`'s pending invocation; returns its index.
        pub(crate) fn complete(
            &mut self,
            process: u64,
            kind: OpType,
            f: &str,
            value: Value,
            txn_id: Option<&str>,
        ) -> u64 {
            self.push(process, kind, f, value, txn_id)
        }

        /// An invocation immediately completed with `outcome`; the completion carries
        /// `completion_value`, or the invocation's value. Returns the completion's index.
        pub(crate) fn call(
            &mut self,
            process: u64,
            f: &str,
            value: Value,
            txn_id: Option<&str>,
            outcome: OpType,
            completion_value: Option<Value>,
        ) -> u64 {
            self.invoke(process, f, value.clone(), txn_id);
            self.complete(
                process,
                outcome,
                f,
                completion_value.unwrap_or(value),
                txn_id,
            )
        }
    }

    /// The kinds of a result's anomalies, sorted.
    pub(crate) fn kinds(result: &CheckResult) -> Vec<&str> {
        let mut kinds: Vec<&str> = result.anomalies.iter().map(|a| a.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds
    }
}
