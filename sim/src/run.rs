//! One simulated run: build the cluster on turmoil, run a workload under the seed's faults,
//! heal, wait until nothing is in doubt, read the final state and check the history.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratify_check::{CheckResult, FinalState, Op, Valid};
use ratify_coordinator::admin_client::AdminClient;
use ratify_coordinator::config::{NodeConfig, Peer};
use ratify_coordinator::node::{Node, ServeTask};
use ratify_jepsen::kv::Kv;
use ratify_jepsen::recorder::Recorder;
use ratify_jepsen::rng::Rng;
use ratify_jepsen::workload::{ClientMode, Kind, Workload};
use ratify_participant::{
    Client, ClientConfig, Participant, ParticipantConfig, RocksStore, StoreConfig,
};
use ratify_proto::hooks;
use ratify_proto::pb::jepsen::jepsen_kv_server::JepsenKvServer;
use ratify_proto::planted::Bug;
use ratify_proto::types::{Endpoint, ParticipantId, TxnId};
use ratify_storage::MemDisk;

use crate::faults::{self, Fault, Scheduled};
use crate::net;

/// The coordinators' port on their simulated hosts.
const COORDINATOR_PORT: u16 = 7000;
/// The participants' port.
const PARTICIPANT_PORT: u16 = 7100;
/// The participant store's column family of prepared transactions (what an armed crash
/// watches for).
const CF_PREPARED: &str = "prepared";
/// The simulated wall clock starts here (2026-01-01T00:00:00Z), so runs replay exactly.
const EPOCH_UNIX_MS: u64 = 1_767_225_600_000;
/// A run that has not finished after this much simulated time fails (liveness).
const SIMULATION_LIMIT: Duration = Duration::from_secs(600);
/// Workers still running this long after the workload ends are stopped (their last
/// operation stays open, unknown).
const WORKER_DRAIN: Duration = Duration::from_secs(30);
/// After healing, everything in doubt must be resolved within this much simulated time.
const RECOVERY_LIMIT: Duration = Duration::from_secs(90);
/// How often the final phase checks whether the cluster is quiescent.
const RECOVERY_POLL: Duration = Duration::from_millis(500);
/// The simulated time one step advances.
const TICK: Duration = Duration::from_millis(1);

/// What to run.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Everything random in the run comes from it.
    pub seed: u64,
    /// The harness's workload (bank, atomic-marker or list-append).
    pub workload: Kind,
    /// How the clients behave around failed calls (careful, reckless, retrying).
    pub client: ClientMode,
    /// Whether the clients' commits report their call counts (P10); off, the participants'
    /// own checks (P4, P5) are all that stands between a lost call and a partial commit.
    pub call_counts: bool,
    /// Coordinator nodes.
    pub coordinators: usize,
    /// Participant services.
    pub participants: usize,
    /// Concurrent client workers.
    pub workers: usize,
    /// Simulated ms of workload, with faults.
    pub workload_ms: u64,
    /// Inject faults.
    pub faults: bool,
    /// A planted bug to switch on for this run (needs the `planted-bugs` feature).
    pub planted_bug: Option<Bug>,
}

impl SimConfig {
    /// The sweep's configuration for `seed`: the workload rotates with the seed (bank,
    /// atomic-marker, list-append), and with every three seeds the clients (careful,
    /// reckless, retrying): nine seeds in a row cover every pair.
    pub fn for_seed(seed: u64) -> Self {
        Self {
            seed,
            workload: match seed % 3 {
                0 => Kind::Bank,
                1 => Kind::AtomicMarker,
                _ => Kind::ListAppend,
            },
            client: match (seed / 3) % 3 {
                0 => ClientMode::Careful,
                1 => ClientMode::Reckless,
                _ => ClientMode::Retrying,
            },
            call_counts: (seed / 9).is_multiple_of(2),
            coordinators: 3,
            participants: 3,
            workers: 4,
            workload_ms: 4_000,
            faults: true,
            planted_bug: None,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct SimResult {
    /// The seed.
    pub seed: u64,
    /// The workload's name.
    pub workload: &'static str,
    /// The clients' mode.
    pub client: ClientMode,
    /// Whether commits reported call counts.
    pub call_counts: bool,
    /// The planted bug switched on, if any.
    pub planted_bug: Option<Bug>,
    /// The verdict over every checker; `False` or `Unknown` also when the run itself failed.
    pub valid: Valid,
    /// Each checker's result.
    pub results: Vec<CheckResult>,
    /// Why the run could not finish (a host's software failed, the simulation ran out of
    /// time), if it did not.
    pub error: Option<String>,
    /// Operations that ended ok / fail / info.
    pub counts: (u64, u64, u64),
    /// The faults injected.
    pub faults: Vec<String>,
    /// Simulated time the run took.
    pub sim_time: Duration,
    /// Real time it took.
    pub wall: Duration,
    /// Simulation steps.
    pub steps: u64,
    /// The history (Jepsen/Elle JSON records, as the harness writes them).
    pub history: Vec<Op>,
    /// A hash of the history and the final state: equal for two runs of one seed when the
    /// simulation is deterministic.
    pub fingerprint: u64,
}

impl SimResult {
    /// A run that could not finish at all.
    pub fn failed(cfg: &SimConfig, error: String) -> Self {
        Self {
            seed: cfg.seed,
            workload: cfg.workload.name(),
            client: cfg.client,
            call_counts: cfg.call_counts,
            planted_bug: cfg.planted_bug,
            valid: Valid::Unknown,
            results: Vec::new(),
            error: Some(error),
            counts: (0, 0, 0),
            faults: Vec::new(),
            sim_time: Duration::ZERO,
            wall: Duration::ZERO,
            steps: 0,
            history: Vec::new(),
            fingerprint: 0,
        }
    }

    /// One line: seed, verdict, counts, faults, times.
    pub fn line(&self) -> String {
        let verdict = match (&self.error, self.valid) {
            (Some(_), _) => "ERROR",
            (None, Valid::True) => "valid",
            (None, Valid::False) => "INVALID",
            (None, Valid::Unknown) => "UNKNOWN",
        };
        let bug = self
            .planted_bug
            .map(|b| format!(" planted-bug={}", b.name()))
            .unwrap_or_default();
        let counts = if self.call_counts {
            ""
        } else {
            " call-counts=off"
        };
        let replay_counts = if self.call_counts {
            ""
        } else {
            " --no-call-counts"
        };
        let mut line = format!(
            "ratify-sim seed={} workload={} client={}{counts}{bug} {verdict} ok={} fail={} info={} faults={} sim={:.1}s wall={:.2}s steps={} fingerprint={:016x}",
            self.seed,
            self.workload,
            self.client.name(),
            self.counts.0,
            self.counts.1,
            self.counts.2,
            self.faults.len(),
            self.sim_time.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.steps,
            self.fingerprint,
        );
        if let Some(e) = &self.error {
            line.push_str(&format!("\n  error: {e}"));
        }
        for r in self.results.iter().filter(|r| r.valid != Valid::True) {
            line.push_str(&format!("\n  {}: {:?}: {}", r.checker, r.valid, r.summary));
            for a in r.anomalies.iter().take(3) {
                line.push_str(&format!(
                    "\n    {} {}: {}",
                    a.kind,
                    a.txn_id.as_deref().unwrap_or(""),
                    a.detail
                ));
            }
        }
        if self.error.is_some() || self.valid != Valid::True {
            line.push_str(&format!("\n  faults: {}", self.faults.join("; ")));
            match self.planted_bug {
                None => line.push_str(&format!(
                    "\n  replay: RATIFY_SIM_SEED={seed} cargo test -p ratify-sim --test sim -- replay --nocapture\n      or: cargo run -p ratify-sim -- run --seed {seed} --workload {workload} --client {client}{replay_counts}",
                    seed = self.seed,
                    workload = self.workload,
                    client = self.client.name(),
                )),
                Some(b) => line.push_str(&format!(
                    "\n  replay: cargo run -p ratify-sim --features planted-bugs -- run --seed {} --workload {} --client {}{replay_counts} --planted-bug {}",
                    self.seed,
                    self.workload,
                    self.client.name(),
                    b.name()
                )),
            }
        }
        line
    }
}

/// What the client hands back at the end.
struct ClientOutcome {
    history: Vec<Op>,
    results: Vec<CheckResult>,
    fingerprint: u64,
}

fn coordinator_host(i: usize) -> String {
    format!("c{}", i + 1)
}

fn participant_host(i: usize) -> String {
    format!("p{}", i + 1)
}

fn endpoint(host: &str, port: u16) -> Endpoint {
    Endpoint::new(format!("http://{host}:{port}")).expect("simulated host names make valid URLs")
}

/// FNV-1a, for fingerprints.
fn fnv(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x100_0000_01b3);
    }
}

/// The seeded source of transaction ids: UUIDv7 layout, the simulated clock's ms, random
/// bits from the seed.
fn txn_ids(seed: u64) -> impl Fn() -> TxnId {
    let rng = std::cell::RefCell::new(Rng::new(seed ^ 0x7a11_1d5e_ed00_0000));
    move || loop {
        let mut bytes = [0u8; 10];
        let (a, b) = {
            let mut r = rng.borrow_mut();
            (r.next_u64(), r.next_u64())
        };
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes()[..2]);
        let uuid = uuid::Builder::from_unix_timestamp_millis(sim_unix_ms(), &bytes).into_uuid();
        if let Ok(id) = TxnId::from_uuid(uuid) {
            return id;
        }
    }
}

fn sim_unix_ms() -> u64 {
    EPOCH_UNIX_MS + turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// Run one simulation on this thread.
pub fn run(cfg: &SimConfig) -> SimResult {
    crate::init_logging();
    #[cfg(not(tokio_unstable))]
    {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!(
                "ratify-sim: built without --cfg tokio_unstable (RUSTFLAGS overrides .cargo/config.toml): \
                 tokio's select! order is not seeded, so a seed may not replay exactly"
            )
        });
    }
    let began = Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let _hooks = hooks::install(hooks::Hooks {
        now_unix_ms: Box::new(sim_unix_ms),
        txn_id: Box::new(txn_ids(cfg.seed)),
        connector: net::connector(),
    });
    ratify_coordinator::raft::runtime::seed_thread_rng(Some(rng.next_u64()));
    ratify_proto::planted::set_thread_override(Some(cfg.planted_bug));

    let max_latency = rng.range(1, 25);
    let mut sim = turmoil::Builder::new()
        .rng_seed(rng.next_u64())
        .simulation_duration(SIMULATION_LIMIT)
        .tick_duration(TICK)
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(max_latency))
        .repair_rate(0.2)
        .enable_random_order()
        .build();

    let coordinators: Vec<String> = (0..cfg.coordinators).map(coordinator_host).collect();
    let participants: Vec<String> = (0..cfg.participants).map(participant_host).collect();
    let coordinator_endpoints: Vec<Endpoint> = coordinators
        .iter()
        .map(|h| endpoint(h, COORDINATOR_PORT))
        .collect();
    let mut disks: BTreeMap<String, Arc<MemDisk>> = BTreeMap::new();
    // Snapshots often enough that runs install them on lagging followers.
    let snapshot_every = rng.range(50, 400);
    for (i, host) in coordinators.iter().enumerate() {
        let disk = MemDisk::new();
        disks.insert(host.clone(), disk.clone());
        let peers: Vec<Peer> = coordinators
            .iter()
            .enumerate()
            .map(|(j, h)| Peer {
                node_id: j as u64 + 1,
                endpoint: endpoint(h, COORDINATOR_PORT),
            })
            .collect();
        let config = NodeConfig {
            node_id: i as u64 + 1,
            listen: SocketAddr::from(([0, 0, 0, 0], COORDINATOR_PORT)),
            advertise: Some(endpoint(host, COORDINATOR_PORT)),
            data_dir: "memdisk".into(),
            peers,
            init: i == 0,
            cluster_name: "ratify-sim".into(),
            snapshot_every,
            log_keep: snapshot_every / 4,
            metrics_listen: None,
        };
        sim.host(host.as_str(), move || {
            let (config, disk) = (config.clone(), disk.clone());
            async move {
                let listener = net::bind(COORDINATOR_PORT).await?;
                let local_addr = listener.local_addr()?;
                let serve = Box::new(move |services, stop| {
                    let task: ServeTask = Box::pin(ratify_coordinator::server::serve_incoming(
                        net::incoming(listener),
                        services,
                        stop,
                    ));
                    task
                });
                let node = Node::start_with(
                    config,
                    ratify_coordinator::raft::store::memory(disk),
                    local_addr,
                    serve,
                )
                .await?;
                node.run_until(std::future::pending()).await?;
                Ok(())
            }
        });
    }
    let resolve_after = Duration::from_millis(rng.range(300, 1_500));
    // Business calls each participant has answered (for crashes right after one).
    let answered: BTreeMap<String, Arc<AtomicU64>> = participants
        .iter()
        .map(|h| (h.clone(), Arc::new(AtomicU64::new(0))))
        .collect();
    // One simulated clock for every host: no skew to allow for after a restart (P4), so
    // transactions begun just after one are accepted (and reuse the keys of transactions the
    // restart left in doubt) unless the margin drawn here says otherwise.
    let clock_skew_max = Duration::from_millis(rng.range(0, 20));
    for host in &participants {
        let disk = MemDisk::new();
        disks.insert(host.clone(), disk.clone());
        let id = ParticipantId::new(host.clone()).expect("p1.. are valid participant ids");
        let advertise = endpoint(host, PARTICIPANT_PORT);
        let coordinator_endpoints = coordinator_endpoints.clone();
        let counter = answered[host].clone();
        sim.host(host.as_str(), move || {
            let (disk, id, advertise, coordinator_endpoints, counter) = (
                disk.clone(),
                id.clone(),
                advertise.clone(),
                coordinator_endpoints.clone(),
                counter.clone(),
            );
            async move {
                let store_config = StoreConfig {
                    staged_timeout: Duration::from_secs(10),
                    scan_rows_max: ratify_jepsen::kv::DUMP_ENTRIES_MAX + 1,
                    clock_skew_max,
                    ..StoreConfig::default()
                };
                let store = RocksStore::open_in_memory(disk, store_config)?;
                let listener = net::bind(PARTICIPANT_PORT).await?;
                let mut config = ParticipantConfig::new(id, advertise, coordinator_endpoints);
                config.resolve_after = resolve_after;
                let participant = Participant::new(Arc::new(store.clone()), config)?;
                let background = participant.spawn_background();
                tonic::transport::Server::builder()
                    .add_service(participant.service())
                    .add_service(crate::net::Counted::new(
                        participant.guard(
                            JepsenKvServer::new(Kv::new(store, Some(Duration::from_millis(100))))
                                .max_encoding_message_size(ratify_jepsen::kv::DUMP_BYTES_MAX),
                        ),
                        counter,
                    ))
                    .serve_with_incoming(net::incoming(listener))
                    .await?;
                background.stop().await;
                Ok(())
            }
        });
    }

    // The client: the workload, then the final phase and the checks.
    let phase = Arc::new(AtomicU8::new(PHASE_SETUP));
    let outcome: Arc<Mutex<Option<Result<ClientOutcome, String>>>> = Arc::new(Mutex::new(None));
    {
        let (phase, outcome) = (phase.clone(), outcome.clone());
        let kind = cfg.workload;
        let mode = cfg.client;
        let call_counts = cfg.call_counts;
        let workers = cfg.workers;
        let workload_ms = cfg.workload_ms;
        let names = participants.clone();
        let endpoints = coordinator_endpoints.clone();
        let client_rng = rng.fork(1);
        sim.client("client", async move {
            let r = client(
                kind,
                mode,
                call_counts,
                workers,
                workload_ms,
                names,
                endpoints,
                client_rng,
                phase,
            )
            .await;
            *outcome.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(r.map_err(|e| format!("{e:#}")));
            Ok(())
        });
    }

    let schedule = if cfg.faults {
        faults::schedule(
            &mut rng.fork(2),
            &coordinators,
            &participants,
            "client",
            cfg.workload_ms,
        )
    } else {
        Vec::new()
    };
    let mut driver = FaultDriver {
        all_hosts: coordinators
            .iter()
            .chain(&participants)
            .cloned()
            .chain(["client".to_owned()])
            .collect(),
        disks,
        answered,
        coordinators: coordinators.clone(),
        max_latency: Duration::from_millis(max_latency),
        links: BTreeMap::new(),
        started_at: None,
        next: 0,
        active: Vec::new(),
        delayed: Vec::new(),
        baseline: BTreeMap::new(),
        log: Vec::new(),
    };
    let mut steps = 0u64;
    let mut error = None;
    loop {
        driver.advance(&mut sim, &schedule, phase.load(Ordering::SeqCst));
        steps += 1;
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                error = Some(format!("simulation failed: {e}"));
                break;
            }
        }
    }
    let sim_time = sim.elapsed();
    drop(sim);
    ratify_coordinator::raft::runtime::seed_thread_rng(None);
    ratify_proto::planted::set_thread_override(None);

    let taken = outcome.lock().unwrap_or_else(|p| p.into_inner()).take();
    let (history, results, fingerprint) = match taken {
        Some(Ok(o)) => (o.history, o.results, o.fingerprint),
        Some(Err(e)) => {
            error.get_or_insert(format!("client: {e}"));
            (Vec::new(), Vec::new(), 0)
        }
        None => {
            error.get_or_insert_with(|| "the client did not finish".to_owned());
            (Vec::new(), Vec::new(), 0)
        }
    };
    let counts = ratify_check::history::outcome_counts(&history);
    let mut valid = results.iter().fold(Valid::True, |v, r| v.and(r.valid));
    if error.is_some() && valid == Valid::True {
        valid = Valid::Unknown;
    }
    SimResult {
        seed: cfg.seed,
        workload: cfg.workload.name(),
        client: cfg.client,
        call_counts: cfg.call_counts,
        planted_bug: cfg.planted_bug,
        valid,
        results,
        error,
        counts,
        faults: driver.log,
        sim_time,
        wall: began.elapsed(),
        steps,
        history,
        fingerprint,
    }
}

const PHASE_SETUP: u8 = 0;
const PHASE_WORKLOAD: u8 = 1;
const PHASE_FINAL: u8 = 2;

/// Applies the schedule to the simulation as simulated time passes.
struct FaultDriver {
    all_hosts: Vec<String>,
    disks: BTreeMap<String, Arc<MemDisk>>,
    /// Business calls each participant answered.
    answered: BTreeMap<String, Arc<AtomicU64>>,
    coordinators: Vec<String>,
    max_latency: Duration,
    /// The links as last set (only faulty ones).
    links: BTreeMap<(usize, usize), LinkState>,
    started_at: Option<Duration>,
    next: usize,
    active: Vec<Scheduled>,
    /// Faults an armed crash set up to begin later (the cut after a restart).
    delayed: Vec<Scheduled>,
    /// Calls a participant had answered when a crash-after-call was armed on it.
    baseline: BTreeMap<String, u64>,
    log: Vec<String>,
}

impl FaultDriver {
    fn advance(&mut self, sim: &mut turmoil::Sim<'_>, schedule: &[Scheduled], phase: u8) {
        let now = sim.elapsed();
        match phase {
            PHASE_SETUP => return,
            PHASE_WORKLOAD => {}
            _ => {
                // The workload is over: heal everything, restart what is down.
                if !self.active.is_empty() || self.next < schedule.len() {
                    self.next = schedule.len();
                    self.delayed.clear();
                    let ended: Vec<Scheduled> = std::mem::take(&mut self.active);
                    for s in &ended {
                        self.end(sim, s);
                    }
                    self.rebuild_network(sim);
                }
                return;
            }
        }
        let started = *self.started_at.get_or_insert(now);
        let t = (now - started).as_millis() as u64;
        let mut changed = false;
        let (ending, staying): (Vec<Scheduled>, Vec<Scheduled>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|s| s.at_ms + s.for_ms <= t);
        self.active = staying;
        for s in &ending {
            self.end(sim, s);
            changed = true;
        }
        let (due, later): (Vec<Scheduled>, Vec<Scheduled>) = std::mem::take(&mut self.delayed)
            .into_iter()
            .partition(|s| s.at_ms <= t);
        self.delayed = later;
        for s in due {
            self.log.push(format!(
                "{:.3}s {} for {}ms",
                now.as_secs_f64(),
                s.fault,
                s.for_ms
            ));
            self.active.push(s);
            changed = true;
        }
        changed |= self.trigger_armed(sim, now, t);
        while self.next < schedule.len() && schedule[self.next].at_ms <= t {
            let s = schedule[self.next].clone();
            self.next += 1;
            self.log.push(format!(
                "{:.3}s {} for {}ms",
                now.as_secs_f64(),
                s.fault,
                s.for_ms
            ));
            match &s.fault {
                Fault::Crash(h) => self.crash(sim, h),
                Fault::CrashAfterCall { host, .. } => {
                    let seen = self.answered[host].load(Ordering::SeqCst);
                    self.baseline.insert(host.clone(), seen);
                }
                _ => {}
            }
            self.active.push(s);
            changed = true;
        }
        if changed {
            self.rebuild_network(sim);
        }
    }

    fn crash(&self, sim: &mut turmoil::Sim<'_>, host: &str) {
        sim.crash(host);
        if let Some(d) = self.disks.get(host) {
            d.crash();
        }
    }

    /// Fire the armed crashes whose moment came: a participant that holds a durable prepared
    /// transaction, or has answered a call since the crash was armed. Each becomes a crash
    /// for its restart delay (and, for a prepared one, a cut from the coordinators after the
    /// restart). Returns whether anything fired.
    fn trigger_armed(&mut self, sim: &mut turmoil::Sim<'_>, now: Duration, t: u64) -> bool {
        let firing: Vec<usize> = (0..self.active.len())
            .filter(|&i| match &self.active[i].fault {
                Fault::CrashPrepared { host, .. } => self
                    .disks
                    .get(host)
                    .is_some_and(|d| d.durable_len(CF_PREPARED, 1) > 0),
                Fault::CrashAfterCall { host, .. } => {
                    self.answered[host].load(Ordering::SeqCst)
                        > self.baseline.get(host).copied().unwrap_or(0)
                }
                _ => false,
            })
            .collect();
        for &i in firing.iter().rev() {
            let armed = self.active.remove(i);
            let (host, restart_ms, cut_ms) = match &armed.fault {
                Fault::CrashPrepared {
                    host,
                    restart_ms,
                    cut_ms,
                } => (host.clone(), *restart_ms, Some(*cut_ms)),
                Fault::CrashAfterCall { host, restart_ms } => (host.clone(), *restart_ms, None),
                _ => unreachable!("filtered above"),
            };
            self.crash(sim, &host);
            self.log.push(format!(
                "{:.3}s {} fired: down {restart_ms}ms",
                now.as_secs_f64(),
                armed.fault
            ));
            self.active.push(Scheduled {
                at_ms: t,
                for_ms: restart_ms,
                fault: Fault::Crash(host.clone()),
            });
            if let Some(cut_ms) = cut_ms {
                self.delayed.push(Scheduled {
                    at_ms: t + restart_ms,
                    for_ms: cut_ms,
                    fault: Fault::Split(vec![host], self.coordinators.clone()),
                });
            }
        }
        !firing.is_empty()
    }

    fn end(&mut self, sim: &mut turmoil::Sim<'_>, s: &Scheduled) {
        if let Fault::Crash(h) = &s.fault {
            sim.bounce(h.as_str());
        }
    }

    /// What every link should be under the active faults. A cut (in either direction)
    /// overrides a hold or a lossy link on the same pair: turmoil's hold would turn a
    /// partition into a hold, and a lossy link's random repair would heal a one-way cut.
    fn desired_links(&self) -> BTreeMap<(usize, usize), LinkState> {
        let index = |h: &str| self.all_hosts.iter().position(|x| x == h);
        let mut links: BTreeMap<(usize, usize), LinkState> = BTreeMap::new();
        let cut = |links: &mut BTreeMap<(usize, usize), LinkState>, from: &str, to: &str| {
            if let (Some(a), Some(b)) = (index(from), index(to)) {
                let l = links.entry((a.min(b), a.max(b))).or_default();
                if a < b {
                    l.cut_ab = true;
                } else {
                    l.cut_ba = true;
                }
            }
        };
        for s in &self.active {
            match &s.fault {
                Fault::Isolate(h) => {
                    for o in self.all_hosts.iter().filter(|o| *o != h) {
                        cut(&mut links, h, o);
                        cut(&mut links, o, h);
                    }
                }
                Fault::OneWay(a, b) => cut(&mut links, a, b),
                Fault::Split(x, y) => {
                    for a in x {
                        for b in y {
                            cut(&mut links, a, b);
                            cut(&mut links, b, a);
                        }
                    }
                }
                Fault::Crash(_) | Fault::CrashPrepared { .. } | Fault::CrashAfterCall { .. } => {}
                Fault::Hold(a, b) | Fault::Lossy(a, b) | Fault::Slow(a, b, _) => {
                    if let (Some(i), Some(j)) = (index(a), index(b)) {
                        let l = links.entry((i.min(j), i.max(j))).or_default();
                        match s.fault {
                            Fault::Hold(..) => l.hold = true,
                            Fault::Lossy(..) => l.lossy = true,
                            Fault::Slow(_, _, ms) => l.slow_ms = l.slow_ms.max(Some(ms)),
                            _ => {}
                        }
                    }
                }
            }
        }
        for l in links.values_mut() {
            if l.cut_ab || l.cut_ba {
                l.hold = false;
                l.lossy = false;
            }
        }
        links.retain(|_, l| *l != LinkState::default());
        links
    }

    /// Bring the links whose desired state changed to it; leave the others alone (so a hold
    /// keeps its messages until its own fault ends, then releases them late).
    fn rebuild_network(&mut self, sim: &mut turmoil::Sim<'_>) {
        let desired = self.desired_links();
        let pairs: std::collections::BTreeSet<(usize, usize)> =
            desired.keys().chain(self.links.keys()).copied().collect();
        for pair in pairs {
            let want = desired.get(&pair).copied().unwrap_or_default();
            let had = self.links.get(&pair).copied().unwrap_or_default();
            if want == had {
                continue;
            }
            let (a, b) = (
                self.all_hosts[pair.0].as_str(),
                self.all_hosts[pair.1].as_str(),
            );
            // Heal: release what a hold kept (delivered now, late), repair cuts.
            sim.release(a, b);
            sim.repair(a, b);
            sim.set_link_fail_rate(a, b, if want.lossy { LOSSY_FAIL_RATE } else { 0.0 });
            sim.set_link_max_message_latency(
                a,
                b,
                want.slow_ms.map_or(self.max_latency, Duration::from_millis),
            );
            match (want.cut_ab, want.cut_ba) {
                (true, true) => sim.partition(a, b),
                (true, false) => sim.partition_oneway(a, b),
                (false, true) => sim.partition_oneway(b, a),
                (false, false) => {}
            }
            if want.hold {
                sim.hold(a, b);
            }
        }
        self.links = desired;
    }
}

/// A link's faults (hosts by index, `a < b`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct LinkState {
    cut_ab: bool,
    cut_ba: bool,
    hold: bool,
    lossy: bool,
    slow_ms: Option<u64>,
}

/// A lossy link breaks on a message with this probability (and repairs at random).
const LOSSY_FAIL_RATE: f64 = 0.05;

/// The client host: set-up, workload, final phase, checks.
#[allow(clippy::too_many_arguments)]
async fn client(
    kind: Kind,
    mode: ClientMode,
    call_counts: bool,
    workers: usize,
    workload_ms: u64,
    names: Vec<String>,
    endpoints: Vec<Endpoint>,
    mut rng: Rng,
    phase: Arc<AtomicU8>,
) -> anyhow::Result<ClientOutcome> {
    let recorder = Arc::new(Recorder::new(workers as u64));
    let client = Client::with_config(
        endpoints.clone(),
        ClientConfig {
            txn_timeout: Duration::from_secs(5),
            commit_grace: Duration::from_secs(3),
            call_timeout: Duration::from_secs(5),
            ..ClientConfig::default()
        },
    )?;
    let kvs: Vec<_> = names
        .iter()
        .map(|n| ratify_jepsen::kv::client(&endpoint(n, PARTICIPANT_PORT)))
        .collect();
    let mut workload =
        Workload::new(kind, client, kvs.clone(), names.clone(), recorder.clone()).with_mode(mode);
    if !call_counts {
        workload = workload.without_call_counts();
    }
    let workload = Arc::new(workload);
    workload.setup().await?;
    phase.store(PHASE_WORKLOAD, Ordering::SeqCst);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (workload, recorder, stop) = (workload.clone(), recorder.clone(), stop_rx.clone());
        let mut rng = rng.fork(100 + w as u64);
        tasks.push(tokio::spawn(async move {
            let mut process = w as u64;
            while !*stop.borrow() {
                if workload.run_one(process, &mut rng).await {
                    process = recorder.new_process();
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(workload_ms)).await;
    let _ = stop_tx.send(true);
    let drain = tokio::time::Instant::now() + WORKER_DRAIN;
    for t in tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout_at(drain, t).await.is_err() {
            abort.abort();
        }
    }
    phase.store(PHASE_FINAL, Ordering::SeqCst);

    // Final phase: the driver heals everything; wait until nothing is in doubt.
    let admin = AdminClient::new(endpoints);
    let deadline = tokio::time::Instant::now() + RECOVERY_LIMIT;
    let mut unfinished = Vec::new();
    loop {
        let mut in_doubt = 0;
        for (i, n) in names.iter().enumerate() {
            match ratify_jepsen::reads::dump(kvs[i].clone(), n, "\u{0}none/").await {
                Ok(s) => in_doubt += s.in_doubt.len(),
                Err(_) => in_doubt += 1,
            }
        }
        let pending = ratify_jepsen::reads::phase2_pending(&admin)
            .await
            .unwrap_or_else(|e| vec![format!("unknown: {e}")]);
        if in_doubt == 0 && pending.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            // What participants still hold in doubt shows in their final dumps.
            unfinished = pending;
            break;
        }
        tokio::time::sleep(RECOVERY_POLL).await;
    }
    let mut final_state = FinalState {
        unfinished,
        ..FinalState::default()
    };
    for (i, n) in names.iter().enumerate() {
        let state = ratify_jepsen::reads::dump(kvs[i].clone(), n, kind.prefix())
            .await
            .unwrap_or_default();
        final_state.participants.insert(n.clone(), state);
    }
    final_state.decisions = ratify_jepsen::reads::decisions(&admin).await.ok();
    let (history, _) = recorder.take();
    let results = ratify_jepsen::run::check_history(&workload, &history, &final_state);
    let mut fingerprint = 0xcbf2_9ce4_8422_2325u64;
    for op in &history {
        fnv(&mut fingerprint, &serde_json::to_vec(op)?);
    }
    fnv(&mut fingerprint, &serde_json::to_vec(&final_state)?);
    Ok(ClientOutcome {
        history,
        results,
        fingerprint,
    })
}
