//! `ratify-jepsen`: Ratify's Jepsen-style fault-injection harness. Real coordinator and
//! participant processes on loopback, every network link through a fault-injecting proxy
//! ([`proxy`]), faults on a seeded schedule ([`nemesis`]), client workloads recording a
//! Jepsen/Elle-compatible history ([`workload`], [`recorder`]), then heal, final reads, the
//! checkers of `ratify-check` and a report (`ratify-report`). See `jepsen/README.md`.

#![deny(missing_docs)]

pub mod kv;
pub mod nemesis;
pub mod proxy;
pub mod reads;
pub mod recorder;
pub use ratify_devtools::rng;
pub mod run;
pub mod schedules;
pub mod system;
pub mod workload;
