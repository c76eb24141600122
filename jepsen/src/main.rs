//! `ratify-jepsen`: run fault-injection tests against real Ratify processes.
//!
//! - `ratify-jepsen test --workload W --nemesis N,... --time-limit S --seed X --concurrency C`
//! - `ratify-jepsen schedule ci|long` — a fixed list of tests (CI runs `ci`).
//! - `ratify-jepsen selftest` — every planted bug against its nemesis; each must be caught.
//!
//! Every command ends with a plain `N passed, N failed` line and exits non-zero on a failure.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ratify_check::Valid;
use ratify_jepsen::nemesis::{Nemesis, Schedule};
use ratify_jepsen::run::{self, TestConfig};
use ratify_jepsen::schedules::{self, Entry};
use ratify_jepsen::workload::{ClientMode, Kind};

#[derive(Parser)]
#[command(
    name = "ratify-jepsen",
    about = "Fault-injection tests of Ratify on real processes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Where run folders go (each run: history, nemesis timeline, results, report, logs).
    #[arg(long, global = true, default_value = "jepsen/store")]
    store: PathBuf,
    /// Where the `ratify` and `ratify-jepsen-node` binaries are [default: beside this one].
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// Coordinators: 3 or 5.
    #[arg(long, global = true, default_value_t = 3)]
    coordinators: usize,
    /// Participants: at least 3.
    #[arg(long, global = true, default_value_t = 3)]
    participants: usize,
    /// Client workers.
    #[arg(long, global = true, default_value_t = 8)]
    concurrency: u32,
}

#[derive(Subcommand)]
enum Command {
    /// One test.
    Test {
        /// bank, atomic-marker or list-append.
        #[arg(long, value_enum)]
        workload: Kind,
        /// How clients behave around failed calls: careful (abort), reckless (commit anyway,
        /// or walk away), retrying (send calls again with the same call id).
        #[arg(long, value_enum, default_value = "careful")]
        client: ClientMode,
        /// Comma-separated nemeses or groups (none, all, partitions, kills, network).
        #[arg(long, default_value = "all")]
        nemesis: String,
        /// Seconds of workload under faults (then heal, recovery, final reads).
        #[arg(long, default_value_t = 60)]
        time_limit: u64,
        /// Seed for every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Switch a planted bug on in every process (binaries built with `planted-bugs`).
        #[arg(long)]
        planted_bug: Option<String>,
        /// Quiet time between faults, ms: MIN-MAX.
        #[arg(long, default_value = "1000-3000")]
        quiet_ms: String,
        /// Duration of a fault, ms: MIN-MAX.
        #[arg(long, default_value = "2000-6000")]
        fault_ms: String,
    },
    /// A fixed list of tests: `ci` (about 4 minutes) or `long` (3 × --minutes).
    Schedule {
        /// ci or long.
        which: String,
        /// Minutes per test of the long schedule.
        #[arg(long, default_value_t = 12)]
        minutes: u64,
    },
    /// Every planted bug against its targeted nemesis; each must be found invalid.
    Selftest {
        /// Seconds per bug.
        #[arg(long, default_value_t = 45)]
        time_limit: u64,
        /// Only this bug.
        #[arg(long)]
        bug: Option<String>,
    },
}

fn range(text: &str) -> Result<(u64, u64)> {
    let (a, b) = text
        .split_once('-')
        .context("expected MIN-MAX, e.g. 1000-3000")?;
    let (a, b): (u64, u64) = (a.trim().parse()?, b.trim().parse()?);
    anyhow::ensure!(a <= b && b > 0, "MIN-MAX with MIN <= MAX and MAX > 0");
    Ok((a, b))
}

struct Outcome {
    name: String,
    passed: bool,
    line: String,
}

async fn run_entry(cli: &Cli, bin_dir: &std::path::Path, e: &Entry, schedule: Schedule) -> Outcome {
    let nemeses = match Nemesis::parse_list(e.nemeses) {
        Ok(n) => n,
        Err(why) => {
            return Outcome {
                name: e.name.clone(),
                passed: false,
                line: why,
            };
        }
    };
    let command = format!(
        "ratify-jepsen test --workload {} --client {} --nemesis {} --time-limit {} --seed {} --concurrency {} --coordinators {} --participants {}{}",
        e.workload.name(),
        e.client.name(),
        e.nemeses,
        e.time_limit.as_secs(),
        e.seed,
        cli.concurrency,
        cli.coordinators,
        cli.participants,
        e.planted_bug
            .map(|b| format!(" --planted-bug {b}"))
            .unwrap_or_default()
    );
    let cfg = TestConfig {
        name: e.name.clone(),
        workload: e.workload,
        client: e.client,
        nemeses,
        time_limit: e.time_limit,
        seed: e.seed,
        concurrency: cli.concurrency,
        coordinators: cli.coordinators,
        participants: cli.participants,
        store: cli.store.clone(),
        planted_bug: e.planted_bug.map(str::to_owned),
        bin_dir: bin_dir.to_owned(),
        schedule,
        resolve_after_ms: 1_000,
        command,
    };
    match run::run(&cfg).await {
        Ok(r) => {
            let caught_by: Vec<String> = r
                .results
                .iter()
                .filter(|c| c.valid == Valid::False)
                .map(|c| {
                    let kinds: Vec<&str> = c
                        .anomalies
                        .iter()
                        .map(|a| a.kind.as_str())
                        .collect::<std::collections::BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    format!("{} [{}]", c.checker, kinds.join(","))
                })
                .collect();
            // A run passes only when valid (an `unknown` — something left in doubt, a participant
            // unreadable — is not a pass); a planted bug passes only when caught.
            let passed = if e.expect_invalid {
                r.valid == Valid::False
            } else {
                r.valid == Valid::True
            };
            let verdict = match r.valid {
                Valid::True => "valid".to_owned(),
                Valid::Unknown => {
                    let why: Vec<String> = r
                        .results
                        .iter()
                        .filter(|c| c.valid == Valid::Unknown)
                        .map(|c| format!("{}: {}", c.checker, c.summary))
                        .collect();
                    format!("UNKNOWN ({})", why.join("; "))
                }
                Valid::False => format!("INVALID by {}", caught_by.join("; ")),
            };
            let expect = if e.expect_invalid {
                " (planted bug: must be invalid)"
            } else {
                ""
            };
            Outcome {
                name: e.name.clone(),
                passed,
                line: format!(
                    "{verdict}{expect}; ok {} fail {} info {}; {}{:.0} s; {}",
                    r.counts.0,
                    r.counts.1,
                    r.counts.2,
                    r.first_anomaly_s
                        .map(|s| format!("first violating txn invoked at {s:.1} s; "))
                        .unwrap_or_default(),
                    r.duration.as_secs_f64(),
                    r.dir.display()
                ),
            }
        }
        Err(err) => Outcome {
            name: e.name.clone(),
            passed: false,
            line: format!("harness error: {err:#}"),
        },
    }
}

fn bin_dir(cli: &Cli) -> Result<PathBuf> {
    if let Some(d) = &cli.bin_dir {
        return Ok(d.clone());
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe
        .parent()
        .context("this executable has no directory")?
        .to_owned())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RATIFY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    anyhow::ensure!(
        cli.coordinators == 3 || cli.coordinators == 5,
        "--coordinators: 3 or 5"
    );
    anyhow::ensure!(cli.participants >= 3, "--participants: at least 3");
    anyhow::ensure!(cli.concurrency >= 1, "--concurrency: at least 1");
    let bins = bin_dir(&cli)?;
    for b in ["ratify", "ratify-jepsen-node"] {
        anyhow::ensure!(
            bins.join(b).exists(),
            "{} not found: build it (`cargo build --bins --all-features`) or pass --bin-dir",
            bins.join(b).display()
        );
    }
    let mut schedule = Schedule::default();
    let entries: Vec<Entry> = match &cli.command {
        Command::Test {
            workload,
            client,
            nemesis,
            time_limit,
            seed,
            planted_bug,
            quiet_ms,
            fault_ms,
        } => {
            if let Some(b) = planted_bug {
                anyhow::ensure!(
                    ratify_proto::planted::Bug::from_name(b).is_some(),
                    "--planted-bug: unknown bug {b:?}"
                );
            }
            Nemesis::parse_list(nemesis).map_err(anyhow::Error::msg)?;
            schedule = Schedule {
                quiet_ms: range(quiet_ms)?,
                fault_ms: range(fault_ms)?,
            };
            let nemeses: &'static str = Box::leak(nemesis.clone().into_boxed_str());
            vec![Entry {
                name: format!(
                    "{}-{}{}",
                    workload.name(),
                    nemesis.replace(',', "+"),
                    match client {
                        ClientMode::Careful => String::new(),
                        other => format!("-{}", other.name()),
                    }
                ),
                workload: *workload,
                client: *client,
                nemeses,
                time_limit: Duration::from_secs(*time_limit),
                seed: *seed,
                planted_bug: planted_bug.clone().map(|b| &*Box::leak(b.into_boxed_str())),
                expect_invalid: false,
            }]
        }
        Command::Schedule { which, minutes } => match which.as_str() {
            "ci" => schedules::ci(),
            "long" => schedules::long(*minutes),
            other => anyhow::bail!("unknown schedule {other:?}: ci or long"),
        },
        Command::Selftest { time_limit, bug } => {
            let mut all = schedules::selftest(*time_limit);
            if let Some(b) = bug {
                all.retain(|e| e.planted_bug == Some(b.as_str()));
                anyhow::ensure!(!all.is_empty(), "--bug: unknown bug {b:?}");
            }
            all
        }
    };
    let mut outcomes = Vec::new();
    for e in &entries {
        let o = run_entry(&cli, &bins, e, schedule).await;
        println!(
            "{} {}: {}",
            if o.passed { "PASS" } else { "FAIL" },
            o.name,
            o.line
        );
        outcomes.push(o);
    }
    let passed = outcomes.iter().filter(|o| o.passed).count();
    let failed = outcomes.len() - passed;
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
