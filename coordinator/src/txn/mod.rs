//! Two-phase commit at the coordinator.
//!
//! - [`driver`]: the pure 2PC state machine (`step(now, input) -> actions`).
//! - [`runtime`]: runs the driver on the leader — sends Prepare and phase 2, proposes decisions
//!   and acknowledgements to Raft (batched), answers callers, follows leadership.
//! - [`failpoints`]: crash points for tests (feature `failpoints`).

pub mod driver;
pub mod failpoints;
pub mod runtime;
