//! Planted bugs: deliberate protocol violations that prove the fault-injection harness and the
//! simulation can catch real bugs (`ratify-jepsen selftest`).
//!
//! Compiled in only with the cargo feature `planted-bugs` (of this crate, enabled by the
//! coordinator's and the SDK's features of the same name); production builds (no features)
//! contain none of them and [`active`] is a constant `false`. With the feature, at most one bug
//! is switched on per process by the environment variable `RATIFY_PLANTED_BUG` (its
//! [`Bug::name`]); a process with a bug switched on says so loudly in its log.

/// The bugs, each breaking one rule of docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bug {
    /// (a) P2 broken: the participant votes YES with its prepare record unsynced (written to
    /// memory only, so a crash after the vote loses it, like a power cut losing an unsynced
    /// write).
    YesWithoutSync,
    /// (b) P1 broken: a participant that waited `resolve_after` for a decision aborts on its
    /// own instead of asking the coordinator.
    AbortAfterYes,
    /// (c) C5 broken: the leader answers COMMITTED as soon as it proposes the decision, before
    /// Raft has committed and applied it.
    AnswerBeforeApply,
    /// (d) C4 broken: decisions are last-wins: a participant's Resolve proposes ABORT even when
    /// a decision exists, and the state machine overwrites the earlier decision.
    LastWins,
    /// (e) P7 broken: commit is not idempotent: the committed writes are kept, and a repeated
    /// Commit (a phase-2 retry whose first acknowledgement was lost) writes them again — the
    /// values of that moment, undoing whatever later transactions wrote to those keys.
    NonIdempotentCommit,
    /// (f) P10 broken: errors do not doom. A business call that fails (its handler's error, a
    /// lock conflict or limit in the store) leaves the transaction staged and valid at the
    /// participant and counts as a completed call, so a commit after it goes through without
    /// that call's work — issue 14's atomicity hole.
    ErrorsDoNotDoom,
    /// (g) P3/P9 broken: recovery reloads a prepared transaction without re-taking its keys'
    /// locks, so a new transaction can read and write them before the in-doubt one is decided.
    RecoveryWithoutLocks,
    /// (h) P4/P5 broken: a Prepare for a transaction this participant has no record of (its
    /// staged work lost with a restart) is answered READ_ONLY instead of NO, so the transaction
    /// commits without that participant's part.
    LostWorkReadOnly,
    /// (i) P10 broken: calls run twice. A retried call (same `ratify-call-id`) runs its handler
    /// again instead of being answered from the first attempt (it still counts once).
    CallsRunTwice,
}

impl Bug {
    /// Every bug.
    pub const ALL: [Bug; 9] = [
        Bug::YesWithoutSync,
        Bug::AbortAfterYes,
        Bug::AnswerBeforeApply,
        Bug::LastWins,
        Bug::NonIdempotentCommit,
        Bug::ErrorsDoNotDoom,
        Bug::RecoveryWithoutLocks,
        Bug::LostWorkReadOnly,
        Bug::CallsRunTwice,
    ];

    /// Its name in `RATIFY_PLANTED_BUG`.
    pub fn name(self) -> &'static str {
        match self {
            Bug::YesWithoutSync => "yes-without-sync",
            Bug::AbortAfterYes => "abort-after-yes",
            Bug::AnswerBeforeApply => "answer-before-apply",
            Bug::LastWins => "last-wins",
            Bug::NonIdempotentCommit => "non-idempotent-commit",
            Bug::ErrorsDoNotDoom => "errors-do-not-doom",
            Bug::RecoveryWithoutLocks => "recovery-without-locks",
            Bug::LostWorkReadOnly => "lost-work-read-only",
            Bug::CallsRunTwice => "calls-run-twice",
        }
    }

    /// The bug named `name`.
    pub fn from_name(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// The environment variable that switches a bug on.
pub const ENV: &str = "RATIFY_PLANTED_BUG";

/// Whether `bug` is switched on in this process.
#[cfg(feature = "planted-bugs")]
pub fn active(bug: Bug) -> bool {
    use std::sync::OnceLock;
    if let Some(on) = THREAD_OVERRIDE.with(std::cell::Cell::get) {
        return on == Some(bug);
    }
    static ON: OnceLock<Option<Bug>> = OnceLock::new();
    let on = ON.get_or_init(|| {
        let name = std::env::var(ENV).ok()?;
        let bug = Bug::from_name(name.trim());
        match bug {
            Some(b) => eprintln!(
                "WARNING: planted bug {:?} ({}) is switched on: this process breaks the protocol on purpose",
                b.name(),
                ENV
            ),
            None if !name.trim().is_empty() => {
                eprintln!("{ENV}={name:?} names no planted bug; none is switched on")
            }
            None => {}
        }
        bug
    });
    *on == Some(bug)
}

#[cfg(feature = "planted-bugs")]
thread_local! {
    static THREAD_OVERRIDE: std::cell::Cell<Option<Option<Bug>>> = const { std::cell::Cell::new(None) };
}

/// Under simulation (one thread runs every simulated process): switch `bug` on for this
/// thread only, overriding the environment (`Some(None)`: none on this thread; `None`: back to
/// the environment). Without the `planted-bugs` feature it does nothing.
pub fn set_thread_override(bug: Option<Option<Bug>>) {
    #[cfg(feature = "planted-bugs")]
    THREAD_OVERRIDE.with(|o| o.set(bug));
    #[cfg(not(feature = "planted-bugs"))]
    let _ = bug;
}

/// The bug switched on in this process (or on this simulation thread), if any. Read once at
/// start-up into a component's configuration, so protocol logic never reads a global.
pub fn current() -> Option<Bug> {
    Bug::ALL.into_iter().find(|b| active(*b))
}

/// Read `RATIFY_PLANTED_BUG` now and say in the log if a bug is on (call at start-up).
pub fn announce() {
    let _ = active(Bug::YesWithoutSync);
}

/// Without the `planted-bugs` feature there are none.
#[cfg(not(feature = "planted-bugs"))]
#[inline(always)]
pub fn active(_bug: Bug) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in Bug::ALL {
            assert_eq!(Bug::from_name(b.name()), Some(b));
        }
        assert_eq!(Bug::from_name("nope"), None);
    }
}
