//! The atomicity checker (atomic-marker workload): a transaction's marker is at all of its
//! participants or at none, exactly once, and agrees with what the client was told and with
//! the coordinator's decision.
//!
//! Each `marker` operation (value `{"participants":["p1","p2"]}`, txn id on the invocation)
//! writes `marker/<txn_id>` = the txn id at each listed participant. After the final heal each
//! reachable participant's data shows which markers landed. Per transaction, over its
//! *reachable* participants (`present` / `absent`):
//! - `partial`: present at some and absent at others;
//! - `lost-commit`: absent somewhere although the client was told `ok` or the decision is
//!   `Commit`;
//! - `aborted-applied`: present somewhere although the client was told `fail`, the decision is
//!   `Abort`, or (decisions known) there is no decision and the client was not told `ok`;
//! - `decision-mismatch`: told `ok` but the decision is `Abort` or missing; told `fail` but the
//!   decision is `Commit`.
//!
//! `info` operations are held to the same all-or-nothing rule and to their decision.
//!
//! Over all marker keys: `phantom` (a marker of a transaction never invoked, or at a
//! participant not in its list), `duplicate-apply` (the value is an array holding the txn id
//! more than once: a non-idempotent apply) and `corrupt-marker` (any other value than the txn
//! id string).
//!
//! Unknown, not false: an unreachable listed participant (`unreachable`; its markers are not
//! known, but the visible participants of a transaction must still agree), decisions that could
//! not be read (`decisions-unknown`; the decision checks are skipped), and `malformed-op` (an
//! operation of the wrong shape: a harness bug).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::CheckResult;
use crate::history::{Decision, FinalState, Findings, Op, OpType, Paired, Valid, pair_ops};

const CHECKER: &str = "atomicity";

/// Marker keys in a participant's data start with this, followed by the txn id.
const MARKER_KEY_PREFIX: &str = "marker/";

/// One marker transaction as invoked.
struct MarkerTxn<'a> {
    op: Paired<'a>,
    participants: BTreeSet<String>,
}

/// Checks an atomic-marker history against the final state.
pub fn check(history: &[Op], final_state: &FinalState) -> CheckResult {
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

    let txns = collect_txns(&mut findings, &pairs);
    let present = scan_markers(&mut findings, final_state, &txns);

    // Participants whose data is unknown: unreachable, or listed but never read at all.
    let mut unread: BTreeSet<&str> = final_state
        .participants
        .iter()
        .filter(|(_, state)| !state.reachable)
        .map(|(id, _)| id.as_str())
        .collect();
    for txn in txns.values() {
        for p in &txn.participants {
            if !final_state.participants.contains_key(p) {
                unread.insert(p);
            }
        }
    }
    for p in &unread {
        findings.add(
            Valid::Unknown,
            "unreachable",
            format!("final state: participant {p} was not read; its markers are unknown"),
            Vec::new(),
            None,
        );
    }

    let decisions = final_state.decisions.as_ref();
    if decisions.is_none() {
        findings.add(
            Valid::Unknown,
            "decisions-unknown",
            "the coordinator's decisions could not be read: decision checks skipped".to_string(),
            Vec::new(),
            None,
        );
    }

    let no_markers = BTreeSet::new();
    for (txn_id, txn) in &txns {
        let at = present.get(txn_id.as_str()).unwrap_or(&no_markers);
        check_txn(&mut findings, txn_id, txn, at, &unread, decisions);
    }

    let about = format!(
        "{} marker txns ({} ok, {} fail, {} info); {} applied everywhere visible, {} nowhere",
        findings.figure_value("txns"),
        findings.figure_value("txns-ok"),
        findings.figure_value("txns-fail"),
        findings.figure_value("txns-info"),
        findings.figure_value("txns-applied"),
        findings.figure_value("txns-absent"),
    );
    findings.finish(CHECKER, &about)
}

/// The marker transactions by txn id; malformed ones are reported and left out.
fn collect_txns<'a>(
    findings: &mut Findings,
    pairs: &[Paired<'a>],
) -> BTreeMap<String, MarkerTxn<'a>> {
    let mut txns: BTreeMap<String, MarkerTxn<'a>> = BTreeMap::new();
    for op in pairs.iter().filter(|op| op.invoke.f == "marker") {
        findings.figure("txns", 1);
        findings.figure(
            match op.outcome() {
                OpType::Ok => "txns-ok",
                OpType::Fail => "txns-fail",
                OpType::Info | OpType::Invoke => "txns-info",
            },
            1,
        );
        let malformed = |findings: &mut Findings, why: String| {
            findings.add(
                Valid::Unknown,
                "malformed-op",
                format!("marker (index {}): {why}", op.invoke.index),
                op.indices(),
                op.txn_id(),
            );
        };
        let Some(txn_id) = op.txn_id() else {
            // Never began, so it wrote nothing; an `ok` without an id cannot be checked.
            if op.outcome() == OpType::Ok {
                malformed(findings, "ok without a txn id".to_string());
            } else {
                findings.figure("txns-without-id", 1);
            }
            continue;
        };
        let value = if op.invoke.value.is_null() {
            op.completion.map_or(&Value::Null, |c| &c.value)
        } else {
            &op.invoke.value
        };
        let participants: Option<BTreeSet<String>> = value
            .get("participants")
            .and_then(Value::as_array)
            .and_then(|ps| ps.iter().map(|p| p.as_str().map(str::to_string)).collect());
        let participants = match participants {
            Some(ps) if !ps.is_empty() => ps,
            _ => {
                malformed(findings, format!("no list of participant ids in {value}"));
                continue;
            }
        };
        if let Some(first) = txns.get(txn_id) {
            let first = first.op.invoke.index;
            malformed(
                findings,
                format!("reuses the txn id {txn_id} of the marker at index {first}"),
            );
            continue;
        }
        txns.insert(
            txn_id.to_string(),
            MarkerTxn {
                op: *op,
                participants,
            },
        );
    }
    txns
}

/// Reads every marker key of every reachable participant: txn id → participants holding it.
/// Reports phantoms, duplicate applies and corrupt values on the way.
fn scan_markers<'f>(
    findings: &mut Findings,
    final_state: &'f FinalState,
    txns: &BTreeMap<String, MarkerTxn<'_>>,
) -> BTreeMap<&'f str, BTreeSet<&'f str>> {
    let mut present: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (participant, state) in final_state.participants.iter().filter(|(_, s)| s.reachable) {
        for (key, value) in &state.data {
            let Some(txn_id) = key.strip_prefix(MARKER_KEY_PREFIX) else {
                continue;
            };
            findings.figure("markers", 1);
            present.entry(txn_id).or_default().insert(participant);
            let txn = txns.get(txn_id);
            match txn {
                None => findings.add(
                    Valid::False,
                    "phantom",
                    format!("{participant} holds {key} but no marker transaction {txn_id} was invoked"),
                    Vec::new(),
                    Some(txn_id),
                ),
                Some(txn) if !txn.participants.contains(participant) => findings.add(
                    Valid::False,
                    "phantom",
                    format!(
                        "{participant} holds {key} but transaction {txn_id} (index {}) lists only {}",
                        txn.op.index(),
                        join(txn.participants.iter())
                    ),
                    txn.op.indices(),
                    Some(txn_id),
                ),
                Some(_) => {}
            }
            let ops = txn.map(|t| t.op.indices()).unwrap_or_default();
            match value {
                Value::String(s) if s == txn_id => {}
                Value::Array(items)
                    if items.iter().filter(|v| v.as_str() == Some(txn_id)).count() > 1 =>
                {
                    findings.add(
                        Valid::False,
                        "duplicate-apply",
                        format!(
                            "{participant}: {key} = {value}: the marker was applied more than once"
                        ),
                        ops,
                        Some(txn_id),
                    );
                }
                _ => findings.add(
                    Valid::False,
                    "corrupt-marker",
                    format!("{participant}: {key} = {value}, expected the txn id \"{txn_id}\""),
                    ops,
                    Some(txn_id),
                ),
            }
        }
    }
    present
}

fn check_txn(
    findings: &mut Findings,
    txn_id: &str,
    txn: &MarkerTxn<'_>,
    present_at: &BTreeSet<&str>,
    unread: &BTreeSet<&str>,
    decisions: Option<&BTreeMap<String, Decision>>,
) {
    let outcome = txn.op.outcome();
    let (visible, hidden): (Vec<&str>, Vec<&str>) = txn
        .participants
        .iter()
        .map(String::as_str)
        .partition(|p| !unread.contains(p));
    let (present, absent): (Vec<&str>, Vec<&str>) =
        visible.iter().partition(|p| present_at.contains(*p));
    let decision = decisions.map(|d| d.get(txn_id).copied());

    let told = match outcome {
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info | OpType::Invoke => "info",
    };
    let decided = match decision {
        None => "unknown",
        Some(None) => "missing",
        Some(Some(Decision::Commit)) => "Commit",
        Some(Some(Decision::Abort)) => "Abort",
    };
    let what = format!(
        "marker txn {txn_id} (index {}, told {told}, decision {decided}): present at [{}], absent at [{}]{}",
        txn.op.index(),
        join(present.iter()),
        join(absent.iter()),
        if hidden.is_empty() {
            String::new()
        } else {
            format!(", unread at [{}]", join(hidden.iter()))
        },
    );
    let mut add = |kind: &str, why: &str| {
        findings.add(
            Valid::False,
            kind,
            format!("{what}: {why}"),
            txn.op.indices(),
            Some(txn_id),
        );
    };

    if !present.is_empty() && !absent.is_empty() {
        add("partial", "applied at some participants but not all");
    }
    let committed = outcome == OpType::Ok || decision == Some(Some(Decision::Commit));
    if committed && !absent.is_empty() {
        add("lost-commit", "committed but missing");
    }
    let aborted = outcome == OpType::Fail
        || decision == Some(Some(Decision::Abort))
        || (decision == Some(None) && outcome != OpType::Ok);
    if aborted && !present.is_empty() {
        add("aborted-applied", "not committed but applied");
    }
    match (outcome, decision) {
        (OpType::Ok, Some(Some(Decision::Abort) | None)) => {
            add("decision-mismatch", "told ok but not decided Commit")
        }
        (OpType::Fail, Some(Some(Decision::Commit))) => {
            add("decision-mismatch", "told fail but decided Commit")
        }
        _ => {}
    }

    if present.is_empty() && absent.is_empty() {
        findings.figure("txns-unread", 1);
    } else if absent.is_empty() {
        findings.figure("txns-applied", 1);
    } else if present.is_empty() {
        findings.figure("txns-absent", 1);
    } else {
        findings.figure("txns-partial", 1);
    }
    if !hidden.is_empty() {
        findings.figure("txns-partly-unread", 1);
    }
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::history::ParticipantState;
    use crate::history::tests_support::{OpsBuilder, kinds};
    use serde_json::json;

    fn marker(h: &mut OpsBuilder, process: u64, txn: &str, participants: &[&str], outcome: OpType) {
        h.call(
            process,
            "marker",
            json!({ "participants": participants }),
            Some(txn),
            outcome,
            None,
        );
    }

    /// The final state: per participant, the txn ids whose marker it holds.
    fn final_state(markers: &[(&str, &[&str])], decisions: &[(&str, Decision)]) -> FinalState {
        FinalState {
            participants: markers
                .iter()
                .map(|(p, txns)| {
                    let data = txns
                        .iter()
                        .map(|t| (format!("marker/{t}"), json!(t)))
                        .collect();
                    (
                        p.to_string(),
                        ParticipantState {
                            reachable: true,
                            data,
                            in_doubt: Vec::new(),
                        },
                    )
                })
                .collect(),
            decisions: Some(decisions.iter().map(|(t, d)| (t.to_string(), *d)).collect()),
            unfinished: Vec::new(),
        }
    }

    /// t1 ok, t2 fail, t3 info that committed, t4 info that aborted, t5 info never decided.
    fn good_history() -> Vec<Op> {
        let mut h = OpsBuilder::default();
        marker(&mut h, 0, "t1", &["p1", "p2"], OpType::Ok);
        marker(&mut h, 1, "t2", &["p1", "p2"], OpType::Fail);
        marker(&mut h, 2, "t3", &["p2", "p3"], OpType::Info);
        marker(&mut h, 3, "t4", &["p1", "p3"], OpType::Info);
        h.invoke(4, "marker", json!({"participants": ["p1"]}), Some("t5"));
        h.ops
    }

    fn good_decisions() -> Vec<(&'static str, Decision)> {
        vec![
            ("t1", Decision::Commit),
            ("t2", Decision::Abort),
            ("t3", Decision::Commit),
            ("t4", Decision::Abort),
        ]
    }

    fn good_final() -> FinalState {
        final_state(
            &[("p1", &["t1"]), ("p2", &["t1", "t3"]), ("p3", &["t3"])],
            &good_decisions(),
        )
    }

    #[test]
    fn a_correct_history_passes() {
        let result = check(&good_history(), &good_final());
        assert_eq!(result.valid, Valid::True, "{result:#?}");
        assert_eq!(result.counts["txns"], 5);
        assert_eq!(result.counts["txns-ok"], 1);
        assert_eq!(result.counts["txns-info"], 3);
        assert_eq!(result.counts["txns-applied"], 2);
        assert_eq!(result.counts["txns-absent"], 3);
    }

    #[test]
    fn a_marker_at_one_participant_only_is_partial_and_lost() {
        let fs = final_state(
            &[("p1", &["t1"]), ("p2", &["t3"]), ("p3", &["t3"])],
            &good_decisions(),
        );
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["lost-commit", "partial"]);
        assert!(
            result
                .anomalies
                .iter()
                .all(|a| a.txn_id.as_deref() == Some("t1"))
        );
        assert!(
            result.anomalies[0]
                .detail
                .contains("present at [p1], absent at [p2]"),
            "{:?}",
            result.anomalies
        );
    }

    #[test]
    fn visible_participants_that_disagree_are_partial_even_with_one_unread() {
        let mut h = OpsBuilder::default();
        marker(&mut h, 0, "t1", &["p1", "p2", "p3"], OpType::Info);
        let mut fs = final_state(
            &[("p1", &["t1"]), ("p2", &[]), ("p3", &["t1"])],
            &[("t1", Decision::Commit)],
        );
        fs.participants.get_mut("p3").unwrap().reachable = false;
        let result = check(&h.ops, &fs);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(
            kinds(&result),
            vec!["lost-commit", "partial", "unreachable"]
        );
    }

    #[test]
    fn visible_participants_that_agree_with_one_unread_are_unknown() {
        let mut fs = good_final();
        fs.participants.get_mut("p3").unwrap().reachable = false;
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::Unknown, "{result:#?}");
        assert_eq!(kinds(&result), vec!["unreachable"]);
        assert_eq!(result.counts["txns-partly-unread"], 2);

        // A participant listed by a transaction but absent from the final state is unread too.
        let mut fs = good_final();
        fs.participants.remove("p3");
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::Unknown);
        assert_eq!(kinds(&result), vec!["unreachable"]);
    }

    #[test]
    fn an_ok_transaction_missing_everywhere_is_a_lost_commit() {
        let fs = final_state(
            &[("p1", &[]), ("p2", &["t3"]), ("p3", &["t3"])],
            &good_decisions(),
        );
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["lost-commit"]);
    }

    #[test]
    fn a_committed_info_transaction_missing_everywhere_is_a_lost_commit() {
        let fs = final_state(
            &[("p1", &["t1"]), ("p2", &["t1"]), ("p3", &[])],
            &good_decisions(),
        );
        let result = check(&good_history(), &fs);
        assert_eq!(kinds(&result), vec!["lost-commit"]);
        assert_eq!(result.anomalies[0].txn_id.as_deref(), Some("t3"));
    }

    #[test]
    fn failed_aborted_or_undecided_transactions_must_leave_no_marker() {
        // t2 told fail, t4 decided Abort, t5 never decided: all applied everywhere.
        let fs = final_state(
            &[
                ("p1", &["t1", "t2", "t4", "t5"]),
                ("p2", &["t1", "t2", "t3"]),
                ("p3", &["t3", "t4"]),
            ],
            &good_decisions(),
        );
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(
            kinds(&result),
            vec!["aborted-applied", "aborted-applied", "aborted-applied"]
        );
        let txns: BTreeSet<_> = result
            .anomalies
            .iter()
            .map(|a| a.txn_id.clone().unwrap())
            .collect();
        assert_eq!(txns, ["t2", "t4", "t5"].map(String::from).into());
    }

    #[test]
    fn outcomes_that_contradict_the_decision_are_caught() {
        // t1 told ok but decided Abort (and absent, agreeing with the decision); t2 told fail
        // but decided Commit (and present, agreeing with the decision).
        let decisions = [
            ("t1", Decision::Abort),
            ("t2", Decision::Commit),
            ("t3", Decision::Commit),
        ];
        let fs = final_state(
            &[("p1", &["t2"]), ("p2", &["t2", "t3"]), ("p3", &["t3"])],
            &decisions,
        );
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(
            kinds(&result),
            vec![
                "aborted-applied",
                "decision-mismatch",
                "decision-mismatch",
                "lost-commit"
            ]
        );

        // Told ok with no decision at all, though applied.
        let fs = final_state(
            &[("p1", &["t1"]), ("p2", &["t1", "t3"]), ("p3", &["t3"])],
            &decisions[2..],
        );
        let result = check(&good_history(), &fs);
        assert_eq!(kinds(&result), vec!["decision-mismatch"]);
    }

    #[test]
    fn phantom_markers_are_caught() {
        // t9 was never invoked; t1 landed at p3, which it did not list.
        let fs = final_state(
            &[
                ("p1", &["t1", "t9"]),
                ("p2", &["t1", "t3"]),
                ("p3", &["t1", "t3"]),
            ],
            &good_decisions(),
        );
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["phantom", "phantom"]);
    }

    #[test]
    fn duplicate_and_corrupt_marker_values_are_caught() {
        let mut fs = good_final();
        let p1 = &mut fs.participants.get_mut("p1").unwrap().data;
        p1.insert("marker/t1".into(), json!(["t1", "t1"]));
        let p2 = &mut fs.participants.get_mut("p2").unwrap().data;
        p2.insert("marker/t1".into(), json!("t3"));
        p2.insert("marker/t3".into(), json!(3));
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(
            kinds(&result),
            vec!["corrupt-marker", "corrupt-marker", "duplicate-apply"]
        );
    }

    #[test]
    fn an_unknown_transaction_applied_partially_is_caught() {
        let fs = final_state(
            &[("p1", &["t1"]), ("p2", &["t1", "t3"]), ("p3", &[])],
            &good_decisions(),
        );
        let result = check(&good_history(), &fs);
        assert_eq!(kinds(&result), vec!["lost-commit", "partial"]);
        assert!(
            result
                .anomalies
                .iter()
                .all(|a| a.txn_id.as_deref() == Some("t3"))
        );
    }

    #[test]
    fn without_decisions_the_verdict_is_unknown_unless_something_is_wrong() {
        let mut fs = good_final();
        fs.decisions = None;
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::Unknown);
        assert_eq!(kinds(&result), vec!["decisions-unknown"]);

        // t3 (info) applied at p2 only: partial, whatever the decision.
        fs.participants.get_mut("p3").unwrap().data.clear();
        let result = check(&good_history(), &fs);
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["decisions-unknown", "partial"]);
    }

    #[test]
    fn malformed_marker_ops_make_the_verdict_unknown() {
        let mut h = OpsBuilder::default();
        h.call(
            0,
            "marker",
            json!({"participants": "p1"}),
            Some("t1"),
            OpType::Ok,
            None,
        );
        h.call(
            1,
            "marker",
            json!({"participants": []}),
            Some("t2"),
            OpType::Info,
            None,
        );
        h.call(
            2,
            "marker",
            json!({"participants": ["p1"]}),
            None,
            OpType::Ok,
            None,
        );
        h.call(
            3,
            "marker",
            json!({"participants": ["p1"]}),
            Some("t3"),
            OpType::Fail,
            None,
        );
        h.call(
            4,
            "marker",
            json!({"participants": ["p1"]}),
            Some("t3"),
            OpType::Fail,
            None,
        );
        let fs = final_state(&[("p1", &[])], &[]);
        let result = check(&h.ops, &fs);
        assert_eq!(result.valid, Valid::Unknown, "{result:#?}");
        assert_eq!(result.counts["malformed-op"], 4);
    }
}
