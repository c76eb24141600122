//! The list-append checker: Elle's inference of isolation anomalies (Kingsbury & Alvaro,
//! "Elle: Inferring Isolation Anomalies from Experimental Observations", VLDB 2020) over
//! `txn` operations made of `["append", K, V]` and `["r", K, [V, ...]]` micro-operations.
//! The claim checked is serializability; real-time precedence is added on top to check
//! strict serializability (reported under separate `-realtime` kinds).
//!
//! # How
//! 1. Each `txn` invocation is paired with its completion. `ok` transactions are committed;
//!    `fail` ones are not; `info` ones are treated as committed when (and only because) one of
//!    their appends was observed. Only `ok` transactions' reads are known.
//! 2. Per key, every `ok` read (and the final state's list, if given) must be a prefix of the
//!    longest one (`incompatible-order` otherwise); the longest is the key's version order.
//!    Checked on it: no value twice (`duplicate-elements`: a non-idempotent apply), every value
//!    appended by some transaction (`unknown-value`), none by a failed one (`G1a`). With the
//!    final lists: every value appended by an `ok` transaction or observed by a read is in the
//!    final list (`lost-append`).
//! 3. Per transaction: reads after its own appends see them, and repeated reads agree
//!    (`internal`); no read ends at another transaction's non-final append to the key (`G1b`).
//! 4. A dependency graph over transactions: `ww` (T1 appended a value, T2 the next one in the
//!    version order), `wr` (T2's read of the key ends with T1's append), `rw` (T1's read ends
//!    at some version, T2 appended the next one). Only a transaction's *external* reads (those
//!    before its own appends to the key) give `wr` / `rw` edges, as in Elle. Keys with
//!    duplicate elements give no `ww` / `rw` edges (their positions are meaningless).
//! 5. Strongly connected components (iterative Tarjan). In each, the weakest cycle is looked
//!    for in order: `ww` edges only (`G0`), `ww`+`wr` (`G1c`), exactly one `rw` edge
//!    (`G-single`), any (`G2-item`, two or more `rw` edges). The witness is a shortest cycle
//!    (breadth-first) through one transaction of that subgraph, printed step by step. The
//!    search for a single `rw` edge has a work limit; past it the component is reported by its
//!    shortest cycle, classified by the edges it actually has.
//! 6. Real-time edges (`rt`: T1 completed before T2 was invoked), kept transitively reduced as
//!    Elle does, when they number at most [`RT_EDGES_MAX`]. Components that have a cycle only
//!    with them are classified the same way with a `-realtime` suffix (`G-single-realtime`:
//!    a stale read).
//!
//! Cost: linear in the size of the history and its read lists, plus `O(V + E)` per graph
//! search; no pairwise loop over transactions.
//!
//! # Verdict
//! `False` on any anomaly above. A malformed operation (`malformed-op`: a value of the wrong
//! shape, an `ok` read without its list, a value appended twice to one key) is the harness's
//! bug, not Ratify's: the transaction is left out and the verdict is at best `Unknown`.
//!
//! Pass final lists only when no participant is left in doubt (see [`crate::indoubt`]): a
//! committed append not yet applied would otherwise show as `lost-append`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde_json::Value;

use crate::CheckResult;
use crate::history::{
    ANOMALIES_PER_KIND_MAX, FinalState, Findings, Op, OpType, Paired, Valid, pair_ops, show_list,
};

const CHECKER: &str = "list-append";

/// At most this many real-time edges are built; beyond it real-time analysis is skipped
/// (`realtime-skipped` in the counts) to bound memory.
pub const RT_EDGES_MAX: usize = 4_000_000;

/// Work limit (edges examined) for the search of cycles with exactly one `rw` edge, over the
/// whole check.
const SINGLE_RW_SEARCH_EDGES_MAX: u64 = 50_000_000;

/// A witness cycle longer than this is printed with its middle elided.
const WITNESS_STEPS_SHOWN_MAX: usize = 12;

/// At most this many history indices are listed for one cycle.
const CYCLE_OPS_MAX: usize = 100;

/// Final-state data keys of list-append lists start with this, followed by the integer key.
const LIST_KEY_PREFIX: &str = "list/";

/// The final lists (`list/K` → `[V, ...]`) of the reachable participants, for [`check`].
/// Fails on a value of the wrong shape, or on one key held by two participants with different
/// lists (a harness or sharding bug the caller should report rather than check around).
pub fn final_lists(final_state: &FinalState) -> Result<BTreeMap<u64, Vec<u64>>, String> {
    let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (participant, state) in final_state.participants.iter().filter(|(_, s)| s.reachable) {
        for (name, value) in &state.data {
            let Some(key) = name.strip_prefix(LIST_KEY_PREFIX) else {
                continue;
            };
            let key: u64 = key
                .parse()
                .map_err(|_| format!("{participant}: key {name} is not list/<integer>"))?;
            let list: Vec<u64> = value
                .as_array()
                .and_then(|vs| vs.iter().map(Value::as_u64).collect())
                .ok_or_else(|| {
                    format!("{participant}: {name} = {value} is not a list of integers")
                })?;
            if lists.get(&key).is_some_and(|other| *other != list) {
                return Err(format!(
                    "key {key} held with different lists by two participants"
                ));
            }
            lists.insert(key, list);
        }
    }
    Ok(lists)
}

/// Checks a list-append history (and, if given, the final lists: key → elements).
pub fn check(history: &[Op], final_lists: Option<&BTreeMap<u64, Vec<u64>>>) -> CheckResult {
    let mut findings = Findings::default();
    let (pairs, shape_errors) = pair_ops(history);
    for anomaly in shape_errors {
        findings.add(
            Valid::Unknown,
            &anomaly.kind,
            anomaly.detail,
            anomaly.ops,
            anomaly.txn_id.as_deref(),
        );
    }
    let txns = parse_txns(&mut findings, &pairs);
    let mut analysis = Analysis {
        writers: index_writers(&mut findings, &txns),
        txns: &txns,
        findings,
        edges: Vec::new(),
        whys: Vec::new(),
    };
    analysis.check_internal();
    analysis.check_keys(final_lists);
    if let Some(final_lists) = final_lists {
        analysis.check_appends_in_final(final_lists);
    }
    analysis.find_cycles();

    let findings = analysis.findings;
    let about = format!(
        "{} txns ({} ok, {} fail, {} info), {} keys; edges: {} ww, {} wr, {} rw, {} rt",
        txns.len(),
        findings.figure_value("txns-ok"),
        findings.figure_value("txns-fail"),
        findings.figure_value("txns-info"),
        findings.figure_value("keys"),
        findings.figure_value("edges-ww"),
        findings.figure_value("edges-wr"),
        findings.figure_value("edges-rw"),
        findings.figure_value("edges-rt"),
    );
    findings.finish(CHECKER, &about)
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// One micro-operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mop {
    Append {
        key: u64,
        value: u64,
    },
    /// `values` is `None` for a read whose result is not known (not `ok`).
    Read {
        key: u64,
        values: Option<Vec<u64>>,
    },
}

/// A well-formed `txn` operation.
struct Txn<'a> {
    op: Paired<'a>,
    outcome: OpType,
    mops: Vec<Mop>,
}

impl Txn<'_> {
    fn committed_or_unknown(&self) -> bool {
        self.outcome != OpType::Fail
    }
}

/// Names transaction `t` in anomaly details: `T7 (index 15)`.
fn label(txns: &[Txn<'_>], t: usize) -> String {
    format!("T{t} (index {})", txns[t].op.index())
}

fn parse_txns<'a>(findings: &mut Findings, pairs: &[Paired<'a>]) -> Vec<Txn<'a>> {
    let mut txns = Vec::new();
    for op in pairs.iter().filter(|op| op.invoke.f == "txn") {
        let outcome = match op.outcome() {
            OpType::Invoke => OpType::Info,
            other => other,
        };
        // An `ok` completion has the reads filled in; otherwise the invocation says what was
        // attempted.
        let (value, reads_filled) = match (outcome, op.completion) {
            (OpType::Ok, Some(completion)) => (&completion.value, true),
            _ => (&op.invoke.value, false),
        };
        match parse_mops(value, reads_filled) {
            Ok(mops) => {
                findings.figure(
                    match outcome {
                        OpType::Ok => "txns-ok",
                        OpType::Fail => "txns-fail",
                        _ => "txns-info",
                    },
                    1,
                );
                if outcome == OpType::Ok {
                    for mop in &mops {
                        findings.figure(
                            if matches!(mop, Mop::Read { .. }) {
                                "reads"
                            } else {
                                "appends"
                            },
                            1,
                        );
                    }
                }
                txns.push(Txn {
                    op: *op,
                    outcome,
                    mops,
                });
            }
            Err(why) => findings.add(
                Valid::Unknown,
                "malformed-op",
                format!("txn (index {}): {why}; left out", op.index()),
                op.indices(),
                op.txn_id(),
            ),
        }
    }
    txns
}

fn parse_mops(value: &Value, reads_filled: bool) -> Result<Vec<Mop>, String> {
    value
        .as_array()
        .ok_or_else(|| format!("value is not a list of micro-operations: {value}"))?
        .iter()
        .map(|mop| parse_mop(mop, reads_filled))
        .collect()
}

fn parse_mop(mop: &Value, reads_filled: bool) -> Result<Mop, String> {
    let parts = mop
        .as_array()
        .filter(|parts| parts.len() == 3)
        .ok_or_else(|| format!("micro-operation is not [f, key, value]: {mop}"))?;
    let key = parts[1]
        .as_u64()
        .ok_or_else(|| format!("key is not an unsigned integer in {mop}"))?;
    match parts[0].as_str() {
        Some("append") => {
            let value = parts[2]
                .as_u64()
                .ok_or_else(|| format!("appended value is not an unsigned integer in {mop}"))?;
            Ok(Mop::Append { key, value })
        }
        Some("r") => {
            let values = match &parts[2] {
                Value::Null if reads_filled => {
                    return Err(format!("an ok read without its result: {mop}"));
                }
                Value::Null => None,
                Value::Array(values) => Some(
                    values
                        .iter()
                        .map(Value::as_u64)
                        .collect::<Option<Vec<u64>>>()
                        .ok_or_else(|| {
                            format!("read result is not a list of unsigned integers in {mop}")
                        })?,
                ),
                _ => return Err(format!("read result is not a list in {mop}")),
            };
            // Only an ok transaction's reads are known.
            Ok(Mop::Read {
                key,
                values: if reads_filled { values } else { None },
            })
        }
        _ => Err(format!("unknown micro-operation {mop}")),
    }
}

/// Who appended a value.
#[derive(Debug, Clone, Copy)]
struct Writer {
    txn: usize,
    /// The writer's last append to this key.
    last_for_key: bool,
}

/// `(key, value)` → its writer. A value appended twice is the generator's bug (`malformed-op`);
/// the first writer is kept.
fn index_writers(findings: &mut Findings, txns: &[Txn<'_>]) -> HashMap<(u64, u64), Writer> {
    let mut writers: HashMap<(u64, u64), Writer> = HashMap::new();
    for (t, txn) in txns.iter().enumerate() {
        let mut last_append: HashMap<u64, u64> = HashMap::new();
        for mop in &txn.mops {
            if let Mop::Append { key, value } = *mop {
                last_append.insert(key, value);
                if let Some(first) = writers.get(&(key, value)) {
                    findings.add(
                        Valid::Unknown,
                        "malformed-op",
                        format!(
                            "{} appends {value} to key {key}, already appended by {}",
                            label(txns, t),
                            label(txns, first.txn)
                        ),
                        vec![txn.op.index()],
                        txn.op.txn_id(),
                    );
                    continue;
                }
                writers.insert(
                    (key, value),
                    Writer {
                        txn: t,
                        last_for_key: false,
                    },
                );
            }
        }
        for (key, value) in last_append {
            if let Some(writer) = writers.get_mut(&(key, value)).filter(|w| w.txn == t) {
                writer.last_for_key = true;
            }
        }
    }
    writers
}

// ---------------------------------------------------------------------------------------------
// Per-transaction and per-key checks, and the dependency edges

/// Where a read comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An `ok` transaction.
    Txn(usize),
    /// The final state.
    Final,
}

/// One observed list of a key.
#[derive(Debug, Clone, Copy)]
struct ReadRef<'a> {
    source: Source,
    values: &'a [u64],
    /// The transaction's first read of the key, before any append of its own to it.
    external: bool,
}

/// A dependency edge's kind. The order is the preference when one pair has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EdgeKind {
    Ww,
    Wr,
    Rw,
    Rt,
}

impl EdgeKind {
    fn bit(self) -> u8 {
        match self {
            EdgeKind::Ww => 1,
            EdgeKind::Wr => 2,
            EdgeKind::Rw => 4,
            EdgeKind::Rt => 8,
        }
    }
}

const WW: u8 = 1;
const WR: u8 = 2;
const RW: u8 = 4;
const RT: u8 = 8;

/// A dependency edge between transactions (indices into the transactions).
#[derive(Debug, Clone, Copy)]
struct Edge {
    from: u32,
    to: u32,
    kind: EdgeKind,
    /// Index into the explanations; `NO_WHY` for real-time edges.
    why: u32,
}

const NO_WHY: u32 = u32::MAX;

/// Why an edge exists. `ww`: `earlier` then `value` in `key`'s order; `wr`: `value` appended
/// and read; `rw`: the read ended at `earlier` (`None`: empty), `value` was appended next.
#[derive(Debug, Clone, Copy)]
struct Why {
    key: u64,
    earlier: Option<u64>,
    value: u64,
}

fn node(t: usize) -> u32 {
    u32::try_from(t).expect("a history holds fewer than 2^32 transactions")
}

struct Analysis<'t, 'a> {
    txns: &'t [Txn<'a>],
    writers: HashMap<(u64, u64), Writer>,
    findings: Findings,
    edges: Vec<Edge>,
    whys: Vec<Why>,
}

impl Analysis<'_, '_> {
    fn add_edge(&mut self, from: usize, to: usize, kind: EdgeKind, why: Why) {
        debug_assert_ne!(from, to, "no self edges");
        let why_index =
            u32::try_from(self.whys.len()).expect("a history yields fewer than 2^32 edges");
        self.whys.push(why);
        self.edges.push(Edge {
            from: node(from),
            to: node(to),
            kind,
            why: why_index,
        });
    }

    /// The writer of `(key, value)` if it may have committed (`ok`, or `info` and observed).
    fn committed_writer(&self, key: u64, value: u64) -> Option<Writer> {
        self.writers
            .get(&(key, value))
            .copied()
            .filter(|w| self.txns[w.txn].committed_or_unknown())
    }

    /// Internal consistency of every `ok` transaction: a read of a key sees what the
    /// transaction's own earlier reads and appends of that key imply.
    fn check_internal(&mut self) {
        /// What the transaction knows of a key so far.
        enum Known<'v> {
            /// Never read: only its own appends, which must end the next read.
            Suffix(Vec<u64>),
            /// Read as `base`, then its own appends.
            Exactly(&'v [u64], Vec<u64>),
        }
        for (t, txn) in self
            .txns
            .iter()
            .enumerate()
            .filter(|(_, txn)| txn.outcome == OpType::Ok)
        {
            let mut known: HashMap<u64, Known<'_>> = HashMap::new();
            for mop in &txn.mops {
                match mop {
                    Mop::Append { key, value } => match known
                        .entry(*key)
                        .or_insert_with(|| Known::Suffix(Vec::new()))
                    {
                        Known::Suffix(appended) | Known::Exactly(_, appended) => {
                            appended.push(*value)
                        }
                    },
                    Mop::Read {
                        key,
                        values: Some(values),
                    } => {
                        let expected = match known.get(key) {
                            None => None,
                            Some(Known::Suffix(appended)) => {
                                (!values.ends_with(appended)).then(|| {
                                    format!("to end with its own appends {}", show_list(appended))
                                })
                            }
                            Some(Known::Exactly(base, appended)) => {
                                let matches = values.len() == base.len() + appended.len()
                                    && values.starts_with(base)
                                    && values.ends_with(appended);
                                (!matches).then(|| {
                                    let mut expected = base.to_vec();
                                    expected.extend_from_slice(appended);
                                    show_list(&expected)
                                })
                            }
                        };
                        if let Some(expected) = expected {
                            self.findings.add(
                                Valid::False,
                                "internal",
                                format!(
                                    "{} read key {key} as {}, but its own earlier operations imply {expected}",
                                    label(self.txns, t),
                                    show_list(values)
                                ),
                                vec![txn.op.index()],
                                txn.op.txn_id(),
                            );
                        }
                        known.insert(*key, Known::Exactly(values.as_slice(), Vec::new()));
                    }
                    Mop::Read { values: None, .. } => {}
                }
            }
        }
    }

    /// Version orders, value checks, G1b and the `ww` / `wr` / `rw` edges, key by key.
    fn check_keys(&mut self, final_lists: Option<&BTreeMap<u64, Vec<u64>>>) {
        let txns = self.txns;
        let mut reads: BTreeMap<u64, Vec<ReadRef<'_>>> = BTreeMap::new();
        for (t, txn) in txns
            .iter()
            .enumerate()
            .filter(|(_, txn)| txn.outcome == OpType::Ok)
        {
            let mut touched: HashSet<u64> = HashSet::new();
            for mop in &txn.mops {
                match mop {
                    Mop::Append { key, .. } => {
                        touched.insert(*key);
                    }
                    Mop::Read {
                        key,
                        values: Some(values),
                    } => {
                        let external = touched.insert(*key);
                        reads.entry(*key).or_default().push(ReadRef {
                            source: Source::Txn(t),
                            values,
                            external,
                        });
                    }
                    Mop::Read { values: None, .. } => {}
                }
            }
        }
        for (key, list) in final_lists.into_iter().flatten() {
            reads.entry(*key).or_default().push(ReadRef {
                source: Source::Final,
                values: list,
                external: false,
            });
        }
        let mut keys: HashSet<u64> = reads.keys().copied().collect();
        keys.extend(
            txns.iter()
                .flat_map(|txn| txn.mops.iter())
                .map(|mop| match mop {
                    Mop::Append { key, .. } | Mop::Read { key, .. } => *key,
                }),
        );
        self.findings.figure("keys", keys.len() as u64);
        for (key, key_reads) in &reads {
            self.check_key(*key, key_reads);
        }
    }

    fn describe(&self, source: Source) -> String {
        match source {
            Source::Txn(t) => label(self.txns, t),
            Source::Final => "the final state".to_string(),
        }
    }

    fn source_ops(&self, source: Source) -> Vec<u64> {
        match source {
            Source::Txn(t) => vec![self.txns[t].op.index()],
            Source::Final => Vec::new(),
        }
    }

    fn check_key(&mut self, key: u64, reads: &[ReadRef<'_>]) {
        let Some(longest) = reads.iter().reduce(|best, r| {
            if r.values.len() > best.values.len() {
                r
            } else {
                best
            }
        }) else {
            return;
        };
        let order = longest.values;

        // Every read a prefix of the longest.
        let compatible: Vec<bool> = reads.iter().map(|r| order.starts_with(r.values)).collect();
        for (read, _) in reads.iter().zip(&compatible).filter(|(_, ok)| !**ok) {
            let mut ops = self.source_ops(read.source);
            ops.extend(self.source_ops(longest.source));
            self.findings.add(
                Valid::False,
                "incompatible-order",
                format!(
                    "key {key}: {} read {} but {} read {}: neither is a prefix of the other",
                    self.describe(read.source),
                    show_list(read.values),
                    self.describe(longest.source),
                    show_list(order)
                ),
                ops,
                None,
            );
        }

        // The earliest source (in history order) whose compatible read reaches position p.
        let mut earliest_reaching: Vec<Option<Source>> = vec![None; order.len() + 1];
        for (read, _) in reads.iter().zip(&compatible).filter(|(_, ok)| **ok) {
            let slot = &mut earliest_reaching[read.values.len()];
            if slot.is_none() {
                *slot = Some(read.source);
            }
        }
        for len in (0..order.len()).rev() {
            if let Some(later) =
                earliest_reaching[len + 1].filter(|s| precedes(*s, earliest_reaching[len]))
            {
                earliest_reaching[len] = Some(later);
            }
        }
        let reader_at = |p: usize| earliest_reaching[p + 1].unwrap_or(longest.source);

        // Values: no duplicates, a known writer, not an aborted one.
        let mut seen: HashSet<u64> = HashSet::with_capacity(order.len());
        let mut duplicates = false;
        for (p, value) in order.iter().enumerate() {
            if !seen.insert(*value) {
                duplicates = true;
                let source = reader_at(p);
                self.findings.add(
                    Valid::False,
                    "duplicate-elements",
                    format!(
                        "key {key}: {} read {value} twice: {}",
                        self.describe(source),
                        show_list(&order[..=p])
                    ),
                    self.source_ops(source),
                    None,
                );
                continue;
            }
            self.check_value(key, *value, reader_at(p));
        }
        for (read, _) in reads.iter().zip(&compatible).filter(|(_, ok)| !**ok) {
            let mut in_read: HashSet<u64> = HashSet::with_capacity(read.values.len());
            for value in read.values {
                if !in_read.insert(*value) {
                    self.findings.add(
                        Valid::False,
                        "duplicate-elements",
                        format!(
                            "key {key}: {} read {value} twice: {}",
                            self.describe(read.source),
                            show_list(read.values)
                        ),
                        self.source_ops(read.source),
                        None,
                    );
                } else if !seen.contains(value) {
                    seen.insert(*value);
                    self.check_value(key, *value, read.source);
                }
            }
        }

        // The final state holds everything observed.
        if let Some((final_read, true)) = reads
            .iter()
            .zip(compatible.iter().copied())
            .find(|(r, _)| r.source == Source::Final)
        {
            for (p, value) in order.iter().enumerate().skip(final_read.values.len()) {
                // Values appended by ok transactions are reported by `check_appends_in_final`.
                let writer_ok = self
                    .writers
                    .get(&(key, *value))
                    .is_some_and(|w| self.txns[w.txn].outcome == OpType::Ok);
                if !writer_ok {
                    let source = reader_at(p);
                    self.findings.add(
                        Valid::False,
                        "lost-append",
                        format!(
                            "key {key}: {} read {value}, missing from the final state",
                            self.describe(source)
                        ),
                        self.source_ops(source),
                        None,
                    );
                }
            }
        }

        // ww: consecutive committed versions.
        if !duplicates {
            let mut previous: Option<(usize, u64)> = None;
            for value in order {
                let Some(writer) = self.committed_writer(key, *value) else {
                    continue;
                };
                if let Some((earlier_txn, earlier)) = previous.filter(|(t, _)| *t != writer.txn) {
                    self.add_edge(
                        earlier_txn,
                        writer.txn,
                        EdgeKind::Ww,
                        Why {
                            key,
                            earlier: Some(earlier),
                            value: *value,
                        },
                    );
                }
                previous = Some((writer.txn, *value));
            }
        }

        // wr, rw, G1b.
        for (read, compatible) in reads.iter().zip(compatible.iter().copied()) {
            let Source::Txn(reader) = read.source else {
                continue;
            };
            if let Some(last) = read.values.last()
                && let Some(writer) = self
                    .committed_writer(key, *last)
                    .filter(|w| w.txn != reader)
            {
                if !writer.last_for_key {
                    self.findings.add(
                        Valid::False,
                        "G1b",
                        format!(
                            "{} read key {key} as {}, ending at {last}, an intermediate append of {}",
                            label(self.txns, reader),
                            show_list(read.values),
                            label(self.txns, writer.txn)
                        ),
                        vec![self.txns[writer.txn].op.index(), self.txns[reader].op.index()],
                        None,
                    );
                }
                if read.external {
                    let why = Why {
                        key,
                        earlier: None,
                        value: *last,
                    };
                    self.add_edge(writer.txn, reader, EdgeKind::Wr, why);
                }
            }
            if read.external
                && compatible
                && !duplicates
                && let Some(next) = order.get(read.values.len())
                && let Some(writer) = self
                    .committed_writer(key, *next)
                    .filter(|w| w.txn != reader)
            {
                let why = Why {
                    key,
                    earlier: read.values.last().copied(),
                    value: *next,
                };
                self.add_edge(reader, writer.txn, EdgeKind::Rw, why);
            }
        }
    }

    /// A value observed in `key` (first by `source`) was appended, and not by a failed txn.
    fn check_value(&mut self, key: u64, value: u64, source: Source) {
        match self.writers.get(&(key, value)).copied() {
            None => self.findings.add(
                Valid::False,
                "unknown-value",
                format!(
                    "key {key}: {} read {value}, which no transaction appended",
                    self.describe(source)
                ),
                self.source_ops(source),
                None,
            ),
            Some(writer) if self.txns[writer.txn].outcome == OpType::Fail => {
                let mut ops = vec![self.txns[writer.txn].op.index()];
                ops.extend(self.source_ops(source));
                self.findings.add(
                    Valid::False,
                    "G1a",
                    format!(
                        "key {key}: {} read {value}, appended by the failed {}",
                        self.describe(source),
                        label(self.txns, writer.txn)
                    ),
                    ops,
                    self.txns[writer.txn].op.txn_id(),
                );
            }
            Some(_) => {}
        }
    }

    /// Every append of an `ok` transaction to a key the final state holds is in it.
    fn check_appends_in_final(&mut self, final_lists: &BTreeMap<u64, Vec<u64>>) {
        let mut final_values: HashMap<u64, HashSet<u64>> = HashMap::new();
        for (t, txn) in self
            .txns
            .iter()
            .enumerate()
            .filter(|(_, txn)| txn.outcome == OpType::Ok)
        {
            for mop in &txn.mops {
                let Mop::Append { key, value } = *mop else {
                    continue;
                };
                let Some(list) = final_lists.get(&key) else {
                    continue;
                };
                let values = final_values
                    .entry(key)
                    .or_insert_with(|| list.iter().copied().collect());
                if !values.contains(&value) {
                    self.findings.add(
                        Valid::False,
                        "lost-append",
                        format!(
                            "key {key}: {} appended {value} and committed, but the final list is {}",
                            label(self.txns, t),
                            show_list(list)
                        ),
                        vec![txn.op.index()],
                        txn.op.txn_id(),
                    );
                }
            }
        }
    }
}

/// Whether `a` comes before `b` in history order (the final state comes last).
fn precedes(a: Source, b: Option<Source>) -> bool {
    match (a, b) {
        (_, None) => true,
        (Source::Txn(a), Some(Source::Txn(b))) => a < b,
        (Source::Txn(_), Some(Source::Final)) => true,
        (Source::Final, Some(_)) => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The graph and its cycles

/// Edges sorted by (from, to, kind), one per (from, to, kind), indexed by source node.
struct Graph {
    offsets: Vec<usize>,
    edges: Vec<Edge>,
}

impl Graph {
    fn new(nodes: usize, mut edges: Vec<Edge>) -> Graph {
        // Stable: of equal edges the first found (and its explanation) stays.
        edges.sort_by_key(|e| (e.from, e.to, e.kind));
        edges.dedup_by_key(|e| (e.from, e.to, e.kind));
        let mut offsets = vec![0usize; nodes + 1];
        for edge in &edges {
            offsets[edge.from as usize + 1] += 1;
        }
        for i in 0..nodes {
            offsets[i + 1] += offsets[i];
        }
        Graph { offsets, edges }
    }

    fn nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    fn out(&self, v: u32) -> std::ops::Range<usize> {
        self.offsets[v as usize]..self.offsets[v as usize + 1]
    }
}

const NO_COMPONENT: u32 = u32::MAX;

/// Strongly connected components of the subgraph of edges `allow` accepts (iterative Tarjan):
/// each node's component id, and each component's size.
fn tarjan(g: &Graph, allow: impl Fn(&Edge) -> bool) -> (Vec<u32>, Vec<u32>) {
    struct State {
        index: Vec<u32>,
        low: Vec<u32>,
        on_stack: Vec<bool>,
        stack: Vec<u32>,
        /// The depth-first path: node and the position of its next edge to explore.
        path: Vec<(u32, usize)>,
        next_index: u32,
    }
    impl State {
        fn enter(&mut self, g: &Graph, v: u32) {
            self.index[v as usize] = self.next_index;
            self.low[v as usize] = self.next_index;
            self.next_index += 1;
            self.stack.push(v);
            self.on_stack[v as usize] = true;
            self.path.push((v, g.offsets[v as usize]));
        }
    }
    let n = g.nodes();
    let mut st = State {
        index: vec![NO_COMPONENT; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        path: Vec::new(),
        next_index: 0,
    };
    let mut component = vec![NO_COMPONENT; n];
    let mut sizes: Vec<u32> = Vec::new();
    for root in 0..n {
        if st.index[root] != NO_COMPONENT {
            continue;
        }
        st.enter(g, node(root));
        while let Some(top) = st.path.last_mut() {
            let (v, position) = *top;
            let vi = v as usize;
            if position < g.offsets[vi + 1] {
                top.1 += 1;
                let edge = g.edges[position];
                if !allow(&edge) {
                    continue;
                }
                let w = edge.to as usize;
                if st.index[w] == NO_COMPONENT {
                    st.enter(g, edge.to);
                } else if st.on_stack[w] {
                    st.low[vi] = st.low[vi].min(st.index[w]);
                }
            } else {
                st.path.pop();
                if let Some(&(parent, _)) = st.path.last() {
                    st.low[parent as usize] = st.low[parent as usize].min(st.low[vi]);
                }
                if st.low[vi] == st.index[vi] {
                    let id = node(sizes.len());
                    let mut size = 0u32;
                    while let Some(w) = st.stack.pop() {
                        st.on_stack[w as usize] = false;
                        component[w as usize] = id;
                        size += 1;
                        if w == v {
                            break;
                        }
                    }
                    sizes.push(size);
                }
            }
        }
    }
    (component, sizes)
}

/// Breadth-first search state, reused across searches.
struct Bfs {
    stamp: Vec<u32>,
    parent_edge: Vec<usize>,
    generation: u32,
    queue: VecDeque<u32>,
}

impl Bfs {
    fn new(nodes: usize) -> Bfs {
        Bfs {
            stamp: vec![0; nodes],
            parent_edge: vec![0; nodes],
            generation: 0,
            queue: VecDeque::new(),
        }
    }

    /// A shortest path (edge positions) from `from` to `to` over the edges `allow` accepts; a
    /// cycle when `from == to`. `None` if there is none or `budget` (edges examined) ran out.
    fn path(
        &mut self,
        g: &Graph,
        from: u32,
        to: u32,
        allow: impl Fn(&Edge) -> bool,
        budget: &mut u64,
    ) -> Option<Vec<usize>> {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            self.stamp.fill(0);
            self.generation = 1;
        }
        self.queue.clear();
        self.stamp[from as usize] = self.generation;
        self.queue.push_back(from);
        while let Some(u) = self.queue.pop_front() {
            for position in g.out(u) {
                if *budget == 0 {
                    return None;
                }
                *budget -= 1;
                let edge = g.edges[position];
                if !allow(&edge) {
                    continue;
                }
                if edge.to == to {
                    let mut path = vec![position];
                    let mut at = u;
                    while at != from {
                        let back = self.parent_edge[at as usize];
                        path.push(back);
                        at = g.edges[back].from;
                    }
                    path.reverse();
                    return Some(path);
                }
                let w = edge.to as usize;
                if self.stamp[w] != self.generation {
                    self.stamp[w] = self.generation;
                    self.parent_edge[w] = position;
                    self.queue.push_back(edge.to);
                }
            }
        }
        None
    }
}

/// One witness cycle (edge positions) per component marked in `targets`, the weakest found:
/// `ww` (+`extra`) only, then +`wr`, then exactly one `rw`, then any. `extra` is `RT` for the
/// real-time pass, else 0.
fn witness_cycles(
    g: &Graph,
    component: &[u32],
    targets: &[bool],
    extra: u8,
    bfs: &mut Bfs,
    single_rw_budget: &mut u64,
) -> Vec<Vec<usize>> {
    let in_target = |e: &Edge| {
        let c = component[e.from as usize];
        c == component[e.to as usize] && targets[c as usize]
    };
    let mut done = vec![false; targets.len()];
    let mut cycles = Vec::new();
    let mut unlimited = u64::MAX;

    for mask in [WW | extra, WW | WR | extra] {
        let (sub, sub_sizes) = tarjan(g, |e| {
            mask & e.kind.bit() != 0 && in_target(e) && !done[component[e.from as usize] as usize]
        });
        for v in 0..g.nodes() {
            let (c, s) = (component[v] as usize, sub[v]);
            if done.get(c).copied().unwrap_or(true) || sub_sizes[s as usize] < 2 {
                continue;
            }
            let allow = |e: &Edge| {
                mask & e.kind.bit() != 0 && sub[e.from as usize] == s && sub[e.to as usize] == s
            };
            if let Some(cycle) = bfs.path(g, node(v), node(v), allow, &mut unlimited) {
                done[c] = true;
                cycles.push(cycle);
            }
        }
    }

    let path_mask = WW | WR | extra;
    for (position, edge) in g.edges.iter().enumerate() {
        if *single_rw_budget == 0 {
            break;
        }
        let c = component[edge.from as usize] as usize;
        if edge.kind != EdgeKind::Rw || !in_target(edge) || done[c] {
            continue;
        }
        let allow = |e: &Edge| {
            path_mask & e.kind.bit() != 0
                && in_target(e)
                && component[e.from as usize] as usize == c
        };
        if let Some(path) = bfs.path(g, edge.to, edge.from, allow, single_rw_budget) {
            done[c] = true;
            let mut cycle = vec![position];
            cycle.extend(path);
            cycles.push(cycle);
        }
    }

    let any = WW | WR | RW | extra;
    for v in 0..g.nodes() {
        let c = component[v] as usize;
        if !targets.get(c).copied().unwrap_or(false) || done[c] {
            continue;
        }
        let allow = |e: &Edge| {
            any & e.kind.bit() != 0 && in_target(e) && component[e.from as usize] as usize == c
        };
        if let Some(cycle) = bfs.path(g, node(v), node(v), allow, &mut unlimited) {
            done[c] = true;
            cycles.push(cycle);
        }
    }
    cycles
}

/// Adya / Elle's name for a cycle, by the edges it has.
fn classify(g: &Graph, cycle: &[usize]) -> String {
    let kinds: Vec<EdgeKind> = cycle.iter().map(|&p| g.edges[p].kind).collect();
    let rw = kinds.iter().filter(|k| **k == EdgeKind::Rw).count();
    let base = match rw {
        0 if kinds.contains(&EdgeKind::Wr) => "G1c",
        0 => "G0",
        1 => "G-single",
        _ => "G2-item",
    };
    if kinds.contains(&EdgeKind::Rt) {
        format!("{base}-realtime")
    } else {
        base.to_string()
    }
}

impl Analysis<'_, '_> {
    fn describe_step(&self, edge: &Edge) -> String {
        let why = self
            .whys
            .get(edge.why as usize)
            .filter(|_| edge.why != NO_WHY);
        match (edge.kind, why) {
            (EdgeKind::Ww, Some(why)) => {
                format!(
                    "ww k{} [{} then {}]",
                    why.key,
                    why.earlier.map_or("?".to_string(), |v| v.to_string()),
                    why.value
                )
            }
            (EdgeKind::Wr, Some(why)) => format!(
                "wr k{} [appended {}, read ..{}]",
                why.key, why.value, why.value
            ),
            (EdgeKind::Rw, Some(why)) => match why.earlier {
                Some(last) => format!(
                    "rw k{} [read ..{last} before append {}]",
                    why.key, why.value
                ),
                None => format!("rw k{} [read [] before append {}]", why.key, why.value),
            },
            _ => "rt [completed before invoked]".to_string(),
        }
    }

    fn witness(&self, g: &Graph, cycle: &[usize]) -> String {
        let step = |p: usize| {
            let edge = &g.edges[p];
            format!(
                "{} -{}-> ",
                label(self.txns, edge.from as usize),
                self.describe_step(edge)
            )
        };
        let mut text = String::new();
        if cycle.len() <= WITNESS_STEPS_SHOWN_MAX {
            cycle.iter().for_each(|&p| text.push_str(&step(p)));
        } else {
            let head = WITNESS_STEPS_SHOWN_MAX - 3;
            cycle[..head].iter().for_each(|&p| text.push_str(&step(p)));
            text.push_str(&format!("... ({} steps in all) ... ", cycle.len()));
            cycle[cycle.len() - 3..]
                .iter()
                .for_each(|&p| text.push_str(&step(p)));
        }
        if let Some(&first) = cycle.first() {
            text.push_str(&label(self.txns, g.edges[first].from as usize));
        }
        text
    }

    fn find_cycles(&mut self) {
        let n = self.txns.len();
        let mut edges = std::mem::take(&mut self.edges);
        let realtime = match realtime_edges(self.txns) {
            Some(rt) => {
                edges.extend(rt);
                true
            }
            None => {
                self.findings.figure("realtime-skipped", 1);
                false
            }
        };
        let g = Graph::new(n, edges);
        for (kind, name) in [
            (EdgeKind::Ww, "edges-ww"),
            (EdgeKind::Wr, "edges-wr"),
            (EdgeKind::Rw, "edges-rw"),
            (EdgeKind::Rt, "edges-rt"),
        ] {
            self.findings.figure(
                name,
                g.edges.iter().filter(|e| e.kind == kind).count() as u64,
            );
        }

        let mut bfs = Bfs::new(n);
        let mut single_rw_budget = SINGLE_RW_SEARCH_EDGES_MAX;
        let (component, sizes) = tarjan(&g, |e| e.kind != EdgeKind::Rt);
        let targets: Vec<bool> = sizes.iter().map(|s| *s >= 2).collect();
        self.findings
            .figure("sccs", targets.iter().filter(|t| **t).count() as u64);
        let mut cycles =
            witness_cycles(&g, &component, &targets, 0, &mut bfs, &mut single_rw_budget);

        if realtime {
            let (rt_component, rt_sizes) = tarjan(&g, |_| true);
            // Only components with no cycle without real-time edges.
            let mut rt_targets: Vec<bool> = rt_sizes.iter().map(|s| *s >= 2).collect();
            for v in 0..n {
                if targets[component[v] as usize] {
                    rt_targets[rt_component[v] as usize] = false;
                }
            }
            self.findings.figure(
                "sccs-realtime",
                rt_targets.iter().filter(|t| **t).count() as u64,
            );
            cycles.extend(witness_cycles(
                &g,
                &rt_component,
                &rt_targets,
                RT,
                &mut bfs,
                &mut single_rw_budget,
            ));
        }
        if single_rw_budget == 0 {
            self.findings.figure("single-rw-search-exhausted", 1);
        }

        for cycle in &cycles {
            let kind = classify(&g, cycle);
            if self.findings.total(&kind) >= ANOMALIES_PER_KIND_MAX {
                // Counted only: skip building the witness text.
                self.findings
                    .add(Valid::False, &kind, String::new(), Vec::new(), None);
                continue;
            }
            let ops = cycle
                .iter()
                .take(CYCLE_OPS_MAX)
                .map(|&p| self.txns[g.edges[p].from as usize].op.index())
                .collect();
            let detail = self.witness(&g, cycle);
            self.findings.add(Valid::False, &kind, detail, ops, None);
        }
    }
}

/// Real-time edges: T1 completed `ok` before T2 (not failed) was invoked. Kept transitively
/// reduced as Elle does: a completed transaction leaves the frontier once a later-completed
/// one is known to follow it. `None` past [`RT_EDGES_MAX`].
fn realtime_edges(txns: &[Txn<'_>]) -> Option<Vec<Edge>> {
    // (history index, is completion, txn)
    let mut events: Vec<(u64, bool, usize)> = Vec::new();
    for (t, txn) in txns
        .iter()
        .enumerate()
        .filter(|(_, txn)| txn.committed_or_unknown())
    {
        events.push((txn.op.invoke.index, false, t));
        if let (OpType::Ok, Some(completion)) = (txn.outcome, txn.op.completion) {
            events.push((completion.index, true, t));
        }
    }
    events.sort_unstable();
    let mut edges: Vec<Edge> = Vec::new();
    let mut frontier: Vec<u32> = Vec::new();
    let mut predecessors: Vec<(usize, usize)> = vec![(0, 0); txns.len()];
    let mut superseded = vec![false; txns.len()];
    for (_, is_completion, t) in events {
        if is_completion {
            let (start, end) = predecessors[t];
            for edge in &edges[start..end] {
                superseded[edge.from as usize] = true;
            }
            frontier.retain(|f| !superseded[*f as usize]);
            for edge in &edges[start..end] {
                superseded[edge.from as usize] = false;
            }
            frontier.push(node(t));
        } else {
            let start = edges.len();
            edges.extend(frontier.iter().map(|&f| Edge {
                from: f,
                to: node(t),
                kind: EdgeKind::Rt,
                why: NO_WHY,
            }));
            predecessors[t] = (start, edges.len());
            if edges.len() > RT_EDGES_MAX {
                return None;
            }
        }
    }
    Some(edges)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::history::ParticipantState;
    use crate::history::tests_support::{OpsBuilder, kinds};
    use serde_json::json;

    /// A transaction invoked and completed at once (so transactions are serial in real time
    /// unless built with `invoke` / `complete`). `mops` are the completion's (reads filled).
    fn txn(h: &mut OpsBuilder, process: u64, outcome: OpType, mops: Value) -> u64 {
        let invoked = blank_reads(&mops);
        h.invoke(process, "txn", invoked, None);
        h.complete(process, outcome, "txn", mops, None)
    }

    /// The invocation's form: every read's result `null`.
    fn blank_reads(mops: &Value) -> Value {
        Value::Array(
            mops.as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    if m[0] == "r" {
                        json!(["r", m[1], null])
                    } else {
                        m.clone()
                    }
                })
                .collect(),
        )
    }

    fn run(h: &OpsBuilder) -> CheckResult {
        check(&h.ops, None)
    }

    #[test]
    fn a_serial_history_is_valid() {
        let mut h = OpsBuilder::default();
        txn(
            &mut h,
            0,
            OpType::Ok,
            json!([["append", 1, 1], ["r", 2, []]]),
        );
        txn(
            &mut h,
            1,
            OpType::Ok,
            json!([["r", 1, [1]], ["append", 1, 2], ["r", 1, [1, 2]]]),
        );
        txn(&mut h, 0, OpType::Fail, json!([["append", 1, 3]]));
        txn(
            &mut h,
            2,
            OpType::Ok,
            json!([["r", 1, [1, 2]], ["append", 2, 1], ["append", 2, 2]]),
        );
        txn(&mut h, 1, OpType::Info, json!([["append", 1, 4]]));
        txn(
            &mut h,
            3,
            OpType::Ok,
            json!([["r", 2, [1, 2]], ["r", 1, [1, 2, 4]]]),
        );
        let result = run(&h);
        assert_eq!(result.valid, Valid::True, "{result:#?}");
        assert_eq!(result.counts["txns-ok"], 4);
        assert_eq!(result.counts["txns-fail"], 1);
        assert_eq!(result.counts["txns-info"], 1);
        assert_eq!(result.counts["keys"], 2);
        // ww: k1 1→2 (T0→T1), 2→4 (T1→T4). wr: T0→T1, T1→T3, T3→T5, T4→T5. rw: T0→T3 (k2
        // read empty, then 1), T3→T4 (k1 read ..2, then 4). rt, transitively reduced:
        // T0→T1→T3→{T4, T5} (the failed T2 takes no part).
        assert_eq!(result.counts["edges-ww"], 2, "{:?}", result.counts);
        assert_eq!(result.counts["edges-wr"], 4);
        assert_eq!(result.counts["edges-rw"], 2);
        assert_eq!(result.counts["edges-rt"], 4);
        assert_eq!(result.counts["sccs"], 0);
    }

    #[test]
    fn a_write_cycle_is_g0() {
        let mut h = OpsBuilder::default();
        txn(
            &mut h,
            0,
            OpType::Ok,
            json!([["append", 1, 1], ["append", 2, 2]]),
        );
        txn(
            &mut h,
            1,
            OpType::Ok,
            json!([["append", 1, 3], ["append", 2, 4]]),
        );
        // Key 1 orders T0 before T1, key 2 T1 before T0.
        txn(
            &mut h,
            2,
            OpType::Ok,
            json!([["r", 1, [1, 3]], ["r", 2, [4, 2]]]),
        );
        let result = run(&h);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["G0"]);
        let detail = &result.anomalies[0].detail;
        assert!(
            detail.contains("-ww k1 [1 then 3]->") && detail.contains("-ww k2 [4 then 2]->"),
            "{detail}"
        );
        assert_eq!(result.counts["G0"], 1);
    }

    #[test]
    fn a_circular_information_flow_is_g1c() {
        let mut h = OpsBuilder::default();
        // Concurrent: each reads the other's append.
        h.invoke(0, "txn", json!([["append", 1, 1], ["r", 2, null]]), None);
        h.invoke(1, "txn", json!([["append", 2, 1], ["r", 1, null]]), None);
        h.complete(
            0,
            OpType::Ok,
            "txn",
            json!([["append", 1, 1], ["r", 2, [1]]]),
            None,
        );
        h.complete(
            1,
            OpType::Ok,
            "txn",
            json!([["append", 2, 1], ["r", 1, [1]]]),
            None,
        );
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G1c"]);
        let detail = &result.anomalies[0].detail;
        assert!(
            detail.contains("-wr k1 [appended 1, read ..1]->"),
            "{detail}"
        );
    }

    #[test]
    fn read_skew_is_g_single() {
        let mut h = OpsBuilder::default();
        h.invoke(0, "txn", json!([["append", 1, 1], ["append", 2, 1]]), None);
        h.invoke(1, "txn", json!([["r", 1, null], ["r", 2, null]]), None);
        h.complete(
            0,
            OpType::Ok,
            "txn",
            json!([["append", 1, 1], ["append", 2, 1]]),
            None,
        );
        // Saw T0's write to key 2 but not to key 1.
        h.complete(
            1,
            OpType::Ok,
            "txn",
            json!([["r", 1, []], ["r", 2, [1]]]),
            None,
        );
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1]]]));
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G-single"]);
        let detail = &result.anomalies[0].detail;
        assert!(
            detail.contains("-rw k1 [read [] before append 1]->"),
            "{detail}"
        );
        assert!(detail.contains("-wr k2"), "{detail}");
    }

    #[test]
    fn write_skew_is_g2() {
        let mut h = OpsBuilder::default();
        h.invoke(0, "txn", json!([["r", 1, null], ["append", 2, 1]]), None);
        h.invoke(1, "txn", json!([["r", 2, null], ["append", 1, 1]]), None);
        h.complete(
            0,
            OpType::Ok,
            "txn",
            json!([["r", 1, []], ["append", 2, 1]]),
            None,
        );
        h.complete(
            1,
            OpType::Ok,
            "txn",
            json!([["r", 2, []], ["append", 1, 1]]),
            None,
        );
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1]], ["r", 2, [1]]]));
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G2-item"]);
        assert_eq!(result.anomalies[0].ops.len(), 2);
    }

    /// Invokes every transaction, then completes them in order (all concurrent: no real-time
    /// edges among them), then runs `after` serially.
    fn concurrent(h: &mut OpsBuilder, txns: &[Value], after: &[Value]) {
        for (p, mops) in txns.iter().enumerate() {
            h.invoke(p as u64, "txn", blank_reads(mops), None);
        }
        for (p, mops) in txns.iter().enumerate() {
            h.complete(p as u64, OpType::Ok, "txn", mops.clone(), None);
        }
        for mops in after {
            txn(h, 100, OpType::Ok, mops.clone());
        }
    }

    #[test]
    fn g0_is_preferred_to_a_shorter_g_single() {
        // ww T0 -> T1 -> T2 -> T0 (keys 1, 2, 3), and T1 -rw(key 4)-> T0: the shortest cycle
        // T0 -ww-> T1 -rw-> T0 is a G-single, but the component holds a G0.
        let mut h = OpsBuilder::default();
        concurrent(
            &mut h,
            &[
                json!([["append", 1, 1], ["append", 3, 2], ["append", 4, 1]]),
                json!([["append", 1, 2], ["append", 2, 1], ["r", 4, []]]),
                json!([["append", 2, 2], ["append", 3, 1]]),
            ],
            &[json!([
                ["r", 1, [1, 2]],
                ["r", 2, [1, 2]],
                ["r", 3, [1, 2]],
                ["r", 4, [1]]
            ])],
        );
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G0"], "{result:#?}");
        assert_eq!(result.anomalies[0].ops.len(), 3);
    }

    #[test]
    fn g0_is_preferred_to_a_shorter_g1c() {
        // ww T0 -> T1 -> T2 -> T0 (keys 1, 2, 3), and T0 read T1's append to key 4: the
        // shortest cycle T0 -ww-> T1 -wr-> T0 is a G1c, but the component holds a G0.
        let mut h = OpsBuilder::default();
        concurrent(
            &mut h,
            &[
                json!([["append", 1, 1], ["append", 3, 2], ["r", 4, [1]]]),
                json!([["append", 1, 2], ["append", 2, 1], ["append", 4, 1]]),
                json!([["append", 2, 2], ["append", 3, 1]]),
            ],
            &[json!([
                ["r", 1, [1, 2]],
                ["r", 2, [1, 2]],
                ["r", 3, [1, 2]]
            ])],
        );
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G0"], "{result:#?}");
    }

    #[test]
    fn g_single_is_preferred_to_a_shorter_g2() {
        // T0 <-rw-> T1 (keys 1, 2) is a G2 of two steps; T0 -rw-> T1 -wr-> T2 -wr-> T0 a
        // G-single of three.
        let mut h = OpsBuilder::default();
        concurrent(
            &mut h,
            &[
                json!([["r", 1, []], ["append", 2, 1], ["r", 4, [1]]]),
                json!([["r", 2, []], ["append", 1, 1], ["append", 3, 1]]),
                json!([["r", 3, [1]], ["append", 4, 1]]),
            ],
            &[json!([["r", 1, [1]], ["r", 2, [1]]])],
        );
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G-single"], "{result:#?}");
        assert_eq!(result.anomalies[0].ops.len(), 3);
    }

    #[test]
    fn g1c_is_preferred_to_a_shorter_g_single() {
        // wr T0 -> T1 -> T2 -> T0 (keys 1, 2, 3), and T1 -rw(key 4)-> T0.
        let mut h = OpsBuilder::default();
        concurrent(
            &mut h,
            &[
                json!([["append", 1, 1], ["r", 3, [1]], ["append", 4, 1]]),
                json!([["r", 1, [1]], ["append", 2, 1], ["r", 4, []]]),
                json!([["r", 2, [1]], ["append", 3, 1]]),
            ],
            &[json!([["r", 4, [1]]])],
        );
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G1c"], "{result:#?}");
    }

    #[test]
    fn each_component_reports_its_own_cycle() {
        // Two independent write skews: two G2 anomalies.
        let mut h = OpsBuilder::default();
        concurrent(
            &mut h,
            &[
                json!([["r", 1, []], ["append", 2, 1]]),
                json!([["r", 2, []], ["append", 1, 1]]),
                json!([["r", 3, []], ["append", 4, 1]]),
                json!([["r", 4, []], ["append", 3, 1]]),
            ],
            &[json!([
                ["r", 1, [1]],
                ["r", 2, [1]],
                ["r", 3, [1]],
                ["r", 4, [1]]
            ])],
        );
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G2-item", "G2-item"]);
        assert_eq!(result.counts["sccs"], 2);
    }

    #[test]
    fn an_aborted_read_is_g1a() {
        let mut h = OpsBuilder::default();
        txn(&mut h, 0, OpType::Fail, json!([["append", 1, 1]]));
        txn(&mut h, 1, OpType::Ok, json!([["r", 1, [1]]]));
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G1a"]);
        assert_eq!(result.anomalies[0].ops, vec![1, 3]);
    }

    #[test]
    fn an_intermediate_read_is_g1b() {
        let mut h = OpsBuilder::default();
        txn(
            &mut h,
            0,
            OpType::Ok,
            json!([["append", 1, 1], ["append", 1, 2]]),
        );
        txn(&mut h, 1, OpType::Ok, json!([["r", 1, [1]]]));
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1, 2]]]));
        let result = run(&h);
        // T1 also reads "before" T0's second append: T0 -wr-> T1 -rw-> T0, a G-single.
        assert_eq!(kinds(&result), vec!["G-single", "G1b"]);
        assert!(
            result
                .anomalies
                .iter()
                .any(|a| a.kind == "G1b" && a.detail.contains("intermediate append of T0"))
        );
    }

    #[test]
    fn a_transaction_must_see_its_own_appends() {
        let mut h = OpsBuilder::default();
        txn(&mut h, 0, OpType::Ok, json!([["append", 1, 1]]));
        // Appended 2, then read without it.
        txn(
            &mut h,
            1,
            OpType::Ok,
            json!([["append", 1, 2], ["r", 1, [1]]]),
        );
        let result = run(&h);
        assert!(kinds(&result).contains(&"internal"), "{result:#?}");

        let mut h = OpsBuilder::default();
        txn(
            &mut h,
            0,
            OpType::Ok,
            json!([["append", 1, 1], ["append", 1, 2]]),
        );
        // Two reads that disagree with nothing appended between them.
        txn(
            &mut h,
            1,
            OpType::Ok,
            json!([["r", 1, [1]], ["r", 1, [1, 2]]]),
        );
        let result = run(&h);
        assert!(kinds(&result).contains(&"internal"), "{result:#?}");

        let mut h = OpsBuilder::default();
        txn(
            &mut h,
            0,
            OpType::Ok,
            json!([
                ["r", 1, []],
                ["append", 1, 1],
                ["r", 1, [1]],
                ["append", 1, 2],
                ["r", 1, [1, 2]]
            ]),
        );
        assert_eq!(run(&h).valid, Valid::True);
    }

    #[test]
    fn duplicate_elements_are_caught() {
        let mut h = OpsBuilder::default();
        txn(&mut h, 0, OpType::Ok, json!([["append", 1, 1]]));
        txn(&mut h, 1, OpType::Ok, json!([["append", 1, 2]]));
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1, 2, 1]]]));
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["duplicate-elements"]);
        assert!(result.anomalies[0].detail.contains("read 1 twice"));
    }

    #[test]
    fn reads_that_are_not_prefixes_are_incompatible() {
        let mut h = OpsBuilder::default();
        txn(&mut h, 0, OpType::Ok, json!([["append", 1, 1]]));
        txn(&mut h, 1, OpType::Ok, json!([["append", 1, 2]]));
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1, 2]]]));
        txn(&mut h, 3, OpType::Ok, json!([["r", 1, [2, 1]]]));
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["incompatible-order"]);
        assert_eq!(result.anomalies[0].ops, vec![7, 5]);
    }

    #[test]
    fn a_value_nobody_appended_is_caught() {
        let mut h = OpsBuilder::default();
        txn(&mut h, 0, OpType::Ok, json!([["r", 1, [7]]]));
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["unknown-value"]);
    }

    #[test]
    fn an_observed_info_transaction_counts_as_committed() {
        let mut h = OpsBuilder::default();
        h.invoke(0, "txn", json!([["append", 1, 1], ["append", 2, 1]]), None);
        h.invoke(1, "txn", json!([["r", 1, null], ["r", 2, null]]), None);
        h.complete(
            0,
            OpType::Info,
            "txn",
            json!([["append", 1, 1], ["append", 2, 1]]),
            None,
        );
        h.complete(
            1,
            OpType::Ok,
            "txn",
            json!([["r", 1, []], ["r", 2, [1]]]),
            None,
        );
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1]]]));
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G-single"]);
    }

    #[test]
    fn a_stale_read_is_a_realtime_anomaly_only() {
        let mut h = OpsBuilder::default();
        txn(&mut h, 0, OpType::Ok, json!([["append", 1, 1]]));
        // Invoked after T0 completed, yet missed its append: serializable (T1 before T0), not
        // strictly serializable.
        txn(&mut h, 1, OpType::Ok, json!([["r", 1, []]]));
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1]]]));
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G-single-realtime"]);
        let detail = &result.anomalies[0].detail;
        assert!(
            detail.contains("-rt [completed before invoked]->"),
            "{detail}"
        );

        // The same reads concurrent with the append are fine.
        let mut h = OpsBuilder::default();
        h.invoke(0, "txn", json!([["append", 1, 1]]), None);
        h.invoke(1, "txn", json!([["r", 1, null]]), None);
        h.complete(0, OpType::Ok, "txn", json!([["append", 1, 1]]), None);
        h.complete(1, OpType::Ok, "txn", json!([["r", 1, []]]), None);
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1]]]));
        assert_eq!(run(&h).valid, Valid::True);
    }

    #[test]
    fn the_final_lists_must_hold_every_committed_and_observed_append() {
        let mut h = OpsBuilder::default();
        txn(&mut h, 0, OpType::Ok, json!([["append", 1, 1]]));
        txn(&mut h, 1, OpType::Info, json!([["append", 1, 2]]));
        txn(&mut h, 2, OpType::Ok, json!([["r", 1, [1, 2]]]));
        txn(&mut h, 3, OpType::Ok, json!([["append", 2, 1]]));
        let good: BTreeMap<u64, Vec<u64>> = [(1, vec![1, 2]), (2, vec![1])].into();
        assert_eq!(check(&h.ops, Some(&good)).valid, Valid::True);

        // Key 1 lost both (T0's committed append and T1's observed one), key 2 its only one.
        let lost: BTreeMap<u64, Vec<u64>> = [(1, vec![]), (2, vec![])].into();
        let result = check(&h.ops, Some(&lost));
        assert_eq!(
            kinds(&result),
            vec!["lost-append", "lost-append", "lost-append"]
        );

        // A failed append in the final state.
        txn(&mut h, 4, OpType::Fail, json!([["append", 2, 9]]));
        let aborted: BTreeMap<u64, Vec<u64>> = [(1, vec![1, 2]), (2, vec![1, 9])].into();
        let result = check(&h.ops, Some(&aborted));
        assert_eq!(kinds(&result), vec!["G1a"]);
        assert!(
            result.anomalies[0]
                .detail
                .contains("the final state read 9")
        );

        // A final list that contradicts a read.
        let reordered: BTreeMap<u64, Vec<u64>> = [(1, vec![2, 1]), (2, vec![1])].into();
        assert_eq!(
            kinds(&check(&h.ops, Some(&reordered))),
            vec!["incompatible-order"]
        );
    }

    #[test]
    fn final_lists_are_read_from_reachable_participants() {
        let participant = |reachable: bool, data: Vec<(&str, Value)>| ParticipantState {
            reachable,
            data: data.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            in_doubt: Vec::new(),
        };
        let mut fs = FinalState::default();
        fs.participants.insert(
            "p1".into(),
            participant(true, vec![("list/1", json!([1, 2])), ("other", json!(0))]),
        );
        fs.participants.insert(
            "p2".into(),
            participant(false, vec![("list/2", json!([5]))]),
        );
        assert_eq!(final_lists(&fs).unwrap(), [(1, vec![1, 2])].into());

        fs.participants
            .insert("p3".into(), participant(true, vec![("list/1", json!([1]))]));
        assert!(final_lists(&fs).is_err());
        fs.participants
            .insert("p3".into(), participant(true, vec![("list/x", json!([1]))]));
        assert!(final_lists(&fs).is_err());
    }

    #[test]
    fn malformed_transactions_are_left_out_and_make_the_verdict_unknown() {
        let mut h = OpsBuilder::default();
        txn(&mut h, 0, OpType::Ok, json!([["append", 1, 1]]));
        h.invoke(1, "txn", json!({"not": "a list"}), None);
        h.complete(1, OpType::Ok, "txn", json!({"not": "a list"}), None);
        // An ok read without its result.
        h.invoke(2, "txn", json!([["r", 1, null]]), None);
        h.complete(2, OpType::Ok, "txn", json!([["r", 1, null]]), None);
        txn(&mut h, 3, OpType::Ok, json!([["append", -1, 1]]));
        txn(&mut h, 4, OpType::Ok, json!([["increment", 1, 1]]));
        // The same value appended twice to one key.
        txn(&mut h, 5, OpType::Ok, json!([["append", 1, 1]]));
        let result = run(&h);
        assert_eq!(result.valid, Valid::Unknown, "{result:#?}");
        assert_eq!(result.counts["malformed-op"], 5);
    }

    #[test]
    fn anomalies_are_listed_up_to_the_cap_and_all_counted() {
        let mut h = OpsBuilder::default();
        for v in 0..20 {
            txn(&mut h, 0, OpType::Fail, json!([["append", v, 1]]));
            txn(&mut h, 1, OpType::Ok, json!([["r", v, [1]]]));
        }
        let result = run(&h);
        assert_eq!(result.counts["G1a"], 20);
        assert_eq!(result.anomalies.len() as u64, ANOMALIES_PER_KIND_MAX);
    }

    #[test]
    fn a_long_cycle_is_found_without_deep_recursion_and_its_witness_is_shortened() {
        // T_i reads key i (ending with T_{i-1}'s append) and appends to key i+1; T_0 reads
        // the last key: one wr cycle through every transaction.
        const N: u64 = 20_000;
        let mut h = OpsBuilder::default();
        let invokes: Vec<Value> = (0..N)
            .map(|i| json!([["r", i, null], ["append", (i + 1) % N, i]]))
            .collect();
        for (i, value) in invokes.iter().enumerate() {
            h.invoke(i as u64, "txn", value.clone(), None);
        }
        for i in 0..N {
            let previous = (i + N - 1) % N;
            h.complete(
                i,
                OpType::Ok,
                "txn",
                json!([["r", i, [previous]], ["append", (i + 1) % N, i]]),
                None,
            );
        }
        let result = run(&h);
        assert_eq!(kinds(&result), vec!["G1c"]);
        let detail = &result.anomalies[0].detail;
        assert!(detail.contains(&format!("({N} steps in all)")), "{detail}");
        assert_eq!(result.anomalies[0].ops.len(), CYCLE_OPS_MAX);
    }

    #[test]
    fn a_large_serializable_history_is_checked_quickly() {
        // 50,000 transactions (100,000 operations), four processes overlapping, run against a
        // serial model: valid, and fast.
        const TXNS: u64 = 50_000;
        let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut h = OpsBuilder::default();
        let mut pending: Vec<(u64, Value)> = Vec::new();
        for i in 0..TXNS {
            let window = (i / 40) * 4;
            let (a, b) = (window + i % 4, window + (i + 1) % 4);
            let read = lists.entry(b).or_default().clone();
            lists.entry(a).or_default().push(i);
            let mops = json!([["append", a, i], ["r", b, read]]);
            // Invoke now, complete after the next transaction's invocation: overlapping
            // neighbours in real time, applied in this order.
            let process = i % 4;
            h.invoke(process, "txn", blank_reads(&mops), None);
            if let Some((p, done)) = pending.pop() {
                h.complete(p, OpType::Ok, "txn", done, None);
            }
            pending.push((process, mops));
        }
        for (p, done) in pending {
            h.complete(p, OpType::Ok, "txn", done, None);
        }
        assert_eq!(h.ops.len(), 100_000);
        let started = std::time::Instant::now();
        let result = check(&h.ops, Some(&lists));
        assert_eq!(result.valid, Valid::True, "{:?}", result.anomalies.first());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(result.counts["txns-ok"], TXNS);
    }

    #[test]
    fn a_large_history_full_of_stale_reads_is_checked_quickly() {
        // 50,000 transactions; a quarter of the reads miss up to 3 of the latest appends, and
        // keys overlap across windows, so the stale reads tie most transactions into large
        // strongly connected components. The search must stay fast and find cycles.
        const TXNS: u64 = 50_000;
        let mut lists: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut h = OpsBuilder::default();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for i in 0..TXNS {
            let window = (i / 40) * 2;
            let (a, b) = (window + random(4), window + random(4));
            let list = lists.entry(b).or_default();
            let stale = if random(4) == 0 {
                random(4) as usize
            } else {
                0
            };
            let read = list[..list.len().saturating_sub(stale)].to_vec();
            lists.entry(a).or_default().push(i);
            txn(
                &mut h,
                i % 8,
                OpType::Ok,
                json!([["r", b, read], ["append", a, i]]),
            );
        }
        let started = std::time::Instant::now();
        let result = check(&h.ops, Some(&lists));
        let took = started.elapsed();
        assert_eq!(result.valid, Valid::False);
        assert!(
            result.counts.get("G-single").copied().unwrap_or(0) > 0,
            "{:?}",
            result.counts
        );
        assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    }
}
