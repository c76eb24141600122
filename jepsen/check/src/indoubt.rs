//! The in-doubt checker: after the final heal every prepared transaction was resolved.
//!
//! A participant still holding prepared (in-doubt) transactions after the heal means recovery
//! did not finish in the time given: liveness was not reached, which is `Unknown`, never
//! `False` (the safety checkers judge what was applied). One anomaly `in-doubt` per held
//! transaction. An unreachable participant (`unreachable`) or a final state with no participant
//! at all (`no-participants`) is `Unknown` too, and so is a decided transaction whose phase 2 the
//! leader had not finished (`phase2-unfinished`: nobody is in doubt, but the coordinator has
//! not completed its work).

use crate::CheckResult;
use crate::history::{FinalState, Findings, Valid};

const CHECKER: &str = "in-doubt";

/// Checks that no participant holds a transaction in doubt after the heal.
pub fn check(final_state: &FinalState) -> CheckResult {
    let mut findings = Findings::default();
    if final_state.participants.is_empty() {
        findings.add(
            Valid::Unknown,
            "no-participants",
            "the final state names no participant".to_string(),
            Vec::new(),
            None,
        );
    }
    for (participant, state) in &final_state.participants {
        findings.figure("participants", 1);
        if !state.reachable {
            findings.add(
                Valid::Unknown,
                "unreachable",
                format!("participant {participant} was not read after the heal"),
                Vec::new(),
                None,
            );
            continue;
        }
        if !state.in_doubt.is_empty() {
            findings.figure("participants-in-doubt", 1);
        }
        for txn_id in &state.in_doubt {
            findings.add(
                Valid::Unknown,
                "in-doubt",
                format!("participant {participant} still holds {txn_id} prepared after the heal"),
                Vec::new(),
                Some(txn_id),
            );
        }
    }
    for line in &final_state.unfinished {
        findings.figure("phase2-unfinished", 1);
        findings.add(
            Valid::Unknown,
            "phase2-unfinished",
            format!("the leader has not finished phase 2 after the heal: {line}"),
            Vec::new(),
            line.split(':').next().map(str::to_owned).as_deref(),
        );
    }
    let about = format!(
        "{} participants, {} with transactions in doubt",
        findings.figure_value("participants"),
        findings.figure_value("participants-in-doubt"),
    );
    findings.finish(CHECKER, &about)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::history::ParticipantState;
    use crate::history::tests_support::kinds;

    fn state(reachable: bool, in_doubt: &[&str]) -> ParticipantState {
        ParticipantState {
            reachable,
            data: Default::default(),
            in_doubt: in_doubt.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn final_state(participants: Vec<(&str, ParticipantState)>) -> FinalState {
        FinalState {
            participants: participants
                .into_iter()
                .map(|(p, s)| (p.to_string(), s))
                .collect(),
            decisions: None,
            unfinished: Vec::new(),
        }
    }

    #[test]
    fn all_resolved_is_valid() {
        let result = check(&final_state(vec![
            ("p1", state(true, &[])),
            ("p2", state(true, &[])),
        ]));
        assert_eq!(result.valid, Valid::True, "{result:#?}");
        assert!(result.anomalies.is_empty());
        assert_eq!(result.counts["participants"], 2);
    }

    #[test]
    fn a_transaction_in_doubt_is_unknown_and_named() {
        let result = check(&final_state(vec![
            ("p1", state(true, &["t1", "t2"])),
            ("p2", state(true, &[])),
        ]));
        assert_eq!(result.valid, Valid::Unknown);
        assert_eq!(kinds(&result), vec!["in-doubt", "in-doubt"]);
        assert_eq!(result.anomalies[1].txn_id.as_deref(), Some("t2"));
        assert_eq!(result.counts["participants-in-doubt"], 1);
        assert_eq!(result.counts["in-doubt"], 2);
    }

    #[test]
    fn an_unreachable_participant_is_unknown() {
        let result = check(&final_state(vec![
            ("p1", state(false, &["t9"])),
            ("p2", state(true, &[])),
        ]));
        assert_eq!(result.valid, Valid::Unknown);
        assert_eq!(kinds(&result), vec!["unreachable"]);
    }

    #[test]
    fn unfinished_phase_two_is_unknown_and_named() {
        let mut fs = final_state(vec![("p1", state(true, &[]))]);
        fs.unfinished = vec!["t7: Commit, waiting for [p1]".into()];
        let result = check(&fs);
        assert_eq!(result.valid, Valid::Unknown);
        assert_eq!(kinds(&result), vec!["phase2-unfinished"]);
        assert_eq!(result.anomalies[0].txn_id.as_deref(), Some("t7"));
    }

    #[test]
    fn nothing_read_is_unknown() {
        let result = check(&FinalState::default());
        assert_eq!(result.valid, Valid::Unknown);
        assert_eq!(kinds(&result), vec!["no-participants"]);
    }

    #[test]
    fn many_transactions_in_doubt_are_listed_up_to_the_cap_and_all_counted() {
        let txns: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let held: Vec<&str> = txns.iter().map(String::as_str).collect();
        let result = check(&final_state(vec![("p1", state(true, &held))]));
        assert_eq!(
            result.anomalies.len() as u64,
            crate::history::ANOMALIES_PER_KIND_MAX
        );
        assert_eq!(result.counts["in-doubt"], 20);
        assert!(result.summary.contains("20 in-doubt"), "{}", result.summary);
    }
}
