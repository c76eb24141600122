//! A cluster of real `ratify coordinator` processes on loopback, for the quick start
//! (`ratify local`), integration tests and the fault-injection harness. Faults are real:
//! `kill` sends SIGKILL, `stop` sends SIGTERM; a restarted node reopens its own data directory
//! and listens on its old port (its address is part of the replicated membership).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::types::Endpoint;
use ratify_proto::types::admin::{ClusterStatus, InitClusterRequest, Member, MemberRole};
use tokio::process::{Child, Command};

use crate::admin_client::{self, AdminClient, AdminError};

/// How long a starting node has to write its port file.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before SIGKILL.
pub const NODE_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting for the cluster.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why a local cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A process could not be started, signalled or waited for.
    #[error("node {node_id}: {what}: {source}")]
    Process {
        /// Which node.
        node_id: u64,
        /// What was attempted.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A node exited or did not become ready in time; its log is named.
    #[error("node {node_id}: {why} (see {log})")]
    NotReady {
        /// Which node.
        node_id: u64,
        /// What happened.
        why: String,
        /// Its log file.
        log: String,
    },
    /// The cluster did not reach the awaited state in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// An admin call failed.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// No such node.
    #[error("no node {0} in this cluster")]
    NoSuchNode(u64),
}

/// One coordinator process.
pub struct NodeProcess {
    /// Its node id.
    pub node_id: u64,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file (stdout and stderr).
    pub log_path: PathBuf,
    /// Its endpoint, once it has bound a port.
    pub endpoint: Option<Endpoint>,
    child: Option<Child>,
}

impl NodeProcess {
    /// Its OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether its process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A local cluster of coordinator processes.
pub struct LocalCluster {
    bin: PathBuf,
    dir: PathBuf,
    nodes: BTreeMap<u64, NodeProcess>,
    extra_env: Vec<(String, String)>,
}

impl LocalCluster {
    /// Start `count` nodes (ids 1..=count) of the `ratify` binary at `bin`, each in
    /// `dir/node-N`, on free loopback ports, and initialize them as one cluster.
    pub async fn start(bin: &Path, dir: &Path, count: u64) -> Result<Self, LocalError> {
        Self::start_with_env(bin, dir, count, Vec::new()).await
    }

    /// As [`Self::start`], with extra environment variables for every node (e.g. `RUST_LOG`).
    pub async fn start_with_env(
        bin: &Path,
        dir: &Path,
        count: u64,
        extra_env: Vec<(String, String)>,
    ) -> Result<Self, LocalError> {
        let mut cluster = Self {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            nodes: BTreeMap::new(),
            extra_env,
        };
        for node_id in 1..=count {
            let data_dir = dir.join(format!("node-{node_id}"));
            cluster.nodes.insert(
                node_id,
                NodeProcess {
                    node_id,
                    log_path: dir.join(format!("node-{node_id}.log")),
                    data_dir,
                    endpoint: None,
                    child: None,
                },
            );
            cluster.spawn(node_id).await?;
        }
        let members: Vec<Member> = cluster
            .nodes
            .values()
            .map(|n| Member {
                node_id: n.node_id,
                endpoint: n.endpoint.clone().expect("started nodes have endpoints"),
                role: MemberRole::Voter,
            })
            .collect();
        let first = members[0].endpoint.clone();
        let req: pbco::InitClusterRequest = InitClusterRequest { members }.into();
        AdminClient::new(vec![first])
            .call_leader(|mut c| {
                let req = req.clone();
                async move { c.init_cluster(req).await }
            })
            .await?;
        Ok(cluster)
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every node.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeProcess> {
        self.nodes.values()
    }

    /// One node.
    pub fn node(&self, node_id: u64) -> Result<&NodeProcess, LocalError> {
        self.nodes
            .get(&node_id)
            .ok_or(LocalError::NoSuchNode(node_id))
    }

    /// Every node's endpoint.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.nodes
            .values()
            .filter_map(|n| n.endpoint.clone())
            .collect()
    }

    /// An admin client over every node.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.endpoints())
    }

    async fn spawn(&mut self, node_id: u64) -> Result<(), LocalError> {
        let bin = self.bin.clone();
        let extra_env = self.extra_env.clone();
        let node = self
            .nodes
            .get_mut(&node_id)
            .ok_or(LocalError::NoSuchNode(node_id))?;
        let port_file = node.data_dir.with_extension("port");
        let _ = std::fs::remove_file(&port_file);
        // A restarted node listens where it did before: its address is in the membership.
        let listen = match &node.endpoint {
            Some(e) => e.as_str().trim_start_matches("http://").to_owned(),
            None => "127.0.0.1:0".to_owned(),
        };
        let proc_err = |what: &'static str| {
            move |source| LocalError::Process {
                node_id,
                what,
                source,
            }
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .map_err(proc_err("open log file"))?;
        let log2 = log.try_clone().map_err(proc_err("open log file"))?;
        let mut cmd = Command::new(&bin);
        cmd.arg("coordinator")
            .arg("--id")
            .arg(node_id.to_string())
            .arg("--listen")
            .arg(&listen)
            .arg("--data")
            .arg(&node.data_dir)
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(proc_err("spawn"))?;
        node.child = Some(child);

        let deadline = Instant::now() + NODE_START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Some(addr) = text.lines().next().filter(|l| !l.is_empty())
            {
                let endpoint =
                    Endpoint::new(format!("http://{addr}")).map_err(|e| LocalError::NotReady {
                        node_id,
                        why: format!("bad port file: {e}"),
                        log: node.log_path.display().to_string(),
                    })?;
                node.endpoint = Some(endpoint);
                return Ok(());
            }
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                node.child = None;
                return Err(LocalError::NotReady {
                    node_id,
                    why: format!("exited during start-up ({status})"),
                    log: node.log_path.display().to_string(),
                });
            }
            if Instant::now() > deadline {
                return Err(LocalError::NotReady {
                    node_id,
                    why: format!("did not start within {NODE_START_TIMEOUT:?}"),
                    log: node.log_path.display().to_string(),
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILL a node and reap it.
    pub async fn kill(&mut self, node_id: u64) -> Result<(), LocalError> {
        let node = self
            .nodes
            .get_mut(&node_id)
            .ok_or(LocalError::NoSuchNode(node_id))?;
        if let Some(mut child) = node.child.take() {
            child.kill().await.map_err(|source| LocalError::Process {
                node_id,
                what: "SIGKILL",
                source,
            })?;
        }
        Ok(())
    }

    /// SIGTERM a node and wait for it to exit (SIGKILL after [`NODE_STOP_TIMEOUT`]).
    pub async fn stop(&mut self, node_id: u64) -> Result<(), LocalError> {
        let node = self
            .nodes
            .get_mut(&node_id)
            .ok_or(LocalError::NoSuchNode(node_id))?;
        let Some(mut child) = node.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(NODE_STOP_TIMEOUT, child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => child.kill().await.map_err(|source| LocalError::Process {
                node_id,
                what: "SIGKILL after SIGTERM timed out",
                source,
            }),
        }
    }

    /// Start a stopped or killed node again, on its data directory and port.
    pub async fn restart(&mut self, node_id: u64) -> Result<(), LocalError> {
        if self.node(node_id)?.is_running() {
            return Ok(());
        }
        self.spawn(node_id).await
    }

    /// Stop every node (SIGTERM, then SIGKILL if needed).
    pub async fn stop_all(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if let Err(e) = self.stop(id).await {
                tracing::warn!(node_id = id, error = %e, "stopping a node failed");
            }
        }
    }

    /// One node's own view of the cluster.
    pub async fn status_of(&self, node_id: u64) -> Result<ClusterStatus, LocalError> {
        let endpoint = self
            .node(node_id)?
            .endpoint
            .clone()
            .ok_or(LocalError::NoSuchNode(node_id))?;
        let mut client = admin_client::connect(&endpoint)
            .await
            .map_err(|s| admin_error(&endpoint, s))?;
        let reply = client
            .cluster_status(pbco::ClusterStatusRequest {})
            .await
            .map_err(|s| admin_error(&endpoint, s))?;
        ClusterStatus::try_from(reply.into_inner()).map_err(|e| {
            LocalError::Admin(AdminError::Refused {
                endpoint: endpoint.to_string(),
                message: format!("malformed ClusterStatus: {e}"),
                detail: None,
                code: tonic::Code::Internal,
            })
        })
    }

    /// Wait until every running node names the same leader, in the same term, and that leader
    /// is running; `not` excludes a leader (e.g. one just killed, whose term is over).
    pub async fn wait_for_leader(
        &self,
        timeout: Duration,
        not: Option<u64>,
    ) -> Result<ClusterStatus, LocalError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.agreed_leader(not).await {
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(LocalError::Timeout {
                    what: "the running nodes to agree on a leader".into(),
                    after: timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn agreed_leader(&self, not: Option<u64>) -> Option<ClusterStatus> {
        let mut seen: Option<(u64, u64)> = None;
        let mut leader_status = None;
        for node in self.nodes.values().filter(|n| n.is_running()) {
            let status = self.status_of(node.node_id).await.ok()?;
            let leader = status.leader.as_ref()?.node_id;
            if Some(leader) == not || !self.node(leader).ok()?.is_running() {
                return None;
            }
            match seen {
                None => seen = Some((leader, status.term)),
                Some(s) if s == (leader, status.term) => {}
                Some(_) => return None,
            }
            if node.node_id == leader {
                leader_status = Some(status);
            }
        }
        leader_status
    }

    /// Wait until `node_id` has applied at least `index`.
    pub async fn wait_for_applied(
        &self,
        node_id: u64,
        index: u64,
        timeout: Duration,
    ) -> Result<ClusterStatus, LocalError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = self.status_of(node_id).await
                && s.last_applied_index >= index
            {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(LocalError::Timeout {
                    what: format!("node {node_id} to apply index {index}"),
                    after: timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

fn admin_error(endpoint: &Endpoint, s: tonic::Status) -> LocalError {
    LocalError::Admin(AdminError::Refused {
        endpoint: endpoint.to_string(),
        message: s.message().to_owned(),
        detail: ratify_proto::error::ErrorDetail::from_status(&s).map(Box::new),
        code: s.code(),
    })
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Never leave processes behind (tests that fail mid-way included).
        for node in self.nodes.values_mut() {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
    }
}
