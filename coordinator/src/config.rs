//! A coordinator node's configuration, checked once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use ratify_proto::types::{Endpoint, NodeId};

use crate::limits;

/// Why a configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of range or inconsistent with another.
    #[error("{field}: {why}")]
    Invalid {
        /// The flag or setting.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

fn invalid(field: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        why: why.into(),
    }
}

/// One peer of the initial membership: `ID=ENDPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its node id (non-zero).
    pub node_id: NodeId,
    /// Its gRPC endpoint.
    pub endpoint: Endpoint,
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// `2=http://127.0.0.1:7002`
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, endpoint) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected ID=ENDPOINT, e.g. 2=http://127.0.0.1:7002"))?;
        let node_id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: node id {id:?} is not a number"))?;
        if node_id == 0 {
            return Err(format!("{s:?}: node id 0 is reserved"));
        }
        let endpoint = Endpoint::new(endpoint.trim()).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Self { node_id, endpoint })
    }
}

/// A node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id: non-zero, unique in the cluster, never reused.
    pub node_id: NodeId,
    /// Where to listen for gRPC (every service on one port).
    pub listen: SocketAddr,
    /// The endpoint peers and clients use to reach this node; defaults to `http://{listen}`.
    pub advertise: Option<Endpoint>,
    /// The node's RocksDB directory.
    pub data_dir: PathBuf,
    /// The initial membership, for `init`.
    pub peers: Vec<Peer>,
    /// Initialize the cluster with `peers` if this node's storage is empty.
    pub init: bool,
    /// A name for the cluster (in logs and openraft's config).
    pub cluster_name: String,
    /// Build a snapshot every this many applied entries.
    pub snapshot_every: u64,
    /// Keep this many entries in the log behind a snapshot (then purge).
    pub log_keep: u64,
    /// Serve Prometheus metrics here (`GET /metrics`), if set.
    pub metrics_listen: Option<SocketAddr>,
}

impl NodeConfig {
    /// Check the settings; the error names the flag.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("--id", "node id 0 is reserved; use 1, 2, 3, ..."));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("--data", "a data directory is required"));
        }
        if self.init && self.peers.is_empty() {
            return Err(invalid(
                "--init",
                "needs --peers: the initial members, this node included",
            ));
        }
        if self.peers.len() > limits::CLUSTER_MEMBERS_MAX {
            return Err(invalid(
                "--peers",
                format!("at most {} members", limits::CLUSTER_MEMBERS_MAX),
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.peers {
            if !ids.insert(p.node_id) {
                return Err(invalid(
                    "--peers",
                    format!("node {} is listed twice", p.node_id),
                ));
            }
        }
        if !self.peers.is_empty() && !ids.contains(&self.node_id) {
            return Err(invalid(
                "--peers",
                format!("must include this node ({})", self.node_id),
            ));
        }
        if self.snapshot_every == 0 {
            return Err(invalid("--snapshot-every", "must be at least 1"));
        }
        if self.cluster_name.is_empty() {
            return Err(invalid("--cluster-name", "must not be empty"));
        }
        Ok(())
    }

    /// The endpoint others reach this node at.
    pub fn advertised(&self, bound: SocketAddr) -> Endpoint {
        self.advertise.clone().unwrap_or_else(|| {
            Endpoint::new(format!("http://{bound}")).expect("a socket address makes a valid URL")
        })
    }
}
