//! The bank checker: money is neither created nor destroyed, and exactly the committed
//! transfers moved it.
//!
//! Checked, for every `ok` read and for the final state (participant `P`'s data key
//! `acct/ACCT` is account `P/ACCT`):
//! - `wrong-total`: the balances do not sum to `accounts × initial_balance`;
//! - `negative`: a balance below zero;
//! - `missing-key` / `unexpected-key`: an account of the model absent, or one not in it.
//!
//! In the final state only reachable participants are read: an unreachable (or absent)
//! participant of the model makes the total unknown (`unreachable`, verdict `Unknown`), while
//! the accounts that were read are still checked one by one.
//!
//! With the coordinator's decisions (`FinalState::decisions`):
//! - `balance-mismatch`: an account's final balance differs from `initial_balance` plus the
//!   transfers whose decision is `Commit` (a transfer never decided was never applied). Duplicate
//!   applies, partial commits and lost commits show up here;
//! - `lost-commit`: a transfer the client was told `ok` whose decision is `Abort` or missing;
//! - `fail-but-committed`: a transfer the client was told `fail` (definitely not committed)
//!   whose decision is `Commit`.
//!
//! Without decisions those three are skipped and the verdict is at best `Unknown`
//! (`decisions-unknown`).
//!
//! A value of the wrong shape (a balance that is not an integer, a transfer naming an account
//! outside the model, a transfer `ok` without a txn id) is `malformed-op`: a harness bug, so the
//! verdict becomes `Unknown` rather than `False`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::CheckResult;
use crate::history::{Decision, FinalState, Findings, Op, OpType, Paired, Valid, pair_ops};

/// The bank the workload set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankModel {
    /// Every account, as `PARTICIPANT/ACCT`.
    pub accounts: Vec<String>,
    /// Each account's balance before the first transfer.
    pub initial_balance: i64,
}

const CHECKER: &str = "bank";

/// The final-state data keys of bank accounts start with this.
const ACCOUNT_KEY_PREFIX: &str = "acct/";

/// One transfer as invoked.
struct Transfer<'a> {
    op: Paired<'a>,
    txn_id: &'a str,
    from: String,
    to: String,
    amount: i64,
}

/// Checks a bank history and its final state against `model`.
pub fn check(history: &[Op], final_state: &FinalState, model: &BankModel) -> CheckResult {
    let mut findings = Findings::default();
    let accounts: BTreeSet<&str> = model.accounts.iter().map(String::as_str).collect();
    let total_expected = i64::try_from(model.accounts.len())
        .ok()
        .and_then(|n| n.checked_mul(model.initial_balance));

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

    let mut transfers: Vec<Transfer<'_>> = Vec::new();
    let mut seen_txn_ids: BTreeMap<&str, u64> = BTreeMap::new();
    for op in &pairs {
        match op.invoke.f.as_str() {
            "read" => {
                findings.figure("reads", 1);
                match op.outcome() {
                    OpType::Ok => {
                        findings.figure("reads-ok", 1);
                        let completion = op.completion.expect("an ok outcome has a completion");
                        let what = format!("read (index {})", completion.index);
                        match balances_of_read(&completion.value) {
                            Ok(balances) => check_snapshot(
                                &mut findings,
                                &Snapshot {
                                    what: &what,
                                    balances: &balances,
                                    ops: &op.indices(),
                                    txn_id: op.txn_id(),
                                },
                                &accounts,
                                &accounts,
                                total_expected,
                            ),
                            Err(why) => findings.add(
                                Valid::Unknown,
                                "malformed-op",
                                format!("{what}: {why}"),
                                op.indices(),
                                op.txn_id(),
                            ),
                        }
                    }
                    OpType::Fail => findings.figure("reads-fail", 1),
                    OpType::Info | OpType::Invoke => findings.figure("reads-info", 1),
                }
            }
            "transfer" => {
                findings.figure("transfers", 1);
                findings.figure(
                    match op.outcome() {
                        OpType::Ok => "transfers-ok",
                        OpType::Fail => "transfers-fail",
                        OpType::Info | OpType::Invoke => "transfers-info",
                    },
                    1,
                );
                match parse_transfer(op, &accounts) {
                    Ok(None) => {}
                    Ok(Some(transfer)) => {
                        if let Some(first) =
                            seen_txn_ids.insert(transfer.txn_id, transfer.op.invoke.index)
                        {
                            findings.add(
                                Valid::Unknown,
                                "malformed-op",
                                format!(
                                    "transfer at index {} reuses the txn id of the transfer at index {first}",
                                    transfer.op.invoke.index
                                ),
                                op.indices(),
                                Some(transfer.txn_id),
                            );
                        } else {
                            transfers.push(transfer);
                        }
                    }
                    Err(why) => findings.add(
                        Valid::Unknown,
                        "malformed-op",
                        format!("transfer (index {}): {why}", op.invoke.index),
                        op.indices(),
                        op.txn_id(),
                    ),
                }
            }
            _ => {}
        }
    }

    let final_balances = check_final_state(&mut findings, final_state, &accounts, total_expected);

    match &final_state.decisions {
        None => findings.add(
            Valid::Unknown,
            "decisions-unknown",
            "the coordinator's decisions could not be read: balances against committed transfers \
             not checked"
                .to_string(),
            Vec::new(),
            None,
        ),
        Some(decisions) => {
            check_against_decisions(&mut findings, &transfers, decisions, model, &final_balances)
        }
    }

    let about = format!(
        "{} transfers ({} ok, {} fail, {} info), {} reads ok, {} accounts",
        findings.figure_value("transfers"),
        findings.figure_value("transfers-ok"),
        findings.figure_value("transfers-fail"),
        findings.figure_value("transfers-info"),
        findings.figure_value("reads-ok"),
        model.accounts.len(),
    );
    findings.finish(CHECKER, &about)
}

/// A read's value: account → balance.
fn balances_of_read(value: &Value) -> Result<BTreeMap<String, i64>, String> {
    let map = value
        .as_object()
        .ok_or_else(|| format!("value is not a map: {value}"))?;
    map.iter()
        .map(|(account, balance)| {
            balance
                .as_i64()
                .map(|b| (account.clone(), b))
                .ok_or_else(|| format!("balance of {account} is not an integer: {balance}"))
        })
        .collect()
}

/// A transfer's accounts and amount; `None` for one that never had a txn id and so never
/// reached the coordinator (unless it claims `ok`, which is malformed).
fn parse_transfer<'a>(
    op: &Paired<'a>,
    accounts: &BTreeSet<&str>,
) -> Result<Option<Transfer<'a>>, String> {
    let Some(txn_id) = op.txn_id() else {
        return if op.outcome() == OpType::Ok {
            Err("ok without a txn id".to_string())
        } else {
            Ok(None)
        };
    };
    let value = if op.invoke.value.is_null() {
        op.completion.map_or(&Value::Null, |c| &c.value)
    } else {
        &op.invoke.value
    };
    let account = |field: &str| -> Result<String, String> {
        let name = value
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`{field}` missing or not a string in {value}"))?;
        if accounts.contains(name) {
            Ok(name.to_string())
        } else {
            Err(format!("`{field}` account {name} is not in the model"))
        }
    };
    let from = account("from")?;
    let to = account("to")?;
    let amount = value
        .get("amount")
        .and_then(Value::as_i64)
        .ok_or_else(|| format!("`amount` missing or not an integer in {value}"))?;
    Ok(Some(Transfer {
        op: *op,
        txn_id,
        from,
        to,
        amount,
    }))
}

/// A set of balances read at once (a read, or the final state), and how to name it.
struct Snapshot<'a> {
    what: &'a str,
    balances: &'a BTreeMap<String, i64>,
    ops: &'a [u64],
    txn_id: Option<&'a str>,
}

/// The per-snapshot properties, shared by reads and the final state: every account of
/// `expected_present` is there, no account outside `accounts`, no negative balance, and (if
/// `total_expected` is given) the total.
fn check_snapshot(
    findings: &mut Findings,
    snapshot: &Snapshot<'_>,
    accounts: &BTreeSet<&str>,
    expected_present: &BTreeSet<&str>,
    total_expected: Option<i64>,
) {
    let Snapshot {
        what,
        balances,
        ops,
        txn_id,
    } = *snapshot;
    for (account, balance) in balances {
        if !accounts.contains(account.as_str()) {
            findings.add(
                Valid::False,
                "unexpected-key",
                format!("{what}: account {account} (balance {balance}) is not in the model"),
                ops.to_vec(),
                txn_id,
            );
        }
        if *balance < 0 {
            findings.add(
                Valid::False,
                "negative",
                format!("{what}: account {account} has balance {balance}"),
                ops.to_vec(),
                txn_id,
            );
        }
    }
    let missing: Vec<&str> = expected_present
        .iter()
        .copied()
        .filter(|a| !balances.contains_key(*a))
        .collect();
    if !missing.is_empty() {
        findings.add(
            Valid::False,
            "missing-key",
            format!("{what}: accounts missing: {}", missing.join(", ")),
            ops.to_vec(),
            txn_id,
        );
    }
    if let Some(expected) = total_expected {
        let total: i128 = balances.values().map(|b| i128::from(*b)).sum();
        if total != i128::from(expected) {
            findings.add(
                Valid::False,
                "wrong-total",
                format!("{what}: balances sum to {total}, expected {expected}"),
                ops.to_vec(),
                txn_id,
            );
        }
    }
}

/// Checks the final state; returns the balances read (of reachable participants only).
fn check_final_state(
    findings: &mut Findings,
    final_state: &FinalState,
    accounts: &BTreeSet<&str>,
    total_expected: Option<i64>,
) -> BTreeMap<String, i64> {
    let model_participants: BTreeSet<&str> = accounts
        .iter()
        .map(|a| a.split_once('/').map_or(*a, |(p, _)| p))
        .collect();
    let mut balances = BTreeMap::new();
    let mut unread: Vec<&str> = Vec::new();
    for participant in &model_participants {
        match final_state.participants.get(*participant) {
            Some(state) if state.reachable => {}
            _ => unread.push(participant),
        }
    }
    for (participant, state) in &final_state.participants {
        if !state.reachable {
            continue;
        }
        for (key, value) in &state.data {
            let Some(name) = key.strip_prefix(ACCOUNT_KEY_PREFIX) else {
                continue;
            };
            let account = format!("{participant}/{name}");
            match value.as_i64() {
                Some(balance) => {
                    balances.insert(account, balance);
                }
                None => findings.add(
                    Valid::Unknown,
                    "malformed-op",
                    format!("final state: {account} holds {value}, not an integer"),
                    Vec::new(),
                    None,
                ),
            }
        }
    }
    for participant in &unread {
        findings.add(
            Valid::Unknown,
            "unreachable",
            format!("final state: participant {participant} was not read; total unknown"),
            Vec::new(),
            None,
        );
    }
    // Accounts whose participant was read must be there; the total only when all were read.
    let expected_present: BTreeSet<&str> = accounts
        .iter()
        .copied()
        .filter(|a| !unread.contains(&a.split_once('/').map_or(*a, |(p, _)| p)))
        .collect();
    let total = if unread.is_empty() {
        total_expected
    } else {
        None
    };
    let snapshot = Snapshot {
        what: "final state",
        balances: &balances,
        ops: &[],
        txn_id: None,
    };
    check_snapshot(findings, &snapshot, accounts, &expected_present, total);
    findings.figure(
        "final-accounts-read",
        u64::try_from(balances.len()).unwrap_or(u64::MAX),
    );
    balances
}

fn check_against_decisions(
    findings: &mut Findings,
    transfers: &[Transfer<'_>],
    decisions: &BTreeMap<String, Decision>,
    model: &BankModel,
    final_balances: &BTreeMap<String, i64>,
) {
    let mut expected: BTreeMap<&str, i128> = model
        .accounts
        .iter()
        .map(|a| (a.as_str(), i128::from(model.initial_balance)))
        .collect();
    for transfer in transfers {
        let decision = decisions.get(transfer.txn_id).copied();
        match decision {
            Some(Decision::Commit) => {
                findings.figure("transfers-decided-commit", 1);
                if let Some(b) = expected.get_mut(transfer.from.as_str()) {
                    *b -= i128::from(transfer.amount);
                }
                if let Some(b) = expected.get_mut(transfer.to.as_str()) {
                    *b += i128::from(transfer.amount);
                }
            }
            Some(Decision::Abort) => findings.figure("transfers-decided-abort", 1),
            None => findings.figure("transfers-undecided", 1),
        }
        let shown = match decision {
            Some(Decision::Commit) => "Commit",
            Some(Decision::Abort) => "Abort",
            None => "missing",
        };
        let what = format!(
            "transfer {} → {} of {} (index {})",
            transfer.from,
            transfer.to,
            transfer.amount,
            transfer.op.index()
        );
        match (transfer.op.outcome(), decision) {
            (OpType::Ok, Some(Decision::Abort) | None) => findings.add(
                Valid::False,
                "lost-commit",
                format!("{what}: the client was told ok but the decision is {shown}"),
                transfer.op.indices(),
                Some(transfer.txn_id),
            ),
            (OpType::Fail, Some(Decision::Commit)) => findings.add(
                Valid::False,
                "fail-but-committed",
                format!("{what}: the client was told fail but the decision is Commit"),
                transfer.op.indices(),
                Some(transfer.txn_id),
            ),
            _ => {}
        }
    }
    for (account, want) in &expected {
        if let Some(got) = final_balances.get(*account)
            && i128::from(*got) != *want
        {
            findings.add(
                Valid::False,
                "balance-mismatch",
                format!(
                    "final state: {account} holds {got}, but the committed transfers leave {want} \
                     (off by {})",
                    i128::from(*got) - want
                ),
                Vec::new(),
                None,
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::history::ParticipantState;
    use crate::history::tests_support::{OpsBuilder, kinds};
    use serde_json::json;

    fn model() -> BankModel {
        BankModel {
            accounts: vec!["p1/a".into(), "p1/b".into(), "p2/c".into()],
            initial_balance: 10,
        }
    }

    fn participant(balances: &[(&str, i64)]) -> ParticipantState {
        ParticipantState {
            reachable: true,
            data: balances
                .iter()
                .map(|(k, v)| (format!("acct/{k}"), json!(v)))
                .collect(),
            in_doubt: Vec::new(),
        }
    }

    fn final_state(
        p1: &[(&str, i64)],
        p2: &[(&str, i64)],
        decisions: &[(&str, Decision)],
    ) -> FinalState {
        FinalState {
            participants: [
                ("p1".to_string(), participant(p1)),
                ("p2".to_string(), participant(p2)),
            ]
            .into(),
            decisions: Some(decisions.iter().map(|(t, d)| (t.to_string(), *d)).collect()),
            unfinished: Vec::new(),
        }
    }

    fn transfer(from: &str, to: &str, amount: i64) -> Value {
        json!({"from": from, "to": to, "amount": amount})
    }

    /// A history with one committed transfer (t1: a → c, 3), one failed (t2), one unknown that
    /// did commit (t3: b → a, 1), and a read that saw t1 only.
    fn good_history() -> Vec<Op> {
        let mut h = OpsBuilder::default();
        h.call(
            0,
            "transfer",
            transfer("p1/a", "p2/c", 3),
            Some("t1"),
            OpType::Ok,
            None,
        );
        h.call(
            1,
            "transfer",
            transfer("p1/b", "p2/c", 4),
            Some("t2"),
            OpType::Fail,
            None,
        );
        h.call(
            2,
            "transfer",
            transfer("p1/b", "p1/a", 1),
            Some("t3"),
            OpType::Info,
            None,
        );
        h.call(
            0,
            "read",
            Value::Null,
            None,
            OpType::Ok,
            Some(json!({"p1/a": 7, "p1/b": 10, "p2/c": 13})),
        );
        h.ops
    }

    fn good_final() -> FinalState {
        final_state(
            &[("a", 8), ("b", 9)],
            &[("c", 13)],
            &[
                ("t1", Decision::Commit),
                ("t2", Decision::Abort),
                ("t3", Decision::Commit),
            ],
        )
    }

    #[test]
    fn a_correct_history_passes() {
        let result = check(&good_history(), &good_final(), &model());
        assert_eq!(result.valid, Valid::True, "{result:#?}");
        assert!(result.anomalies.is_empty());
        assert_eq!(result.counts["transfers-ok"], 1);
        assert_eq!(result.counts["transfers-fail"], 1);
        assert_eq!(result.counts["transfers-info"], 1);
        assert_eq!(result.counts["reads-ok"], 1);
        assert_eq!(result.counts["transfers-decided-commit"], 2);
    }

    #[test]
    fn a_read_with_a_wrong_total_is_caught() {
        let mut h = OpsBuilder::default();
        h.call(
            0,
            "read",
            Value::Null,
            None,
            OpType::Ok,
            Some(json!({"p1/a": 7, "p1/b": 10, "p2/c": 10})),
        );
        let fs = final_state(&[("a", 10), ("b", 10)], &[("c", 10)], &[]);
        let result = check(&h.ops, &fs, &model());
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["wrong-total"]);
        assert_eq!(result.anomalies[0].ops, vec![0, 1]);
    }

    #[test]
    fn negative_missing_and_unexpected_accounts_in_a_read_are_caught() {
        let mut h = OpsBuilder::default();
        // Sums to 30, but a is negative, c is missing and p2/z is not in the model.
        h.call(
            0,
            "read",
            Value::Null,
            None,
            OpType::Ok,
            Some(json!({"p1/a": -1, "p1/b": 21, "p2/z": 10})),
        );
        let fs = final_state(&[("a", 10), ("b", 10)], &[("c", 10)], &[]);
        let result = check(&h.ops, &fs, &model());
        assert_eq!(result.valid, Valid::False);
        assert_eq!(
            kinds(&result),
            vec!["missing-key", "negative", "unexpected-key"]
        );
    }

    #[test]
    fn failed_and_unknown_reads_are_not_judged() {
        let mut h = OpsBuilder::default();
        h.call(
            0,
            "read",
            Value::Null,
            None,
            OpType::Fail,
            Some(json!({"p1/a": -100})),
        );
        h.call(1, "read", Value::Null, None, OpType::Info, None);
        let fs = final_state(&[("a", 10), ("b", 10)], &[("c", 10)], &[]);
        let result = check(&h.ops, &fs, &model());
        assert_eq!(result.valid, Valid::True, "{result:#?}");
        assert_eq!(result.counts["reads-fail"], 1);
        assert_eq!(result.counts["reads-info"], 1);
    }

    #[test]
    fn the_final_state_is_checked_like_a_read() {
        let mut fs = final_state(&[("a", 10), ("b", -2)], &[("c", 10), ("x", 0)], &[]);
        fs.participants.get_mut("p2").unwrap().data.remove("acct/c");
        let result = check(&[], &fs, &model());
        assert_eq!(result.valid, Valid::False);
        assert_eq!(
            kinds(&result),
            vec![
                "balance-mismatch",
                "missing-key",
                "negative",
                "unexpected-key",
                "wrong-total"
            ]
        );
    }

    #[test]
    fn an_unreachable_participant_makes_the_final_total_unknown_but_reads_are_still_checked() {
        let mut fs = good_final();
        fs.participants.get_mut("p2").unwrap().reachable = false;
        let result = check(&good_history(), &fs, &model());
        assert_eq!(result.valid, Valid::Unknown, "{result:#?}");
        assert_eq!(kinds(&result), vec!["unreachable"]);

        // A bad read still makes it false.
        let mut h = good_history();
        h[7].value = json!({"p1/a": 7, "p1/b": 10, "p2/c": 14});
        let result = check(&h, &fs, &model());
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["unreachable", "wrong-total"]);
    }

    #[test]
    fn a_participant_missing_from_the_final_state_counts_as_unreachable() {
        let mut fs = good_final();
        fs.participants.remove("p2");
        let result = check(&good_history(), &fs, &model());
        assert_eq!(result.valid, Valid::Unknown);
        assert_eq!(kinds(&result), vec!["unreachable"]);
    }

    #[test]
    fn a_duplicate_apply_shows_as_a_balance_mismatch() {
        // t1 (a → c, 3) applied twice at c only: c has 16 instead of 13.
        let fs = final_state(
            &[("a", 8), ("b", 9)],
            &[("c", 16)],
            &[
                ("t1", Decision::Commit),
                ("t2", Decision::Abort),
                ("t3", Decision::Commit),
            ],
        );
        let result = check(&good_history(), &fs, &model());
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["balance-mismatch", "wrong-total"]);
        let mismatch = result
            .anomalies
            .iter()
            .find(|a| a.kind == "balance-mismatch")
            .unwrap();
        assert!(
            mismatch.detail.contains("p2/c holds 16"),
            "{}",
            mismatch.detail
        );
    }

    #[test]
    fn an_aborted_transfer_applied_on_both_sides_keeps_the_total_but_is_a_balance_mismatch() {
        // t2 (b → c, 4) was aborted but applied at both participants: total intact.
        let fs = final_state(
            &[("a", 8), ("b", 5)],
            &[("c", 17)],
            &[
                ("t1", Decision::Commit),
                ("t2", Decision::Abort),
                ("t3", Decision::Commit),
            ],
        );
        let result = check(&good_history(), &fs, &model());
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["balance-mismatch", "balance-mismatch"]);
    }

    #[test]
    fn an_undecided_transfer_must_not_be_applied() {
        // t3 has no decision: it never happened, so a must stay at 7 and b at 10.
        let fs = final_state(
            &[("a", 8), ("b", 9)],
            &[("c", 13)],
            &[("t1", Decision::Commit)],
        );
        let result = check(&good_history(), &fs, &model());
        assert_eq!(result.valid, Valid::False);
        assert_eq!(kinds(&result), vec!["balance-mismatch", "balance-mismatch"]);
        assert_eq!(result.counts["transfers-undecided"], 2);
    }

    #[test]
    fn ok_without_commit_is_a_lost_commit_and_fail_with_commit_is_caught() {
        let fs = final_state(
            &[("a", 6), ("b", 5)],
            &[("c", 19)],
            &[
                ("t1", Decision::Abort),
                ("t2", Decision::Commit),
                ("t3", Decision::Commit),
            ],
        );
        let mut h = good_history();
        h.truncate(6); // drop the read
        let result = check(&h, &fs, &model());
        assert_eq!(result.valid, Valid::False, "{result:#?}");
        assert_eq!(
            kinds(&result),
            vec![
                "balance-mismatch",
                "balance-mismatch",
                "fail-but-committed",
                "lost-commit"
            ]
        );
        let lost = result
            .anomalies
            .iter()
            .find(|a| a.kind == "lost-commit")
            .unwrap();
        assert_eq!(lost.txn_id.as_deref(), Some("t1"));

        // A missing decision for an ok transfer is lost too.
        let fs = final_state(&[("a", 10), ("b", 10)], &[("c", 10)], &[]);
        let result = check(&h, &fs, &model());
        assert_eq!(kinds(&result), vec!["lost-commit"]);
    }

    #[test]
    fn without_decisions_the_verdict_is_at_best_unknown() {
        let mut fs = good_final();
        fs.decisions = None;
        let result = check(&good_history(), &fs, &model());
        assert_eq!(result.valid, Valid::Unknown);
        assert_eq!(kinds(&result), vec!["decisions-unknown"]);
    }

    #[test]
    fn malformed_values_make_the_verdict_unknown_without_panicking() {
        let mut h = OpsBuilder::default();
        h.call(
            0,
            "read",
            Value::Null,
            None,
            OpType::Ok,
            Some(json!({"p1/a": "ten"})),
        );
        h.call(
            1,
            "read",
            Value::Null,
            None,
            OpType::Ok,
            Some(json!([1, 2])),
        );
        h.call(
            2,
            "transfer",
            json!({"from": "p1/a", "to": "nowhere/q", "amount": 1}),
            Some("t9"),
            OpType::Ok,
            None,
        );
        h.call(
            3,
            "transfer",
            json!({"from": "p1/a", "to": "p1/b"}),
            Some("t8"),
            OpType::Info,
            None,
        );
        h.call(
            4,
            "transfer",
            transfer("p1/a", "p1/b", 1),
            None,
            OpType::Ok,
            None,
        );
        // A completion with no invocation.
        h.ops.push(Op {
            index: 99,
            time: 0,
            process: 42,
            kind: OpType::Ok,
            f: "read".into(),
            value: Value::Null,
            error: None,
            txn_id: None,
            call_notes: Vec::new(),
        });
        let fs = final_state(&[("a", 10), ("b", 10)], &[("c", 10)], &[]);
        let result = check(&h.ops, &fs, &model());
        assert_eq!(result.valid, Valid::Unknown, "{result:#?}");
        assert_eq!(result.counts["malformed-op"], 6);
    }

    #[test]
    fn a_transfer_without_a_txn_id_that_failed_never_happened() {
        let mut h = OpsBuilder::default();
        h.call(
            0,
            "transfer",
            transfer("p1/a", "p1/b", 1),
            None,
            OpType::Fail,
            None,
        );
        let fs = final_state(&[("a", 10), ("b", 10)], &[("c", 10)], &[]);
        let result = check(&h.ops, &fs, &model());
        assert_eq!(result.valid, Valid::True, "{result:#?}");
    }
}
