//! The exhaustive model check of the business-call contract (docs/protocol.md P10;
//! `ratify_model::calls`), and proof that it can fail: each planted bug yields a
//! counterexample.

use ratify_model::calls::{CallsBug, CallsModel};
use stateright::Checker;

mod support;
use support::check;

/// Exactly once, no YES after a failed call, every call that ran here is in, nothing heard OK
/// is left out, and (with call counts) every counted call is in: in every reachable state of a
/// reckless initiator's two calls with a repeat, a lost message and a participant crash, with
/// and without call counts. A commit of calls heard OK, and a refusal after a failed call, are
/// both reachable.
#[test]
fn the_call_contract_holds_exhaustively() {
    for model in CallsModel::ci() {
        let checker = check(model);
        assert!(checker.is_done(), "the state space was explored completely");
        checker.assert_properties();
    }
}

fn counterexample(bug: CallsBug, call_counts: bool, property: &'static str) {
    let model = CallsModel {
        bug: Some(bug),
        call_counts,
        ..CallsModel::ci().remove(0)
    };
    support::counterexample(&check(model), &format!("{bug:?}"), property);
}

/// Issue 14's hole: a failed call that dooms nothing lets the transaction commit without it.
#[test]
fn errors_that_do_not_doom_are_caught() {
    counterexample(
        CallsBug::ErrorsDoNotDoom,
        true,
        "no YES after a failed call",
    );
}

/// A repeated call id that runs the handler again stages its effect twice.
#[test]
fn calls_that_run_twice_are_caught() {
    counterexample(CallsBug::CallsRunTwice, true, "exactly once");
}

/// Without call counts, only the participant's own rule (P5: no record, NO) stops a commit
/// from leaving out work lost with a restart; answering READ_ONLY breaks it.
#[test]
fn lost_work_answered_read_only_is_caught() {
    counterexample(
        CallsBug::LostWorkReadOnly,
        false,
        "nothing heard OK is left out",
    );
}

/// Without call counts, a call still running at Prepare must make the vote NO; otherwise the
/// transaction commits without it.
#[test]
fn prepare_ignoring_running_calls_is_caught() {
    counterexample(
        CallsBug::NoRunningCheck,
        false,
        "every call that ran here is in",
    );
}
