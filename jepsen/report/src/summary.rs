//! `summary.txt`: what a person reads first, in a terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ratify_check::{CheckResult, Valid};

use crate::markup::{num, verdict_word};
use crate::stats::{Counts, Quantiles, Stats};
use crate::{NemesisCounts, RunInfo};

/// Anomalies shown per checker (`results.json` has all a checker reported).
pub(crate) const ANOMALIES_SHOWN_MAX: usize = 5;
/// Characters of one anomaly's detail shown (a cycle witness can be long).
const DETAIL_CHARS_MAX: usize = 2_000;

/// `text` cut to `max` characters, marking the cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((i, _)) => format!(
            "{}… ({} more characters)",
            &text[..i],
            text[i..].chars().count()
        ),
    }
}

/// Every line of `text` after the first indented by `indent`.
fn indent_rest(text: &str, indent: &str) -> String {
    text.lines()
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

fn counts_row(out: &mut String, label: &str, c: &Counts) {
    let _ = writeln!(
        out,
        "  {label:<20} {:>9} {:>9} {:>9} {:>9}",
        c.invoke, c.ok, c.fail, c.info
    );
}

fn latency_row(out: &mut String, label: &str, q: &Quantiles) {
    let _ = writeln!(
        out,
        "  {label:<20} {:>9} {:>10} {:>10} {:>10} {:>10}",
        q.count,
        num(q.p50, 2),
        num(q.p90, 2),
        num(q.p99, 2),
        num(q.max, 2)
    );
}

/// The whole text.
pub(crate) fn render(
    info: &RunInfo,
    verdict: Valid,
    results: &[CheckResult],
    stats: &Stats,
    nemesis: &BTreeMap<String, NemesisCounts>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Ratify fault-injection run: {}", info.name);
    let _ = writeln!(out, "verdict: {}", verdict_word(verdict));
    if results.is_empty() {
        let _ = writeln!(out, "  (no checker ran: nothing was decided)");
    }

    out.push_str("\nrun\n");
    let nemeses = if info.nemeses.is_empty() {
        "none".to_string()
    } else {
        info.nemeses.join(", ")
    };
    let rows: [(&str, String); 11] = [
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
        ("history span", format!("{} s", num(stats.duration_s, 1))),
    ];
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<14} {v}");
    }

    out.push_str("\ncheckers\n");
    for r in results {
        let _ = writeln!(
            out,
            "  {:<14} {:<8} {}",
            r.checker,
            verdict_word(r.valid),
            indent_rest(&r.summary, "                          ")
        );
        if !r.counts.is_empty() {
            let counts: Vec<String> = r.counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = writeln!(out, "      counts: {}", counts.join(" "));
        }
        for a in r.anomalies.iter().take(ANOMALIES_SHOWN_MAX) {
            let mut head = format!("      - {}", a.kind);
            if let Some(t) = &a.txn_id {
                let _ = write!(head, " txn {t}");
            }
            if !a.ops.is_empty() {
                let ops: Vec<String> = a.ops.iter().take(20).map(u64::to_string).collect();
                let more = if a.ops.len() > 20 { " ..." } else { "" };
                let _ = write!(head, " (ops {}{more})", ops.join(", "));
            }
            let detail = truncate(&a.detail, DETAIL_CHARS_MAX);
            let _ = writeln!(out, "{head}: {}", indent_rest(&detail, "        "));
        }
        if r.anomalies.len() > ANOMALIES_SHOWN_MAX {
            let _ = writeln!(
                out,
                "      ... {} more in results.json",
                r.anomalies.len() - ANOMALIES_SHOWN_MAX
            );
        }
    }

    out.push_str("\noperations\n");
    let _ = writeln!(
        out,
        "  {:<20} {:>9} {:>9} {:>9} {:>9}",
        "f", "invoke", "ok", "fail", "info"
    );
    for (f, c) in &stats.by_f {
        counts_row(&mut out, f, c);
    }
    counts_row(&mut out, "total", &stats.ops);
    let _ = writeln!(
        out,
        "  completions without invocation: {}; invocations never completed: {}",
        stats.unmatched_completions, stats.open_invocations
    );
    let _ = writeln!(
        out,
        "  throughput: {} completions/s, {} ok/s",
        num(stats.throughput_per_s, 1),
        num(stats.throughput_ok_per_s, 1)
    );

    out.push_str("\nlatency of ok operations (ms)\n");
    match &stats.latency_ms {
        None => out.push_str("  no ok operations\n"),
        Some(q) => {
            let _ = writeln!(
                out,
                "  {:<20} {:>9} {:>10} {:>10} {:>10} {:>10}",
                "f", "count", "p50", "p90", "p99", "max"
            );
            for (f, q) in &stats.latency_ms_by_f {
                latency_row(&mut out, f, q);
            }
            latency_row(&mut out, "all", q);
        }
    }

    out.push_str("\nnemesis events\n");
    if nemesis.is_empty() {
        out.push_str("  none\n");
    }
    for (f, c) in nemesis {
        let _ = writeln!(
            out,
            "  {f:<20} start {} stop {} info {}",
            c.start, c.stop, c.info
        );
    }

    let _ = writeln!(out, "\nreproduce\n  {}", info.command);
    out
}
