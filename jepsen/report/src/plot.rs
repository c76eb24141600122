//! `latency.svg` and `throughput.svg`, written by hand.
//!
//! Both share one frame: time since the run began on x, the nemesis timeline above the plot
//! (one lane per nemesis `f`, its name at the lane's right), and every fault interval shaded
//! across the plot in that nemesis's colour so a reader sees which operations ran under which
//! fault. Instantaneous nemesis events (kills, restarts) are thin vertical lines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ratify_check::{NemesisEvent, NemesisPhase, OpType};

use crate::markup::{coord, escape};
use crate::stats::{Completion, NS_PER_MS, NS_PER_S};

/// Above this many points the latency plot thins `ok` points (every n-th, in history order),
/// so the file stays a few MB and a browser still draws it.
pub(crate) const POINTS_MAX: usize = 20_000;
/// `fail` and `info` points are all kept up to this many (they are the interesting ones);
/// beyond it they are thinned too, so that a run of nothing but timeouts stays bounded.
pub(crate) const POINTS_NOT_OK_MAX: usize = 40_000;
/// Points with a tooltip (`<title>`): only `fail`/`info`, and only while few.
const TITLED_POINTS_MAX: usize = 2_000;
/// Throughput bins: 1 s wide, or wider so that there are at most this many.
pub(crate) const BINS_MAX: u64 = 600;
/// Latencies below this (1 µs) are drawn on the bottom of the log axis.
const LATENCY_FLOOR_MS: f64 = 1e-3;

const WIDTH: f64 = 960.0;
const PLOT_HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 72.0;
const MARGIN_RIGHT: f64 = 200.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 48.0;
const LANE_HEIGHT: f64 = 14.0;

/// Colours by completion type.
pub(crate) fn kind_colour(kind: OpType) -> &'static str {
    match kind {
        OpType::Ok => "#2ca02c",
        OpType::Fail => "#e6550d",
        OpType::Info => "#3182bd",
        OpType::Invoke => "#999999",
    }
}

const KINDS: [OpType; 3] = [OpType::Ok, OpType::Fail, OpType::Info];

fn kind_name(kind: OpType) -> &'static str {
    match kind {
        OpType::Ok => "ok",
        OpType::Fail => "fail",
        OpType::Info => "info",
        OpType::Invoke => "invoke",
    }
}

/// Nemesis colours, chosen away from the completion colours (green, orange, blue).
const NEMESIS_PALETTE: [&str; 8] = [
    "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f", "#d62728", "#393b79",
];

/// A fault interval: a `start` and the `stop` with the same id (or none: until the end).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Band {
    pub f: String,
    pub id: u64,
    pub start_ns: u64,
    pub stop_ns: Option<u64>,
    pub value: String,
}

/// An instantaneous nemesis event, or a `stop` that closed nothing.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Mark {
    pub f: String,
    pub time_ns: u64,
    pub what: &'static str,
    pub value: String,
}

/// The nemesis timeline, ready to draw.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Timeline {
    pub bands: Vec<Band>,
    pub marks: Vec<Mark>,
    /// Distinct nemesis names, sorted: lane order and colour.
    pub fs: Vec<String>,
}

impl Timeline {
    /// Pair `start`s with `stop`s by id. A second `start` with an open id leaves the first
    /// open-ended (we do not know when it ended); a `stop` closing nothing becomes a mark.
    pub fn of(events: &[NemesisEvent]) -> Timeline {
        let mut t = Timeline::default();
        let mut open: BTreeMap<u64, usize> = BTreeMap::new();
        for e in events {
            let value = e.value.to_string();
            match e.phase {
                NemesisPhase::Start => {
                    open.insert(e.id, t.bands.len());
                    t.bands.push(Band {
                        f: e.f.clone(),
                        id: e.id,
                        start_ns: e.time,
                        stop_ns: None,
                        value,
                    });
                }
                NemesisPhase::Stop => match open.remove(&e.id) {
                    Some(i) => t.bands[i].stop_ns = Some(e.time.max(t.bands[i].start_ns)),
                    None => t.marks.push(Mark {
                        f: e.f.clone(),
                        time_ns: e.time,
                        what: "stop without start",
                        value,
                    }),
                },
                NemesisPhase::Info => t.marks.push(Mark {
                    f: e.f.clone(),
                    time_ns: e.time,
                    what: "info",
                    value,
                }),
            }
        }
        let mut fs: Vec<String> = t
            .bands
            .iter()
            .map(|b| b.f.clone())
            .chain(t.marks.iter().map(|m| m.f.clone()))
            .collect();
        fs.sort();
        fs.dedup();
        t.fs = fs;
        t
    }

    fn lane(&self, f: &str) -> usize {
        self.fs.iter().position(|x| x == f).unwrap_or(0)
    }

    fn colour(&self, f: &str) -> &'static str {
        NEMESIS_PALETTE[self.lane(f) % NEMESIS_PALETTE.len()]
    }

    /// Time of the last event, in seconds.
    pub fn last_time_s(&self) -> f64 {
        let bands = self.bands.iter().map(|b| b.stop_ns.unwrap_or(b.start_ns));
        let marks = self.marks.iter().map(|m| m.time_ns);
        bands.chain(marks).max().unwrap_or(0) as f64 / NS_PER_S
    }
}

/// A step of 1, 2 or 5 × 10^k near `raw` (1 for nonsense input).
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Ticks from 0 to at least `max` (about 8 of them), and the axis end.
fn linear_ticks(max: f64) -> (Vec<f64>, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let step = nice_step(max / 8.0);
    let n = ((max / step).ceil() as u64).clamp(1, 100);
    let ticks = (0..=n).map(|k| k as f64 * step).collect();
    (ticks, n as f64 * step)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step > 0.0 && step < 1.0 {
        ((-step.log10()).ceil() as usize).min(6)
    } else {
        0
    };
    format!("{v:.decimals$}")
}

/// The drawing area shared by both plots.
struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
    height: f64,
    x_ticks: Vec<f64>,
    x_max_s: f64,
}

impl Frame {
    fn new(x_data_max_s: f64, lanes: usize) -> Frame {
        let (x_ticks, x_max_s) = linear_ticks(x_data_max_s);
        let y0 = MARGIN_TOP + lanes as f64 * LANE_HEIGHT + 8.0;
        let y1 = y0 + PLOT_HEIGHT;
        Frame {
            x0: MARGIN_LEFT,
            x1: WIDTH - MARGIN_RIGHT,
            y0,
            y1,
            height: y1 + MARGIN_BOTTOM,
            x_ticks,
            x_max_s,
        }
    }

    fn x(&self, t_s: f64) -> f64 {
        let f = if t_s.is_finite() {
            t_s / self.x_max_s
        } else {
            0.0
        };
        self.x0 + f.clamp(0.0, 1.0) * (self.x1 - self.x0)
    }

    /// `f` in 0..=1 from the bottom of the plot.
    fn y(&self, f: f64) -> f64 {
        let f = if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.y1 - f * (self.y1 - self.y0)
    }

    fn lane_y(&self, lane: usize) -> f64 {
        MARGIN_TOP + lane as f64 * LANE_HEIGHT
    }

    fn open(&self, out: &mut String, title: &str) {
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
             viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n\
             <text x=\"{x}\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{t}</text>\n",
            w = WIDTH,
            h = coord(self.height),
            x = coord(self.x0),
            t = escape(title),
        );
    }

    /// Shaded fault intervals across the plot, bars in the lanes, lane names.
    fn nemesis(&self, out: &mut String, t: &Timeline) {
        out.push_str("<g class=\"nemesis\">\n");
        for (lane, f) in t.fs.iter().enumerate() {
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>",
                coord(self.x1 + 8.0),
                coord(self.lane_y(lane) + LANE_HEIGHT - 3.0),
                t.colour(f),
                escape(f),
            );
        }
        for b in &t.bands {
            let colour = t.colour(&b.f);
            let xa = self.x(b.start_ns as f64 / NS_PER_S);
            let xb = match b.stop_ns {
                Some(s) => self.x(s as f64 / NS_PER_S),
                None => self.x1,
            };
            // Zero-length faults still get a visible sliver.
            let w = (xb - xa).max(1.0);
            let until = match b.stop_ns {
                Some(s) => format!("{:.3} s", s as f64 / NS_PER_S),
                None => "the end (no stop)".to_string(),
            };
            let tip = escape(&format!(
                "{} #{}: {:.3} s to {} {}",
                b.f,
                b.id,
                b.start_ns as f64 / NS_PER_S,
                until,
                b.value
            ));
            let _ = writeln!(
                out,
                "<rect class=\"nemesis-band\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
                 fill=\"{colour}\" fill-opacity=\"0.15\"><title>{tip}</title></rect>",
                coord(xa),
                coord(self.y0),
                coord(w),
                coord(self.y1 - self.y0),
            );
            let _ = writeln!(
                out,
                "<rect class=\"nemesis-lane\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" \
                 fill=\"{colour}\" fill-opacity=\"0.8\"><title>{tip}</title></rect>",
                coord(xa),
                coord(self.lane_y(t.lane(&b.f)) + 2.0),
                coord(w),
                coord(LANE_HEIGHT - 4.0),
            );
        }
        for m in &t.marks {
            let colour = t.colour(&m.f);
            let x = coord(self.x(m.time_ns as f64 / NS_PER_S));
            let tip = escape(&format!(
                "{} ({}) at {:.3} s {}",
                m.f,
                m.what,
                m.time_ns as f64 / NS_PER_S,
                m.value
            ));
            let _ = writeln!(
                out,
                "<line class=\"nemesis-mark\" x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" \
                 stroke=\"{colour}\" stroke-width=\"1\" stroke-opacity=\"0.7\">\
                 <title>{tip}</title></line>",
                coord(self.lane_y(t.lane(&m.f)) + 1.0),
                coord(self.y1),
            );
        }
        out.push_str("</g>\n");
    }

    /// Axes, grid lines, tick labels and axis titles. `y_ticks`: (fraction from the bottom,
    /// label, major); minor ticks get a mark but no grid line.
    fn axes(&self, out: &mut String, y_ticks: &[(f64, String, bool)], y_title: &str) {
        out.push_str("<g class=\"axes\" stroke=\"#000\" fill=\"none\">\n");
        let step = self.x_ticks.get(1).copied().unwrap_or(1.0);
        for &t in &self.x_ticks {
            let x = coord(self.x(t));
            let _ = writeln!(
                out,
                "<line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\" stroke=\"#e5e5e5\"/>\
                 <line x1=\"{x}\" x2=\"{x}\" y1=\"{}\" y2=\"{}\"/>\
                 <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" stroke=\"none\" \
                 fill=\"#000\">{}</text>",
                coord(self.y0),
                coord(self.y1),
                coord(self.y1),
                coord(self.y1 + 5.0),
                coord(self.y1 + 17.0),
                tick_label(t, step),
            );
        }
        for (f, label, major) in y_ticks {
            let y = coord(self.y(*f));
            if *major {
                let _ = writeln!(
                    out,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#e5e5e5\"/>\
                     <line x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"/>\
                     <text x=\"{}\" y=\"{y}\" dy=\"4\" text-anchor=\"end\" stroke=\"none\" \
                     fill=\"#000\">{}</text>",
                    coord(self.x0),
                    coord(self.x1),
                    coord(self.x0 - 5.0),
                    coord(self.x0),
                    coord(self.x0 - 8.0),
                    escape(label),
                );
            } else {
                let _ = writeln!(
                    out,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\"/>",
                    coord(self.x0 - 3.0),
                    coord(self.x0),
                );
            }
        }
        let _ = writeln!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
            coord(self.x0),
            coord(self.y0),
            coord(self.x1 - self.x0),
            coord(self.y1 - self.y0),
        );
        out.push_str("</g>\n");
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time since start (s)</text>",
            coord((self.x0 + self.x1) / 2.0),
            coord(self.y1 + 36.0),
        );
        let yc = coord((self.y0 + self.y1) / 2.0);
        let _ = writeln!(
            out,
            "<text x=\"16\" y=\"{yc}\" text-anchor=\"middle\" \
             transform=\"rotate(-90 16 {yc})\">{}</text>",
            escape(y_title),
        );
    }

    /// Legend entries (colour, text) in the right margin, from the top of the plot down.
    /// `line`: a line swatch (throughput) rather than a square (latency).
    fn legend(&self, out: &mut String, entries: &[(&str, String)], line: bool) {
        for (i, (colour, text)) in entries.iter().enumerate() {
            let y = self.y0 + 12.0 + i as f64 * 16.0;
            let x = self.x1 + 8.0;
            if line {
                let _ = write!(
                    out,
                    "<line x1=\"{}\" x2=\"{}\" y1=\"{}\" y2=\"{}\" stroke=\"{colour}\" \
                     stroke-width=\"2\"/>",
                    coord(x),
                    coord(x + 12.0),
                    coord(y - 4.0),
                    coord(y - 4.0),
                );
            } else {
                let _ = write!(
                    out,
                    "<rect x=\"{}\" y=\"{}\" width=\"9\" height=\"9\" fill=\"{colour}\"/>",
                    coord(x + 1.0),
                    coord(y - 9.0),
                );
            }
            let _ = writeln!(
                out,
                "<text x=\"{}\" y=\"{}\">{}</text>",
                coord(x + 18.0),
                coord(y),
                escape(text),
            );
        }
    }
}

/// Every `stride`-th index of `n`, `stride` chosen so at most `max` remain.
fn stride_for(n: usize, max: usize) -> usize {
    if max == 0 {
        n.max(1)
    } else {
        n.div_ceil(max).max(1)
    }
}

/// The latency scatter plot: x = invocation time, y = latency on a log scale.
/// Completions without an invocation have no latency and are not drawn.
pub(crate) fn latency_svg(
    title: &str,
    completions: &[Completion],
    timeline: &Timeline,
    x_data_max_s: f64,
) -> String {
    // (x seconds, y milliseconds) per completion type.
    let mut points: BTreeMap<u8, Vec<(f64, f64, &Completion)>> = BTreeMap::new();
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for c in completions {
        let (Some(invoke_ns), Some(latency_ns)) = (c.invoke_ns, c.latency_ns()) else {
            continue;
        };
        let ms = (latency_ns as f64 / NS_PER_MS).max(LATENCY_FLOOR_MS);
        lo = lo.min(ms);
        hi = hi.max(ms);
        points
            .entry(kind_order(c.kind))
            .or_default()
            .push((invoke_ns as f64 / NS_PER_S, ms, c));
    }
    // Decades spanning every point (thinned or not, so thinning never moves the axis).
    let (dec_lo, dec_hi) = if lo.is_finite() && hi.is_finite() {
        let a = lo.log10().floor() as i32;
        let b = (hi.log10().ceil() as i32).max(a + 1);
        (a, b)
    } else {
        (-1, 3)
    };
    let span = f64::from(dec_hi - dec_lo);
    let frac = |ms: f64| (ms.log10() - f64::from(dec_lo)) / span;

    let frame = Frame::new(x_data_max_s, timeline.fs.len());
    let mut out = String::new();
    frame.open(&mut out, title);
    frame.nemesis(&mut out, timeline);

    let mut y_ticks = Vec::new();
    for d in dec_lo..=dec_hi {
        let v = 10f64.powi(d);
        let label = if d < 0 {
            format!("{:.*}", (-d) as usize, v)
        } else {
            format!("{v:.0}")
        };
        y_ticks.push((frac(v), label, true));
        if d < dec_hi {
            for m in [2.0, 5.0] {
                y_ticks.push((frac(m * v), String::new(), false));
            }
        }
    }
    frame.axes(&mut out, &y_ticks, "latency (ms, log)");

    // Thinning: keep every fail/info point (up to a bound), and as many ok points as fit.
    let total: usize = points.values().map(Vec::len).sum();
    let not_ok: usize = points
        .iter()
        .filter(|(k, _)| **k != kind_order(OpType::Ok))
        .map(|(_, v)| v.len())
        .sum();
    let mut legend = Vec::new();
    let mut notes = Vec::new();
    for kind in KINDS {
        let Some(pts) = points.get(&kind_order(kind)) else {
            legend.push((kind_colour(kind), format!("{} (0)", kind_name(kind))));
            continue;
        };
        let stride = if total <= POINTS_MAX {
            1
        } else if kind == OpType::Ok {
            let budget = POINTS_MAX.saturating_sub(not_ok.min(POINTS_NOT_OK_MAX));
            stride_for(pts.len(), budget.max(POINTS_MAX / 4))
        } else {
            stride_for(not_ok, POINTS_NOT_OK_MAX)
        };
        if stride > 1 {
            notes.push(format!("{}: 1 in {stride} shown", kind_name(kind)));
        }
        let titled = kind != OpType::Ok && pts.len() <= TITLED_POINTS_MAX;
        let _ = writeln!(
            out,
            "<g class=\"points-{}\" fill=\"{}\" fill-opacity=\"0.6\">",
            kind_name(kind),
            kind_colour(kind)
        );
        for (x, ms, c) in pts.iter().step_by(stride) {
            let _ = write!(
                out,
                "<circle cx=\"{}\" cy=\"{}\" r=\"2\"",
                coord(frame.x(*x)),
                coord(frame.y(frac(*ms)))
            );
            if titled {
                let tip = format!(
                    "op {} {} {}: {:.3} ms{}",
                    c.index,
                    c.f,
                    kind_name(kind),
                    ms,
                    c.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
                let _ = writeln!(out, "><title>{}</title></circle>", escape(&tip));
            } else {
                out.push_str("/>\n");
            }
        }
        out.push_str("</g>\n");
        legend.push((
            kind_colour(kind),
            format!("{} ({})", kind_name(kind), pts.len()),
        ));
    }
    let notes: Vec<(&str, String)> = notes.into_iter().map(|n| ("#ffffff", n)).collect();
    legend.extend(notes);
    frame.legend(&mut out, &legend, false);
    out.push_str("</svg>\n");
    out
}

/// Sort key putting ok under fail under info when drawn.
fn kind_order(kind: OpType) -> u8 {
    match kind {
        OpType::Ok => 0,
        OpType::Fail => 1,
        OpType::Info => 2,
        OpType::Invoke => 3,
    }
}

/// Width of a throughput bin in seconds: 1, or more so there are at most [`BINS_MAX`].
pub(crate) fn bin_width_s(x_data_max_s: f64) -> f64 {
    if x_data_max_s.is_finite() && x_data_max_s > BINS_MAX as f64 {
        (x_data_max_s / BINS_MAX as f64).ceil()
    } else {
        1.0
    }
}

/// Completions per second over time, one stepped line per completion type.
pub(crate) fn throughput_svg(
    title: &str,
    completions: &[Completion],
    timeline: &Timeline,
    x_data_max_s: f64,
) -> String {
    let bin_s = bin_width_s(x_data_max_s);
    let n_bins = ((x_data_max_s.max(0.0) / bin_s).ceil() as usize).clamp(1, BINS_MAX as usize + 1);
    let mut counts: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    for kind in KINDS {
        counts.insert(kind_order(kind), vec![0; n_bins]);
    }
    for c in completions {
        let bin = ((c.time_ns as f64 / NS_PER_S / bin_s).floor() as usize).min(n_bins - 1);
        if let Some(v) = counts.get_mut(&kind_order(c.kind)) {
            v[bin] += 1;
        }
    }
    let rate_max = counts
        .values()
        .flat_map(|v| v.iter())
        .map(|&n| n as f64 / bin_s)
        .fold(0.0, f64::max);
    let (y_values, y_max) = linear_ticks(rate_max);
    let y_step = y_values.get(1).copied().unwrap_or(1.0);

    let frame = Frame::new(x_data_max_s, timeline.fs.len());
    let mut out = String::new();
    frame.open(&mut out, title);
    frame.nemesis(&mut out, timeline);
    let y_ticks: Vec<(f64, String, bool)> = y_values
        .iter()
        .map(|&v| (v / y_max, tick_label(v, y_step), true))
        .collect();
    let bin_label = if bin_s == 1.0 {
        "1 s".to_string()
    } else {
        format!("{bin_s:.0} s")
    };
    frame.axes(
        &mut out,
        &y_ticks,
        &format!("completions per second ({bin_label} bins)"),
    );

    let mut legend = Vec::new();
    for kind in KINDS {
        let bins = &counts[&kind_order(kind)];
        let mut d = String::new();
        for (i, &n) in bins.iter().enumerate() {
            let y = coord(frame.y(n as f64 / bin_s / y_max));
            let xa = coord(frame.x(i as f64 * bin_s));
            let xb = coord(frame.x((i + 1) as f64 * bin_s));
            if i == 0 {
                let _ = write!(d, "M{xa} {y}H{xb}");
            } else {
                let _ = write!(d, "V{y}H{xb}");
            }
        }
        let _ = writeln!(
            out,
            "<path class=\"rate-{}\" d=\"{d}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" \
             stroke-opacity=\"0.9\"/>",
            kind_name(kind),
            kind_colour(kind),
        );
        let total: u64 = bins.iter().sum();
        legend.push((kind_colour(kind), format!("{} ({total})", kind_name(kind))));
    }
    frame.legend(&mut out, &legend, true);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::completions;
    use crate::stats::tests::{op, small_history};

    fn event(time_ms: u64, phase: NemesisPhase, id: u64, f: &str) -> NemesisEvent {
        NemesisEvent {
            time: time_ms * 1_000_000,
            phase,
            id,
            f: f.to_string(),
            value: serde_json::json!({"nodes": ["n1"], "note": "<&>"}),
        }
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    /// Structural check without an XML parser: tags balance for the elements we emit.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(count(svg, "<svg"), 1);
        for tag in ["g", "title", "text"] {
            assert_eq!(
                count(svg, &format!("<{tag}>")) + count(svg, &format!("<{tag} ")),
                count(svg, &format!("</{tag}>")),
                "<{tag}> balanced"
            );
        }
        for bad in ["NaN", "=\"inf", "=\"-inf", ">inf<", ">-inf<"] {
            assert!(!svg.contains(bad), "non-finite number {bad}");
        }
        // Every '&' starts an entity.
        for (i, _) in svg.match_indices('&') {
            let rest = &svg[i..];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                    .iter()
                    .any(|e| rest.starts_with(e)),
                "raw & at {i}"
            );
        }
    }

    fn timeline() -> Timeline {
        use NemesisPhase::*;
        Timeline::of(&[
            event(10, Start, 1, "partition-leader"),
            event(30, Info, 2, "kill-random"),
            event(40, Stop, 1, "partition-leader"),
            event(60, Start, 3, "partition-leader"),
            event(70, Start, 4, "delay"), // no stop: until the end
            event(80, Stop, 3, "partition-leader"),
        ])
    }

    /// Starts pair with stops by id; an unclosed start runs to the end; info is a mark.
    #[test]
    fn timeline_pairs_by_id() {
        let t = timeline();
        let spans: Vec<_> = t
            .bands
            .iter()
            .map(|b| {
                (
                    b.f.as_str(),
                    b.start_ns / 1_000_000,
                    b.stop_ns.map(|s| s / 1_000_000),
                )
            })
            .collect();
        assert_eq!(
            spans,
            vec![
                ("partition-leader", 10, Some(40)),
                ("partition-leader", 60, Some(80)),
                ("delay", 70, None),
            ]
        );
        assert_eq!(t.marks.len(), 1);
        assert_eq!(t.marks[0].f, "kill-random");
        assert_eq!(t.fs, vec!["delay", "kill-random", "partition-leader"]);
        assert!((t.last_time_s() - 0.08).abs() < 1e-12);

        // A stop that closes nothing is kept as a mark, not dropped.
        let t = Timeline::of(&[event(5, NemesisPhase::Stop, 9, "x")]);
        assert!(t.bands.is_empty());
        assert_eq!(t.marks[0].what, "stop without start");
    }

    /// A small history: one circle per completion with a latency, one shaded band per
    /// interval, one line per instantaneous event, colours differ per nemesis.
    #[test]
    fn latency_svg_draws_every_point_and_band() {
        let (cs, _) = completions(&small_history());
        let t = timeline();
        let svg = latency_svg("latency <run & co>", &cs, &t, 0.1);
        assert_well_formed(&svg);
        // 5 completions, one (p3) without an invocation.
        assert_eq!(count(&svg, "<circle"), 4);
        assert_eq!(count(&svg, "class=\"nemesis-band\""), 3);
        assert_eq!(count(&svg, "class=\"nemesis-lane\""), 3);
        assert_eq!(count(&svg, "class=\"nemesis-mark\""), 1);
        assert!(svg.contains("latency &lt;run &amp; co&gt;"));
        assert!(svg.contains(">partition-leader</text>"));
        assert!(svg.contains(">delay</text>"));
        assert!(svg.contains(&format!(
            "fill=\"{}\" fill-opacity=\"0.15\"",
            t.colour("delay")
        )));
        assert_ne!(t.colour("delay"), t.colour("partition-leader"));
        // Legend counts per type.
        assert!(svg.contains(">ok (3)</text>"));
        assert!(svg.contains(">fail (1)</text>"));
        // Latencies 10..40 ms: decade ticks 10 and 100.
        assert!(svg.contains(">10</text>") && svg.contains(">100</text>"));
    }

    /// The open-ended interval reaches the right edge of the plot.
    #[test]
    fn unclosed_interval_extends_to_the_end() {
        let t = Timeline::of(&[event(50, NemesisPhase::Start, 1, "delay")]);
        let svg = latency_svg("x", &[], &t, 0.1);
        let frame = Frame::new(0.1, 1);
        let expected_w = frame.x1 - frame.x(0.05);
        assert!(
            svg.contains(&format!("width=\"{}\"", coord(expected_w))),
            "band width {expected_w}: {svg}"
        );
    }

    /// Above the bound ok points are thinned; every fail/info point stays.
    #[test]
    fn latency_svg_thins_ok_points_only() {
        let mut h = Vec::new();
        let n = 3 * POINTS_MAX as u64;
        for i in 0..n {
            let kind = if i % 100 == 0 {
                OpType::Info
            } else {
                OpType::Ok
            };
            h.push(op(2 * i, i, i, OpType::Invoke, "t"));
            h.push(op(2 * i + 1, i + 1 + i % 7, i, kind, "t"));
        }
        let (cs, _) = completions(&h);
        let svg = latency_svg("big", &cs, &Timeline::default(), n as f64 / 1000.0);
        assert_well_formed(&svg);
        let info_points = (n as usize).div_ceil(100);
        let group = |k: &str| {
            let start = svg.find(&format!("class=\"points-{k}\"")).expect("group");
            let end = start + svg[start..].find("</g>").expect("closed");
            count(&svg[start..end], "<circle")
        };
        assert_eq!(group("info"), info_points);
        let ok = group("ok");
        assert!(
            (POINTS_MAX / 4..=POINTS_MAX).contains(&ok),
            "{ok} ok points"
        );
        assert!(svg.contains("ok: 1 in"));
        assert!(svg.len() < 4_000_000, "{} bytes", svg.len());
    }

    /// Empty and zero-length runs still give a drawable, NaN-free plot.
    #[test]
    fn degenerate_inputs_do_not_panic() {
        for x_max in [0.0, f64::NAN, -1.0, 1e-9] {
            let svg = latency_svg("e", &[], &Timeline::default(), x_max);
            assert_well_formed(&svg);
            let svg = throughput_svg("e", &[], &Timeline::default(), x_max);
            assert_well_formed(&svg);
        }
        let h = vec![
            op(0, 0, 1, OpType::Invoke, "x"),
            op(1, 0, 1, OpType::Ok, "x"),
        ];
        let (cs, _) = completions(&h);
        let svg = latency_svg("zero", &cs, &Timeline::default(), 0.0);
        assert_well_formed(&svg);
        assert_eq!(count(&svg, "<circle"), 1);
    }

    /// Bins: 1 s up to 600 s, wider beyond; each completion lands in its bin.
    #[test]
    fn throughput_bins() {
        assert_eq!(bin_width_s(0.0), 1.0);
        assert_eq!(bin_width_s(600.0), 1.0);
        assert_eq!(bin_width_s(601.0), 2.0);
        assert_eq!(bin_width_s(3600.0), 6.0);

        // 3 oks in second 0, 1 fail in second 2, run of 3 s.
        let h = vec![
            op(0, 100, 1, OpType::Ok, "x"),
            op(1, 200, 1, OpType::Ok, "x"),
            op(2, 900, 1, OpType::Ok, "x"),
            op(3, 2500, 1, OpType::Fail, "x"),
        ];
        let (cs, _) = completions(&h);
        let t = timeline();
        let svg = throughput_svg("tp", &cs, &t, 3.0);
        assert_well_formed(&svg);
        assert_eq!(count(&svg, "<path"), 3);
        assert_eq!(count(&svg, "class=\"nemesis-band\""), 3);
        assert!(svg.contains(">ok (3)</text>"));
        assert!(svg.contains(">fail (1)</text>"));
        // Rates 3/s max → y axis reaches 3 (0.5 steps: 0, 0.5, ... 3).
        assert!(svg.contains(">3.0</text>"), "{svg}");
        // The ok line steps: three bins, so one M, two V's.
        let start = svg.find("class=\"rate-ok\" d=\"").expect("ok line");
        let d = &svg[start..start + svg[start..].find("\" fill").expect("end")];
        assert_eq!(count(d, "V"), 2, "{d}");
    }
}
