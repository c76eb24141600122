//! The system under test: coordinator and participant processes on loopback, every network
//! link between them (and from the harness's client to the coordinators) through a
//! [`Net`](crate::proxy::Net) proxy.
//!
//! Addresses are fixed per *slot* (`c1..cN`, `p1..pM`) for the whole run: a restarted process
//! listens where it did, and a membership change puts a new coordinator (a new node id, empty
//! storage) on a freed slot's address, so every process's dial map (`RATIFY_DIAL_MAP`, see
//! `ratify_proto::dial`) stays valid. Control-plane calls (cluster status, membership, the
//! final reads) go straight to the processes, never through the proxies.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use ratify_coordinator::admin_client::{self, AdminClient};
use ratify_devtools::local_cluster::ServiceProcess;
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::jepsen::jepsen_kv_client::JepsenKvClient;
use ratify_proto::types::Endpoint;
use ratify_proto::types::ParticipantId;
use ratify_proto::types::admin::{ClusterStatus, InitClusterRequest, Member, MemberRole};
use tonic::transport::Channel;

use crate::proxy::Net;

/// How long a control-plane status call may take (a paused node must not stall the harness).
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Where the harness finds its binaries and how it configures the processes.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// The `ratify` binary.
    pub ratify_bin: PathBuf,
    /// The `ratify-jepsen-node` binary.
    pub node_bin: PathBuf,
    /// Coordinators (3 or 5).
    pub coordinators: usize,
    /// Participants (at least 3).
    pub participants: usize,
    /// A participant resolves a prepared transaction after this long without a decision.
    pub resolve_after_ms: u64,
    /// `RATIFY_PLANTED_BUG` for every process, if any.
    pub planted_bug: Option<String>,
    /// Seed for the proxies' randomness.
    pub seed: u64,
}

/// A coordinator slot.
pub struct Coordinator {
    /// `c1`, `c2`, ...
    pub name: String,
    /// The Raft node id now on this slot.
    pub node_id: u64,
    /// Its (real) address.
    pub addr: SocketAddr,
    /// The process.
    pub process: ServiceProcess,
    /// Whether it is a voting member (false after a membership change removed it).
    pub member: bool,
    /// SIGSTOPped by a nemesis.
    pub paused: bool,
}

/// A participant slot.
pub struct Participant {
    /// `p1`, `p2`, ...
    pub name: String,
    /// Its (real) address.
    pub addr: SocketAddr,
    /// The process.
    pub process: ServiceProcess,
    /// SIGSTOPped by a nemesis.
    pub paused: bool,
}

/// The running system.
pub struct System {
    config: SystemConfig,
    /// The run's directory: `logs/` and `data/` below it.
    dir: PathBuf,
    /// The proxies.
    pub net: Arc<Net>,
    /// Coordinator slots.
    pub coordinators: Vec<Coordinator>,
    /// Participant slots.
    pub participants: Vec<Participant>,
    /// The client's dial map: coordinator address → its client proxy.
    pub client_dial_map: BTreeMap<String, String>,
    coordinator_env: BTreeMap<String, Vec<(String, String)>>,
    next_node_id: u64,
    /// `RATIFY_FAILPOINT_ONCE_DIR`: a point is armed by removing its marker file.
    pub failpoint_dir: PathBuf,
}

/// Lowest port tried for a process's fixed address.
const FIXED_PORT_MIN: u16 = 10_000;

/// A loopback port for a process, held (bound) until the process is about to start. It is
/// chosen below the kernel's ephemeral range, so neither the proxies (port 0) nor outgoing
/// connections can take it while the process is down between a kill and a restart.
fn reserve_port(rng: &mut crate::rng::Rng) -> Result<std::net::TcpListener> {
    let ephemeral_min = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32_768);
    let hi = ephemeral_min.saturating_sub(1).max(FIXED_PORT_MIN + 1);
    for _ in 0..1_000 {
        let port = rng.range(FIXED_PORT_MIN as u64, hi as u64) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok(l);
        }
    }
    // Fall back to any free port.
    std::net::TcpListener::bind("127.0.0.1:0").context("reserving a loopback port")
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint::new(format!("http://{addr}")).expect("a socket address makes a valid URL")
}

fn dial_map_text(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(f, t)| format!("{f}={t}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every failpoint the processes know: coordinator steps, then participant ones.
pub const FAILPOINTS: &[&str] = &[
    "after_prepares_sent",
    "after_decision_proposed",
    "after_decision_applied",
    "mid_phase_two",
    "participant_after_prepare",
    "participant_before_commit",
];

impl System {
    /// Start everything in `dir` and wait until the cluster has a leader and every participant
    /// is registered.
    pub async fn start(config: SystemConfig, dir: &Path) -> Result<System> {
        let logs = dir.join("logs");
        let data = dir.join("data");
        let failpoint_dir = dir.join("failpoints");
        for d in [&logs, &data, &failpoint_dir] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // Every failpoint starts disarmed: its once-marker exists.
        for fp in FAILPOINTS {
            std::fs::write(failpoint_dir.join(fp), b"disarmed")?;
        }
        let net = Arc::new(Net::new(config.seed));
        let mut port_rng = crate::rng::Rng::new(config.seed ^ u64::from(std::process::id()));
        let mut c_held = (0..config.coordinators)
            .map(|_| reserve_port(&mut port_rng))
            .collect::<Result<Vec<_>>>()?;
        let mut p_held = (0..config.participants)
            .map(|_| reserve_port(&mut port_rng))
            .collect::<Result<Vec<_>>>()?;
        let c_addrs: Vec<SocketAddr> = c_held
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<_>>()?;
        let p_addrs: Vec<SocketAddr> = p_held
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<_>>()?;
        let c_name = |i: usize| format!("c{}", i + 1);
        let p_name = |i: usize| format!("p{}", i + 1);
        let mut coordinator_env = BTreeMap::new();
        let mut participant_env = BTreeMap::new();
        let mut client_dial_map = BTreeMap::new();
        let common_env = |map: &BTreeMap<String, String>| {
            let mut env = vec![
                (ratify_proto::dial::ENV.to_owned(), dial_map_text(map)),
                ("RATIFY_FAILPOINTS".to_owned(), FAILPOINTS.join(",")),
                (
                    "RATIFY_FAILPOINT_ONCE_DIR".to_owned(),
                    failpoint_dir.display().to_string(),
                ),
                ("RATIFY_LOG".to_owned(), "info,openraft=warn".to_owned()),
            ];
            if let Some(bug) = &config.planted_bug {
                env.push((ratify_proto::planted::ENV.to_owned(), bug.clone()));
            }
            env
        };
        for (i, ca) in c_addrs.iter().enumerate() {
            let mut map = BTreeMap::new();
            for (j, cb) in c_addrs.iter().enumerate() {
                if i != j {
                    let proxy = net.add(&c_name(i), &c_name(j), *cb).await?;
                    map.insert(cb.to_string(), proxy.to_string());
                }
            }
            for (j, pa) in p_addrs.iter().enumerate() {
                let proxy = net.add(&c_name(i), &p_name(j), *pa).await?;
                map.insert(pa.to_string(), proxy.to_string());
            }
            let proxy = net.add("client", &c_name(i), *ca).await?;
            client_dial_map.insert(ca.to_string(), proxy.to_string());
            coordinator_env.insert(c_name(i), common_env(&map));
        }
        for (j, _) in p_addrs.iter().enumerate() {
            let mut map = BTreeMap::new();
            for (i, ca) in c_addrs.iter().enumerate() {
                let proxy = net.add(&p_name(j), &c_name(i), *ca).await?;
                map.insert(ca.to_string(), proxy.to_string());
            }
            participant_env.insert(p_name(j), common_env(&map));
        }
        let mut system = System {
            dir: dir.to_owned(),
            net,
            coordinators: Vec::new(),
            participants: Vec::new(),
            client_dial_map,
            coordinator_env,
            next_node_id: config.coordinators as u64 + 1,
            failpoint_dir,
            config,
        };
        for (i, addr) in c_addrs.iter().enumerate() {
            let name = c_name(i);
            let process = system.coordinator_process(&name, i as u64 + 1, *addr);
            system.coordinators.push(Coordinator {
                name,
                node_id: i as u64 + 1,
                addr: *addr,
                process,
                member: true,
                paused: false,
            });
        }
        for c in &mut system.coordinators {
            drop(c_held.remove(0)); // release the port for the process
            c.process
                .start()
                .await
                .map_err(|e| anyhow!("{}: {e}", c.name))?;
        }
        let members: Vec<Member> = system
            .coordinators
            .iter()
            .map(|c| Member {
                node_id: c.node_id,
                endpoint: endpoint(c.addr),
                role: MemberRole::Voter,
            })
            .collect();
        let req: pbco::InitClusterRequest = InitClusterRequest { members }.into();
        AdminClient::new(vec![endpoint(system.coordinators[0].addr)])
            .call_leader(|mut c| {
                let req = req.clone();
                async move { c.init_cluster(req).await }
            })
            .await
            .map_err(|e| anyhow!("init cluster: {e}"))?;
        system.wait_for_leader(Duration::from_secs(30)).await?;
        let coordinator_list = system
            .coordinators
            .iter()
            .map(|c| endpoint(c.addr).to_string())
            .collect::<Vec<_>>()
            .join(",");
        for (j, addr) in p_addrs.iter().enumerate() {
            let name = p_name(j);
            let args: Vec<OsString> = vec![
                "--id".into(),
                name.clone().into(),
                "--data".into(),
                data.join(&name).into(),
                "--coordinator".into(),
                coordinator_list.clone().into(),
                "--resolve-after-ms".into(),
                system.config.resolve_after_ms.to_string().into(),
            ];
            let env = participant_env.remove(&name).unwrap_or_default();
            let mut process = ServiceProcess::new(&name, &system.config.node_bin, args, env, &logs)
                .with_listen(*addr);
            drop(p_held.remove(0));
            process.start().await.map_err(|e| anyhow!("{name}: {e}"))?;
            system.participants.push(Participant {
                name,
                addr: *addr,
                process,
                paused: false,
            });
        }
        system.wait_registered(Duration::from_secs(30)).await?;
        Ok(system)
    }

    fn coordinator_process(&self, slot: &str, node_id: u64, addr: SocketAddr) -> ServiceProcess {
        let args: Vec<OsString> = vec![
            "coordinator".into(),
            "--id".into(),
            node_id.to_string().into(),
            "--data".into(),
            self.dir
                .join("data")
                .join(format!("{slot}-node{node_id}"))
                .into(),
        ];
        let env = self.coordinator_env.get(slot).cloned().unwrap_or_default();
        ServiceProcess::new(
            slot,
            &self.config.ratify_bin,
            args,
            env,
            &self.dir.join("logs"),
        )
        .with_listen(addr)
    }

    /// The planted bug every process runs, if any.
    pub fn planted_bug(&self) -> Option<String> {
        self.config.planted_bug.clone()
    }

    /// Every coordinator's real endpoint.
    pub fn coordinator_endpoints(&self) -> Vec<Endpoint> {
        self.coordinators.iter().map(|c| endpoint(c.addr)).collect()
    }

    /// An admin client straight to the coordinators (no proxies).
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.coordinator_endpoints())
    }

    /// A participant's id.
    pub fn participant_id(name: &str) -> ParticipantId {
        ParticipantId::new(name).expect("slot names are valid participant ids")
    }

    /// A JepsenKv client of a participant, straight (business calls are not proxied).
    pub fn kv(&self, participant: usize) -> JepsenKvClient<Channel> {
        crate::kv::client(&endpoint(self.participants[participant].addr))
    }

    /// One coordinator's view, if it answers within [`STATUS_TIMEOUT`].
    pub async fn status_of(&self, slot: usize) -> Option<ClusterStatus> {
        let c = &self.coordinators[slot];
        if !c.process.is_running() || c.paused {
            return None;
        }
        let e = endpoint(c.addr);
        let call = async {
            let mut client = admin_client::connect(&e).await.ok()?;
            let reply = client
                .cluster_status(pbco::ClusterStatusRequest {})
                .await
                .ok()?;
            ClusterStatus::try_from(reply.into_inner()).ok()
        };
        tokio::time::timeout(STATUS_TIMEOUT, call)
            .await
            .ok()
            .flatten()
    }

    /// The slot of the node that says it leads (the highest term among those that do).
    pub async fn leader(&self) -> Option<usize> {
        let mut best: Option<(u64, usize)> = None;
        for slot in 0..self.coordinators.len() {
            if let Some(s) = self.status_of(slot).await
                && s.leader.as_ref().is_some_and(|l| l.node_id == s.node_id)
                && best.is_none_or(|(t, _)| s.term > t)
            {
                best = Some((s.term, slot));
            }
        }
        best.map(|(_, slot)| slot)
    }

    /// Wait until a majority of running members agree on a running leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(slot) = self.leader().await {
                let leader_id = self.coordinators[slot].node_id;
                let mut agree = 0;
                for s in 0..self.coordinators.len() {
                    if let Some(st) = self.status_of(s).await
                        && st.leader.as_ref().is_some_and(|l| l.node_id == leader_id)
                    {
                        agree += 1;
                    }
                }
                let members = self.coordinators.iter().filter(|c| c.member).count();
                if agree > members / 2 {
                    return Ok(slot);
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_registered(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let admin = self.admin();
        loop {
            let listed = admin
                .call_leader(|mut c| async move {
                    c.list_participants(pbco::ListParticipantsRequest {}).await
                })
                .await;
            if let Ok(list) = listed
                && self
                    .participants
                    .iter()
                    .all(|p| list.participants.iter().any(|r| r.participant_id == p.name))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("participants did not register within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A process by slot name (`c2`, `p1`).
    pub fn process_mut(&mut self, name: &str) -> Option<(&mut ServiceProcess, &mut bool)> {
        if let Some(c) = self.coordinators.iter_mut().find(|c| c.name == name) {
            return Some((&mut c.process, &mut c.paused));
        }
        self.participants
            .iter_mut()
            .find(|p| p.name == name)
            .map(|p| (&mut p.process, &mut p.paused))
    }

    /// SIGKILL a process.
    pub async fn kill(&mut self, name: &str) -> Result<()> {
        let (p, paused) = self
            .process_mut(name)
            .ok_or_else(|| anyhow!("no process {name}"))?;
        p.kill().await?;
        *paused = false;
        Ok(())
    }

    /// Start a stopped, killed or crashed process again (same slot, storage and port).
    pub async fn restart(&mut self, name: &str) -> Result<()> {
        if let Some(c) = self.coordinators.iter().find(|c| c.name == name)
            && !c.member
        {
            return Ok(()); // removed by a membership change: stays down
        }
        let (p, paused) = self
            .process_mut(name)
            .ok_or_else(|| anyhow!("no process {name}"))?;
        p.exited();
        *paused = false;
        p.start().await?;
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT a process.
    pub fn pause(&mut self, name: &str, stop: bool) -> Result<()> {
        let (p, paused) = self
            .process_mut(name)
            .ok_or_else(|| anyhow!("no process {name}"))?;
        p.pause(stop)?;
        *paused = stop;
        Ok(())
    }

    /// Processes that exited on their own (a failpoint crash), reaped.
    pub fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &mut self.coordinators {
            if c.member && c.process.exited() {
                out.push(c.name.clone());
            }
        }
        for p in &mut self.participants {
            if p.process.exited() {
                out.push(p.name.clone());
            }
        }
        out
    }

    /// Heal the network, resume paused processes, restart every member that is down.
    pub async fn heal_all(&mut self) -> Vec<String> {
        self.net.heal();
        let mut notes = Vec::new();
        let names: Vec<String> = self
            .coordinators
            .iter()
            .map(|c| c.name.clone())
            .chain(self.participants.iter().map(|p| p.name.clone()))
            .collect();
        for name in names {
            let Some((p, paused)) = self.process_mut(&name) else {
                continue;
            };
            if *paused {
                let _ = p.pause(false);
                *paused = false;
                notes.push(format!("resumed {name}"));
            }
            p.exited();
            if !p.is_running() {
                match self.restart(&name).await {
                    Ok(()) => notes.push(format!("restarted {name}")),
                    Err(e) => notes.push(format!("restart of {name} failed: {e}")),
                }
            }
        }
        // Re-arm nothing: every failpoint marker back in place.
        for fp in FAILPOINTS {
            let _ = std::fs::write(self.failpoint_dir.join(fp), b"disarmed");
        }
        notes
    }

    /// Membership change: remove the member on `slot` (it is stopped).
    pub async fn remove_member(&mut self, slot: usize) -> Result<u64> {
        let node_id = self.coordinators[slot].node_id;
        self.admin()
            .call_leader(
                |mut c| async move { c.remove_node(pbco::RemoveNodeRequest { node_id }).await },
            )
            .await
            .map_err(|e| anyhow!("remove node {node_id}: {e}"))?;
        self.coordinators[slot].member = false;
        let _ = self.coordinators[slot].process.kill().await;
        self.coordinators[slot].paused = false;
        Ok(node_id)
    }

    /// Membership change: a new node (new id, empty storage) on a freed slot, added as a
    /// learner and promoted to voter.
    pub async fn add_member(&mut self, slot: usize) -> Result<u64> {
        if self.coordinators[slot].member {
            bail!("{} is still a member", self.coordinators[slot].name);
        }
        let node_id = self.next_node_id;
        self.next_node_id += 1;
        let name = self.coordinators[slot].name.clone();
        let addr = self.coordinators[slot].addr;
        let mut process = self.coordinator_process(&name, node_id, addr);
        process.start().await.map_err(|e| anyhow!("{name}: {e}"))?;
        let c = &mut self.coordinators[slot];
        c.process = process;
        c.node_id = node_id;
        c.paused = false;
        let ep = endpoint(addr).to_string();
        let admin = self.admin();
        admin
            .call_leader(|mut c| {
                let ep = ep.clone();
                async move {
                    c.add_learner(pbco::AddLearnerRequest {
                        node_id,
                        endpoint: ep,
                    })
                    .await
                }
            })
            .await
            .map_err(|e| anyhow!("add learner {node_id}: {e}"))?;
        admin
            .call_leader(|mut c| async move { c.promote(pbco::PromoteRequest { node_id }).await })
            .await
            .map_err(|e| anyhow!("promote {node_id}: {e}"))?;
        self.coordinators[slot].member = true;
        Ok(node_id)
    }

    /// Every replicated decision, read from the leader (direct).
    pub async fn decisions(&self) -> Result<BTreeMap<String, ratify_check::Decision>> {
        crate::reads::decisions(&self.admin()).await
    }

    /// Transactions still decided-but-unacknowledged (phase 2 pending) at the leader.
    /// (`txn_id: decision, waiting for [participants]`, one per transaction.)
    pub async fn phase2_pending(&self) -> Result<Vec<String>> {
        crate::reads::phase2_pending(&self.admin()).await
    }

    /// A participant's committed data under `prefix` (decoded) and its in-doubt transactions.
    pub async fn dump(
        &self,
        participant: usize,
        prefix: &str,
    ) -> Result<ratify_check::ParticipantState> {
        crate::reads::dump(
            self.kv(participant),
            &self.participants[participant].name,
            prefix,
        )
        .await
    }

    /// Stop every process (SIGCONT first, then SIGTERM; SIGKILL if it hangs).
    pub async fn stop_all(&mut self) {
        for p in &mut self.participants {
            let _ = p.process.pause(false);
            let _ = p.process.stop().await;
        }
        for c in &mut self.coordinators {
            let _ = c.process.pause(false);
            let _ = c.process.stop().await;
        }
    }
}
