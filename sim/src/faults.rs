//! The fault schedule of one run, drawn up front from the seed: what happens to which host or
//! link, when (ms of simulated time after the workload starts) and for how long.

use ratify_jepsen::rng::Rng;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The host loses every link to every other host.
    Isolate(String),
    /// Messages from the first host to the second are lost (one direction only).
    OneWay(String, String),
    /// Two groups cannot talk to each other.
    Split(Vec<String>, Vec<String>),
    /// The host's process dies and its disk loses every unsynced write (power loss); it
    /// restarts when the fault ends (for a participant, often after only 5–80 ms: a restart
    /// that races the coordinator's Prepare and phase 2, and the next transactions on its keys).
    Crash(String),
    /// Armed for the fault's window: the participant crashes (power loss) as soon as it holds
    /// a durable prepared transaction — in doubt — and restarts `restart_ms` later; for
    /// `cut_ms` after that it cannot reach the coordinators (nor they it), so the transaction
    /// stays in doubt while clients go on using the participant and the keys it holds.
    CrashPrepared {
        /// The participant.
        host: String,
        /// How long it is down.
        restart_ms: u64,
        /// How long after the restart it is cut from the coordinators.
        cut_ms: u64,
    },
    /// Armed for the fault's window: the participant crashes right after it answers a
    /// business call (the call's staged work is lost with its memory) and restarts
    /// `restart_ms` later, racing the transaction's Prepare.
    CrashAfterCall {
        /// The participant.
        host: String,
        /// How long it is down.
        restart_ms: u64,
    },
    /// Messages between two hosts are held back, then released all at once (reordering
    /// against newer connections).
    Hold(String, String),
    /// The link between two hosts flaps: each message may break it (and it repairs at
    /// random), so messages are lost.
    Lossy(String, String),
    /// Messages between two hosts take up to this many ms.
    Slow(String, String, u64),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Isolate(h) => write!(f, "isolate {h}"),
            Fault::OneWay(a, b) => write!(f, "one-way {a}->{b}"),
            Fault::Split(a, b) => write!(f, "split {}|{}", a.join(","), b.join(",")),
            Fault::Crash(h) => write!(f, "crash {h}"),
            Fault::CrashPrepared {
                host,
                restart_ms,
                cut_ms,
            } => write!(
                f,
                "crash {host} once it holds a prepared transaction, down {restart_ms}ms, then cut from the coordinators {cut_ms}ms"
            ),
            Fault::CrashAfterCall { host, restart_ms } => write!(
                f,
                "crash {host} right after it answers a call, down {restart_ms}ms"
            ),
            Fault::Hold(a, b) => write!(f, "hold {a}<->{b}"),
            Fault::Lossy(a, b) => write!(f, "lossy {a}<->{b}"),
            Fault::Slow(a, b, ms) => write!(f, "slow {a}<->{b} {ms}ms"),
        }
    }
}

impl Fault {
    /// The host it crashes, if it is a crash (now or when armed).
    pub fn crashes(&self) -> Option<&str> {
        match self {
            Fault::Crash(h)
            | Fault::CrashPrepared { host: h, .. }
            | Fault::CrashAfterCall { host: h, .. } => Some(h),
            _ => None,
        }
    }
}

/// A fault in the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When it starts (ms after the workload starts).
    pub at_ms: u64,
    /// How long it lasts.
    pub for_ms: u64,
    /// What.
    pub fault: Fault,
}

/// Faults at once, at most (each heals before too many pile up).
pub const CONCURRENT_FAULTS_MAX: usize = 2;

/// Draw the schedule for a workload of `workload_ms`: faults start 0.2–1.5 s apart, last
/// 0.3–3 s (a participant's crash half the time only 5–80 ms), at most
/// [`CONCURRENT_FAULTS_MAX`] at once, and all have ended by the end of the workload.
pub fn schedule(
    rng: &mut Rng,
    coordinators: &[String],
    participants: &[String],
    client: &str,
    workload_ms: u64,
) -> Vec<Scheduled> {
    let servers: Vec<String> = coordinators.iter().chain(participants).cloned().collect();
    let mut everyone = servers.clone();
    everyone.push(client.to_owned());
    let mut out: Vec<Scheduled> = Vec::new();
    let mut t = rng.range(100, 800);
    while t + 300 < workload_ms {
        let mut for_ms = rng.range(300, 3_000).min(workload_ms - t);
        let active = out.iter().filter(|s| s.at_ms + s.for_ms > t).count();
        if active < CONCURRENT_FAULTS_MAX {
            let pick = |rng: &mut Rng, from: &[String]| {
                from[rng.below(from.len() as u64) as usize].clone()
            };
            let pair = |rng: &mut Rng| {
                let a = pick(rng, &everyone);
                let mut b = pick(rng, &everyone);
                while b == a {
                    b = pick(rng, &everyone);
                }
                (a, b)
            };
            let crashed_now = |h: &str| {
                out.iter()
                    .any(|s| s.at_ms + s.for_ms > t && s.fault.crashes().is_some_and(|x| x == h))
            };
            let fault = match rng.below(100) {
                0..=19 => Fault::Isolate(pick(rng, &servers)),
                20..=29 => {
                    let (a, b) = pair(rng);
                    Fault::OneWay(a, b)
                }
                30..=37 => {
                    let mut hosts = servers.clone();
                    rng.shuffle(&mut hosts);
                    let cut = 1 + rng.below(hosts.len() as u64 - 1) as usize;
                    let b = hosts.split_off(cut);
                    Fault::Split(hosts, b)
                }
                38..=49 => {
                    let h = pick(rng, &servers);
                    if crashed_now(&h) {
                        Fault::Isolate(h)
                    } else {
                        if participants.contains(&h) && rng.chance(0.5) {
                            for_ms = rng.range(5, 80);
                        }
                        Fault::Crash(h)
                    }
                }
                50..=55 => {
                    let h = pick(rng, participants);
                    if crashed_now(&h) {
                        Fault::Isolate(h)
                    } else {
                        Fault::CrashPrepared {
                            host: h,
                            restart_ms: rng.range(5, 100),
                            cut_ms: rng.range(50, 800),
                        }
                    }
                }
                56..=61 => {
                    let h = pick(rng, participants);
                    if crashed_now(&h) {
                        Fault::Isolate(h)
                    } else {
                        Fault::CrashAfterCall {
                            host: h,
                            restart_ms: rng.range(1, 30),
                        }
                    }
                }
                62..=73 => {
                    let (a, b) = pair(rng);
                    Fault::Hold(a, b)
                }
                74..=87 => {
                    let (a, b) = pair(rng);
                    Fault::Lossy(a, b)
                }
                _ => {
                    let (a, b) = pair(rng);
                    Fault::Slow(a, b, rng.range(20, 400))
                }
            };
            out.push(Scheduled {
                at_ms: t,
                for_ms,
                fault,
            });
        }
        t += rng.range(200, 1_500);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_seeded_bounded_and_end_in_time() {
        let c: Vec<String> = ["c1", "c2", "c3"].map(String::from).to_vec();
        let p: Vec<String> = ["p1", "p2", "p3"].map(String::from).to_vec();
        let a = schedule(&mut Rng::new(5), &c, &p, "client", 10_000);
        let b = schedule(&mut Rng::new(5), &c, &p, "client", 10_000);
        assert_eq!(a, b);
        assert!(!a.is_empty());
        for s in &a {
            assert!(s.at_ms + s.for_ms <= 10_000, "{s:?} outlasts the workload");
            let at_once = a
                .iter()
                .filter(|o| o.at_ms <= s.at_ms && o.at_ms + o.for_ms > s.at_ms)
                .count();
            assert!(at_once <= CONCURRENT_FAULTS_MAX);
            if let Some(h) = s.fault.crashes() {
                assert_ne!(h, "client", "the client is never crashed");
            }
            if let Fault::CrashPrepared { host, .. } | Fault::CrashAfterCall { host, .. } = &s.fault
            {
                assert!(
                    p.contains(host),
                    "only participants prepare and answer calls"
                );
            }
        }
        let kinds: std::collections::HashSet<_> = (0..40)
            .flat_map(|seed| schedule(&mut Rng::new(seed), &c, &p, "client", 10_000))
            .map(|s| std::mem::discriminant(&s.fault))
            .collect();
        assert_eq!(kinds.len(), 9, "every kind of fault is drawn");
    }
}
