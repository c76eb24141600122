//! The calls checker (docs/protocol.md P10): no transaction commits after one of its business
//! calls failed at a participant, nor after a retried call was answered differently from its
//! first attempt.
//!
//! The client notes what it saw on each completion ([`crate::Op::call_notes`]): a call a
//! participant answered with `ratify-doomed` (the transaction was doomed there, so it must
//! never commit), and a retry of a call (same call id) whose answer differed from the first
//! attempt's (the call ran twice, or the participant answered from something else). Either on
//! an `ok` completion is `committed-after-doomed-call` or `committed-after-retry-differs`
//! (`False`). On `fail` and `info` completions they are expected (a misbehaving client, a
//! crashed participant) and only counted.
//!
//! Effects are the data checkers' to judge (bank totals, markers, Elle); this one catches the
//! protocol breach itself, whatever the workload.

use crate::CheckResult;
use crate::history::{Findings, Op, OpType, Valid};

const CHECKER: &str = "calls";

/// Checks every completion's call notes.
pub fn check(history: &[Op]) -> CheckResult {
    let mut findings = Findings::default();
    for op in history.iter().filter(|op| op.kind != OpType::Invoke) {
        if op.call_notes.is_empty() {
            continue;
        }
        findings.figure("completions-with-notes", 1);
        if op.kind != OpType::Ok {
            continue;
        }
        for note in &op.call_notes {
            let kind = if note.starts_with("retry-differs") {
                "committed-after-retry-differs"
            } else {
                "committed-after-doomed-call"
            };
            findings.add(
                Valid::False,
                kind,
                format!("{} (index {}) committed, but {note}", op.f, op.index),
                vec![op.index],
                op.txn_id.as_deref(),
            );
        }
    }
    let about = format!(
        "{} completions with failed or differing calls",
        findings.figure_value("completions-with-notes")
    );
    findings.finish(CHECKER, &about)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::history::tests_support::kinds;

    fn op(index: u64, kind: OpType, notes: &[&str]) -> Op {
        Op {
            index,
            time: index,
            process: 0,
            kind,
            f: "transfer".into(),
            value: serde_json::Value::Null,
            error: None,
            txn_id: Some(format!("t{index}")),
            call_notes: notes.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    /// A commit after a call that doomed the transaction, or after a retry answered
    /// differently, is a violation; the same notes on aborted or unknown operations are not.
    #[test]
    fn only_committed_operations_with_notes_are_violations() {
        let fine = [
            op(0, OpType::Ok, &[]),
            op(1, OpType::Fail, &["doomed: p1 call 2 failed"]),
            op(2, OpType::Info, &["retry-differs: p2 call 1"]),
        ];
        assert_eq!(check(&fine).valid, Valid::True);
        let bad = [
            op(3, OpType::Ok, &["doomed: p1 call 2 failed"]),
            op(4, OpType::Ok, &["retry-differs: p2 call 1"]),
        ];
        let r = check(&bad);
        assert_eq!(r.valid, Valid::False);
        assert_eq!(
            kinds(&r),
            vec![
                "committed-after-doomed-call",
                "committed-after-retry-differs"
            ]
        );
    }
}
