//! Raft: openraft 0.9 (storage v2) over one RocksDB database per node.
//!
//! - [`store`]: the database, its column families and their key layout.
//! - [`log_store`]: the Raft log and vote, with group-committed, synced appends.
//! - [`state_machine`]: applies committed entries to [`crate::state::State`], persists it,
//!   builds and installs snapshots.
//! - [`runtime`]: tokio for openraft, with a generator the simulation can seed.
//! - [`network`]: the tonic client side of the Raft transport (`ratify.raft.v1.Raft`).

pub mod log_store;
pub mod network;
pub mod runtime;
pub mod state_machine;
pub mod store;

use std::io::Cursor;

use ratify_proto::types::command::Command;

use crate::limits;
use crate::state::CommandReply;

openraft::declare_raft_types!(
    /// Ratify's openraft type configuration: u64 node ids, `BasicNode { addr }` with the node's
    /// gRPC endpoint, replicated [`Command`]s answered by [`CommandReply`].
    pub TypeConfig:
        D = Command,
        R = CommandReply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::RatifyRuntime,
);

/// A running Raft node.
pub type Raft = openraft::Raft<TypeConfig>;

/// openraft's configuration from Ratify's limits: build a snapshot every `snapshot_every`
/// applied entries, keep `log_keep` entries behind it for lagging followers.
#[allow(clippy::result_large_err)] // openraft's own error type
pub fn raft_config(
    cluster_name: &str,
    snapshot_every: u64,
    log_keep: u64,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: cluster_name.to_owned(),
        heartbeat_interval: limits::RAFT_HEARTBEAT_INTERVAL.as_millis() as u64,
        election_timeout_min: limits::RAFT_ELECTION_TIMEOUT_MIN.as_millis() as u64,
        election_timeout_max: limits::RAFT_ELECTION_TIMEOUT_MAX.as_millis() as u64,
        max_payload_entries: limits::APPEND_ENTRIES_ENTRIES_MAX,
        snapshot_max_chunk_size: limits::SNAPSHOT_CHUNK_BYTES,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: log_keep,
        ..Default::default()
    }
    .validate()
}
