//! The deterministic simulation's guarantees, checked on the real coordinator and participant
//! code (see docs/verification.md):
//! - `sweep`: across a block of fault schedules (partitions, crashes with power loss — some
//!   armed to fire right after a call or while a transaction is prepared — lossy, held and
//!   slow links), the bank, atomic-marker and list-append histories of careful, reckless and
//!   retrying clients are valid by the harness's checkers, and nothing is left in doubt after
//!   healing. (CI's 500-seed sweep is its own
//!   step, `ratify-sim sweep --seeds 500`.)
//! - `replay`: `RATIFY_SIM_SEED=<seed>` runs that seed (as a sweep would print it).
//! - `a_seed_replays_exactly_in_a_fresh_process`: the same seed in two processes gives the same
//!   history and final state, which is what makes a printed seed a reproduction.
//! - `*_is_found` (feature `planted-bugs`): the simulation finds each of its planted protocol
//!   bugs (`abort-after-yes`, `recovery-without-locks`, `lost-work-read-only`) within CI's
//!   seed budget, and the seed that found it finds it again in a new process.
//!
//! `RATIFY_SIM_SEEDS=N RATIFY_SIM_FROM=S` sizes the `sweep` test.

use std::process::Command;

use ratify_check::Valid;
use ratify_sim::sweep::{self, FROM_ENV, SEED_ENV, SEEDS_ENV};
use ratify_sim::{SimConfig, run};

/// Seeds the `sweep` test runs, from [`TEST_FROM`] (other seeds than CI's main sweep).
const TEST_SEEDS: u64 = 32;
/// The first seed of the `sweep` test.
const TEST_FROM: u64 = 100_000;
/// The planted bug must be found within CI's seed budget.
#[cfg(feature = "planted-bugs")]
const CI_SEEDS: u64 = 500;

#[test]
fn sweep() {
    let count = sweep::env_u64(SEEDS_ENV, TEST_SEEDS);
    let from = sweep::env_u64(FROM_ENV, TEST_FROM);
    let summary = sweep::sweep(
        from,
        count,
        sweep::default_jobs(),
        SimConfig::for_seed,
        true,
        false,
    );
    println!("{}", summary.line());
    assert!(
        summary.failures.is_empty(),
        "{} of {} seeds not valid: {:?} (lines above; replay with {SEED_ENV}=<seed>)",
        summary.failures.len(),
        summary.runs,
        summary.failures.iter().map(|r| r.seed).collect::<Vec<_>>()
    );
}

#[test]
fn replay() {
    let seed = sweep::env_u64(SEED_ENV, 7);
    let r = run(&SimConfig::for_seed(seed));
    println!("{}", r.line());
    if let Ok(path) = std::env::var("RATIFY_SIM_HISTORY") {
        let lines: Vec<String> = r
            .history
            .iter()
            .map(|op| serde_json::to_string(op).expect("history records serialize"))
            .collect();
        std::fs::write(&path, lines.join("\n")).expect("RATIFY_SIM_HISTORY is writable");
        println!("history written to {path}");
    }
    assert!(
        r.error.is_none() && r.valid == Valid::True,
        "seed {seed} is not valid"
    );
}

/// `ratify-sim run --seed <seed> <extra>` in a new process: (its output, whether it exited 0).
fn run_in_new_process(seed: u64, extra: &[&str]) -> (String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_ratify-sim"))
        .args(["run", "--seed", &seed.to_string()])
        .args(extra)
        .output()
        .expect("the ratify-sim binary runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

fn fingerprint(line: &str) -> Option<&str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("fingerprint="))
}

#[test]
fn a_seed_replays_exactly_in_a_fresh_process() {
    for seed in [3, 10, 17] {
        let (a, a_ok) = run_in_new_process(seed, &[]);
        let (b, b_ok) = run_in_new_process(seed, &[]);
        print!("{a}{b}");
        assert!(a_ok && b_ok, "seed {seed} is not valid");
        assert!(fingerprint(&a).is_some(), "no fingerprint in {a:?}");
        assert_eq!(
            fingerprint(&a),
            fingerprint(&b),
            "seed {seed} ran differently in two processes"
        );
    }
}

/// One planted bug: the simulation finds it within CI's seed budget (`workload`: the seeds'
/// own rotation when `None`), and the seed that found it finds it again in a new process.
#[cfg(feature = "planted-bugs")]
fn planted_bug_is_found(
    bug: ratify_proto::planted::Bug,
    workload: Option<ratify_jepsen::workload::Kind>,
) {
    let summary = sweep::sweep(
        0,
        CI_SEEDS,
        sweep::default_jobs(),
        |seed| {
            let cfg = SimConfig::for_seed(seed);
            SimConfig {
                planted_bug: Some(bug),
                workload: workload.unwrap_or(cfg.workload),
                ..cfg
            }
        },
        false,
        true,
    );
    println!("{}", summary.line());
    let found = summary
        .failures
        .iter()
        .find(|r| r.error.is_none() && r.valid == Valid::False)
        .unwrap_or_else(|| panic!("{} was not found in {} seeds", bug.name(), summary.runs));
    println!(
        "{} found by seed {} ({} seeds run)",
        bug.name(),
        found.seed,
        summary.runs
    );
    // The printed seed is a reproduction: a new process finds the same violation.
    let cfg = SimConfig::for_seed(found.seed);
    let mut args = vec![
        "--workload".to_owned(),
        found.workload.to_owned(),
        "--client".to_owned(),
        found.client.name().to_owned(),
        "--planted-bug".to_owned(),
        bug.name().to_owned(),
    ];
    if !cfg.call_counts {
        args.push("--no-call-counts".to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (out, ok) = run_in_new_process(found.seed, &args);
    print!("{out}");
    assert!(
        !ok && out.contains("INVALID"),
        "seed {} did not reproduce",
        found.seed
    );
}

/// P1: a participant that aborts on its own after voting YES.
#[cfg(feature = "planted-bugs")]
#[test]
fn abort_after_yes_is_found() {
    planted_bug_is_found(
        ratify_proto::planted::Bug::AbortAfterYes,
        Some(ratify_jepsen::workload::Kind::AtomicMarker),
    );
}

/// P3/P9: recovery that does not re-lock a prepared transaction's keys (found by the harness's
/// CI schedule and the store's tests before; the simulation now crashes participants holding
/// prepared transactions and keeps them from the coordinators after the restart, while clients
/// reuse the keys).
#[cfg(feature = "planted-bugs")]
#[test]
fn recovery_without_locks_is_found() {
    planted_bug_is_found(ratify_proto::planted::Bug::RecoveryWithoutLocks, None);
}

/// P4/P5: a Prepare for work lost at a restart answered READ_ONLY (the simulation now crashes
/// participants right after they answer a call and restarts them before the Prepare arrives;
/// found on seeds whose clients report no call counts, which would otherwise catch it first).
#[cfg(feature = "planted-bugs")]
#[test]
fn lost_work_read_only_is_found() {
    planted_bug_is_found(ratify_proto::planted::Bug::LostWorkReadOnly, None);
}
