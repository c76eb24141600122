//! Reports of Ratify's fault-injection runs: what a person opens after `ratify-jepsen` ran.
//!
//! [`write`] turns one run's history, nemesis timeline and checker verdicts into files beside
//! the ones the harness already wrote (`history.jsonl`, `nemesis.jsonl`, `final.json`,
//! `logs/`):
//!
//! - `results.json`: `{"valid", "info", "checkers": {name: CheckResult}, "stats", "nemesis"}`,
//!   machine-readable; the store index is built from these.
//! - `summary.txt`: verdicts, first anomalies, counts, latencies, how to reproduce.
//! - `latency.svg`, `throughput.svg`: plots with the nemesis intervals shaded.
//! - `index.html`: one self-contained page linking all of the above and the logs.
//!
//! [`write_store_index`] lists every run in a store folder, newest first.
//!
//! # Layout
//!
//! - `stats.rs`: counts, latencies (invocation matched to completion by process), throughput.
//! - `plot.rs`: the nemesis timeline and both SVG plots, written by hand.
//! - `summary.rs`: `summary.txt`.
//! - `html.rs`: the run page and the store page.
//! - `markup.rs`: escaping, link encoding, NaN-free number formatting, the shared CSS.
//!
//! Nothing here panics on odd input (empty histories, completions without invocations,
//! zero-length runs): a report is most needed when the run went wrong.

#![deny(missing_docs)]

mod html;
mod markup;
mod plot;
mod stats;
mod summary;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use ratify_check::{CheckResult, NemesisEvent, NemesisPhase, Op, Valid};
use serde::{Deserialize, Serialize};

pub use markup::escape;
pub use stats::{Counts, Quantiles, Stats, stats};

/// What the run was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// E.g. `bank-partition-leader-kill`.
    pub name: String,
    /// `bank`, `atomic-marker` or `list-append`.
    pub workload: String,
    /// The nemeses that ran.
    pub nemeses: Vec<String>,
    /// The seed of every random choice.
    pub seed: u64,
    /// Client workers.
    pub concurrency: u32,
    /// How long clients ran.
    pub time_limit_s: f64,
    /// RFC 3339 UTC, given by the caller (the store index sorts on it as text).
    pub started_at: String,
    /// Coordinator nodes.
    pub coordinators: u32,
    /// Participant processes.
    pub participants: u32,
    /// The bug deliberately planted to prove the checkers can fail, if any.
    pub planted_bug: Option<String>,
    /// Wall time of the whole run, including the heal and the final read.
    pub duration_s: f64,
    /// The command line that reproduces the run.
    pub command: String,
}

/// Nemesis events of one `f`, by phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NemesisCounts {
    /// Faults begun.
    pub start: u64,
    /// Faults ended.
    pub stop: u64,
    /// Instantaneous events.
    pub info: u64,
}

/// Nemesis events counted by `f` and phase.
pub fn nemesis_counts(events: &[NemesisEvent]) -> BTreeMap<String, NemesisCounts> {
    let mut counts: BTreeMap<String, NemesisCounts> = BTreeMap::new();
    for e in events {
        let c = counts.entry(e.f.clone()).or_default();
        match e.phase {
            NemesisPhase::Start => c.start += 1,
            NemesisPhase::Stop => c.stop += 1,
            NemesisPhase::Info => c.info += 1,
        }
    }
    counts
}

/// The run's verdict: [`Valid::and`] over the checkers. With no checker nothing was decided,
/// so the verdict is `unknown`, never a vacuous `true`.
pub fn verdict(results: &[CheckResult]) -> Valid {
    match results.split_first() {
        None => Valid::Unknown,
        Some((first, rest)) => rest.iter().fold(first.valid, |v, r| v.and(r.valid)),
    }
}

/// Write `contents` to `dir/name` through a temporary file and a rename, so a reader (a
/// browser refreshing the store index) never sees half a file.
fn write_file(dir: &Path, name: &str, contents: &str) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, contents)?;
    fs::rename(&tmp, dir.join(name))
}

/// `results.json`'s content.
fn results_json(
    info: &RunInfo,
    verdict: Valid,
    results: &[CheckResult],
    stats: &Stats,
    nemesis: &BTreeMap<String, NemesisCounts>,
) -> io::Result<String> {
    let mut checkers = serde_json::Map::new();
    for r in results {
        // Two checkers of one name must not overwrite each other.
        let mut key = r.checker.clone();
        let mut n = 1;
        while checkers.contains_key(&key) {
            n += 1;
            key = format!("{}#{n}", r.checker);
        }
        checkers.insert(key, serde_json::to_value(r)?);
    }
    let doc = serde_json::json!({
        "valid": verdict,
        "info": info,
        "checkers": checkers,
        "stats": stats,
        "nemesis": nemesis,
    });
    let mut text = serde_json::to_string_pretty(&doc)?;
    text.push('\n');
    Ok(text)
}

/// Write into `dir` (which exists, and where the harness already wrote `history.jsonl`,
/// `nemesis.jsonl`, `final.json` and `logs/`): `results.json`, `summary.txt`, `latency.svg`,
/// `throughput.svg` and, last, `index.html`. Returns the overall verdict ([`verdict`]).
pub fn write(
    dir: &Path,
    info: &RunInfo,
    history: &[Op],
    nemesis: &[NemesisEvent],
    results: &[CheckResult],
) -> io::Result<Valid> {
    let verdict = verdict(results);
    let stats = stats(history);
    let counts = nemesis_counts(nemesis);

    write_file(
        dir,
        "results.json",
        &results_json(info, verdict, results, &stats, &counts)?,
    )?;
    write_file(
        dir,
        "summary.txt",
        &summary::render(info, verdict, results, &stats, &counts),
    )?;

    let (completions, _) = stats::completions(history);
    let timeline = plot::Timeline::of(nemesis);
    let x_max_s = stats.duration_s.max(timeline.last_time_s());
    write_file(
        dir,
        "latency.svg",
        &plot::latency_svg(
            &format!("{}: latency", info.name),
            &completions,
            &timeline,
            x_max_s,
        ),
    )?;
    write_file(
        dir,
        "throughput.svg",
        &plot::throughput_svg(
            &format!("{}: throughput", info.name),
            &completions,
            &timeline,
            x_max_s,
        ),
    )?;
    write_file(
        dir,
        "index.html",
        &html::run_page(dir, info, verdict, results, &stats, nemesis, &counts),
    )?;
    Ok(verdict)
}

/// Regenerate `store/index.html`: every run folder under `store` that has a `results.json`
/// (time, name, workload, nemeses, seed, verdict, ok/fail/info counts, a link to its page),
/// newest first. A `results.json` that does not parse is listed as `unreadable`.
pub fn write_store_index(store: &Path) -> io::Result<()> {
    let rows = html::store_rows(store)?;
    write_file(store, "index.html", &html::store_page(&rows))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ratify_check::{Anomaly, OpType};

    use super::*;
    use crate::stats::tests::{op, small_history};

    fn info(name: &str, started_at: &str) -> RunInfo {
        RunInfo {
            name: name.to_string(),
            workload: "bank".to_string(),
            nemeses: vec!["partition-leader".to_string(), "kill-random".to_string()],
            seed: 42,
            concurrency: 4,
            time_limit_s: 30.0,
            started_at: started_at.to_string(),
            coordinators: 3,
            participants: 2,
            planted_bug: None,
            duration_s: 41.5,
            command: "ratify-jepsen --workload bank --seed 42 --nemesis 'a&b'".to_string(),
        }
    }

    fn result(checker: &str, valid: Valid, anomalies: Vec<Anomaly>) -> CheckResult {
        CheckResult {
            checker: checker.to_string(),
            valid,
            summary: format!("{checker} summary"),
            counts: BTreeMap::from([("checked".to_string(), 7)]),
            anomalies,
        }
    }

    fn nemesis() -> Vec<NemesisEvent> {
        let e = |time_ms: u64, phase, id| NemesisEvent {
            time: time_ms * 1_000_000,
            phase,
            id,
            f: "partition-leader".to_string(),
            value: serde_json::json!({"isolated": "c1"}),
        };
        vec![
            e(20, NemesisPhase::Start, 1),
            e(60, NemesisPhase::Stop, 1),
            e(70, NemesisPhase::Info, 2),
        ]
    }

    fn read(dir: &Path, name: &str) -> String {
        fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// The verdict combines checkers (false wins, then unknown) and is unknown with none.
    #[test]
    fn verdict_combines_checkers() {
        assert_eq!(verdict(&[]), Valid::Unknown);
        assert_eq!(verdict(&[result("a", Valid::True, vec![])]), Valid::True);
        let mixed = [
            result("a", Valid::True, vec![]),
            result("b", Valid::Unknown, vec![]),
        ];
        assert_eq!(verdict(&mixed), Valid::Unknown);
        let bad = [
            result("a", Valid::Unknown, vec![]),
            result("b", Valid::False, vec![]),
        ];
        assert_eq!(verdict(&bad), Valid::False);
    }

    /// write() creates every file; results.json round-trips the inputs; markup in names and
    /// anomaly details is escaped; logs are listed and linked.
    #[test]
    fn write_creates_all_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        fs::create_dir_all(d.join("logs/coordinator-1")).expect("logs");
        fs::write(d.join("logs/coordinator-1/stderr <1>.log"), "x").expect("log");
        fs::write(d.join("logs/p1.log"), "hello").expect("log");
        fs::write(d.join("history.jsonl"), "").expect("history");

        let anomaly = Anomaly {
            kind: "wrong-total".to_string(),
            detail: "total 90 <expected 100> & more".to_string(),
            ops: vec![4, 9],
            txn_id: Some("0190-abc".to_string()),
        };
        let results = [
            result("bank", Valid::False, vec![anomaly]),
            result("indoubt", Valid::True, vec![]),
            result("bank", Valid::True, vec![]),
        ];
        let mut run = info("bank-<script>", "2026-01-02T03:04:05Z");
        run.planted_bug = Some("skip-prepare-fsync".to_string());
        let verdict = write(d, &run, &small_history(), &nemesis(), &results).expect("write");
        assert_eq!(verdict, Valid::False);

        for f in [
            "results.json",
            "summary.txt",
            "latency.svg",
            "throughput.svg",
            "index.html",
        ] {
            assert!(d.join(f).is_file(), "{f} written");
            assert!(
                !d.join(format!(".{f}.tmp")).exists(),
                "{f} temp file renamed"
            );
        }

        let json: serde_json::Value =
            serde_json::from_str(&read(d, "results.json")).expect("results.json parses");
        assert_eq!(json["valid"], serde_json::json!(false));
        let back: RunInfo = serde_json::from_value(json["info"].clone()).expect("info");
        assert_eq!(back, run);
        let bank: CheckResult =
            serde_json::from_value(json["checkers"]["bank"].clone()).expect("bank result");
        assert_eq!(bank, results[0]);
        assert_eq!(json["checkers"]["bank#2"]["valid"], serde_json::json!(true));
        assert_eq!(
            json["checkers"]["indoubt"]["valid"],
            serde_json::json!(true)
        );
        let stats: Stats = serde_json::from_value(json["stats"].clone()).expect("stats");
        assert_eq!(stats, super::stats(&small_history()));
        assert_eq!(json["nemesis"]["partition-leader"]["start"], 1);
        assert_eq!(json["nemesis"]["partition-leader"]["info"], 1);

        let summary = read(d, "summary.txt");
        assert!(summary.contains("verdict: INVALID"));
        assert!(summary.contains("wrong-total txn 0190-abc (ops 4, 9): total 90 <expected 100>"));
        assert!(summary.contains("planted bug    skip-prepare-fsync"));
        assert!(summary.contains("partition-leader     start 1 stop 1 info 1"));
        assert!(summary.contains(&run.command));
        assert!(summary.contains("p50"));

        let page = read(d, "index.html");
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<div class=\"banner v-false\">INVALID — bank-&lt;script&gt;</div>"));
        assert!(!page.contains("<script"), "names are escaped");
        assert!(page.contains("total 90 &lt;expected 100&gt; &amp; more"));
        assert!(page.contains("<img src=\"latency.svg\""));
        assert!(page.contains("<img src=\"throughput.svg\""));
        for f in [
            "history.jsonl",
            "nemesis.jsonl",
            "final.json",
            "results.json",
            "summary.txt",
        ] {
            assert!(page.contains(&format!("<a href=\"{f}\">")), "links {f}");
        }
        // The harness wrote no nemesis.jsonl / final.json in this test.
        assert_eq!(page.matches("(missing)").count(), 2);
        assert!(page.contains("<a href=\"logs/p1.log\">logs/p1.log</a>"));
        assert!(page.contains(
            "<a href=\"logs/coordinator-1/stderr%20%3C1%3E.log\">\
             logs/coordinator-1/stderr &lt;1&gt;.log</a>"
        ));
        assert!(page.contains("a&amp;b"), "command escaped");
        assert!(page.contains("<span class=\"v-false\">INVALID</span>"));

        let latency = read(d, "latency.svg");
        assert!(latency.starts_with("<svg"));
        assert_eq!(latency.matches("class=\"nemesis-band\"").count(), 1);
        assert_eq!(latency.matches("class=\"nemesis-mark\"").count(), 1);
        assert!(latency.contains("bank-&lt;script&gt;: latency"));
    }

    /// Nothing to report is still a report: empty history, no nemesis, no checker.
    #[test]
    fn write_handles_an_empty_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = info("empty", "2026-01-01T00:00:00Z");
        let v = write(dir.path(), &run, &[], &[], &[]).expect("write");
        assert_eq!(v, Valid::Unknown);
        let summary = read(dir.path(), "summary.txt");
        assert!(summary.contains("verdict: unknown"));
        assert!(summary.contains("no ok operations"));
        let page = read(dir.path(), "index.html");
        assert!(page.contains("No checker ran"));
        assert!(page.contains("No files under logs/."));
        for f in ["latency.svg", "throughput.svg", "results.json"] {
            let text = read(dir.path(), f);
            assert!(!text.contains("NaN"), "{f} NaN-free");
        }
        // A completion with no invocation only.
        let h = [op(0, 5, 1, OpType::Info, "transfer")];
        write(dir.path(), &run, &h, &[], &[]).expect("write");
    }

    /// The store index lists runs with results.json newest first, skips folders without one,
    /// and shows unreadable ones.
    #[test]
    fn store_index_lists_runs_newest_first() {
        let store = tempfile::tempdir().expect("tempdir");
        let s = store.path();
        let runs = [
            ("run-b", "2026-03-01T10:00:00Z", Valid::False),
            ("run-a", "2026-03-02T09:00:00Z", Valid::True),
            ("run-c", "2026-02-28T23:59:59Z", Valid::Unknown),
        ];
        for (name, at, valid) in runs {
            let d = s.join(name);
            fs::create_dir(&d).expect("run dir");
            let r = [result("bank", valid, vec![])];
            write(&d, &info(name, at), &small_history(), &[], &r).expect("write");
        }
        fs::create_dir(s.join("in-progress")).expect("dir");
        fs::create_dir(s.join("broken")).expect("dir");
        fs::write(s.join("broken/results.json"), "{not json").expect("write");
        fs::write(s.join("stray-file.txt"), "x").expect("write");

        write_store_index(s).expect("store index");
        let page = read(s, "index.html");
        let pos = |needle: &str| {
            page.find(needle)
                .unwrap_or_else(|| panic!("{needle} listed:\n{page}"))
        };
        let (a, b, c) = (
            pos("href=\"run-a/index.html\""),
            pos("href=\"run-b/index.html\""),
            pos("href=\"run-c/index.html\""),
        );
        assert!(a < b && b < c, "newest first: {a} {b} {c}");
        // The unreadable one has no time, so it sorts last.
        assert!(pos("href=\"broken/index.html\"") > c);
        assert!(page.contains("<span class=\"v-none\">unreadable</span>"));
        assert!(!page.contains("in-progress"));
        assert!(!page.contains("stray-file"));
        assert!(page.contains("<span class=\"v-false\">INVALID</span>"));
        assert!(page.contains("<span class=\"v-true\">valid</span>"));
        assert!(page.contains("<span class=\"v-unknown\">unknown</span>"));
        assert!(page.contains("partition-leader, kill-random"));
        // ok/fail/info counts of small_history(): 3, 1, 1.
        assert!(
            page.contains("<td class=\"n\">3</td><td class=\"n\">1</td><td class=\"n\">1</td>")
        );
        assert!(page.contains("4 runs: 1 invalid, 2 unknown or unreadable."));
    }
}
