//! One test run: start the system, run the workload and the nemesis for the time limit, heal,
//! wait for recovery, read the final state, check, report.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use ratify_check::{CheckResult, FinalState, ParticipantState, Valid};
use ratify_participant::{Client, ClientConfig};
use serde_json::json;

use crate::nemesis::{self, Nemesis, Schedule};
use crate::recorder::Recorder;
use crate::rng::Rng;
use crate::system::{System, SystemConfig};
use crate::workload::{self, ClientMode, Kind, Workload};

/// How long the final phase waits for a leader.
pub const HEAL_LEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the final phase waits for every participant to have nothing in doubt and the
/// leader to have no phase-2 work left.
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long workers get to finish their last operation after the time limit.
pub const WORKER_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// One test.
#[derive(Debug, Clone)]
pub struct TestConfig {
    /// Name of the run (the store folder's parent).
    pub name: String,
    /// The workload.
    pub workload: Kind,
    /// How the clients behave around failed calls.
    pub client: ClientMode,
    /// The nemeses to draw from.
    pub nemeses: Vec<Nemesis>,
    /// How long the workload and the nemesis run.
    pub time_limit: Duration,
    /// Everything random comes from this.
    pub seed: u64,
    /// Client workers.
    pub concurrency: u32,
    /// Coordinators (3 or 5).
    pub coordinators: usize,
    /// Participants (≥ 3).
    pub participants: usize,
    /// Where runs are stored.
    pub store: PathBuf,
    /// A planted bug for every process.
    pub planted_bug: Option<String>,
    /// Where `ratify` and `ratify-jepsen-node` are.
    pub bin_dir: PathBuf,
    /// Fault timing.
    pub schedule: Schedule,
    /// Participants' resolve_after.
    pub resolve_after_ms: u64,
    /// The command line that reproduces the run.
    pub command: String,
}

/// What a run found.
#[derive(Debug)]
pub struct RunResult {
    /// Its folder.
    pub dir: PathBuf,
    /// Overall verdict.
    pub valid: Valid,
    /// Per checker.
    pub results: Vec<CheckResult>,
    /// Completions: ok, fail, info.
    pub counts: (u64, u64, u64),
    /// Wall time.
    pub duration: Duration,
    /// When the earliest transaction named by a failing checker's anomaly was invoked, seconds
    /// into the workload (how long the fault took to produce a detectable violation).
    pub first_anomaly_s: Option<f64>,
}

/// The invocation time of the earliest operation named by an anomaly of a checker that said
/// `false` (by history index, or by transaction id).
fn first_anomaly(history: &[ratify_check::Op], results: &[CheckResult]) -> Option<f64> {
    let mut by_txn: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for op in history {
        if let Some(t) = &op.txn_id {
            by_txn.entry(t.as_str()).or_insert(op.time);
        }
    }
    results
        .iter()
        .filter(|r| r.valid == Valid::False)
        .flat_map(|r| r.anomalies.iter())
        .flat_map(|a| {
            let by_index = a
                .ops
                .iter()
                .filter_map(|&i| history.get(i as usize).map(|o| o.time));
            let by_id = a.txn_id.as_deref().and_then(|t| by_txn.get(t).copied());
            by_index.chain(by_id)
        })
        .min()
        .map(|ns| ns as f64 / 1e9)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
pub fn rfc3339(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_jsonl<T: serde::Serialize>(path: &Path, items: &[T]) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for item in items {
        serde_json::to_writer(&mut w, item)?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(())
}

/// Check that every process says it runs the planted bug (binaries built without the
/// `planted-bugs` feature ignore the switch, and the selftest would prove nothing).
fn cfg_bug_line(system: &System) -> String {
    format!("planted bug {:?}", system.planted_bug().unwrap_or_default())
}

fn check_bug_announced(dir: &Path, system: &System) -> Result<()> {
    let names = system
        .coordinators
        .iter()
        .map(|c| c.name.clone())
        .chain(system.participants.iter().map(|p| p.name.clone()));
    for name in names {
        let log = std::fs::read_to_string(dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default();
        let bug = cfg_bug_line(system);
        if !log.contains(&bug) {
            return Err(anyhow!(
                "{name} does not report the planted bug: build the binaries with `--features planted-bugs` (or --all-features)"
            ));
        }
    }
    Ok(())
}

/// The `processes` checker: a panic in any process's log, or a process that exited by itself
/// more often than its log shows a failpoint firing, is a bug (`false`) even when the history
/// looks fine (a panicking task can hide behind retries).
fn process_health(dir: &Path, timeline: &[ratify_check::NemesisEvent]) -> CheckResult {
    let mut anomalies = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    let logs = std::fs::read_dir(dir.join("logs"))
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default();
    for entry in logs {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("?")
            .to_owned();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let panics: Vec<&str> = text.lines().filter(|l| l.contains("panicked at")).collect();
        let fired = text
            .lines()
            .filter(|l| l.starts_with("failpoint ") && l.contains(" hit"))
            .count();
        let crashes = timeline
            .iter()
            .filter(|e| {
                e.f == "crash"
                    && e.value.get("process").and_then(|p| p.as_str()) == Some(name.as_str())
            })
            .count();
        *counts.entry("processes".to_owned()).or_insert(0) += 1;
        *counts.entry("failpoints-fired".to_owned()).or_insert(0) += fired as u64;
        *counts.entry("crashes".to_owned()).or_insert(0) += crashes as u64;
        for p in panics
            .iter()
            .take(ratify_check::history::ANOMALIES_PER_KIND_MAX as usize)
        {
            anomalies.push(ratify_check::Anomaly {
                kind: "panic".into(),
                detail: format!("{name}: {p}"),
                ops: Vec::new(),
                txn_id: None,
            });
        }
        *counts.entry("panic".to_owned()).or_insert(0) += panics.len() as u64;
        if crashes > fired {
            anomalies.push(ratify_check::Anomaly {
                kind: "unexpected-exit".into(),
                detail: format!("{name} exited by itself {crashes} times, {fired} of them at a failpoint (see logs/{name}.log)"),
                ops: Vec::new(),
                txn_id: None,
            });
            *counts.entry("unexpected-exit".to_owned()).or_insert(0) += (crashes - fired) as u64;
        }
    }
    let valid = if anomalies.is_empty() {
        Valid::True
    } else {
        Valid::False
    };
    let summary = if anomalies.is_empty() {
        format!(
            "no panics; every self-inflicted exit was a failpoint ({} processes, {} failpoint crashes)",
            counts.get("processes").copied().unwrap_or(0),
            counts.get("failpoints-fired").copied().unwrap_or(0)
        )
    } else {
        format!("{} problems in the process logs", anomalies.len())
    };
    CheckResult {
        checker: "processes".into(),
        valid,
        summary,
        anomalies,
        counts,
    }
}

/// The workload's checker and the in-doubt checker over a finished run (the harness and the
/// simulation run the same ones).
pub fn check_history(
    workload: &Workload,
    history: &[ratify_check::Op],
    final_state: &FinalState,
) -> Vec<CheckResult> {
    let in_doubt = ratify_check::indoubt::check(final_state);
    let mut results = match workload.kind {
        Kind::Bank => vec![ratify_check::bank::check(
            history,
            final_state,
            &workload::bank_model(workload),
        )],
        Kind::AtomicMarker => vec![ratify_check::atomic::check(history, final_state)],
        Kind::ListAppend => {
            // The final lists only count when nothing is left in doubt (a prepared append is
            // not in a list yet, and would read as lost).
            let lists = (in_doubt.valid == Valid::True)
                .then(|| ratify_check::elle::final_lists(final_state).ok())
                .flatten();
            vec![ratify_check::elle::check(history, lists.as_ref())]
        }
    };
    results.push(ratify_check::calls::check(history));
    results.push(in_doubt);
    results
}

/// Run one test to the end.
pub async fn run(cfg: &TestConfig) -> Result<RunResult> {
    let began = Instant::now();
    let started_at = rfc3339(unix_now());
    let stamp = started_at.replace([':', '-'], "");
    let dir = cfg
        .store
        .join(format!("{stamp}-{}-seed{}", cfg.name, cfg.seed));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "run {}: {} ({} clients) nemeses [{}], {} s, seed {}, {} workers → {}",
        cfg.name,
        cfg.workload.name(),
        cfg.client.name(),
        cfg.nemeses
            .iter()
            .map(|n| n.name())
            .collect::<Vec<_>>()
            .join(","),
        cfg.time_limit.as_secs(),
        cfg.seed,
        cfg.concurrency,
        dir.display()
    );
    let mut rng = Rng::new(cfg.seed);
    let system = System::start(
        SystemConfig {
            ratify_bin: cfg.bin_dir.join("ratify"),
            node_bin: cfg.bin_dir.join("ratify-jepsen-node"),
            coordinators: cfg.coordinators,
            participants: cfg.participants,
            resolve_after_ms: cfg.resolve_after_ms,
            planted_bug: cfg.planted_bug.clone(),
            seed: rng.next_u64(),
        },
        &dir,
    )
    .await
    .context("starting the system")?;
    if cfg.planted_bug.is_some() {
        check_bug_announced(&dir, &system)?;
    }
    let recorder = Arc::new(Recorder::new(cfg.concurrency as u64));
    let client = Client::with_config(
        system.coordinator_endpoints(),
        ClientConfig {
            txn_timeout: Duration::from_secs(5),
            commit_grace: Duration::from_secs(3),
            call_timeout: Duration::from_secs(5),
            dial_map: system.client_dial_map.clone(),
            ..ClientConfig::default()
        },
    )?;
    let names: Vec<String> = system.participants.iter().map(|p| p.name.clone()).collect();
    let kvs = (0..names.len()).map(|i| system.kv(i)).collect();
    let workload = Arc::new(
        Workload::new(cfg.workload, client, kvs, names, recorder.clone()).with_mode(cfg.client),
    );
    workload.setup().await.context("workload set-up")?;
    let system = Arc::new(tokio::sync::Mutex::new(system));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let nemesis_task = tokio::spawn(nemesis::run(
        cfg.nemeses.clone(),
        cfg.schedule,
        system.clone(),
        recorder.clone(),
        rng.fork(1),
        stop_rx.clone(),
    ));
    let mut workers = Vec::new();
    for w in 0..cfg.concurrency {
        let workload = workload.clone();
        let recorder = recorder.clone();
        let stop = stop_rx.clone();
        let mut rng = rng.fork(100 + w as u64);
        workers.push(tokio::spawn(async move {
            let mut process = w as u64;
            while !*stop.borrow() && !recorder.full() {
                if workload.run_one(process, &mut rng).await {
                    process = recorder.new_process();
                }
            }
        }));
    }
    let deadline = Instant::now() + cfg.time_limit;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250).min(deadline - Instant::now())).await;
    }
    let _ = stop_tx.send(true);
    let _ = nemesis_task.await;
    let drain = Instant::now() + WORKER_DRAIN_TIMEOUT;
    for w in workers {
        let left = drain.saturating_duration_since(Instant::now());
        let abort = w.abort_handle();
        if tokio::time::timeout(left, w).await.is_err() {
            // Stopped, so it cannot commit while the final state is read.
            abort.abort();
            eprintln!(
                "a worker did not finish within {WORKER_DRAIN_TIMEOUT:?}; stopped, its last operation stays open (unknown)"
            );
        }
    }
    // Final phase: heal, restart, wait for recovery, read.
    let mut sys = system.lock().await;
    let notes = sys.heal_all().await;
    recorder.nemesis_info("heal", json!(notes));
    let leader = sys.wait_for_leader(HEAL_LEADER_TIMEOUT).await;
    recorder.nemesis_info("recovered", json!({"leader": leader.as_ref().ok().map(|s| sys.coordinators[*s].name.clone()), "error": leader.as_ref().err().map(|e| e.to_string())}));
    let recovery_deadline = Instant::now() + RECOVERY_TIMEOUT;
    let mut unfinished = Vec::new();
    loop {
        let mut in_doubt = 0;
        for i in 0..sys.participants.len() {
            match sys.dump(i, "\u{0}none/").await {
                Ok(s) => in_doubt += s.in_doubt.len(),
                Err(_) => in_doubt += 1,
            }
        }
        let pending = sys
            .phase2_pending()
            .await
            .unwrap_or_else(|e| vec![format!("unknown: {e}")]);
        if in_doubt == 0 && pending.is_empty() {
            recorder.nemesis_info("quiescent", json!({}));
            break;
        }
        if Instant::now() > recovery_deadline {
            recorder.nemesis_info(
                "not-quiescent",
                json!({"in_doubt": in_doubt, "phase2_pending": pending}),
            );
            unfinished = pending;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut final_state = FinalState {
        unfinished,
        ..FinalState::default()
    };
    for i in 0..sys.participants.len() {
        let name = sys.participants[i].name.clone();
        let state = match sys.dump(i, cfg.workload.prefix()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("final read of {name} failed: {e}");
                ParticipantState::default()
            }
        };
        final_state.participants.insert(name, state);
    }
    final_state.decisions = match sys.decisions().await {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("reading the coordinator's decisions failed: {e}");
            None
        }
    };
    sys.stop_all().await;
    drop(sys);
    let (history, timeline) = recorder.take();
    write_jsonl(&dir.join("history.jsonl"), &history)?;
    write_jsonl(&dir.join("nemesis.jsonl"), &timeline)?;
    std::fs::write(
        dir.join("final.json"),
        serde_json::to_vec_pretty(&final_state)?,
    )?;
    let mut results = check_history(&workload, &history, &final_state);
    results.push(process_health(&dir, &timeline));
    let counts = ratify_check::history::outcome_counts(&history);
    let info = ratify_report::RunInfo {
        name: cfg.name.clone(),
        workload: match cfg.client {
            ClientMode::Careful => cfg.workload.name().to_owned(),
            other => format!("{}/{}", cfg.workload.name(), other.name()),
        },
        nemeses: cfg.nemeses.iter().map(|n| n.name().to_owned()).collect(),
        seed: cfg.seed,
        concurrency: cfg.concurrency,
        time_limit_s: cfg.time_limit.as_secs_f64(),
        started_at,
        coordinators: cfg.coordinators as u32,
        participants: cfg.participants as u32,
        planted_bug: cfg.planted_bug.clone(),
        duration_s: began.elapsed().as_secs_f64(),
        command: cfg.command.clone(),
    };
    let valid = ratify_report::write(&dir, &info, &history, &timeline, &results)?;
    let _ = ratify_report::write_store_index(&cfg.store);
    if valid == Valid::True {
        // The data directories are only needed to investigate a failure.
        let _ = std::fs::remove_dir_all(dir.join("data"));
    }
    let first_anomaly_s = first_anomaly(&history, &results);
    Ok(RunResult {
        dir,
        valid,
        results,
        counts,
        duration: began.elapsed(),
        first_anomaly_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_unix_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_796_050_781), "2026-11-30T14:59:41Z");
    }
}
