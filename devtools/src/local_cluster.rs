//! Real processes on loopback, for the quick start (`ratify local`), integration tests and the
//! fault-injection harness. Faults are real: `kill` sends SIGKILL, `stop` sends SIGTERM,
//! `pause` SIGSTOP; a restarted process reopens its own data directory and listens on its old
//! port (a coordinator's address is part of the replicated membership, a participant's is in
//! the registry).
//!
//! - [`ServiceProcess`]: any Ratify server binary that takes `--listen` and `--port-file`.
//! - [`LocalCluster`]: a coordinator cluster of them, initialized and inspected.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::types::Endpoint;
use ratify_proto::types::admin::{ClusterStatus, InitClusterRequest, Member, MemberRole};
use tokio::process::{Child, Command};

use ratify_coordinator::admin_client::{self, AdminClient, AdminError};

/// How long a starting process has to write its port file.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `stop` waits after SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Poll interval while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Why a local process or cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A process could not be started, signalled or waited for.
    #[error("{name}: {what}: {source}")]
    Process {
        /// Which process.
        name: String,
        /// What was attempted.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A process exited or did not become ready in time; its log is named.
    #[error("{name}: {why} (see {log})")]
    NotReady {
        /// Which process.
        name: String,
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
    Admin(#[from] Box<AdminError>),
    /// No such node.
    #[error("no node {0} in this cluster")]
    NoSuchNode(u64),
}

/// One server process: started with `--listen` and `--port-file` added to its arguments, it
/// writes its bound address to the port file once serving.
pub struct ServiceProcess {
    name: String,
    bin: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    port_file: PathBuf,
    endpoint: Option<Endpoint>,
    child: Option<Child>,
}

impl ServiceProcess {
    /// A process named `name` (for messages), not started: `bin args...`, logging to
    /// `dir/name.log`.
    pub fn new(
        name: &str,
        bin: &Path,
        args: Vec<OsString>,
        env: Vec<(String, String)>,
        dir: &Path,
    ) -> Self {
        Self {
            name: name.to_owned(),
            bin: bin.to_owned(),
            args,
            env,
            log_path: dir.join(format!("{name}.log")),
            port_file: dir.join(format!("{name}.port")),
            endpoint: None,
            child: None,
        }
    }

    /// Listen on `addr` from the first start (instead of a free port chosen then).
    pub fn with_listen(mut self, addr: std::net::SocketAddr) -> Self {
        self.endpoint = Some(
            Endpoint::new(format!("http://{addr}")).expect("a socket address makes a valid URL"),
        );
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file (stdout and stderr, appended across restarts).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Its endpoint, once it has bound a port.
    pub fn endpoint(&self) -> Option<&Endpoint> {
        self.endpoint.as_ref()
    }

    /// A `KEY VALUE` line its port file carries after the address (e.g. `metrics`).
    pub fn port_file_entry(&self, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.port_file).ok()?;
        text.lines()
            .skip(1)
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_owned))
    }

    /// Its OS process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether it is running (started and not killed or stopped by us).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn err(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
        move |source| LocalError::Process {
            name: self.name.clone(),
            what,
            source,
        }
    }

    /// Start it (again): on a free loopback port the first time, on the same port after.
    pub async fn start(&mut self) -> Result<(), LocalError> {
        if self.child.is_some() {
            return Ok(());
        }
        let _ = std::fs::remove_file(&self.port_file);
        let listen = match &self.endpoint {
            Some(e) => e.as_str().trim_start_matches("http://").to_owned(),
            None => "127.0.0.1:0".to_owned(),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(self.err("open log file"))?;
        let log2 = log.try_clone().map_err(self.err("open log file"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .arg("--listen")
            .arg(&listen)
            .arg("--port-file")
            .arg(&self.port_file)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(self.err("spawn"))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.port_file)
                && let Some(addr) = text.lines().next().filter(|l| !l.is_empty())
            {
                let endpoint = Endpoint::new(format!("http://{addr}"))
                    .map_err(|e| self.not_ready(format!("bad port file: {e}")))?;
                self.endpoint = Some(endpoint);
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(self.not_ready(format!("exited during start-up ({status})")));
            }
            if Instant::now() > deadline {
                return Err(self.not_ready(format!("did not start within {START_TIMEOUT:?}")));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn not_ready(&self, why: String) -> LocalError {
        LocalError::NotReady {
            name: self.name.clone(),
            why,
            log: self.log_path.display().to_string(),
        }
    }

    /// SIGKILL it and reap it.
    pub async fn kill(&mut self) -> Result<(), LocalError> {
        if let Some(mut child) = self.child.take() {
            child.kill().await.map_err(self.err("SIGKILL"))?;
        }
        Ok(())
    }

    /// Whether it exited by itself (a crash, a failpoint); reaps it if so.
    pub fn exited(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
        if exited {
            self.child = None;
        }
        exited
    }

    /// SIGTERM it and wait for it to exit (SIGKILL after [`STOP_TIMEOUT`]).
    pub async fn stop(&mut self) -> Result<(), LocalError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(_) => Ok(()),
            Err(_) => child
                .kill()
                .await
                .map_err(self.err("SIGKILL after SIGTERM timed out")),
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) it.
    pub fn pause(&self, paused: bool) -> Result<(), LocalError> {
        if let Some(pid) = self.pid() {
            let signal = if paused {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            kill(Pid::from_raw(pid as i32), signal)
                .map_err(|e| self.err("SIGSTOP/SIGCONT")(std::io::Error::from(e)))?;
        }
        Ok(())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // Never leave processes behind (tests that fail mid-way included).
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
    }
}

/// A coordinator cluster of `ratify coordinator` processes.
pub struct LocalCluster {
    dir: PathBuf,
    nodes: BTreeMap<u64, ServiceProcess>,
}

impl LocalCluster {
    /// Start `count` nodes (ids 1..=count) of the `ratify` binary at `bin`, each in
    /// `dir/node-N`, on free loopback ports, and initialize them as one cluster.
    pub async fn start(bin: &Path, dir: &Path, count: u64) -> Result<Self, LocalError> {
        Self::start_with(bin, dir, count, Vec::new(), Vec::new()).await
    }

    /// As [`Self::start`], with extra arguments and environment for every node.
    pub async fn start_with(
        bin: &Path,
        dir: &Path,
        count: u64,
        extra_args: Vec<OsString>,
        env: Vec<(String, String)>,
    ) -> Result<Self, LocalError> {
        let mut nodes = BTreeMap::new();
        for node_id in 1..=count {
            let mut args: Vec<OsString> = vec![
                "coordinator".into(),
                "--id".into(),
                node_id.to_string().into(),
                "--data".into(),
                dir.join(format!("node-{node_id}")).into(),
            ];
            args.extend(extra_args.iter().cloned());
            let mut node =
                ServiceProcess::new(&format!("node-{node_id}"), bin, args, env.clone(), dir);
            node.start().await?;
            nodes.insert(node_id, node);
        }
        let cluster = Self {
            dir: dir.to_owned(),
            nodes,
        };
        let members: Vec<Member> = cluster
            .nodes
            .iter()
            .map(|(id, n)| Member {
                node_id: *id,
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
            .await
            .map_err(Box::new)?;
        Ok(cluster)
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every node id and process.
    pub fn nodes(&self) -> impl Iterator<Item = (u64, &ServiceProcess)> {
        self.nodes.iter().map(|(id, n)| (*id, n))
    }

    /// One node.
    pub fn node(&self, node_id: u64) -> Result<&ServiceProcess, LocalError> {
        self.nodes
            .get(&node_id)
            .ok_or(LocalError::NoSuchNode(node_id))
    }

    fn node_mut(&mut self, node_id: u64) -> Result<&mut ServiceProcess, LocalError> {
        self.nodes
            .get_mut(&node_id)
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

    /// SIGKILL a node.
    pub async fn kill(&mut self, node_id: u64) -> Result<(), LocalError> {
        self.node_mut(node_id)?.kill().await
    }

    /// SIGTERM a node and wait for it.
    pub async fn stop(&mut self, node_id: u64) -> Result<(), LocalError> {
        self.node_mut(node_id)?.stop().await
    }

    /// Start a stopped, killed or crashed node again, on its data directory and port.
    pub async fn restart(&mut self, node_id: u64) -> Result<(), LocalError> {
        let node = self.node_mut(node_id)?;
        node.exited();
        node.start().await
    }

    /// Nodes that exited by themselves (crashed), reaped.
    pub fn crashed(&mut self) -> Vec<u64> {
        self.nodes
            .iter_mut()
            .filter_map(|(id, n)| n.exited().then_some(*id))
            .collect()
    }

    /// Stop every node (SIGTERM, then SIGKILL if needed).
    pub async fn stop_all(&mut self) {
        for (id, node) in &mut self.nodes {
            if let Err(e) = node.stop().await {
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
            admin_error(
                &endpoint,
                tonic::Status::internal(format!("malformed ClusterStatus: {e}")),
            )
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
        for (id, node) in self.nodes.iter().filter(|(_, n)| n.is_running()) {
            let status = self.status_of(*id).await.ok()?;
            let leader = status.leader.as_ref()?.node_id;
            if Some(leader) == not || !self.node(leader).ok()?.is_running() {
                return None;
            }
            match seen {
                None => seen = Some((leader, status.term)),
                Some(s) if s == (leader, status.term) => {}
                Some(_) => return None,
            }
            if *id == leader {
                leader_status = Some(status);
            }
            let _ = node;
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

fn admin_error(endpoint: &Endpoint, status: tonic::Status) -> LocalError {
    LocalError::Admin(Box::new(AdminError::Refused {
        endpoint: endpoint.to_string(),
        status,
    }))
}
