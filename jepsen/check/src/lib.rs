//! Histories and checkers for Ratify's fault-injection harness (`ratify-jepsen`) and its
//! deterministic simulation. Pure: a history and the final state in, verdicts out.
//!
//! - [`history`]: operations in Jepsen/Elle's JSON-lines shape, the nemesis timeline, the
//!   final state read after healing, and the coordinator's decisions.
//! - [`bank`], [`atomic`], [`indoubt`], [`elle`], [`calls`]: the checkers.

#![deny(missing_docs)]

pub mod atomic;
pub mod bank;
pub mod calls;
pub mod elle;
pub mod history;
pub mod indoubt;

pub use history::{
    Anomaly, CheckResult, Decision, FinalState, NemesisEvent, NemesisPhase, Op, OpType,
    ParticipantState, Valid,
};
