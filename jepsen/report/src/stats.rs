//! Figures computed from a history: completion counts, latencies, throughput.
//!
//! An operation's latency is its completion's time minus its invocation's time, matched by
//! process: a process runs one operation at a time, so a completion closes the invocation its
//! process has open.

use std::collections::{BTreeMap, HashMap};

use ratify_check::{Op, OpType};
use serde::{Deserialize, Serialize};

/// Nanoseconds in a millisecond / a second.
pub(crate) const NS_PER_MS: f64 = 1e6;
pub(crate) const NS_PER_S: f64 = 1e9;

/// Operations by type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Invocations.
    pub invoke: u64,
    /// Completions that committed.
    pub ok: u64,
    /// Completions that definitely did not commit.
    pub fail: u64,
    /// Completions whose outcome is unknown.
    pub info: u64,
}

impl Counts {
    fn add(&mut self, kind: OpType) {
        match kind {
            OpType::Invoke => self.invoke += 1,
            OpType::Ok => self.ok += 1,
            OpType::Fail => self.fail += 1,
            OpType::Info => self.info += 1,
        }
    }

    /// Completions of any type.
    pub fn completed(&self) -> u64 {
        self.ok + self.fail + self.info
    }
}

/// Latency quantiles in milliseconds (nearest-rank).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// How many latencies.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Quantiles {
    /// Quantiles of `latencies_ns` (any order); `None` when empty.
    fn of(mut latencies_ns: Vec<u64>) -> Option<Quantiles> {
        if latencies_ns.is_empty() {
            return None;
        }
        latencies_ns.sort_unstable();
        let n = latencies_ns.len();
        // Nearest rank: the smallest value with at least q·n values at or below it.
        let rank = |q: f64| -> f64 {
            let r = ((q * n as f64).ceil() as usize).clamp(1, n);
            latencies_ns[r - 1] as f64 / NS_PER_MS
        };
        Some(Quantiles {
            count: n as u64,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: latencies_ns[n - 1] as f64 / NS_PER_MS,
        })
    }
}

/// Figures about one history (written into `results.json` under `stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// All operations by type.
    pub ops: Counts,
    /// Operations by type, per `f` (invocations counted under the invocation's `f`,
    /// completions under the completion's).
    pub by_f: BTreeMap<String, Counts>,
    /// Latency of `ok` operations; `None` when there are none.
    pub latency_ms: Option<Quantiles>,
    /// Latency of `ok` operations per `f`.
    pub latency_ms_by_f: BTreeMap<String, Quantiles>,
    /// Time of the last history entry, in seconds since the run began.
    pub duration_s: f64,
    /// Completions of any type per second over `duration_s` (0 when it is 0).
    pub throughput_per_s: f64,
    /// `ok` completions per second over `duration_s` (0 when it is 0).
    pub throughput_ok_per_s: f64,
    /// Completions on a process with no open invocation (no latency for them).
    pub unmatched_completions: u64,
    /// Invocations never completed (still open at the end, or replaced by a later invocation
    /// on the same process).
    pub open_invocations: u64,
}

/// One completion with what is known of its invocation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Completion {
    /// History index of the completion.
    pub index: u64,
    /// `ok`, `fail` or `info`.
    pub kind: OpType,
    /// The completion's `f`.
    pub f: String,
    /// Its time (ns since the run began).
    pub time_ns: u64,
    /// The matching invocation's time; `None` when its process had none open.
    pub invoke_ns: Option<u64>,
    /// The completion's error, if any.
    pub error: Option<String>,
}

impl Completion {
    /// Completion time minus invocation time; `None` without an invocation. A completion
    /// stamped before its invocation (clock misuse) counts as 0 rather than wrapping.
    pub fn latency_ns(&self) -> Option<u64> {
        self.invoke_ns.map(|t| self.time_ns.saturating_sub(t))
    }
}

/// Every completion in history order, matched to its invocation by process; also returns how
/// many invocations were left open.
pub(crate) fn completions(history: &[Op]) -> (Vec<Completion>, u64) {
    let mut open: HashMap<u64, u64> = HashMap::new();
    let mut replaced = 0u64;
    let mut out = Vec::new();
    for op in history {
        match op.kind {
            OpType::Invoke => {
                if open.insert(op.process, op.time).is_some() {
                    // The harness never does this; count it rather than guess a pairing.
                    replaced += 1;
                }
            }
            kind => out.push(Completion {
                index: op.index,
                kind,
                f: op.f.clone(),
                time_ns: op.time,
                invoke_ns: open.remove(&op.process),
                error: op.error.clone(),
            }),
        }
    }
    (out, replaced + open.len() as u64)
}

/// Seconds since the run began of the last entry in `history` (0 when empty).
pub(crate) fn last_time_s(history: &[Op]) -> f64 {
    history.iter().map(|op| op.time).max().unwrap_or(0) as f64 / NS_PER_S
}

/// Counts, latency quantiles and throughput of `history`.
pub fn stats(history: &[Op]) -> Stats {
    let mut ops = Counts::default();
    let mut by_f: BTreeMap<String, Counts> = BTreeMap::new();
    for op in history {
        ops.add(op.kind);
        by_f.entry(op.f.clone()).or_default().add(op.kind);
    }

    let (completions, open_invocations) = completions(history);
    let mut ok_latencies = Vec::new();
    let mut ok_latencies_by_f: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut unmatched_completions = 0;
    for c in &completions {
        match c.latency_ns() {
            None => unmatched_completions += 1,
            Some(l) if c.kind == OpType::Ok => {
                ok_latencies.push(l);
                ok_latencies_by_f.entry(c.f.clone()).or_default().push(l);
            }
            Some(_) => {}
        }
    }

    let duration_s = last_time_s(history);
    let per_s = |n: u64| {
        if duration_s > 0.0 {
            n as f64 / duration_s
        } else {
            0.0
        }
    };
    Stats {
        ops,
        by_f,
        latency_ms: Quantiles::of(ok_latencies),
        latency_ms_by_f: ok_latencies_by_f
            .into_iter()
            .filter_map(|(f, l)| Quantiles::of(l).map(|q| (f, q)))
            .collect(),
        duration_s,
        throughput_per_s: per_s(ops.completed()),
        throughput_ok_per_s: per_s(ops.ok),
        unmatched_completions,
        open_invocations,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A history entry (tests build histories by hand).
    pub(crate) fn op(index: u64, time_ms: u64, process: u64, kind: OpType, f: &str) -> Op {
        Op {
            index,
            time: time_ms * 1_000_000,
            process,
            kind,
            f: f.to_string(),
            value: serde_json::Value::Null,
            error: None,
            txn_id: None,
            call_notes: Vec::new(),
        }
    }

    /// Two processes interleaved: latencies must pair by process, not by adjacency.
    pub(crate) fn small_history() -> Vec<Op> {
        use OpType::*;
        vec![
            op(0, 0, 1, Invoke, "transfer"),
            op(1, 5, 2, Invoke, "read"),
            op(2, 10, 1, Ok, "transfer"),     // p1: 10 ms
            op(3, 12, 1, Invoke, "transfer"), //
            op(4, 45, 2, Ok, "read"),         // p2: 40 ms
            op(5, 50, 1, Fail, "transfer"),   // p1: fail, no ok latency
            op(6, 60, 3, Info, "transfer"),   // no invocation on p3
            op(7, 70, 4, Invoke, "transfer"), // never completes
            op(8, 80, 2, Invoke, "read"),
            op(9, 100, 2, Ok, "read"), // p2: 20 ms
        ]
    }

    /// Counts per type and per f, latencies paired by process, unmatched and open ops.
    #[test]
    fn stats_pairs_by_process_and_counts() {
        let s = stats(&small_history());
        assert_eq!(
            s.ops,
            Counts {
                invoke: 5,
                ok: 3,
                fail: 1,
                info: 1
            }
        );
        assert_eq!(
            s.by_f["transfer"],
            Counts {
                invoke: 3,
                ok: 1,
                fail: 1,
                info: 1
            }
        );
        assert_eq!(
            s.by_f["read"],
            Counts {
                invoke: 2,
                ok: 2,
                fail: 0,
                info: 0
            }
        );
        assert_eq!(s.unmatched_completions, 1);
        assert_eq!(s.open_invocations, 1);

        // ok latencies: 10, 40, 20 ms → sorted 10, 20, 40.
        let q = s.latency_ms.expect("three ok ops");
        assert_eq!(q.count, 3);
        assert_eq!(q.p50, 20.0);
        assert_eq!(q.p90, 40.0);
        assert_eq!(q.p99, 40.0);
        assert_eq!(q.max, 40.0);
        assert_eq!(s.latency_ms_by_f["transfer"].max, 10.0);
        assert_eq!(s.latency_ms_by_f["read"].p50, 20.0);
        assert_eq!(s.latency_ms_by_f["read"].count, 2);

        // 5 completions over 0.1 s.
        assert!((s.duration_s - 0.1).abs() < 1e-12);
        assert!((s.throughput_per_s - 50.0).abs() < 1e-9);
        assert!((s.throughput_ok_per_s - 30.0).abs() < 1e-9);
    }

    /// Nearest-rank quantiles on 1..=100 ms are exactly the ranks.
    #[test]
    fn quantiles_nearest_rank() {
        let q = Quantiles::of((1..=100u64).rev().map(|ms| ms * 1_000_000).collect())
            .expect("non-empty");
        assert_eq!((q.p50, q.p90, q.p99, q.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(q.count, 100);
    }

    /// Degenerate histories give zeros, not NaN or a panic.
    #[test]
    fn stats_of_degenerate_histories() {
        let s = stats(&[]);
        assert_eq!(s.ops, Counts::default());
        assert!(s.latency_ms.is_none());
        assert_eq!((s.duration_s, s.throughput_per_s), (0.0, 0.0));

        // Everything at time 0, a completion stamped before its invocation.
        let mut h = vec![
            op(0, 0, 1, OpType::Invoke, "x"),
            op(1, 0, 1, OpType::Ok, "x"),
        ];
        h[0].time = 5;
        let s = stats(&h);
        assert_eq!(s.latency_ms.expect("one ok").max, 0.0);
        assert!(s.throughput_per_s.is_finite());
        assert!(s.throughput_per_s > 0.0);
        let s = stats(&[op(0, 0, 1, OpType::Ok, "x")]);
        assert_eq!(s.throughput_per_s, 0.0);
        assert_eq!(s.unmatched_completions, 1);
        assert!(s.latency_ms.is_none());
    }
}
