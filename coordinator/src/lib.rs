//! Ratify's coordinator: a Raft-replicated cluster that decides distributed transactions.
//!
//! # Layout
//! - [`config`]: a node's settings, validated once. [`limits`]: every bound, named.
//! - [`state`]: the replicated state machine's logic, pure and deterministic (first-wins
//!   decisions, phase-2 acknowledgements, compaction, the participant registry).
//! - [`txn`]: two-phase commit — the pure driver, its runtime on the leader, failpoints.
//! - [`raft`]: openraft over RocksDB — log store, state-machine store, snapshots, the tonic
//!   transport's client side.
//! - [`server`]: thin tonic adapters (client API behind the relay to the leader, Raft
//!   transport, admin API, health, reflection).
//! - [`node`]: storage + Raft + server, started together, stopped gracefully.
//! - [`metrics`]: Prometheus metrics on an HTTP port.
//! - [`admin_client`]: finds the leader and calls the admin API (used by the CLI).
//!
//! The `ratify` binary (`cli/`) parses flags, sets up tracing and calls these; docs/
//! architecture.md draws the crates and the path of a Commit through these modules.

#![deny(missing_docs)]

pub mod admin_client;
pub mod config;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod raft;
pub mod server;
pub mod state;
pub mod txn;
