//! Results: aggregation of the windows, ratios, JSON, a text summary and an SVG plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::{Percentiles, cdf_points};
use crate::{CompareArgs, Window};

/// Points kept per latency CDF.
const CDF_POINTS: usize = 200;

/// Whether a system's total balance was the same before and after the run.
#[derive(Debug, Serialize)]
pub struct Conservation {
    /// System.
    pub system: String,
    /// Total before the first window.
    pub before: i64,
    /// Total after the last one (None if it could not be read).
    pub after: Option<i64>,
    /// Why it could not be read.
    pub error: Option<String>,
    /// `before == after`.
    pub ok: bool,
}

impl Conservation {
    /// Compare the totals.
    pub fn new(system: &str, before: i64, after: Result<i64>) -> Self {
        let (after, error) = match after {
            Ok(a) => (Some(a), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Self {
            system: system.to_owned(),
            before,
            after,
            error,
            ok: after == Some(before),
        }
    }
}

/// One system at one concurrency, over all its rounds.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// System.
    pub system: String,
    /// Transfers in flight.
    pub concurrency: usize,
    /// Measured seconds (all rounds).
    pub seconds: f64,
    /// Transfers committed in them.
    pub committed: u64,
    /// Committed transfers per second (all rounds pooled).
    pub txn_per_s: f64,
    /// Per round.
    pub txn_per_s_rounds: Vec<f64>,
    /// Attempts lost to conflicts / all attempts.
    pub conflict_rate: f64,
    /// Transfers that failed outright.
    pub errors: u64,
    /// End-to-end transfer latency.
    pub latency_ms: Percentiles,
    /// Latency of the commit step alone.
    pub commit_latency_ms: Percentiles,
    /// CPU seconds per 1,000 committed transfers, per process group.
    pub cpu_s_per_1000: BTreeMap<String, f64>,
    /// Their sum.
    pub cpu_s_per_1000_total: f64,
    /// The end-to-end latency CDF (ms, fraction).
    pub latency_cdf: Vec<(f64, f64)>,
}

/// Ratify against another system at one concurrency.
#[derive(Debug, Serialize)]
pub struct Ratio {
    /// Transfers in flight.
    pub concurrency: usize,
    /// The other system.
    pub versus: String,
    /// Ratify's throughput / the other's.
    pub throughput: f64,
    /// Ratify's p50 latency / the other's (below 1 is better).
    pub p50_latency: f64,
}

/// Everything a run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// When (UTC, RFC 3339).
    pub date: String,
    /// Where.
    pub machine: BTreeMap<String, String>,
    /// With which arguments.
    pub config: CompareArgs,
    /// What ran.
    pub systems: BTreeMap<String, String>,
    /// Per system and concurrency.
    pub summaries: Vec<Summary>,
    /// Ratify / others.
    pub ratios: Vec<Ratio>,
    /// Total balance before and after.
    pub conservation: Vec<Conservation>,
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn machine() -> BTreeMap<String, String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    BTreeMap::from([
        ("cpu".to_owned(), cpu),
        ("cores".to_owned(), command_line("nproc", &[])),
        ("kernel".to_owned(), command_line("uname", &["-r"])),
        (
            "memory".to_owned(),
            command_line("sh", &["-c", "free -g | awk '/Mem:/{print $2 \" GiB\"}'"]),
        ),
    ])
}

impl Results {
    /// Pool each system's windows per concurrency and compute the ratios.
    pub fn new(
        args: &CompareArgs,
        systems: BTreeMap<String, String>,
        windows: &[Window],
        conservation: Vec<Conservation>,
    ) -> Self {
        let mut summaries = Vec::new();
        for &c in &args.concurrency {
            let mut names: Vec<&str> = Vec::new();
            for w in windows.iter().filter(|w| w.concurrency == c) {
                if !names.contains(&w.system) {
                    names.push(w.system);
                }
            }
            for name in names {
                let ws: Vec<&Window> = windows
                    .iter()
                    .filter(|w| w.concurrency == c && w.system == name)
                    .collect();
                let seconds: f64 = ws.iter().map(|w| w.seconds).sum();
                let committed: u64 = ws.iter().map(|w| w.committed).sum();
                let conflicts: u64 = ws.iter().map(|w| w.conflicts).sum();
                let mut lat: Vec<u32> = ws
                    .iter()
                    .flat_map(|w| w.latency_us.iter().copied())
                    .collect();
                let mut commit: Vec<u32> = ws
                    .iter()
                    .flat_map(|w| w.commit_us.iter().copied())
                    .collect();
                lat.sort_unstable();
                commit.sort_unstable();
                let mut cpu: BTreeMap<String, f64> = BTreeMap::new();
                for w in &ws {
                    for (g, s) in &w.cpu {
                        *cpu.entry(g.clone()).or_default() += s;
                    }
                }
                let per_1000 = |s: f64| {
                    if committed == 0 {
                        0.0
                    } else {
                        s * 1000.0 / committed as f64
                    }
                };
                let cpu_s_per_1000: BTreeMap<String, f64> =
                    cpu.into_iter().map(|(g, s)| (g, per_1000(s))).collect();
                summaries.push(Summary {
                    system: name.to_owned(),
                    concurrency: c,
                    seconds,
                    committed,
                    txn_per_s: committed as f64 / seconds,
                    txn_per_s_rounds: ws.iter().map(|w| w.committed as f64 / w.seconds).collect(),
                    conflict_rate: if committed + conflicts == 0 {
                        0.0
                    } else {
                        conflicts as f64 / (committed + conflicts) as f64
                    },
                    errors: ws.iter().map(|w| w.errors).sum(),
                    latency_ms: Percentiles::of_sorted_us(&lat),
                    commit_latency_ms: Percentiles::of_sorted_us(&commit),
                    cpu_s_per_1000_total: cpu_s_per_1000.values().sum(),
                    cpu_s_per_1000,
                    latency_cdf: cdf_points(&lat, CDF_POINTS),
                });
            }
        }
        let mut ratios = Vec::new();
        for r in summaries.iter().filter(|s| s.system == "ratify") {
            for o in summaries
                .iter()
                .filter(|s| s.system != "ratify" && s.concurrency == r.concurrency)
            {
                ratios.push(Ratio {
                    concurrency: r.concurrency,
                    versus: o.system.clone(),
                    throughput: r.txn_per_s / o.txn_per_s.max(f64::MIN_POSITIVE),
                    p50_latency: r.latency_ms.p50 / o.latency_ms.p50.max(f64::MIN_POSITIVE),
                });
            }
        }
        Self {
            date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
            machine: machine(),
            config: args.clone(),
            systems,
            summaries,
            ratios,
            conservation,
        }
    }

    /// The human summary: a table per concurrency, the ratios, the conservation check.
    pub fn summary_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nbank transfers across 2 participants, {} accounts each ({:?}), {} round(s) of {} s per point, {}",
            self.config.accounts,
            self.config.distribution,
            self.config.rounds,
            self.config.duration,
            self.date
        );
        let _ = writeln!(
            s,
            "{:<9} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
            "system",
            "conc",
            "txn/s",
            "confl%",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9",
            "commit50",
            "cpu/1k"
        );
        for x in &self.summaries {
            let _ = writeln!(
                s,
                "{:<9} {:>5} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>9.2}",
                x.system,
                x.concurrency,
                x.txn_per_s,
                x.conflict_rate * 100.0,
                x.latency_ms.p50,
                x.latency_ms.p90,
                x.latency_ms.p99,
                x.latency_ms.p999,
                x.commit_latency_ms.p50,
                x.cpu_s_per_1000_total
            );
        }
        let _ = writeln!(
            s,
            "(txn/s: committed transfers per second; confl%: attempts lost to conflicts; latency: whole transfer; commit50: p50 of the commit step; cpu/1k: CPU seconds per 1,000 transfers, servers + bench client)"
        );
        for x in &self.summaries {
            let parts: Vec<String> = x
                .cpu_s_per_1000
                .iter()
                .map(|(g, v)| format!("{g} {v:.2}"))
                .collect();
            let _ = writeln!(
                s,
                "  cpu s/1k {} c={}: {}",
                x.system,
                x.concurrency,
                parts.join(", ")
            );
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(s, "ratios (Ratify / other):");
            for r in &self.ratios {
                let _ = writeln!(
                    s,
                    "  c={:<4} vs {:<9} throughput {:>5.2}x   p50 latency {:>5.2}x",
                    r.concurrency, r.versus, r.throughput, r.p50_latency
                );
            }
        }
        for c in &self.conservation {
            let _ = writeln!(
                s,
                "conservation {}: {} (before {}, after {})",
                c.system,
                if c.ok { "OK" } else { "FAILED" },
                c.before,
                c.after
                    .map_or_else(|| c.error.clone().unwrap_or_default(), |a| a.to_string())
            );
        }
        s
    }

    /// Write results.json, summary.txt and plot.svg into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(dir.join("results.json"), json).context("writing results.json")?;
        std::fs::write(dir.join("summary.txt"), self.summary_text())
            .context("writing summary.txt")?;
        std::fs::write(dir.join("plot.svg"), crate::report::svg(self))
            .context("writing plot.svg")?;
        Ok(())
    }
}

const COLOURS: [(&str, &str); 3] = [
    ("ratify", "#1b7837"),
    ("etcd", "#2166ac"),
    ("postgres", "#b2182b"),
];

fn colour(system: &str) -> &'static str {
    COLOURS
        .iter()
        .find(|(s, _)| *s == system)
        .map_or("#555555", |(_, c)| c)
}

/// A panel: x and y axes mapped into a box.
struct Panel {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
}

impl Panel {
    fn frame(&self, out: &mut String, title: &str, xlabel: &str, ylabel: &str) {
        let _ = write!(
            out,
            r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#888"/><text x="{}" y="{}" text-anchor="middle" font-weight="bold">{title}</text><text x="{}" y="{}" text-anchor="middle">{xlabel}</text><text transform="translate({},{}) rotate(-90)" text-anchor="middle">{ylabel}</text>"##,
            self.x0,
            self.y0,
            self.w,
            self.h,
            self.x0 + self.w / 2.0,
            self.y0 - 8.0,
            self.x0 + self.w / 2.0,
            self.y0 + self.h + 34.0,
            self.x0 - 46.0,
            self.y0 + self.h / 2.0
        );
    }
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * mag)
}

/// Throughput against concurrency, and one latency-CDF panel per concurrency.
pub fn svg(r: &Results) -> String {
    let concs = &r.config.concurrency;
    let panels = 1 + concs.len();
    let (pw, ph, gap) = (360.0, 240.0, 90.0);
    let cols = panels.min(3);
    let rows = panels.div_ceil(cols);
    let width = 70.0 + cols as f64 * (pw + gap);
    let height = 70.0 + rows as f64 * (ph + gap) + 30.0;
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
    );
    let panel = |i: usize| Panel {
        x0: 70.0 + (i % cols) as f64 * (pw + gap),
        y0: 50.0 + (i / cols) as f64 * (ph + gap),
        w: pw,
        h: ph,
    };
    let mut names: Vec<&str> = Vec::new();
    for x in &r.summaries {
        if !names.contains(&x.system.as_str()) {
            names.push(&x.system);
        }
    }
    // Legend.
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            s,
            r#"<rect x="{}" y="12" width="14" height="4" fill="{}"/><text x="{}" y="18">{n}</text>"#,
            70.0 + i as f64 * 110.0,
            colour(n),
            88.0 + i as f64 * 110.0
        );
    }
    // Panel 0: throughput vs concurrency (x: evenly spaced concurrency levels).
    let p = panel(0);
    p.frame(&mut s, "committed transfers/s", "concurrency", "txn/s");
    let ymax = nice_max(r.summaries.iter().map(|x| x.txn_per_s).fold(0.0, f64::max));
    let xpos = |i: usize| p.x0 + 20.0 + i as f64 * (p.w - 40.0) / (concs.len().max(2) - 1) as f64;
    for (i, c) in concs.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{c}</text>"#,
            xpos(i),
            p.y0 + p.h + 16.0
        );
    }
    for k in 0..=4 {
        let v = ymax * f64::from(k) / 4.0;
        let y = p.y0 + p.h - p.h * f64::from(k) / 4.0;
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end">{v:.0}</text><line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="#eee"/>"##,
            p.x0 - 4.0,
            y + 4.0,
            p.x0,
            p.x0 + p.w
        );
    }
    for n in &names {
        let pts: Vec<String> = concs
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                r.summaries
                    .iter()
                    .find(|x| x.system == *n && x.concurrency == *c)
                    .map(|x| {
                        format!(
                            "{:.1},{:.1}",
                            xpos(i),
                            p.y0 + p.h - p.h * x.txn_per_s / ymax
                        )
                    })
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
            pts.join(" "),
            colour(n)
        );
    }
    // CDF panels: log-scale latency axis.
    for (i, c) in concs.iter().enumerate() {
        let p = panel(i + 1);
        p.frame(
            &mut s,
            &format!("transfer latency CDF, concurrency {c}"),
            "latency (ms, log scale)",
            "fraction",
        );
        let here: Vec<&Summary> = r.summaries.iter().filter(|x| x.concurrency == *c).collect();
        let lo = here
            .iter()
            .flat_map(|x| x.latency_cdf.first().map(|p| p.0))
            .fold(f64::INFINITY, f64::min)
            .max(0.01);
        let hi = here
            .iter()
            .flat_map(|x| x.latency_cdf.last().map(|p| p.0))
            .fold(0.0, f64::max)
            .max(lo * 10.0);
        let (llo, lhi) = (lo.log10().floor(), hi.log10().ceil());
        let xof = |ms: f64| p.x0 + p.w * (ms.max(lo).log10() - llo) / (lhi - llo);
        let mut d = llo;
        while d <= lhi {
            let x = p.x0 + p.w * (d - llo) / (lhi - llo);
            let _ = write!(
                s,
                r##"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="#eee"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
                p.y0,
                p.y0 + p.h,
                p.y0 + p.h + 16.0,
                10f64.powf(d)
            );
            d += 1.0;
        }
        for k in 0..=4 {
            let y = p.y0 + p.h - p.h * f64::from(k) / 4.0;
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="end">{:.2}</text>"#,
                p.x0 - 4.0,
                y + 4.0,
                f64::from(k) / 4.0
            );
        }
        for x in here {
            let pts: Vec<String> = x
                .latency_cdf
                .iter()
                .map(|(ms, f)| format!("{:.1},{:.1}", xof(*ms), p.y0 + p.h - p.h * f))
                .collect();
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"/>"#,
                pts.join(" "),
                colour(&x.system)
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="70" y="{}">{} — {} accounts/participant, {:?}, {} × {} s per point</text></svg>"#,
        height - 12.0,
        r.date,
        r.config.accounts,
        r.config.distribution,
        r.config.rounds,
        r.config.duration
    );
    s
}
