//! `index.html` of a run and of the store: self-contained pages (inline CSS, no scripts).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use ratify_check::{CheckResult, NemesisEvent, NemesisPhase, Valid};
use serde_json::Value;

use crate::markup::{CSS, escape, href, num, verdict_class, verdict_word};
use crate::stats::{NS_PER_S, Stats};
use crate::summary::truncate;
use crate::{NemesisCounts, RunInfo};

/// Anomalies listed per checker on the page.
const ANOMALIES_SHOWN_MAX: usize = 50;
/// Characters of one anomaly's detail shown on the page.
const DETAIL_CHARS_MAX: usize = 20_000;
/// Nemesis events listed on the page (`nemesis.jsonl` has them all).
const NEMESIS_EVENTS_SHOWN_MAX: usize = 500;
/// Files listed from `logs/`, and how deep the listing goes.
const LOG_FILES_MAX: usize = 1_000;
const LOG_DEPTH_MAX: usize = 4;
/// The files the harness writes next to ours.
const RUN_FILES: [(&str, &str); 5] = [
    ("history.jsonl", "every operation (Jepsen/Elle JSON lines)"),
    ("nemesis.jsonl", "the nemesis timeline"),
    ("final.json", "state read after the final heal"),
    ("results.json", "verdicts, run info, statistics"),
    ("summary.txt", "this page as text"),
];

fn page_head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>\n{CSS}</style></head><body>\n",
        escape(title)
    );
}

fn verdict_span(v: Option<Valid>, word: &str) -> String {
    format!(
        "<span class=\"{}\">{}</span>",
        verdict_class(v),
        escape(word)
    )
}

/// Files under `dir/rel`, relative to `dir`, sorted, with their sizes; bounded in count and
/// depth (a runaway log directory must not make the page huge).
fn list_files(dir: &Path, rel: &str, depth: usize, out: &mut Vec<(String, u64)>) {
    let Ok(entries) = fs::read_dir(dir.join(rel)) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        if out.len() >= LOG_FILES_MAX {
            return;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let path = format!("{rel}/{name}");
        // Follows symbolic links; the depth bound stops a link cycle.
        if e.path().is_dir() {
            if depth < LOG_DEPTH_MAX {
                list_files(dir, &path, depth + 1, out);
            }
        } else {
            let size = fs::metadata(e.path()).map(|m| m.len()).unwrap_or(0);
            out.push((path, size));
        }
    }
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The page of one run. `dir` is read only to list which files exist.
pub(crate) fn run_page(
    dir: &Path,
    info: &RunInfo,
    verdict: Valid,
    results: &[CheckResult],
    stats: &Stats,
    nemesis: &[NemesisEvent],
    nemesis_counts: &BTreeMap<String, NemesisCounts>,
) -> String {
    let mut out = String::new();
    page_head(
        &mut out,
        &format!("{} — {}", info.name, verdict_word(verdict)),
    );
    let _ = writeln!(
        out,
        "<p class=\"muted\"><a href=\"../index.html\">all runs</a></p>\n\
         <div class=\"banner {}\">{} — {}</div>",
        verdict_class(Some(verdict)),
        escape(verdict_word(verdict)),
        escape(&info.name),
    );
    if results.is_empty() {
        out.push_str("<p>No checker ran: nothing was decided.</p>\n");
    }
    if let Some(bug) = &info.planted_bug {
        let _ = writeln!(
            out,
            "<p><strong>Planted bug:</strong> <code>{}</code> — the checkers are expected to \
             find it.</p>",
            escape(bug)
        );
    }

    out.push_str("<h2>Run</h2>\n<table>\n");
    let nemeses = if info.nemeses.is_empty() {
        "none".to_string()
    } else {
        info.nemeses.join(", ")
    };
    let rows: [(&str, String); 11] = [
        ("name", info.name.clone()),
        ("workload", info.workload.clone()),
        ("nemeses", nemeses),
        ("seed", info.seed.to_string()),
        ("concurrency", info.concurrency.to_string()),
        ("time limit", format!("{} s", num(info.time_limit_s, 1))),
        ("started at", info.started_at.clone()),
        ("duration", format!("{} s", num(info.duration_s, 1))),
        ("coordinators", info.coordinators.to_string()),
        ("participants", info.participants.to_string()),
        (
            "planted bug",
            info.planted_bug
                .clone()
                .unwrap_or_else(|| "none".to_string()),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "<tr><th>{k}</th><td>{}</td></tr>", escape(&v));
    }
    let _ = writeln!(
        out,
        "<tr><th>reproduce</th><td><code>{}</code></td></tr>\n</table>",
        escape(&info.command)
    );

    out.push_str(
        "<h2>Checkers</h2>\n<table>\n<tr><th>checker</th><th>verdict</th><th>summary</th>\
         <th>counts</th></tr>\n",
    );
    for r in results {
        let counts: Vec<String> = r
            .counts
            .iter()
            .map(|(k, v)| format!("{}={v}", escape(k)))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.checker),
            verdict_span(Some(r.valid), verdict_word(r.valid)),
            escape(&r.summary),
            counts.join("<br>"),
        );
    }
    out.push_str("</table>\n");
    for r in results.iter().filter(|r| !r.anomalies.is_empty()) {
        let open = if r.valid == Valid::True { "" } else { " open" };
        let shown = r.anomalies.len().min(ANOMALIES_SHOWN_MAX);
        let _ = writeln!(
            out,
            "<details{open}><summary><strong>{}</strong>: anomalies reported: {}{}</summary>\
             \n<table>\n<tr><th>kind</th><th>txn</th><th>ops</th><th>detail</th></tr>",
            escape(&r.checker),
            r.anomalies.len(),
            if shown < r.anomalies.len() {
                format!(", first {shown} shown (all in results.json)")
            } else {
                String::new()
            },
        );
        for a in r.anomalies.iter().take(shown) {
            let ops: Vec<String> = a.ops.iter().map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td><pre>{}</pre></td></tr>",
                escape(&a.kind),
                escape(a.txn_id.as_deref().unwrap_or("")),
                escape(&ops.join(", ")),
                escape(&truncate(&a.detail, DETAIL_CHARS_MAX)),
            );
        }
        out.push_str("</table></details>\n");
    }

    out.push_str(
        "<h2>Operations</h2>\n<table>\n<tr><th>f</th><th>invoke</th><th>ok</th><th>fail</th>\
         <th>info</th></tr>\n",
    );
    let by_f = stats.by_f.iter().map(|(f, c)| (f.as_str(), c));
    for (f, c) in by_f.chain(std::iter::once(("total", &stats.ops))) {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(f),
            c.invoke,
            c.ok,
            c.fail,
            c.info
        );
    }
    let _ = writeln!(
        out,
        "</table>\n<p>Throughput {} completions/s ({} ok/s) over {} s of history. \
         Completions without invocation: {}; invocations never completed: {}.</p>",
        num(stats.throughput_per_s, 1),
        num(stats.throughput_ok_per_s, 1),
        num(stats.duration_s, 1),
        stats.unmatched_completions,
        stats.open_invocations,
    );
    out.push_str("<h3>Latency of ok operations (ms)</h3>\n");
    match &stats.latency_ms {
        None => out.push_str("<p>No ok operations.</p>\n"),
        Some(all) => {
            out.push_str(
                "<table>\n<tr><th>f</th><th>count</th><th>p50</th><th>p90</th><th>p99</th>\
                 <th>max</th></tr>\n",
            );
            let by_f = stats.latency_ms_by_f.iter().map(|(f, q)| (f.as_str(), q));
            for (f, q) in by_f.chain(std::iter::once(("all", all))) {
                let _ = writeln!(
                    out,
                    "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                    escape(f),
                    q.count,
                    num(q.p50, 2),
                    num(q.p90, 2),
                    num(q.p99, 2),
                    num(q.max, 2)
                );
            }
            out.push_str("</table>\n");
        }
    }

    out.push_str(
        "<h2>Plots</h2>\n<p>Shaded: nemesis intervals; thin lines: instantaneous nemesis events. \
         Open a plot on its own for tooltips.</p>\n\
         <p><a href=\"latency.svg\"><img src=\"latency.svg\" alt=\"latency over time\"></a></p>\n\
         <p><a href=\"throughput.svg\"><img src=\"throughput.svg\" \
         alt=\"throughput over time\"></a></p>\n",
    );

    out.push_str("<h2>Nemesis</h2>\n");
    if nemesis_counts.is_empty() {
        out.push_str("<p>No nemesis events.</p>\n");
    } else {
        out.push_str("<table>\n<tr><th>f</th><th>start</th><th>stop</th><th>info</th></tr>\n");
        for (f, c) in nemesis_counts {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td></tr>",
                escape(f),
                c.start,
                c.stop,
                c.info
            );
        }
        let _ = writeln!(
            out,
            "</table>\n<details><summary>Events ({}{})</summary>\n<table>\n\
             <tr><th>time (s)</th><th>phase</th><th>id</th><th>f</th><th>value</th></tr>",
            nemesis.len(),
            if nemesis.len() > NEMESIS_EVENTS_SHOWN_MAX {
                format!(", first {NEMESIS_EVENTS_SHOWN_MAX} shown")
            } else {
                String::new()
            }
        );
        for e in nemesis.iter().take(NEMESIS_EVENTS_SHOWN_MAX) {
            let phase = match e.phase {
                NemesisPhase::Start => "start",
                NemesisPhase::Stop => "stop",
                NemesisPhase::Info => "info",
            };
            let _ = writeln!(
                out,
                "<tr><td class=\"n\">{}</td><td>{phase}</td><td class=\"n\">{}</td><td>{}</td>\
                 <td><code>{}</code></td></tr>",
                num(e.time as f64 / NS_PER_S, 3),
                e.id,
                escape(&e.f),
                escape(&e.value.to_string()),
            );
        }
        out.push_str("</table></details>\n");
    }

    out.push_str("<h2>Files</h2>\n<ul>\n");
    for (name, what) in RUN_FILES {
        // Ours are written before this page, so only the harness's can be missing.
        let missing = if dir.join(name).exists() {
            ""
        } else {
            " <span class=\"muted\">(missing)</span>"
        };
        let _ = writeln!(
            out,
            "<li><a href=\"{}\">{}</a> — {what}{missing}</li>",
            href(name),
            escape(name)
        );
    }
    out.push_str("</ul>\n<h3>Logs</h3>\n");
    let mut logs = Vec::new();
    list_files(dir, "logs", 0, &mut logs);
    if logs.is_empty() {
        out.push_str("<p class=\"muted\">No files under logs/.</p>\n");
    } else {
        out.push_str("<ul>\n");
        for (path, size) in &logs {
            let _ = writeln!(
                out,
                "<li><a href=\"{}\">{}</a> <span class=\"muted\">{}</span></li>",
                href(path),
                escape(path),
                human_size(*size)
            );
        }
        if logs.len() >= LOG_FILES_MAX {
            let _ = writeln!(
                out,
                "<li class=\"muted\">(listing stopped at {LOG_FILES_MAX} files)</li>"
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// One row of the store index, read from a run's `results.json`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunRow {
    pub folder: String,
    pub started_at: String,
    pub name: String,
    pub workload: String,
    pub nemeses: String,
    pub seed: String,
    pub planted_bug: String,
    pub valid: Option<Valid>,
    pub verdict: String,
    pub ok: String,
    pub fail: String,
    pub info: String,
    pub duration_s: String,
}

impl RunRow {
    /// A row from `results.json`'s text; a file that does not parse still gets a row, so a
    /// broken run is visible rather than silently missing.
    pub fn parse(folder: &str, text: &str) -> RunRow {
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let s = |p: &str| match v.pointer(p) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let valid = v
            .get("valid")
            .and_then(|x| serde_json::from_value::<Valid>(x.clone()).ok());
        let nemeses = match v.pointer("/info/nemeses") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
            _ => String::new(),
        };
        let duration_s = v
            .pointer("/info/duration_s")
            .and_then(Value::as_f64)
            .map(|d| num(d, 1))
            .unwrap_or_default();
        RunRow {
            folder: folder.to_string(),
            started_at: s("/info/started_at"),
            name: match s("/info/name") {
                n if n.is_empty() => folder.to_string(),
                n => n,
            },
            workload: s("/info/workload"),
            nemeses,
            seed: s("/info/seed"),
            planted_bug: s("/info/planted_bug"),
            valid,
            verdict: match valid {
                Some(v) => verdict_word(v).to_string(),
                None => "unreadable".to_string(),
            },
            ok: s("/stats/ops/ok"),
            fail: s("/stats/ops/fail"),
            info: s("/stats/ops/info"),
            duration_s,
        }
    }
}

/// Every run folder under `store` that has a `results.json`, newest first (by `started_at`,
/// then by folder name, both descending: RFC 3339 UTC times sort as text).
pub(crate) fn store_rows(store: &Path) -> std::io::Result<Vec<RunRow>> {
    let mut rows = Vec::new();
    for e in fs::read_dir(store)?.filter_map(Result::ok) {
        if !e.path().is_dir() {
            continue;
        }
        let Ok(text) = fs::read_to_string(e.path().join("results.json")) else {
            continue; // still running, or crashed before the report: nothing to show yet
        };
        rows.push(RunRow::parse(&e.file_name().to_string_lossy(), &text));
    }
    rows.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.folder.cmp(&a.folder))
    });
    Ok(rows)
}

/// The store's page.
pub(crate) fn store_page(rows: &[RunRow]) -> String {
    let mut out = String::new();
    page_head(&mut out, "Ratify fault-injection runs");
    let failed = rows
        .iter()
        .filter(|r| r.valid == Some(Valid::False))
        .count();
    let unknown = rows
        .iter()
        .filter(|r| matches!(r.valid, Some(Valid::Unknown) | None))
        .count();
    let _ = writeln!(
        out,
        "<h1>Ratify fault-injection runs</h1>\n<p>{} runs: {} invalid, {} unknown or \
         unreadable. Newest first.</p>\n<table>\n<tr><th>started at</th><th>name</th>\
         <th>workload</th><th>nemeses</th><th>seed</th><th>planted bug</th><th>verdict</th>\
         <th>ok</th><th>fail</th><th>info</th><th>duration (s)</th></tr>",
        rows.len(),
        failed,
        unknown
    );
    for r in rows {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
            escape(&r.started_at),
            href(&format!("{}/index.html", r.folder)),
            escape(&r.name),
            escape(&r.workload),
            escape(&r.nemeses),
            escape(&r.seed),
            escape(&r.planted_bug),
            verdict_span(r.valid, &r.verdict),
            escape(&r.ok),
            escape(&r.fail),
            escape(&r.info),
            escape(&r.duration_s),
        );
    }
    out.push_str("</table>\n</body></html>\n");
    out
}
