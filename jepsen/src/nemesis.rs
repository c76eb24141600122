//! Nemeses: the faults, one at a time, on a seeded schedule. Each opens an interval on the
//! nemesis timeline when it starts and closes it when it is undone; process crashes (a
//! failpoint fired) are noticed and the process restarted, as `info` events.

use std::time::Duration;

use anyhow::{Result, anyhow};
use serde_json::json;

use crate::recorder::Recorder;
use crate::rng::Rng;
use crate::system::{FAILPOINTS, System};

/// Every nemesis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Nemesis {
    /// Cut one random coordinator off from everything.
    PartitionOne,
    /// Cut the leader off from everything, or (half the time) from the other coordinators
    /// only, so it keeps serving clients and participants.
    PartitionLeader,
    /// Split coordinators into a minority and a majority; participants and the client land
    /// on random sides.
    PartitionHalves,
    /// Two sides that cannot talk, joined by one coordinator that talks to both.
    PartitionBridge,
    /// Cut one participant from the leader only (both directions).
    PartitionParticipantLeader,
    /// One coordinator can receive but not send (or send but not receive).
    PartitionOneWay,
    /// 20–150 ms latency plus jitter on every link.
    Delay,
    /// Break 1–5% of message chunks' connections on every link.
    Drop,
    /// Hold one group of links (leader→participants, leader→followers, participants→
    /// coordinators) and release it late.
    Hold,
    /// SIGKILL the leader; restart it at the end of the interval.
    KillLeader,
    /// SIGKILL a random coordinator.
    KillRandom,
    /// SIGKILL a minority of coordinators.
    KillMinority,
    /// SIGKILL a random participant.
    KillParticipant,
    /// SIGKILL every process, coordinators and participants.
    KillAll,
    /// SIGSTOP a random process (coordinator or participant); SIGCONT at the end.
    Pause,
    /// Arm a random protocol failpoint once: the first process to reach it crashes itself.
    Failpoint,
    /// Under a partition of one follower, remove it from the membership; at the end, heal and
    /// add a new node (new id, empty storage) on its slot.
    Membership,
}

impl Nemesis {
    /// Every nemesis, in a fixed order.
    pub const ALL: [Nemesis; 17] = [
        Nemesis::PartitionOne,
        Nemesis::PartitionLeader,
        Nemesis::PartitionHalves,
        Nemesis::PartitionBridge,
        Nemesis::PartitionParticipantLeader,
        Nemesis::PartitionOneWay,
        Nemesis::Delay,
        Nemesis::Drop,
        Nemesis::Hold,
        Nemesis::KillLeader,
        Nemesis::KillRandom,
        Nemesis::KillMinority,
        Nemesis::KillParticipant,
        Nemesis::KillAll,
        Nemesis::Pause,
        Nemesis::Failpoint,
        Nemesis::Membership,
    ];

    /// Its name on the command line and the timeline.
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::PartitionOne => "partition-one",
            Nemesis::PartitionLeader => "partition-leader",
            Nemesis::PartitionHalves => "partition-halves",
            Nemesis::PartitionBridge => "partition-bridge",
            Nemesis::PartitionParticipantLeader => "partition-participant-leader",
            Nemesis::PartitionOneWay => "partition-one-way",
            Nemesis::Delay => "delay",
            Nemesis::Drop => "drop",
            Nemesis::Hold => "hold",
            Nemesis::KillLeader => "kill-leader",
            Nemesis::KillRandom => "kill-random",
            Nemesis::KillMinority => "kill-minority",
            Nemesis::KillParticipant => "kill-participant",
            Nemesis::KillAll => "kill-all",
            Nemesis::Pause => "pause",
            Nemesis::Failpoint => "failpoint",
            Nemesis::Membership => "membership",
        }
    }

    /// Parse a comma-separated list; groups: `none`, `partitions`, `kills`, `network`, `all`.
    pub fn parse_list(text: &str) -> Result<Vec<Nemesis>, String> {
        let mut out = Vec::new();
        for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let group: Vec<Nemesis> = match part {
                "none" => vec![],
                "all" => Nemesis::ALL.to_vec(),
                "partitions" => Nemesis::ALL
                    .into_iter()
                    .filter(|n| n.name().starts_with("partition"))
                    .collect(),
                "kills" => Nemesis::ALL
                    .into_iter()
                    .filter(|n| n.name().starts_with("kill"))
                    .collect(),
                "network" => vec![Nemesis::Delay, Nemesis::Drop, Nemesis::Hold],
                name => vec![Nemesis::ALL.into_iter().find(|n| n.name() == name).ok_or_else(|| {
                    format!(
                        "unknown nemesis {name:?}; known: none, all, partitions, kills, network, {}",
                        Nemesis::ALL.map(|n| n.name()).join(", ")
                    )
                })?],
            };
            for n in group {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }
}

/// What has to be undone at the end of an interval.
enum Undo {
    /// Heal the network.
    Heal,
    /// Restart these processes.
    Restart(Vec<String>),
    /// SIGCONT this one.
    Resume(String),
    /// Put this failpoint's marker back (disarm) if it has not fired.
    Disarm(String),
    /// Heal, then add a node on this slot.
    Rejoin(usize),
    /// Nothing (the fault could not be applied).
    Nothing,
}

fn names_of(system: &System) -> (Vec<String>, Vec<String>) {
    (
        system
            .coordinators
            .iter()
            .filter(|c| c.member)
            .map(|c| c.name.clone())
            .collect(),
        system.participants.iter().map(|p| p.name.clone()).collect(),
    )
}

/// Cut every link between a node in `a` and a node in `b` (both directions).
fn cut_between(system: &System, a: &[String], b: &[String]) -> usize {
    system.net.update(
        |f, t| {
            (a.iter().any(|x| x == f) && b.iter().any(|x| x == t))
                || (b.iter().any(|x| x == f) && a.iter().any(|x| x == t))
        },
        |f| f.cut = true,
    )
}

fn all_nodes(system: &System) -> Vec<String> {
    let (c, p) = names_of(system);
    let mut all = c;
    all.extend(p);
    all.push("client".into());
    all
}

/// Start `nemesis`; returns what to undo and a description for the timeline.
async fn start(
    nemesis: Nemesis,
    system: &mut System,
    rng: &mut Rng,
) -> Result<(Undo, serde_json::Value)> {
    let (coords, parts) = names_of(system);
    let leader = system
        .leader()
        .await
        .map(|s| system.coordinators[s].name.clone());
    Ok(match nemesis {
        Nemesis::PartitionOne | Nemesis::PartitionLeader => {
            let victim = if nemesis == Nemesis::PartitionLeader {
                leader.ok_or_else(|| anyhow!("no leader to isolate"))?
            } else {
                rng.pick(&coords)
                    .cloned()
                    .ok_or_else(|| anyhow!("no coordinator"))?
            };
            // The leader's variant: half the time it is cut from its peers only, so it keeps
            // serving clients and participants while the others elect a new leader.
            let peers_only = nemesis == Nemesis::PartitionLeader && rng.chance(0.5);
            let others: Vec<String> = if peers_only {
                coords.iter().filter(|n| **n != victim).cloned().collect()
            } else {
                all_nodes(system)
                    .into_iter()
                    .filter(|n| *n != victim)
                    .collect()
            };
            let links = cut_between(system, std::slice::from_ref(&victim), &others);
            (
                Undo::Heal,
                json!({"isolated": victim, "from": if peers_only { "its peers" } else { "everyone" }, "links": links}),
            )
        }
        Nemesis::PartitionHalves => {
            let mut c = coords.clone();
            rng.shuffle(&mut c);
            let minority = c.len() / 2;
            let (mut a, mut b): (Vec<String>, Vec<String>) =
                (c[..minority].to_vec(), c[minority..].to_vec());
            for p in parts
                .iter()
                .cloned()
                .chain(std::iter::once("client".to_owned()))
            {
                if rng.chance(0.5) {
                    a.push(p)
                } else {
                    b.push(p)
                }
            }
            let links = cut_between(system, &a, &b);
            (Undo::Heal, json!({"sides": [a, b], "links": links}))
        }
        Nemesis::PartitionBridge => {
            let mut c = coords.clone();
            rng.shuffle(&mut c);
            let bridge = c.remove(0);
            let half = c.len() / 2;
            let (mut a, mut b): (Vec<String>, Vec<String>) =
                (c[..half].to_vec(), c[half..].to_vec());
            for p in parts
                .iter()
                .cloned()
                .chain(std::iter::once("client".to_owned()))
            {
                if rng.chance(0.5) {
                    a.push(p)
                } else {
                    b.push(p)
                }
            }
            let links = cut_between(system, &a, &b);
            (
                Undo::Heal,
                json!({"sides": [a, b], "bridge": bridge, "links": links}),
            )
        }
        Nemesis::PartitionParticipantLeader => {
            let leader = leader.ok_or_else(|| anyhow!("no leader"))?;
            let p = rng
                .pick(&parts)
                .cloned()
                .ok_or_else(|| anyhow!("no participant"))?;
            let links = cut_between(
                system,
                std::slice::from_ref(&p),
                std::slice::from_ref(&leader),
            );
            (
                Undo::Heal,
                json!({"participant": p, "leader": leader, "links": links}),
            )
        }
        Nemesis::PartitionOneWay => {
            let victim = if rng.chance(0.5) {
                leader.clone()
            } else {
                None
            }
            .or_else(|| rng.pick(&coords).cloned())
            .ok_or_else(|| anyhow!("no coordinator"))?;
            let outgoing = rng.chance(0.5);
            let links = system.net.update(
                |f, t| if outgoing { f == victim } else { t == victim },
                |f| f.cut = true,
            );
            let dir = if outgoing {
                "cannot send"
            } else {
                "cannot receive"
            };
            (
                Undo::Heal,
                json!({"node": victim, "direction": dir, "links": links}),
            )
        }
        Nemesis::Delay => {
            let delay = Duration::from_millis(rng.range(20, 150));
            let jitter = Duration::from_millis(rng.range(5, 100));
            let links = system.net.update(
                |_, _| true,
                |f| {
                    f.delay = delay;
                    f.jitter = jitter;
                },
            );
            (
                Undo::Heal,
                json!({"delay_ms": delay.as_millis() as u64, "jitter_ms": jitter.as_millis() as u64, "links": links}),
            )
        }
        Nemesis::Drop => {
            let p = rng.range(1, 5) as f64 / 100.0;
            let links = system.net.update(|_, _| true, |f| f.drop = p);
            (Undo::Heal, json!({"probability": p, "links": links}))
        }
        Nemesis::Hold => {
            let leader = leader.unwrap_or_else(|| coords[0].clone());
            let group = rng.below(3);
            let (what, links) = match group {
                0 => (
                    "leader to participants",
                    system
                        .net
                        .update(|f, t| f == leader && t.starts_with('p'), |f| f.hold = true),
                ),
                1 => (
                    "leader to followers",
                    system
                        .net
                        .update(|f, t| f == leader && t.starts_with('c'), |f| f.hold = true),
                ),
                _ => (
                    "participants to coordinators",
                    system.net.update(
                        |f, t| f.starts_with('p') && t.starts_with('c'),
                        |f| f.hold = true,
                    ),
                ),
            };
            (
                Undo::Heal,
                json!({"held": what, "leader": leader, "links": links}),
            )
        }
        Nemesis::KillLeader
        | Nemesis::KillRandom
        | Nemesis::KillMinority
        | Nemesis::KillParticipant
        | Nemesis::KillAll => {
            let victims: Vec<String> = match nemesis {
                Nemesis::KillLeader => vec![leader.ok_or_else(|| anyhow!("no leader"))?],
                Nemesis::KillRandom => vec![
                    rng.pick(&coords)
                        .cloned()
                        .ok_or_else(|| anyhow!("no coordinator"))?,
                ],
                Nemesis::KillMinority => {
                    let mut c = coords.clone();
                    rng.shuffle(&mut c);
                    c.truncate((c.len().saturating_sub(1)) / 2);
                    c
                }
                Nemesis::KillParticipant => vec![
                    rng.pick(&parts)
                        .cloned()
                        .ok_or_else(|| anyhow!("no participant"))?,
                ],
                _ => coords.iter().chain(parts.iter()).cloned().collect(),
            };
            // Whoever was killed is restarted at the end, even if a later kill failed.
            let mut killed = Vec::new();
            let mut errors = Vec::new();
            for v in victims {
                match system.kill(&v).await {
                    Ok(()) => killed.push(v),
                    Err(e) => errors.push(format!("{v}: {e}")),
                }
            }
            let value = json!({"killed": killed, "errors": errors});
            (Undo::Restart(killed), value)
        }
        Nemesis::Pause => {
            let all: Vec<String> = coords.iter().chain(parts.iter()).cloned().collect();
            let victim = rng
                .pick(&all)
                .cloned()
                .ok_or_else(|| anyhow!("nothing to pause"))?;
            system.pause(&victim, true)?;
            (Undo::Resume(victim.clone()), json!({"paused": victim}))
        }
        Nemesis::Failpoint => {
            let fp = rng.pick(FAILPOINTS).copied().unwrap_or(FAILPOINTS[0]);
            let marker = system.failpoint_dir.join(fp);
            std::fs::remove_file(&marker).map_err(|e| anyhow!("arming {fp}: {e}"))?;
            (Undo::Disarm(fp.to_owned()), json!({"armed": fp}))
        }
        Nemesis::Membership => {
            let followers: Vec<usize> = (0..system.coordinators.len())
                .filter(|&s| {
                    system.coordinators[s].member
                        && Some(&system.coordinators[s].name) != leader.as_ref()
                })
                .collect();
            let slot = *rng
                .pick(&followers)
                .ok_or_else(|| anyhow!("no follower to remove"))?;
            let victim = system.coordinators[slot].name.clone();
            let others: Vec<String> = all_nodes(system)
                .into_iter()
                .filter(|n| *n != victim)
                .collect();
            cut_between(system, std::slice::from_ref(&victim), &others);
            let removed = system.remove_member(slot).await;
            match removed {
                Ok(node_id) => (
                    Undo::Rejoin(slot),
                    json!({"isolated": victim, "removed_node": node_id}),
                ),
                Err(e) => (
                    Undo::Heal,
                    json!({"isolated": victim, "remove_failed": e.to_string()}),
                ),
            }
        }
    })
}

async fn undo(undo: Undo, system: &mut System) -> serde_json::Value {
    match undo {
        Undo::Heal => {
            system.net.heal();
            json!("healed")
        }
        Undo::Restart(victims) => {
            let mut out = Vec::new();
            for v in victims {
                match system.restart(&v).await {
                    Ok(()) => out.push(format!("restarted {v}")),
                    Err(e) => out.push(format!("restart of {v} failed: {e}")),
                }
            }
            json!(out)
        }
        Undo::Resume(v) => match system.pause(&v, false) {
            Ok(()) => json!(format!("resumed {v}")),
            Err(e) => json!(format!("resume of {v} failed: {e}")),
        },
        Undo::Disarm(fp) => {
            let marker = system.failpoint_dir.join(&fp);
            // The marker is back if the point fired (the crashing process created it).
            let fired = marker.exists();
            let _ = std::fs::write(&marker, b"disarmed");
            json!({"failpoint": fp, "fired": fired})
        }
        Undo::Rejoin(slot) => {
            system.net.heal();
            match system.add_member(slot).await {
                Ok(node_id) => {
                    json!({"healed": true, "added_node": node_id, "slot": system.coordinators[slot].name})
                }
                Err(e) => json!({"healed": true, "add_failed": e.to_string()}),
            }
        }
        Undo::Nothing => json!("nothing to undo"),
    }
}

/// Timing of the schedule.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Quiet time between faults, ms (uniform in the range).
    pub quiet_ms: (u64, u64),
    /// How long a fault lasts, ms.
    pub fault_ms: (u64, u64),
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            quiet_ms: (1_000, 3_000),
            fault_ms: (2_000, 6_000),
        }
    }
}

/// Run faults from `nemeses` until `stop` is set, then undo the one in force. Crashed
/// processes are restarted as they are noticed.
pub async fn run(
    nemeses: Vec<Nemesis>,
    schedule: Schedule,
    system: std::sync::Arc<tokio::sync::Mutex<System>>,
    recorder: std::sync::Arc<Recorder>,
    mut rng: Rng,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let tick = Duration::from_millis(200);
    let sleep_watching = |d: Duration,
                          system: std::sync::Arc<tokio::sync::Mutex<System>>,
                          recorder: std::sync::Arc<Recorder>,
                          stop: tokio::sync::watch::Receiver<bool>| async move {
        let until = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < until && !*stop.borrow() {
            tokio::time::sleep(tick.min(until - tokio::time::Instant::now())).await;
            let mut sys = system.lock().await;
            for name in sys.crashed() {
                recorder.nemesis_info(
                    "crash",
                    json!({"process": name, "cause": "exited by itself (a failpoint fired)"}),
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
                let r = sys.restart(&name).await;
                recorder.nemesis_info("restart", json!({"process": name, "ok": r.is_ok(), "error": r.err().map(|e| e.to_string())}));
            }
        }
    };
    loop {
        let quiet = Duration::from_millis(rng.range(schedule.quiet_ms.0, schedule.quiet_ms.1));
        sleep_watching(quiet, system.clone(), recorder.clone(), stop.clone()).await;
        if *stop.borrow() {
            return;
        }
        let Some(&nemesis) = rng.pick(&nemeses) else {
            continue;
        };
        let started = {
            let mut sys = system.lock().await;
            start(nemesis, &mut sys, &mut rng).await
        };
        let (undo_this, id) = match started {
            Ok((u, value)) => (u, recorder.nemesis_start(nemesis.name(), value)),
            Err(e) => {
                recorder.nemesis_info(nemesis.name(), json!({"skipped": e.to_string()}));
                (Undo::Nothing, u64::MAX)
            }
        };
        if id == u64::MAX {
            continue;
        }
        let hold = Duration::from_millis(rng.range(schedule.fault_ms.0, schedule.fault_ms.1));
        sleep_watching(hold, system.clone(), recorder.clone(), stop.clone()).await;
        let value = {
            let mut sys = system.lock().await;
            undo(undo_this, &mut sys).await
        };
        recorder.nemesis_stop(id, nemesis.name(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_groups() {
        assert_eq!(
            Nemesis::parse_list("kill-leader").expect("valid"),
            vec![Nemesis::KillLeader]
        );
        assert_eq!(
            Nemesis::parse_list("all").expect("valid").len(),
            Nemesis::ALL.len()
        );
        assert_eq!(Nemesis::parse_list("partitions").expect("valid").len(), 6);
        assert_eq!(
            Nemesis::parse_list("kills,kill-leader")
                .expect("valid")
                .len(),
            5
        );
        assert!(Nemesis::parse_list("none").expect("valid").is_empty());
        assert!(
            Nemesis::parse_list("nope")
                .expect_err("invalid")
                .contains("unknown nemesis")
        );
        for n in Nemesis::ALL {
            assert_eq!(Nemesis::parse_list(n.name()).expect("valid"), vec![n]);
        }
    }
}
