//! Fixed lists of tests: the short CI schedule, the long schedule, and the selftest that runs
//! every planted bug against the nemesis that should expose it.

use std::time::Duration;

use crate::workload::{ClientMode, Kind};

/// One entry of a schedule.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Workload.
    pub workload: Kind,
    /// How the clients behave around failed calls.
    pub client: ClientMode,
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
        client: ClientMode::Careful,
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
        client: ClientMode::Careful,
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
        // Issue 14's hole: only a client that commits after a failed call can show it; lock
        // conflicts on the bank's few accounts give it failed calls, pauses give it more.
        Entry {
            client: ClientMode::Reckless,
            ..bug("errors-do-not-doom", Kind::Bank, "pause", 16)
        },
        // Only a client that sends a call again can show it; Elle sees the twice-appended
        // values, the bank checker a transfer applied twice.
        Entry {
            client: ClientMode::Retrying,
            ..bug("calls-run-twice", Kind::ListAppend, "delay", 17)
        },
    ]
}

/// The short, fixed-seed schedule CI runs: the main nemeses, each workload, the misbehaving
/// clients (reckless: commits after failed calls; retrying: calls sent again with the same
/// call id), and one planted bug that must be caught.
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
        Entry {
            client: ClientMode::Reckless,
            ..entry(
                "ci-bank-reckless",
                Kind::Bank,
                "kill-participant,pause,partition-participant-leader",
                30,
                4,
            )
        },
        Entry {
            client: ClientMode::Retrying,
            ..entry(
                "ci-list-append-retrying",
                Kind::ListAppend,
                "kill-participant,pause,delay",
                30,
                5,
            )
        },
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
