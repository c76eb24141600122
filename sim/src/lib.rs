//! `ratify-sim`: a deterministic simulation of Ratify's real code. Coordinators (the same
//! node, openraft, driver, state machine and gRPC services as `ratify coordinator`, over the
//! same storage code on an in-memory disk), participants (the SDK's runtime and store on an
//! in-memory disk, serving the harness's KV service) and a client running the harness's
//! workloads, all on turmoil's simulated network and clock in one thread. Faults (partitions,
//! one-way partitions, crashes with power loss and restarts, held and lossy links, latency) come
//! from one seed; the harness's checkers judge the history. Every run prints its seed, and
//! `RATIFY_SIM_SEED=<seed>` replays it. See docs/verification.md.

#![deny(missing_docs)]

pub mod faults;
pub mod net;
pub mod run;
pub mod sweep;

pub use run::{SimConfig, SimResult, run};

/// The environment variable with a log filter (`RATIFY_SIM_LOG=info`); no logs without it.
pub const LOG_ENV: &str = "RATIFY_SIM_LOG";

/// Log to stderr if [`LOG_ENV`] asks for it (once per process).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var(LOG_ENV) {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
}
