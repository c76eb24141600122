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

// The 2PC driver and its runtime (txn/): DriverConfig and RuntimeConfig take their defaults
// from here.

/// Transactions being decided (two-phase and one-phase) at once on the leader, at most;
/// beyond, requests are refused as overloaded.
pub const DECIDING_MAX: usize = 100_000;
/// Registrations being proposed at once, at most.
pub const REGISTERING_MAX: usize = 1_024;
/// Transactions per Prepare / phase-2 RPC to one participant, at most (a participant's
/// `batch_txns_max`).
pub const PARTICIPANT_BATCH_TXNS_MAX: usize = 1_024;
/// First phase-2 retry pause; doubles up to [`PHASE2_BACKOFF_MAX`].
pub const PHASE2_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest phase-2 retry pause.
pub const PHASE2_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest phase-2 RPC.
pub const PHASE2_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause before a one-phase commit is sent again; doubles up to
/// [`ONE_PHASE_BACKOFF_MAX`].
pub const ONE_PHASE_BACKOFF_MIN: Duration = Duration::from_millis(20);
/// Longest pause between one-phase attempts.
pub const ONE_PHASE_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// Acknowledgements per Forget proposal, at most.
pub const FORGET_BATCH_MAX: usize = 4_096;
/// Acknowledgements wait up to this long to be proposed together.
pub const FORGET_DELAY: Duration = Duration::from_millis(10);
/// Completed outcomes are kept this long (C8, C11), then compacted.
pub const OUTCOME_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often the leader proposes a compaction.
pub const COMPACT_INTERVAL: Duration = Duration::from_secs(60);
/// How often the driver gets a tick (deadlines, retries).
pub const DRIVER_TICK: Duration = Duration::from_millis(20);
/// Events queued for the driver, at most (callers wait beyond).
pub const DRIVER_EVENTS_QUEUE_MAX: usize = 65_536;
/// Events the driver takes in one round before acting, at most.
pub const DRIVER_EVENTS_PER_ROUND_MAX: usize = 4_096;
/// Apply batches queued for the driver (the apply feed), at most: apply waits beyond, so the
/// driver never misses a decision.
pub const APPLY_FEED_QUEUE_MAX: usize = 1_024;
/// Decisions in one Raft entry, at most.
pub const DECIDE_BATCH_MAX: usize = 1_024;
/// Raft proposals in flight at once, at most.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 8;
/// Proposal jobs queued for the proposer, at most (the runtime keeps the rest in its backlog).
pub const PROPOSAL_JOBS_QUEUE_MAX: usize = 4 * PROPOSALS_IN_FLIGHT_MAX;
/// Pause between attempts of a new leader's catch-up (read index) while it still leads.
pub const LEADER_READY_RETRY: Duration = Duration::from_millis(100);
