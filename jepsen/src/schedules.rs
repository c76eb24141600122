//! Fixed lists of tests: the short CI schedule, the long schedule, and the selftest that runs
//! every planted bug against the nemesis that should expose it.

use std::time::Duration;

use crate::workload::Kind;

/// One entry of a schedule.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Workload.
    pub workload: Kind,
    /// Nemeses (a list for `Nemesis::parse_list`).
    pub nemeses: &'static str,
    /// Time limit.
    pub time_limit: Duration,
    /// Seed.
    pub seed: u64,
    /// The planted bug, for selftest entries.
    pub planted_bug: Option<&'static str>,
    /// Whether the run must be found invalid (a planted bug) rather than valid.
    pub expect_invalid: bool,
}

fn entry(name: &str, workload: Kind, nemeses: &'static str, secs: u64, seed: u64) -> Entry {
    Entry {
        name: name.to_owned(),
        workload,
        nemeses,
        time_limit: Duration::from_secs(secs),
        seed,
        planted_bug: None,
        expect_invalid: false,
    }
}

/// Each planted bug, the workload and nemeses that should expose it.
pub fn selftest(secs: u64) -> Vec<Entry> {
    let bug = |name: &'static str, workload, nemeses: &'static str, seed| Entry {
        name: format!("selftest-{name}"),
        workload,
        nemeses,
        time_limit: Duration::from_secs(secs),
        seed,
        planted_bug: Some(name),
        expect_invalid: true,
    };
    vec![
        bug(
            "yes-without-sync",
            Kind::AtomicMarker,
            "kill-participant",
            11,
        ),
        bug(
            "abort-after-yes",
            Kind::AtomicMarker,
            "hold,partition-participant-leader",
            12,
        ),
        bug(
            "answer-before-apply",
            Kind::AtomicMarker,
            "partition-leader,kill-leader",
            13,
        ),
        bug(
            "last-wins",
            Kind::AtomicMarker,
            "hold,partition-participant-leader",
            14,
        ),
        bug("non-idempotent-commit", Kind::Bank, "drop,kill-leader", 15),
    ]
}

/// The short, fixed-seed schedule CI runs: the main nemeses, each workload, and one planted
/// bug that must be caught.
pub fn ci() -> Vec<Entry> {
    let mut out = vec![
        entry(
            "ci-bank-kills",
            Kind::Bank,
            "kill-leader,kill-participant,pause,failpoint",
            30,
            1,
        ),
        entry(
            "ci-marker-partitions",
            Kind::AtomicMarker,
            "partitions,hold",
            30,
            2,
        ),
        entry(
            "ci-list-append-network",
            Kind::ListAppend,
            "delay,drop,kill-random,partition-leader",
            30,
            3,
        ),
    ];
    let mut caught = selftest(30).remove(1); // abort-after-yes under hold
    caught.name = "ci-selftest-abort-after-yes".into();
    out.push(caught);
    out
}

/// The long schedule: every workload under every nemesis, `minutes` each (the issue's
/// acceptance run uses 12: 36 minutes of faults).
pub fn long(minutes: u64) -> Vec<Entry> {
    vec![
        entry("long-bank-all", Kind::Bank, "all", minutes * 60, 101),
        entry(
            "long-marker-all",
            Kind::AtomicMarker,
            "all",
            minutes * 60,
            102,
        ),
        entry(
            "long-list-append-all",
            Kind::ListAppend,
            "all",
            minutes * 60,
            103,
        ),
    ]
}
