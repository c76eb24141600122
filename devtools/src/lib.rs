//! Tooling for everything around Ratify's product crates (docs/architecture.md): the demo
//! (`ratify demo`), the integration tests, the benchmarks, the fault-injection harness and the
//! simulation share it. Nothing in the product (`ratify-coordinator`, `ratify-participant`,
//! `ratify-proto`) depends on it.
//!
//! - [`local_cluster`]: real coordinator and service processes on loopback (start, SIGKILL,
//!   SIGSTOP/SIGCONT, restart), for the quick start, tests and benchmarks.
//! - [`deployment`]: a 3-node cluster, bank branches and an initiator client, for end-to-end
//!   tests and the benchmark.
//! - [`demo`]: `ratify demo`'s workload, faults and end-of-run checks.
//! - [`bins`]: finding the workspace's binaries, test directories, node logs.
//! - [`rng`]: the seeded generator every workload draws from.
//! - [`wait`]: waiting on observable state with a deadline (never a sleep as synchronisation).

pub mod bins;
pub mod demo;
pub mod deployment;
pub mod local_cluster;
pub mod rng;
pub mod wait;

pub use bins::{bank_bin, dump_logs, helper_bin, ratify_bin, test_dir};
