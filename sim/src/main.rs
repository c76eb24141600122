//! `ratify-sim`: run the deterministic simulation from the command line.
//!
//! - `ratify-sim sweep --seeds 100000 [--from 0] [--jobs N] [--quiet]`: many seeds (the
//!   documented long sweep); prints each run's line (`--quiet`: only runs that are not valid)
//!   and a summary; exits 1 if any run is not valid.
//! - `ratify-sim run --seed S [--times K] [--history DIR]`: one seed, K times, printing each
//!   run's line and whether the runs were identical.
//! - Both take `--workload` (instead of the seed's) and, in a build with the `planted-bugs`
//!   feature, `--planted-bug` (a sweep with a bug stops at the first seed that finds it and
//!   exits 0 only if one did).

use clap::{Args as ClapArgs, Parser, Subcommand};
use ratify_check::Valid;
use ratify_jepsen::workload::{ClientMode, Kind};
use ratify_proto::planted::Bug;
use ratify_sim::sweep;
use ratify_sim::{SimConfig, run};

#[derive(Parser)]
#[command(name = "ratify-sim", about = "Ratify's deterministic simulation")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(ClapArgs, Clone)]
struct Variant {
    /// The workload instead of the seed's (bank, atomic-marker, list-append).
    #[arg(long)]
    workload: Option<String>,
    /// The clients' mode instead of the seed's (careful, reckless, retrying).
    #[arg(long, value_enum)]
    client: Option<ClientMode>,
    /// Commits report no call counts (whatever the seed says).
    #[arg(long)]
    no_call_counts: bool,
    /// Switch on a planted bug (needs the `planted-bugs` feature): yes-without-sync,
    /// abort-after-yes, answer-before-apply, last-wins, non-idempotent-commit,
    /// errors-do-not-doom, recovery-without-locks, lost-work-read-only, calls-run-twice.
    #[arg(long)]
    planted_bug: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run many seeds.
    Sweep {
        /// How many seeds.
        #[arg(long, default_value_t = 500)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Threads (default: the machine's cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Print only the runs that are not valid (by default every run prints its line).
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        variant: Variant,
    },
    /// Run one seed.
    Run {
        /// The seed.
        #[arg(long)]
        seed: u64,
        /// Run it this many times (to check it replays exactly).
        #[arg(long, default_value_t = 1)]
        times: u32,
        /// Write each run's history (JSON lines) into this directory.
        #[arg(long)]
        history: Option<std::path::PathBuf>,
        #[command(flatten)]
        variant: Variant,
    },
}

fn fail(why: String) -> ! {
    eprintln!("{why}");
    std::process::exit(2);
}

/// The configuration of `seed` under `variant`.
fn configure(variant: &Variant) -> impl Fn(u64) -> SimConfig + Sync + use<> {
    let workload = variant.workload.as_deref().map(|name| match name {
        "bank" => Kind::Bank,
        "atomic-marker" => Kind::AtomicMarker,
        "list-append" => Kind::ListAppend,
        other => fail(format!(
            "--workload {other:?}: bank, atomic-marker or list-append"
        )),
    });
    let bug = variant.planted_bug.as_deref().map(|name| {
        let bug = Bug::from_name(name)
            .unwrap_or_else(|| fail(format!("--planted-bug {name:?}: no such planted bug")));
        if !cfg!(feature = "planted-bugs") {
            fail(
                "--planted-bug needs a build with the planted-bugs feature \
                 (cargo run -p ratify-sim --features planted-bugs -- ...)"
                    .to_owned(),
            );
        }
        bug
    });
    let client = variant.client;
    let no_call_counts = variant.no_call_counts;
    move |seed| {
        let mut cfg = SimConfig::for_seed(seed);
        if let Some(w) = workload {
            cfg.workload = w;
        }
        if let Some(c) = client {
            cfg.client = c;
        }
        if no_call_counts {
            cfg.call_counts = false;
        }
        cfg.planted_bug = bug;
        cfg
    }
}

fn main() {
    let args = Args::parse();
    let ok = match args.command {
        Command::Sweep {
            seeds,
            from,
            jobs,
            quiet,
            variant,
        } => {
            let jobs = jobs.unwrap_or_else(sweep::default_jobs);
            let hunting = variant.planted_bug.is_some();
            let summary = sweep::sweep(from, seeds, jobs, configure(&variant), !quiet, hunting);
            println!("{}", summary.line());
            if hunting {
                match summary.failures.iter().find(|r| r.valid == Valid::False) {
                    Some(r) => {
                        println!(
                            "planted bug found by seed {} ({} seeds run)",
                            r.seed, summary.runs
                        );
                        true
                    }
                    None => {
                        println!("planted bug NOT found in {} seeds", summary.runs);
                        false
                    }
                }
            } else {
                summary.failures.is_empty()
            }
        }
        Command::Run {
            seed,
            times,
            history,
            variant,
        } => {
            let cfg = configure(&variant)(seed);
            let mut fingerprints = Vec::new();
            let mut all_valid = true;
            for i in 0..times.max(1) {
                let r = run(&cfg);
                println!("{}", r.line());
                if let Some(dir) = &history {
                    let path = dir.join(format!("seed{seed}-run{i}.jsonl"));
                    let lines: Vec<String> = r
                        .history
                        .iter()
                        .filter_map(|op| serde_json::to_string(op).ok())
                        .collect();
                    match std::fs::write(&path, lines.join("\n") + "\n") {
                        Ok(()) => println!("history: {}", path.display()),
                        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
                    }
                }
                all_valid &= r.error.is_none() && r.valid == Valid::True;
                fingerprints.push((r.fingerprint, r.steps));
            }
            let same = fingerprints.windows(2).all(|w| w[0] == w[1]);
            if times > 1 {
                println!(
                    "{} runs of seed {seed}: {}",
                    fingerprints.len(),
                    if same { "identical" } else { "DIFFERENT" }
                );
            }
            all_valid && same
        }
    };
    std::process::exit(if ok { 0 } else { 1 });
}
