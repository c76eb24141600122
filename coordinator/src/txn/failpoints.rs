//! Crash points at each protocol step, for tests and the fault-injection harness.
//!
//! Compiled in only with the cargo feature `failpoints`; armed with `RATIFY_FAILPOINTS` (see
//! [`ratify_proto::failpoint`]).

/// After every participant of a transaction answered Prepare, before the votes are used.
pub const AFTER_PREPARES_SENT: &str = "after_prepares_sent";
/// After a decision was handed to Raft, before it is applied.
pub const AFTER_DECISION_PROPOSED: &str = "after_decision_proposed";
/// After a decision was applied and the client answered, before any phase-2 message.
pub const AFTER_DECISION_APPLIED: &str = "after_decision_applied";
/// After the first participant acknowledged phase 2, before the others are done.
pub const MID_PHASE_TWO: &str = "mid_phase_two";

/// Every point, for `--help` texts and tests.
pub const ALL: &[&str] = &[
    AFTER_PREPARES_SENT,
    AFTER_DECISION_PROPOSED,
    AFTER_DECISION_APPLIED,
    MID_PHASE_TWO,
];

/// Crash here if `name` is armed (see [`ratify_proto::failpoint`]).
pub fn hit(name: &str) {
    ratify_proto::failpoint::hit(name);
}
