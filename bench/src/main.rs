//! `ratify-bench`: end-to-end measurements on real local processes.
//!
//! `ratify-bench compare` runs one bank-transfer workload against Ratify, etcd and PostgreSQL's
//! native two-phase commit in turn, interleaved (A B C A B C ...) so machine noise hits all
//! alike, at each concurrency of a sweep, and reports throughput, conflict rate, latency
//! percentiles and CPU per transaction side by side, with ratios, as JSON, text and an SVG
//! plot. See docs/performance.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod cpu;
mod report;
mod stats;
mod systems;
mod workload;

/// The subset of etcd's v3 API the etcd baseline uses (generated from `proto/etcd/kv.proto`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdpb {
    tonic::include_proto!("etcdserverpb");
}

use systems::System;
use workload::{Distribution, Picker, Rng, Transfer};

/// A window stops early after this many failed transfers (anything but a conflict).
const WINDOW_ERRORS_MAX: u64 = 100;

/// How often the progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Pause after the last window before the conservation check reads balances (phase 2 of the
/// last transfers may still be in flight at the participants).
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Parser)]
#[command(name = "ratify-bench", about = "Ratify's end-to-end benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bank transfers across two participants, against Ratify, etcd and PostgreSQL 2PC.
    Compare(CompareArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum SystemName {
    Ratify,
    Etcd,
    Postgres,
}

#[derive(clap::Args, Debug, Clone, serde::Serialize)]
struct CompareArgs {
    /// Systems to run, in this order within each round.
    #[arg(long, value_delimiter = ',', default_value = "ratify,etcd,postgres")]
    systems: Vec<SystemName>,
    /// Transfers in flight at once (closed loop: each worker starts its next transfer when
    /// the last one committed), one measurement per value.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    /// Measured seconds per window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds at the start of each window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Windows per system and concurrency (interleaved across systems).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Accounts per participant.
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// How transfers pick accounts.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    distribution: Distribution,
    /// Zipf exponent (with `--distribution zipf`).
    #[arg(long, default_value_t = 0.99)]
    zipf_theta: f64,
    /// Seed of the transfer choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Directory for results.json, summary.txt and plot.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Use this Ratify deployment (coordinator endpoints, comma-separated) instead of
    /// starting one; needs `--ratify-branches`.
    #[arg(long, value_delimiter = ',', requires = "ratify_branches")]
    ratify_coordinators: Vec<String>,
    /// The existing deployment's two bank services (`ratify-bank`), as participant id and
    /// endpoint: `ID=URL,ID=URL`.
    #[arg(long, value_delimiter = ',')]
    ratify_branches: Vec<String>,
}

/// One measured window of one system at one concurrency.
pub struct Window {
    system: &'static str,
    concurrency: usize,
    seconds: f64,
    committed: u64,
    conflicts: u64,
    errors: u64,
    /// End-to-end transfer latencies (µs) of the transfers that committed in the window.
    latency_us: Vec<u32>,
    /// Their commit-step latencies (µs).
    commit_us: Vec<u32>,
    /// CPU seconds per process group over the window.
    cpu: cpu::Sample,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Compare(args) => compare(args).await,
    }
}

fn us(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

async fn start(args: &CompareArgs, which: SystemName) -> Result<Option<System>> {
    let max_workers = args.concurrency.iter().copied().max().unwrap_or(1);
    Ok(Some(match which {
        SystemName::Ratify => {
            let external = if args.ratify_coordinators.is_empty() {
                None
            } else {
                let coordinators = args
                    .ratify_coordinators
                    .iter()
                    .map(|e| e.parse())
                    .collect::<Result<_, _>>()
                    .context("--ratify-coordinators")?;
                let usage = || anyhow::anyhow!("--ratify-branches takes ID=URL,ID=URL");
                let pairs: Vec<(String, String)> = args
                    .ratify_branches
                    .iter()
                    .map(|b| {
                        let (id, url) = b.split_once('=').ok_or_else(usage)?;
                        Ok((id.to_owned(), url.to_owned()))
                    })
                    .collect::<Result<_>>()?;
                let branches = <[(String, String); 2]>::try_from(pairs).map_err(|_| usage())?;
                Some(systems::ratify::External {
                    coordinators,
                    branches,
                })
            };
            System::Ratify(systems::ratify::RatifySystem::start(args.accounts, external).await?)
        }
        SystemName::Etcd => {
            let Some(bin) = systems::etcd::binary() else {
                eprintln!(
                    "skipping etcd: {} not found (install Debian's etcd-server: bench/setup)",
                    systems::etcd::ETCD_BIN
                );
                return Ok(None);
            };
            System::Etcd(systems::etcd::EtcdSystem::start(&bin, args.accounts).await?)
        }
        SystemName::Postgres => {
            let Some(bin) = systems::postgres::binaries() else {
                eprintln!(
                    "skipping postgres: no server under /usr/lib/postgresql/*/bin (install \
                     Debian's postgresql: bench/setup)"
                );
                return Ok(None);
            };
            System::Postgres(
                systems::postgres::PgSystem::start(&bin, args.accounts, max_workers).await?,
            )
        }
    }))
}

async fn compare(args: CompareArgs) -> Result<()> {
    if args.concurrency.contains(&0) || args.duration <= 0.0 || args.rounds == 0 {
        bail!("concurrency, duration and rounds must be positive");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut running: Vec<Arc<System>> = Vec::new();
    let mut before = Vec::new();
    for &which in &args.systems {
        eprint!("starting {which:?} ... ");
        let t = Instant::now();
        if let Some(s) = start(&args, which).await? {
            before.push(
                s.total_balance()
                    .await
                    .context("reading opening balances")?,
            );
            eprintln!(
                "ready in {:.1} s: {}",
                t.elapsed().as_secs_f64(),
                s.describe()
            );
            running.push(Arc::new(s));
        }
    }
    if running.is_empty() {
        bail!("no system to measure");
    }
    let picker = Arc::new(Picker::new(
        args.distribution,
        args.accounts,
        args.zipf_theta,
    ));
    let mut windows = Vec::new();
    let mut failure = None;
    'sweep: for &c in &args.concurrency {
        for round in 0..args.rounds {
            for sys in &running {
                let label = format!("{} c={c} round {}/{}", sys.name(), round + 1, args.rounds);
                let seed = args.seed ^ ((c as u64) << 32) ^ ((round as u64) << 48);
                match run_window(sys.clone(), &args, c, seed, &picker, &label).await {
                    Ok(w) => windows.push(w),
                    Err(e) => {
                        failure = Some(e.context(label));
                        break 'sweep;
                    }
                }
            }
        }
    }
    tokio::time::sleep(SETTLE).await;
    let mut conservation = Vec::new();
    for (sys, before) in running.iter().zip(before) {
        let after = sys.total_balance().await;
        conservation.push(report::Conservation::new(sys.name(), before, after));
    }
    let descriptions = running
        .iter()
        .map(|s| (s.name().to_owned(), s.describe()))
        .collect();
    for s in running {
        match Arc::try_unwrap(s) {
            Ok(s) => s.stop().await,
            Err(_) => eprintln!("a system is still in use; its processes die with the bench"),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let results = report::Results::new(&args, descriptions, &windows, conservation);
    results.write(&args.out)?;
    print!("{}", results.summary_text());
    println!(
        "results: {} (results.json, summary.txt, plot.svg)",
        args.out.display()
    );
    if results.conservation.iter().any(|c| !c.ok) {
        bail!("a system did not conserve the total balance (see above)");
    }
    Ok(())
}

/// Run `concurrency` closed-loop workers for warm-up + duration, measure the last part.
async fn run_window(
    sys: Arc<System>,
    args: &CompareArgs,
    concurrency: usize,
    seed: u64,
    picker: &Arc<Picker>,
    label: &str,
) -> Result<Window> {
    let started = Instant::now();
    let measure_from = started + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let live = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let (sys, picker, live, errors, stop, first_error) = (
                sys.clone(),
                picker.clone(),
                live.clone(),
                errors.clone(),
                stop.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                let mut rng = Rng::new(seed ^ (w as u64).wrapping_mul(0x100_0000_01B3));
                let (mut lat, mut commit, mut conflicts) = (Vec::new(), Vec::new(), 0u64);
                while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                    let t = Transfer::random(&picker, &mut rng);
                    let s = Instant::now();
                    match sys.transfer(w, &t).await {
                        Ok(done) => {
                            let f = Instant::now();
                            live.fetch_add(1, Ordering::Relaxed);
                            if f >= measure_from && f <= end {
                                lat.push(us(f - s));
                                commit.push(us(done.commit));
                                conflicts += u64::from(done.conflicts);
                            }
                        }
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert_with(|| format!("{e:#}"));
                            if errors.fetch_add(1, Ordering::Relaxed) + 1 >= WINDOW_ERRORS_MAX {
                                stop.store(true, Ordering::Relaxed);
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (lat, commit, conflicts)
            })
        })
        .collect();
    let mut groups = sys.cpu_groups();
    groups.add("client (bench)", vec![std::process::id()], false);
    let mut cpu_before = None;
    // A live line on a terminal; in a log, only each window's result line.
    let live_line = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last = (Instant::now(), 0u64);
    let mut rate = 0.0;
    loop {
        let now = Instant::now();
        if cpu_before.is_none() && now >= measure_from {
            cpu_before = Some(groups.sample());
        }
        if now >= end || stop.load(Ordering::Relaxed) {
            break;
        }
        let done = live.load(Ordering::Relaxed);
        if now.duration_since(last.0) >= Duration::from_secs(1) {
            rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done);
        }
        let phase = if now < measure_from {
            "warm-up"
        } else {
            "measuring"
        };
        if live_line {
            eprint!(
                "\r{label}: {:>5.1}/{:.0} s {phase:<9} {done:>8} committed {rate:>8.0} txn/s {:>4} errors   ",
                now.duration_since(started).as_secs_f64(),
                args.warmup + args.duration,
                errors.load(Ordering::Relaxed),
            );
        }
        let next = (now + PROGRESS_EVERY).min(if cpu_before.is_none() {
            measure_from
        } else {
            end
        });
        tokio::time::sleep_until(next.into()).await;
    }
    let cpu_after = groups.sample();
    let mut window = Window {
        system: sys.name(),
        concurrency,
        seconds: args.duration,
        committed: 0,
        conflicts: 0,
        errors: 0,
        latency_us: Vec::new(),
        commit_us: Vec::new(),
        cpu: cpu::delta(&cpu_before.unwrap_or_else(|| cpu_after.clone()), &cpu_after),
    };
    for w in workers {
        let (lat, commit, conflicts) = w.await?;
        window.committed += lat.len() as u64;
        window.latency_us.extend(lat);
        window.commit_us.extend(commit);
        window.conflicts += conflicts;
    }
    window.errors = errors.load(Ordering::Relaxed);
    eprintln!(
        "{}{label}: {:.0} txn/s, p50 {:.2} ms, {} conflicts, {} errors{:40}",
        if live_line { "\r" } else { "" },
        window.committed as f64 / window.seconds,
        {
            let mut l = window.latency_us.clone();
            l.sort_unstable();
            f64::from(stats::quantile(&l, 0.5)) / 1000.0
        },
        window.conflicts,
        window.errors,
        ""
    );
    if stop.load(Ordering::Relaxed) {
        let e = first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        bail!("{} transfers failed; the first: {e}", window.errors);
    }
    Ok(window)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn args(extra: &[&str]) -> CompareArgs {
        let mut argv = vec!["ratify-bench", "compare"];
        argv.extend_from_slice(extra);
        match Cli::parse_from(argv).command {
            Command::Compare(a) => a,
        }
    }

    fn window(system: &'static str, concurrency: usize, committed: u64, lat_us: u32) -> Window {
        Window {
            system,
            concurrency,
            seconds: 10.0,
            committed,
            conflicts: committed / 10,
            errors: 0,
            latency_us: vec![lat_us; committed as usize],
            commit_us: vec![lat_us / 2; committed as usize],
            cpu: cpu::Sample::from([("servers".to_owned(), 2.0)]),
        }
    }

    #[test]
    fn defaults_match_the_documented_sweep() {
        let a = args(&[]);
        assert_eq!(a.concurrency, vec![1, 16, 64, 256]);
        assert_eq!(
            a.systems,
            vec![SystemName::Ratify, SystemName::Etcd, SystemName::Postgres]
        );
        assert_eq!(a.accounts, 1_000);
        assert_eq!(a.distribution, Distribution::Uniform);
    }

    #[test]
    fn rounds_are_pooled_and_ratios_compare_like_with_like() {
        let a = args(&["--concurrency", "1,16", "--systems", "ratify,etcd"]);
        let windows = vec![
            window("ratify", 1, 1_000, 2_000),
            window("etcd", 1, 2_000, 1_000),
            window("ratify", 1, 3_000, 2_000),
            window("etcd", 1, 2_000, 1_000),
            window("ratify", 16, 10_000, 4_000),
            window("etcd", 16, 5_000, 8_000),
        ];
        let r = report::Results::new(&a, BTreeMap::new(), &windows, Vec::new());
        let s = |sys: &str, c: usize| {
            r.summaries
                .iter()
                .find(|x| x.system == sys && x.concurrency == c)
                .expect("a summary per system and concurrency")
        };
        // Two rounds of 10 s: (1,000 + 3,000) / 20 s.
        assert!((s("ratify", 1).txn_per_s - 200.0).abs() < 1e-9);
        assert_eq!(s("ratify", 1).txn_per_s_rounds, vec![100.0, 300.0]);
        assert!((s("ratify", 1).latency_ms.p50 - 2.0).abs() < 1e-9);
        assert!((s("ratify", 1).conflict_rate - 400.0 / 4_400.0).abs() < 1e-9);
        // 4 CPU seconds over 4,000 transfers.
        assert!((s("ratify", 1).cpu_s_per_1000["servers"] - 1.0).abs() < 1e-9);
        let ratio = |c: usize| {
            r.ratios
                .iter()
                .find(|x| x.concurrency == c && x.versus == "etcd")
                .expect("a ratio per concurrency")
        };
        assert!((ratio(1).throughput - 1.0).abs() < 1e-9);
        assert!((ratio(1).p50_latency - 2.0).abs() < 1e-9);
        assert!((ratio(16).throughput - 2.0).abs() < 1e-9);
        assert!((ratio(16).p50_latency - 0.5).abs() < 1e-9);
        let text = r.summary_text();
        assert!(
            text.contains("c=16   vs etcd      throughput  2.00x"),
            "{text}"
        );
        let svg = report::svg(&r);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // One throughput line per system, and one CDF line per system in each of 2 panels.
        assert_eq!(svg.matches("<polyline").count(), 2 + 2 * 2);
    }

    #[test]
    fn conservation_fails_on_a_changed_or_unreadable_total() {
        assert!(report::Conservation::new("x", 10, Ok(10)).ok);
        assert!(!report::Conservation::new("x", 10, Ok(11)).ok);
        let c = report::Conservation::new("x", 10, Err(anyhow::anyhow!("down")));
        assert!(!c.ok && c.error.as_deref() == Some("down"));
    }
}
