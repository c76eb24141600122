//! `ratify demo`: Ratify's main job on an embedded default. A 3-node coordinator cluster and
//! two bank branches run as child processes (so faults are real); transfers between accounts
//! on different branches run at a chosen concurrency with a live status line; unless
//! `--no-faults`, the coordinator leader and one branch are SIGKILLed mid-run and restarted;
//! at the end the demo checks that money was conserved, that every transfer's outcome is the
//! same on both branches, that what clients were told is what happened, and that nothing is
//! left in doubt. The exit status is 0 only when every check holds.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::local_cluster::{LocalCluster, ServiceProcess};
use crate::rng::Rng;
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use ratify_participant::{Client, ClientConfig};
use ratify_proto::hooks::EndpointExt as _;
use ratify_proto::pb::bank as pbb;
use ratify_proto::pb::bank::bank_client::BankClient;
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::types::{Endpoint, Outcome, ParticipantId, TxnId, TxnPhase};
use tonic::transport::Channel;

/// The branches, each a participant.
const BRANCHES: [&str; 2] = ["accounts-eu", "accounts-us"];
/// Opening balance of every account, in cents.
const OPENING_BALANCE: i64 = 100_000;
/// How long the end-of-run checks wait for in-doubt work to finish.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct DemoArgs {
    /// How long to run transfers, in seconds.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Transfers in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Accounts per branch (fewer accounts, more lock conflicts).
    #[arg(long, default_value_t = 200)]
    accounts: usize,
    /// Do not kill the coordinator leader and a branch mid-run.
    #[arg(long)]
    no_faults: bool,
    /// Leave everything running at the end, and print how to talk to it (Ctrl-C stops).
    #[arg(long)]
    keep: bool,
    /// Directory for data and logs [default: a new temporary directory, removed after a green
    /// run unless --keep].
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// One transfer as the initiator saw it.
#[derive(Clone, Debug)]
struct Transfer {
    txn_id: TxnId,
    from: (usize, String),
    to: (usize, String),
    amount: i64,
    told: Outcome,
}

#[derive(Default)]
struct Counters {
    committed: AtomicU64,
    aborted: AtomicU64,
    unknown: AtomicU64,
    errors: AtomicU64,
    /// Aborted because a leg hit a lock conflict (a bounded wait ran out, or wounded by an
    /// older transaction).
    conflicts: AtomicU64,
    /// Aborted because the withdrawal would have overdrawn.
    insufficient: AtomicU64,
    /// Aborted because a branch or the coordinator was unreachable or slow (faults).
    unavailable: AtomicU64,
}

/// Why a transfer's leg failed.
enum LegFailure {
    Conflict,
    Insufficient,
    Unavailable,
}

fn leg_failure(status: &tonic::Status) -> LegFailure {
    match status.code() {
        tonic::Code::Aborted => LegFailure::Conflict,
        tonic::Code::FailedPrecondition => LegFailure::Insufficient,
        _ => LegFailure::Unavailable,
    }
}

struct Demo {
    cluster: tokio::sync::Mutex<LocalCluster>,
    banks: Vec<tokio::sync::Mutex<ServiceProcess>>,
    bank_endpoints: Vec<Endpoint>,
    client: Client,
    channels: Mutex<BTreeMap<usize, Channel>>,
}

impl Demo {
    fn bank(&self, branch: usize) -> Result<BankClient<Channel>> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(&branch) {
            return Ok(BankClient::new(c.clone()));
        }
        // A restarted branch listens on the same port, so the channel stays valid.
        let c = tonic::transport::Endpoint::from_shared(self.bank_endpoints[branch].to_string())?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(5))
            .lazy_channel();
        channels.insert(branch, c.clone());
        Ok(BankClient::new(c))
    }

    async fn stop_all(&self) {
        for b in &self.banks {
            let _ = b.lock().await.stop().await;
        }
        self.cluster.lock().await.stop_all().await;
    }
}

fn pid(branch: usize) -> ParticipantId {
    ParticipantId::new(BRANCHES[branch]).expect("the branch names are valid participant ids")
}

pub async fn run(args: DemoArgs) -> Result<()> {
    ensure!(
        args.concurrency >= 1 && args.concurrency <= 1_024,
        "--concurrency must be 1 to 1024"
    );
    ensure!(
        args.accounts >= 2 && args.accounts <= 10_000,
        "--accounts must be 2 to 10000"
    );
    ensure!(args.duration >= 1, "--duration must be at least 1 second");
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("ratify-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the ratify binary")?;
    let bank_bin = exe.with_file_name("ratify-bank");
    ensure!(
        bank_bin.exists(),
        "{} not found: the demo runs the example bank branches (build them with `cargo build --bins`)",
        bank_bin.display()
    );

    println!(
        "Ratify demo: 3 coordinators and 2 bank branches as child processes (data and logs in {}).",
        dir.display()
    );
    let started = Instant::now();
    let demo = Arc::new(start(&exe, &bank_bin, &dir).await?);
    println!(
        "Cluster and branches up in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    let result = main_run(&demo, &args).await;
    match &result {
        Ok(()) if args.keep => {
            let coordinators: Vec<String> = demo
                .cluster
                .lock()
                .await
                .endpoints()
                .iter()
                .map(|e| e.to_string())
                .collect();
            println!("\nEverything keeps running; Ctrl-C stops it. Try, in another terminal:");
            println!(
                "  ratify cluster status --endpoint {}",
                coordinators.join(",")
            );
            println!("  ratify txn list --endpoint {}", coordinators.join(","));
            for (i, e) in demo.bank_endpoints.iter().enumerate() {
                println!(
                    "  grpcurl -plaintext {} ratify.example.bank.v1.Bank/ListAccounts   # {}",
                    e.as_str().trim_start_matches("http://"),
                    BRANCHES[i]
                );
            }
            tokio::signal::ctrl_c().await?;
        }
        Ok(()) => {}
        Err(e) => println!("\nFAILED: {e:#}\nProcess logs are in {}", dir.display()),
    }
    demo.stop_all().await;
    drop(demo);
    if result.is_ok() && !args.keep && args.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn start(ratify: &Path, bank_bin: &Path, dir: &Path) -> Result<Demo> {
    let cluster = LocalCluster::start(ratify, dir, 3).await?;
    cluster
        .wait_for_leader(Duration::from_secs(30), None)
        .await?;
    let endpoints: Vec<String> = cluster.endpoints().iter().map(|e| e.to_string()).collect();
    let mut banks = Vec::new();
    for name in BRANCHES {
        let args: Vec<OsString> = vec![
            "--id".into(),
            name.into(),
            "--data".into(),
            dir.join(name).into(),
            "--coordinator".into(),
            endpoints.join(",").into(),
            "--resolve-after-ms".into(),
            "2000".into(),
        ];
        let mut p = ServiceProcess::new(name, bank_bin, args, vec![], dir);
        p.start().await?;
        banks.push(p);
    }
    let client = Client::with_config(
        cluster.endpoints(),
        ClientConfig {
            txn_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        },
    )?;
    let admin = cluster.admin();
    let bank_endpoints = banks
        .iter()
        .map(|b| {
            b.endpoint()
                .cloned()
                .context("a started branch has an endpoint")
        })
        .collect::<Result<Vec<_>>>()?;
    let demo = Demo {
        cluster: tokio::sync::Mutex::new(cluster),
        banks: banks.into_iter().map(tokio::sync::Mutex::new).collect(),
        bank_endpoints,
        client,
        channels: Mutex::new(BTreeMap::new()),
    };
    // Registration is asynchronous: wait until both branches are in the registry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = admin
            .call_leader(|mut c| async move {
                c.list_participants(pbco::ListParticipantsRequest {}).await
            })
            .await?;
        if BRANCHES
            .iter()
            .all(|b| listed.participants.iter().any(|p| p.participant_id == *b))
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the branches did not register with the coordinator"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(demo)
}

fn account(i: usize) -> String {
    format!("acct-{i:05}")
}

async fn main_run(demo: &Arc<Demo>, args: &DemoArgs) -> Result<()> {
    // Open the accounts: one transaction per batch of accounts at one branch (a single
    // participant: one-phase commit).
    for (branch, name) in BRANCHES.iter().enumerate() {
        for chunk in (0..args.accounts).collect::<Vec<_>>().chunks(50) {
            let txn = demo.client.begin();
            for &i in chunk {
                demo.bank(branch)?
                    .open_account(txn.request(
                        &pid(branch),
                        pbb::OpenAccountRequest {
                            account: account(i),
                            initial_balance: OPENING_BALANCE,
                        },
                    ))
                    .await
                    .with_context(|| format!("opening {} at {name}", account(i)))?;
            }
            let outcome = txn.commit().await?;
            ensure!(
                outcome == Outcome::Committed,
                "opening accounts: {outcome:?}"
            );
        }
    }
    let total_before = balances(demo).await?.values().sum::<i64>();
    println!(
        "Opened {} accounts on each branch; total balance {}.",
        args.accounts,
        cents(total_before)
    );
    println!(
        "Running transfers for {} s at concurrency {}{} ...",
        args.duration,
        args.concurrency,
        if args.no_faults { "" } else { ", with faults" }
    );

    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let transfers = Arc::new(Mutex::new(Vec::<Transfer>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (demo, counters, latencies, transfers, stop) = (
            demo.clone(),
            counters.clone(),
            latencies.clone(),
            transfers.clone(),
            stop.clone(),
        );
        let accounts = args.accounts as u64;
        workers.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x5eed_0000 + w as u64);
            while !stop.load(Ordering::Relaxed) {
                let from_branch = rng.below(2) as usize;
                let from = (from_branch, account(rng.below(accounts) as usize));
                let to = (1 - from_branch, account(rng.below(accounts) as usize));
                let amount = 1 + rng.below(1_000) as i64;
                let started = Instant::now();
                match transfer(&demo, from.clone(), to.clone(), amount).await {
                    Ok((txn_id, told, failure)) => {
                        match failure {
                            Some(LegFailure::Conflict) => {
                                counters.conflicts.fetch_add(1, Ordering::Relaxed)
                            }
                            Some(LegFailure::Insufficient) => {
                                counters.insufficient.fetch_add(1, Ordering::Relaxed)
                            }
                            Some(LegFailure::Unavailable) => {
                                counters.unavailable.fetch_add(1, Ordering::Relaxed)
                            }
                            None => 0,
                        };
                        match &told {
                            Outcome::Committed => {
                                counters.committed.fetch_add(1, Ordering::Relaxed)
                            }
                            Outcome::Aborted(_) => counters.aborted.fetch_add(1, Ordering::Relaxed),
                            Outcome::Unknown => counters.unknown.fetch_add(1, Ordering::Relaxed),
                        };
                        latencies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(started.elapsed());
                        transfers
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Transfer {
                                txn_id,
                                from,
                                to,
                                amount,
                                told,
                            });
                    }
                    Err(_) => {
                        // The coordinator refused the request itself (never expected here).
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }));
    }

    let duration = Duration::from_secs(args.duration);
    let run_started = Instant::now();
    let mut next_status = Instant::now();
    let mut last = (0u64, Instant::now());
    let mut faults = FaultPlan::new(!args.no_faults, duration);
    // A live line on a terminal; a line every 2 s in a log.
    let tty = std::io::stdout().is_terminal();
    let status_every = Duration::from_millis(if tty { 500 } else { 2_000 });
    while run_started.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(step) = faults.due(run_started.elapsed()) {
            if tty {
                println!();
            }
            faults.apply(demo, step).await?;
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + status_every;
            let done = counters.committed.load(Ordering::Relaxed)
                + counters.aborted.load(Ordering::Relaxed)
                + counters.unknown.load(Ordering::Relaxed);
            let rate = (done - last.0) as f64 / last.1.elapsed().as_secs_f64().max(1e-3);
            last = (done, Instant::now());
            let window: Vec<Duration> = latencies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
                .collect();
            let (p50, p99) = percentiles(window);
            print!(
                "{}  {:>4.0}s  committed {:>6}  aborted {:>5}  unknown {:>3}  {:>6.0} txn/s  p50 {:>6.1} ms  p99 {:>7.1} ms ",
                if tty { "\r" } else { "" },
                run_started.elapsed().as_secs_f64(),
                counters.committed.load(Ordering::Relaxed),
                counters.aborted.load(Ordering::Relaxed),
                counters.unknown.load(Ordering::Relaxed),
                rate,
                p50.as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
            );
            if !tty {
                println!();
            }
            let _ = std::io::stdout().flush();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    if tty {
        println!();
    }
    faults.finish(demo).await?;
    let transfers = std::mem::take(&mut *transfers.lock().unwrap_or_else(|p| p.into_inner()));
    verify(demo, total_before, &transfers, &counters).await
}

async fn transfer(
    demo: &Demo,
    from: (usize, String),
    to: (usize, String),
    amount: i64,
) -> Result<(TxnId, Outcome, Option<LegFailure>)> {
    let txn = demo.client.begin();
    let id = txn.id();
    let (from_bank, to_bank) = (demo.bank(from.0)?, demo.bank(to.0)?);
    // `call`: a lost answer is retried with the same call id (the branch runs it once), and a
    // failure is remembered by the transaction (docs/protocol.md P10).
    let mut failed = txn
        .call(
            &pid(from.0),
            pbb::AmountRequest {
                account: from.1.clone(),
                amount,
            },
            |r| {
                let mut bank = from_bank.clone();
                async move { bank.withdraw(r).await }
            },
        )
        .await
        .err();
    if failed.is_none() {
        failed = txn
            .call(
                &pid(to.0),
                pbb::AmountRequest {
                    account: to.1.clone(),
                    amount,
                },
                |r| {
                    let mut bank = to_bank.clone();
                    async move { bank.deposit(r).await }
                },
            )
            .await
            .err();
    }
    if let Some(status) = failed {
        // A conflict, insufficient funds or a dead branch: give up this transfer.
        let outcome = txn.abort("a leg of the transfer failed").await?;
        return Ok((id, outcome, Some(leg_failure(&status))));
    }
    Ok((id, txn.commit().await?, None))
}

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    v.sort();
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

fn cents(c: i64) -> String {
    format!("{}.{:02}", c / 100, c % 100)
}

/// Every account's committed balance, by (branch, account).
async fn balances(demo: &Demo) -> Result<BTreeMap<(usize, String), i64>> {
    let mut out = BTreeMap::new();
    for (branch, name) in BRANCHES.iter().enumerate() {
        let list = demo
            .bank(branch)?
            .list_accounts(pbb::ListAccountsRequest {})
            .await
            .with_context(|| format!("listing accounts at {name}"))?
            .into_inner();
        for a in list.accounts {
            out.insert((branch, a.account), a.balance);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    KillLeader,
    RestartLeader,
    KillBranch,
    RestartBranch,
}

/// SIGKILL the coordinator leader at 30% of the run and restart it at 40%; SIGKILL a branch
/// at 55% and restart it at 65%.
struct FaultPlan {
    steps: Vec<(Duration, Fault)>,
    killed_node: Option<u64>,
    killed_branch: Option<usize>,
}

impl FaultPlan {
    fn new(enabled: bool, duration: Duration) -> Self {
        let at = |f: f64| duration.mul_f64(f);
        let steps = if enabled {
            vec![
                (at(0.30), Fault::KillLeader),
                (at(0.40), Fault::RestartLeader),
                (at(0.55), Fault::KillBranch),
                (at(0.65), Fault::RestartBranch),
            ]
        } else {
            Vec::new()
        };
        Self {
            steps,
            killed_node: None,
            killed_branch: None,
        }
    }

    fn due(&mut self, elapsed: Duration) -> Option<Fault> {
        if self.steps.first().is_some_and(|(at, _)| *at <= elapsed) {
            Some(self.steps.remove(0).1)
        } else {
            None
        }
    }

    async fn apply(&mut self, demo: &Demo, fault: Fault) -> Result<()> {
        match fault {
            Fault::KillLeader => {
                let mut cluster = demo.cluster.lock().await;
                let status = cluster
                    .wait_for_leader(Duration::from_secs(10), None)
                    .await?;
                let leader = status.leader.map(|l| l.node_id).context("no leader")?;
                let pid = cluster.node(leader)?.pid().unwrap_or(0);
                cluster.kill(leader).await?;
                self.killed_node = Some(leader);
                println!("  fault: SIGKILL the coordinator leader, node {leader} (pid {pid})");
            }
            Fault::RestartLeader => {
                if let Some(n) = self.killed_node.take() {
                    demo.cluster.lock().await.restart(n).await?;
                    println!("  fault: restarted node {n} on its data directory");
                }
            }
            Fault::KillBranch => {
                let branch = 1;
                let mut b = demo.banks[branch].lock().await;
                let pid = b.pid().unwrap_or(0);
                b.kill().await?;
                self.killed_branch = Some(branch);
                println!(
                    "  fault: SIGKILL the branch {} (pid {pid})",
                    BRANCHES[branch]
                );
            }
            Fault::RestartBranch => {
                if let Some(branch) = self.killed_branch.take() {
                    demo.banks[branch].lock().await.start().await?;
                    println!(
                        "  fault: restarted {} on its data directory",
                        BRANCHES[branch]
                    );
                }
            }
        }
        Ok(())
    }

    /// Undo whatever is still down (a short run may end between a kill and its restart).
    async fn finish(&mut self, demo: &Demo) -> Result<()> {
        if self.killed_node.is_some() {
            self.apply(demo, Fault::RestartLeader).await?;
        }
        if self.killed_branch.is_some() {
            self.apply(demo, Fault::RestartBranch).await?;
        }
        Ok(())
    }
}

/// Transactions decided whose phase 2 is not acknowledged by every participant yet (up to
/// 1,000).
async fn decided_pending(demo: &Demo) -> Result<usize> {
    let admin = demo.cluster.lock().await.admin();
    let list = admin
        .call_leader(|mut c| async move {
            c.list_txns(pbco::ListTxnsRequest {
                phase: pbco::TxnPhase::Decided as i32,
                limit: 1_000,
                page_token: String::new(),
                local: false,
            })
            .await
        })
        .await?;
    Ok(list.txns.len())
}

/// The coordinator's final word on a transaction, once nothing is pending: `None` if it never
/// recorded a decision (then no participant prepared it, so it can have no effect).
async fn final_outcome(demo: &Demo, txn_id: TxnId) -> Result<Option<Outcome>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        match demo.client.status(txn_id).await {
            Ok(s) => match s.phase {
                TxnPhase::Completed => return Ok(Some(s.outcome)),
                TxnPhase::Undecided => return Ok(None),
                TxnPhase::Decided => {}
            },
            Err(e) => ensure!(Instant::now() < deadline, "status of {txn_id}: {e}"),
        }
        ensure!(
            Instant::now() < deadline,
            "{txn_id} is still in phase 2 after {SETTLE_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn verify(
    demo: &Demo,
    total_before: i64,
    transfers: &[Transfer],
    counters: &Counters,
) -> Result<()> {
    println!("Settling: waiting for every transaction to be decided and acknowledged ...");
    // A branch that was killed resolves its in-doubt transactions after `resolve_after`
    // (2 s): give that time before reading the final state.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settle_deadline = Instant::now() + SETTLE_TIMEOUT;
    while decided_pending(demo).await? > 0 && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut expected: BTreeMap<(usize, String), i64> = balances(demo)
        .await?
        .keys()
        .map(|k| (k.clone(), OPENING_BALANCE))
        .collect();
    let mut mismatched_answers = Vec::new();
    let (mut committed, mut aborted, mut undecided) = (0u64, 0u64, 0u64);
    for t in transfers {
        let outcome = final_outcome(demo, t.txn_id).await?;
        match (&t.told, &outcome) {
            (Outcome::Committed, Some(Outcome::Committed)) => {}
            (Outcome::Committed, other) => {
                mismatched_answers.push(format!("{}: told COMMITTED, final {other:?}", t.txn_id))
            }
            (Outcome::Aborted(_), Some(Outcome::Committed)) => {
                mismatched_answers.push(format!("{}: told ABORTED, final COMMITTED", t.txn_id))
            }
            _ => {}
        }
        match outcome {
            Some(Outcome::Committed) => {
                committed += 1;
                *expected.entry(t.from.clone()).or_insert(OPENING_BALANCE) -= t.amount;
                *expected.entry(t.to.clone()).or_insert(OPENING_BALANCE) += t.amount;
            }
            Some(_) => aborted += 1,
            None => undecided += 1,
        }
    }
    let actual = balances(demo).await?;
    let total_after: i64 = actual.values().sum();
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(*v))
        .map(|((b, a), v)| {
            format!(
                "{}/{a}: expected {v}, found {:?}",
                BRANCHES[*b],
                actual.get(&(*b, a.clone()))
            )
        })
        .collect();
    let negative = actual.values().filter(|b| **b < 0).count();

    println!(
        "{} transfers: {committed} committed, {aborted} aborted, {undecided} never reached a decision (no effect); {} unknown when answered; {} refused requests",
        transfers.len(),
        counters.unknown.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed)
    );
    println!(
        "  aborts by the initiator: {} lock conflicts, {} insufficient funds, {} unreachable (faults); the rest were decided by the coordinator",
        counters.conflicts.load(Ordering::Relaxed),
        counters.insufficient.load(Ordering::Relaxed),
        counters.unavailable.load(Ordering::Relaxed),
    );
    let mut ok = true;
    let mut check = |name: &str, passed: bool, detail: String| {
        println!(
            "  [{}] {name}{}",
            if passed { " OK " } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        );
        ok &= passed;
    };
    check(
        "total balance conserved",
        total_after == total_before,
        format!(
            "{} before, {} after",
            cents(total_before),
            cents(total_after)
        ),
    );
    check(
        "every transfer applied on both branches or on neither, exactly once",
        wrong.is_empty(),
        wrong.iter().take(5).cloned().collect::<Vec<_>>().join("; "),
    );
    check(
        "what clients were told is what happened",
        mismatched_answers.is_empty(),
        mismatched_answers
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("; "),
    );
    check("no negative balance", negative == 0, String::new());
    let pending = decided_pending(demo).await?;
    check(
        "nothing left in doubt (phase 2 acknowledged everywhere)",
        pending == 0,
        if pending == 0 {
            String::new()
        } else {
            format!("{pending} transactions wait for phase 2")
        },
    );
    if ok {
        println!("Verdict: OK");
        Ok(())
    } else {
        bail!("the checks failed")
    }
}
