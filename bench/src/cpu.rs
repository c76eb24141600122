//! CPU time of process trees, from `/proc` (Linux): how much work each system's servers (and
//! the bench's own client side) spend per transaction.

use std::collections::{BTreeMap, BTreeSet};

/// Clock ticks per second of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`; 100 on every
/// Linux this runs on).
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// (parent pid, user+system ticks) of one process, or `None` if it is gone.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields after the name: state(3) ppid(4) ... utime(14) stime(15), so indices 1, 11, 12.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// Processes measured together.
#[derive(Debug, Clone)]
pub struct Group {
    /// Root processes.
    pub pids: Vec<u32>,
    /// Whether each root counts with all its descendants (PostgreSQL's backends, say); the
    /// bench's own process is counted alone, since every server is its child.
    pub descendants: bool,
}

/// Named groups of processes ("coordinators", "participants", "client", ...).
#[derive(Debug, Clone, Default)]
pub struct Groups(pub BTreeMap<String, Group>);

impl Groups {
    /// Add a group.
    pub fn add(&mut self, name: &str, pids: Vec<u32>, descendants: bool) {
        self.0.insert(name.to_owned(), Group { pids, descendants });
    }
}

/// CPU seconds used so far by each group.
pub type Sample = BTreeMap<String, f64>;

impl Groups {
    /// CPU seconds consumed so far by each group's process trees (processes that have exited
    /// are not counted: sample around a window in which none exits).
    pub fn sample(&self) -> Sample {
        let tick = ticks_per_second();
        let mut all: Vec<(u32, u32, u64)> = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.filter_map(Result::ok) {
                if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    && let Some((ppid, ticks)) = stat(pid)
                {
                    all.push((pid, ppid, ticks));
                }
            }
        }
        self.0
            .iter()
            .map(|(name, group)| {
                let mut members: BTreeSet<u32> = group.pids.iter().copied().collect();
                // Grow the set until closed under "child of a member".
                if group.descendants {
                    loop {
                        let before = members.len();
                        for (pid, ppid, _) in &all {
                            if members.contains(ppid) {
                                members.insert(*pid);
                            }
                        }
                        if members.len() == before {
                            break;
                        }
                    }
                }
                let ticks: u64 = all
                    .iter()
                    .filter(|(pid, _, _)| members.contains(pid))
                    .map(|(_, _, t)| t)
                    .sum();
                (name.clone(), ticks as f64 / tick)
            })
            .collect()
    }
}

/// `after - before`, per group.
pub fn delta(before: &Sample, after: &Sample) -> Sample {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_process_is_charged_cpu_time() {
        let mut groups = Groups::default();
        groups.add("me", vec![std::process::id()], false);
        groups.add("gone", vec![u32::MAX], true);
        let before = groups.sample();
        assert_eq!(before["gone"], 0.0);
        // Spin until the kernel has charged at least one tick (bounded, in case /proc lies).
        let mut x = 0u64;
        let start = std::time::Instant::now();
        let mut used = 0.0;
        while used == 0.0 && start.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            used = delta(&before, &groups.sample())["me"];
        }
        assert!(used > 0.0, "a busy loop was never charged CPU time");
    }
}
