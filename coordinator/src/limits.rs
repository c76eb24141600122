//! Every bound in the coordinator, in one place (docs/protocol.md lists them for operators).
//! Names end in the unit or `_MAX`; see TigerBeetle's style notes in shared/STYLE.md.

use std::time::Duration;

/// Largest gRPC message a Raft peer may send (AppendEntries batches, snapshot chunks).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Largest gRPC message on the client and admin APIs.
pub const API_MESSAGE_BYTES_MAX: usize = 4 << 20;
/// Snapshot chunk size sent by InstallSnapshot.
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1 << 20;
/// Log entries per AppendEntries.
pub const APPEND_ENTRIES_ENTRIES_MAX: u64 = 256;
/// Raft heartbeat interval.
pub const RAFT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// Raft election timeout range (randomized within).
pub const RAFT_ELECTION_TIMEOUT_MIN: Duration = Duration::from_millis(500);
/// Upper end of the election timeout range.
pub const RAFT_ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(1000);
/// Build a snapshot after this many applied entries since the last one.
pub const SNAPSHOT_LOGS_SINCE_LAST: u64 = 5_000;
/// Keep this many applied entries in the log behind the last snapshot (for lagging followers).
pub const LOG_ENTRIES_KEPT_AFTER_SNAPSHOT: u64 = 1_000;
/// Connecting to a peer gives up after this long (the next RPC tries again).
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Group commit: callbacks waiting for one WAL fsync, at most.
pub const LOG_SYNC_BATCH_MAX: usize = 4_096;
/// Pending log-sync requests queued to the sync thread, at most (the appender waits beyond).
pub const LOG_SYNC_QUEUE_MAX: usize = 8_192;
/// Transactions listed per ListTxns page, at most; and the default.
pub const LIST_TXNS_LIMIT_MAX: u32 = 1_000;
/// Default ListTxns page size.
pub const LIST_TXNS_LIMIT_DEFAULT: u32 = 100;
/// Members in InitCluster, at most.
pub const CLUSTER_MEMBERS_MAX: usize = 9;
/// How long an admin membership call waits for Raft.
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful shutdown waits for in-flight calls before it stops serving.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Participants in one transaction, at most.
pub const PARTICIPANTS_PER_TXN_MAX: usize = 64;
/// Longest prepare phase, whatever deadline a client asks for (and the default deadline).
pub const PREPARE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long past the deadline a Commit call waits for the decision to apply before answering
/// UNKNOWN (C10).
pub const COMMIT_ANSWER_GRACE: Duration = Duration::from_secs(2);
