//! Many seeds, on as many threads as asked (each run is one thread's simulation; runs share
//! nothing).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::run::{SimConfig, SimResult, run};

/// The environment variable naming one seed to replay.
pub const SEED_ENV: &str = "RATIFY_SIM_SEED";
/// The environment variable with the number of seeds a sweep runs.
pub const SEEDS_ENV: &str = "RATIFY_SIM_SEEDS";
/// The environment variable with the first seed of a sweep.
pub const FROM_ENV: &str = "RATIFY_SIM_FROM";

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub runs: u64,
    /// Runs that were not valid (invalid, unknown or failed), in seed order.
    pub failures: Vec<SimResult>,
    /// Operations ok / fail / info over all runs.
    pub counts: (u64, u64, u64),
    /// Faults injected over all runs.
    pub faults: u64,
    /// Simulated time over all runs.
    pub sim_time: Duration,
    /// Real time of the sweep.
    pub wall: Duration,
}

impl Summary {
    /// Seeds per minute of real time.
    pub fn seeds_per_minute(&self) -> f64 {
        self.runs as f64 * 60.0 / self.wall.as_secs_f64().max(1e-9)
    }

    /// One line.
    pub fn line(&self) -> String {
        format!(
            "ratify-sim sweep: {} seeds, {} not valid; ok={} fail={} info={} faults={}; simulated {:.0}s in {:.1}s real ({:.0} seeds/min)",
            self.runs,
            self.failures.len(),
            self.counts.0,
            self.counts.1,
            self.counts.2,
            self.faults,
            self.sim_time.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.seeds_per_minute(),
        )
    }
}

/// Run one seed, turning a panic (a bug in the code under test, or in the simulation) into a
/// failed run that still names its seed.
pub fn run_catching(cfg: &SimConfig) -> SimResult {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cfg))) {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned());
            SimResult::failed(cfg, format!("panicked: {why}"))
        }
    }
}

/// Run `count` seeds from `from` on `jobs` threads, configured by `config`, printing each
/// run's line (`verbose`) or only failures. With `stop_at_first_invalid`, stops handing out
/// seeds once a run is invalid (a checker found a violation).
pub fn sweep(
    from: u64,
    count: u64,
    jobs: usize,
    config: impl Fn(u64) -> SimConfig + Sync,
    verbose: bool,
    stop_at_first_invalid: bool,
) -> Summary {
    let began = Instant::now();
    let next = AtomicU64::new(from);
    let end = from.saturating_add(count);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        return;
                    }
                    let r = run_catching(&config(seed));
                    let ok = r.error.is_none() && r.valid == ratify_check::Valid::True;
                    if verbose || !ok {
                        println!("{}", r.line());
                    }
                    let mut sum = summary.lock().unwrap_or_else(|p| p.into_inner());
                    sum.runs += 1;
                    sum.counts.0 += r.counts.0;
                    sum.counts.1 += r.counts.1;
                    sum.counts.2 += r.counts.2;
                    sum.faults += r.faults.len() as u64;
                    sum.sim_time += r.sim_time;
                    if !ok {
                        if stop_at_first_invalid
                            && r.error.is_none()
                            && r.valid == ratify_check::Valid::False
                        {
                            next.store(end, Ordering::SeqCst);
                        }
                        sum.failures.push(r);
                    }
                }
            });
        }
    });
    let mut sum = summary.into_inner().unwrap_or_else(|p| p.into_inner());
    sum.failures.sort_by_key(|r| r.seed);
    sum.wall = began.elapsed();
    sum
}

/// A number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Threads to use: the machine's cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
