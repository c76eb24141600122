//! Domain types: what the rest of Ratify works with. They are valid by construction (a `TxnId`
//! is always a canonical UUID, a `ParticipantId` always a well-formed name), so code past the
//! conversion boundary never re-checks them. Wire forms live in [`crate::pb`]; the conversions
//! between the two live in [`crate::convert`] and nowhere else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest participant id, in bytes (docs/protocol.md rule W2).
pub const PARTICIPANT_ID_LEN_MAX: usize = 64;
/// Longest endpoint, in bytes.
pub const ENDPOINT_LEN_MAX: usize = 256;
/// Longest human-readable message carried in a vote, abort or error; longer ones are truncated
/// at a character boundary when they cross the conversion boundary.
pub const MESSAGE_LEN_MAX: usize = 1024;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a canonical, lower-case, hyphenated UUID.
    #[error(
        "malformed transaction id {value:?}: expected a canonical lower-case UUID like 01890a5d-ac96-774b-bcce-b302099a8057"
    )]
    MalformedTxnId {
        /// The text that was given (truncated to 80 bytes).
        value: String,
    },
    /// Not a valid participant name.
    #[error("malformed participant id {value:?}: {why}")]
    MalformedParticipantId {
        /// The text that was given (truncated to 80 bytes).
        value: String,
        /// What rule it breaks.
        why: &'static str,
    },
    /// Not a valid endpoint URL.
    #[error("malformed endpoint {value:?}: {why}")]
    MalformedEndpoint {
        /// The text that was given (truncated to 80 bytes).
        value: String,
        /// What rule it breaks.
        why: &'static str,
    },
}

/// Cut `s` to at most `len_max` bytes without splitting a character.
pub fn truncate_utf8(s: &str, len_max: usize) -> &str {
    if s.len() <= len_max {
        return s;
    }
    let mut end = len_max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn shown(value: &str) -> String {
    truncate_utf8(value, 80).to_owned()
}

/// A transaction id: a UUID chosen by the initiator (version 7, so ids sort by creation time and
/// carry their age, which the lock policies use). Never reused. Its text form is canonical: 36 characters
/// of lower-case hex and hyphens.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TxnId(Uuid);

impl TxnId {
    /// A new, time-ordered id (UUIDv7). Costs no round trip. Under simulation
    /// ([`crate::hooks`]) the id comes from the run's seeded source instead.
    pub fn new_v7() -> Self {
        if let Some(id) = crate::hooks::sim_txn_id() {
            return id;
        }
        Self(Uuid::now_v7())
    }

    /// Wrap an existing UUID. The nil UUID is refused: it is what a zeroed buffer decodes to.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, IdError> {
        if uuid.is_nil() {
            return Err(IdError::MalformedTxnId {
                value: uuid.to_string(),
            });
        }
        Ok(Self(uuid))
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The 16 bytes, big-endian: the form used as a storage key (sorts by creation time).
    pub fn to_bytes(&self) -> [u8; 16] {
        *self.0.as_bytes()
    }

    /// From the 16-byte storage form.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, IdError> {
        Self::from_uuid(Uuid::from_bytes(bytes))
    }

    /// Creation time in ms since the Unix epoch, for a UUIDv7; `None` for other versions.
    pub fn created_unix_ms(&self) -> Option<u64> {
        if self.0.get_version_num() != 7 {
            return None;
        }
        let (secs, nanos) = self.0.get_timestamp()?.to_unix();
        Some(secs * 1000 + u64::from(nanos) / 1_000_000)
    }
}

impl FromStr for TxnId {
    type Err = IdError;

    /// Strict: only the canonical form is accepted, so one transaction has exactly one text id
    /// (two spellings of one id could otherwise pass a string comparison as two transactions).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || IdError::MalformedTxnId { value: shown(s) };
        if s.len() != 36 {
            return Err(err());
        }
        let uuid = Uuid::try_parse(s).map_err(|_| err())?;
        // Uuid accepts upper case; the canonical form is lower case.
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(err());
        }
        Self::from_uuid(uuid).map_err(|_| err())
    }
}

impl TryFrom<String> for TxnId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<TxnId> for String {
    fn from(id: TxnId) -> Self {
        id.to_string()
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TxnId({})", self.0.hyphenated())
    }
}

/// A participant's stable, human-readable name ("payments", "inventory-3"): 1 to 64 bytes of
/// `[a-z0-9._-]`, starting with a letter or digit.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ParticipantId(String);

impl ParticipantId {
    /// Validate and wrap a name.
    pub fn new(name: impl Into<String>) -> Result<Self, IdError> {
        let name = name.into();
        let why = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > PARTICIPANT_ID_LEN_MAX {
            Some("longer than 64 bytes")
        } else if !name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        }) {
            Some("only a-z, 0-9, '.', '_' and '-' are allowed")
        } else if !name.as_bytes()[0].is_ascii_alphanumeric() {
            Some("must start with a letter or digit")
        } else {
            None
        };
        match why {
            Some(why) => Err(IdError::MalformedParticipantId {
                value: shown(&name),
                why,
            }),
            None => Ok(Self(name)),
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ParticipantId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for ParticipantId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<ParticipantId> for String {
    fn from(id: ParticipantId) -> Self {
        id.0
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({})", self.0)
    }
}

/// Where a gRPC service listens: `http://host:port` or `https://host:port`, at most 256 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Endpoint(String);

impl Endpoint {
    /// Validate and wrap an endpoint URL.
    pub fn new(url: impl Into<String>) -> Result<Self, IdError> {
        let url = url.into();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        let why = match rest {
            _ if url.len() > ENDPOINT_LEN_MAX => Some("longer than 256 bytes"),
            None => Some("must start with http:// or https://"),
            Some("") => Some("has no host"),
            Some(rest) if rest.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Some("must not contain white space")
            }
            Some(_) => None,
        };
        match why {
            Some(why) => Err(IdError::MalformedEndpoint {
                value: shown(&url),
                why,
            }),
            None => Ok(Self(url)),
        }
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Endpoint {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<Endpoint> for String {
    fn from(e: Endpoint) -> Self {
        e.0
    }
}

impl FromStr for Endpoint {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({})", self.0)
    }
}

/// Why a participant voted NO or refused work for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NoReason {
    /// A lock or version conflict with another transaction.
    Conflict,
    /// No staged work for the transaction here.
    UnknownTxn,
    /// The service's own validation refused it.
    ValidationFailed,
    /// Already aborted here (tombstone).
    AlreadyAborted,
    /// Staged work outlived the staged timeout and was aborted locally.
    StagedTimeout,
    /// A participant limit was exceeded.
    LimitExceeded,
    /// The participant's store failed; nothing was prepared.
    StorageError,
    /// A business call of the transaction failed at the participant, was still running at
    /// Prepare, or the initiator's call count did not match (docs/protocol.md P10).
    CallFailed,
}

/// A participant's answer to Prepare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vote {
    /// Effects durable but invisible; the participant waits for the decision.
    Yes,
    /// Cannot commit.
    No {
        /// Why.
        reason: NoReason,
        /// Detail for people (at most [`MESSAGE_LEN_MAX`] bytes).
        message: String,
    },
    /// Nothing to write; locks released; no part in phase 2.
    ReadOnly,
}

/// The coordinator's decision. Replicated, first-wins, final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Decision {
    /// Every participant applies the transaction.
    Commit,
    /// No participant applies any of it.
    Abort,
}

/// Why a transaction was aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AbortCause {
    /// A participant voted NO.
    VotedNo,
    /// A participant did not answer Prepare in time.
    PrepareTimeout,
    /// An in-doubt participant's Resolve found no decision.
    ResolvedByParticipant,
    /// The initiator aborted.
    ClientAbort,
    /// An operator forced it.
    Operator,
    /// The deadline passed before a decision.
    DeadlineExpired,
    /// A named participant is not registered.
    UnreachableParticipant,
}

/// The details of an abort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortInfo {
    /// Why.
    pub cause: AbortCause,
    /// The participant concerned, if any.
    pub participant: Option<ParticipantId>,
    /// The participant's reason, for [`AbortCause::VotedNo`].
    pub no_reason: Option<NoReason>,
    /// Detail for people (at most [`MESSAGE_LEN_MAX`] bytes).
    pub message: String,
}

impl AbortInfo {
    /// An abort with only a cause and a message.
    pub fn new(cause: AbortCause, message: impl Into<String>) -> Self {
        Self {
            cause,
            participant: None,
            no_reason: None,
            message: message.into(),
        }
    }
}

/// A decision as it is recorded: COMMIT, or ABORT with its details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalDecision {
    /// Decided COMMIT.
    Commit,
    /// Decided ABORT.
    Abort(AbortInfo),
}

impl FinalDecision {
    /// The bare decision.
    pub fn decision(&self) -> Decision {
        match self {
            FinalDecision::Commit => Decision::Commit,
            FinalDecision::Abort(_) => Decision::Abort,
        }
    }

    /// What a client is told about it.
    pub fn outcome(&self) -> Outcome {
        match self {
            FinalDecision::Commit => Outcome::Committed,
            FinalDecision::Abort(info) => Outcome::Aborted(info.clone()),
        }
    }
}

/// What a client is told about a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Decided COMMIT.
    Committed,
    /// Decided ABORT, or can never commit.
    Aborted(AbortInfo),
    /// Not known to the one answering. Never a guess: ask again.
    Unknown,
}

/// Where a transaction is at the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TxnPhase {
    /// No decision recorded (never seen, still preparing, or compacted).
    Undecided,
    /// Decided; phase 2 not yet acknowledged by everyone.
    Decided,
    /// Decided and acknowledged; retained until compacted.
    Completed,
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DecisionSource {
    /// The 2PC driver after the votes.
    Commit,
    /// A participant's Resolve.
    Resolve,
    /// The initiator's Abort.
    ClientAbort,
    /// An operator's ForceResolve.
    Operator,
}

/// A coordinator node id: non-zero.
pub type NodeId = u64;

/// Messages of the coordinator's client API (`ratify.coordinator.v1.Coordinator`).
pub mod coordinator {
    use super::*;

    /// Decide a transaction by 2PC.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CommitRequest {
        /// The transaction.
        pub txn_id: TxnId,
        /// Its participants: distinct, possibly empty.
        pub participants: Vec<ParticipantId>,
        /// Deadline; `None` for the coordinator's default.
        pub deadline_unix_ms: Option<u64>,
        /// Empty (not reported), or one per participant, in the same order: how many business
        /// calls the initiator made to it (docs/protocol.md P10).
        pub call_counts: Vec<u32>,
    }

    /// The applied outcome, or Unknown.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct CommitResponse {
        /// What happened.
        pub outcome: Outcome,
    }

    /// Abort a transaction (first-wins).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AbortRequest {
        /// The transaction.
        pub txn_id: TxnId,
        /// Its participants: distinct, possibly empty.
        pub participants: Vec<ParticipantId>,
        /// Why, for the record.
        pub message: String,
    }

    /// The applied outcome (Committed if a commit won first).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AbortResponse {
        /// What happened.
        pub outcome: Outcome,
    }

    /// Ask for a transaction's outcome.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StatusRequest {
        /// The transaction.
        pub txn_id: TxnId,
    }

    /// A transaction's outcome and phase.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StatusResponse {
        /// The outcome (Unknown when undecided).
        pub outcome: Outcome,
        /// Where it is.
        pub phase: TxnPhase,
        /// Participants still to acknowledge phase 2.
        pub pending_participants: Vec<ParticipantId>,
        /// When it was decided (from the Raft entry).
        pub decided_at_unix_ms: Option<u64>,
    }

    /// An in-doubt participant asks for the decision.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ResolveRequest {
        /// The transaction.
        pub txn_id: TxnId,
        /// Who asks.
        pub participant: ParticipantId,
    }

    /// The final decision.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ResolveResponse {
        /// COMMIT, or ABORT with details.
        pub decision: FinalDecision,
    }

    /// Add or update a participant in the registry.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RegisterParticipantRequest {
        /// Its name.
        pub participant: ParticipantId,
        /// Where it listens.
        pub endpoint: Endpoint,
    }
}

/// Messages of the participant API (`ratify.participant.v1.Participant`).
pub mod participant {
    use std::collections::BTreeMap;

    use super::*;

    /// A batch of transactions for a phase-2 message (Commit, Abort); Prepare and
    /// CommitOnePhase use [`PrepareBatch`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TxnBatch {
        /// The sending coordinator node.
        pub coordinator_node_id: NodeId,
        /// The transactions, in order.
        pub txn_ids: Vec<TxnId>,
    }

    /// A batch of transactions for Prepare or CommitOnePhase: the transactions, and the
    /// initiators' call counts for this participant where reported (docs/protocol.md P10).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PrepareBatch {
        /// The sending coordinator node.
        pub coordinator_node_id: NodeId,
        /// The transactions, in order.
        pub txn_ids: Vec<TxnId>,
        /// Transaction → calls its initiator made to this participant; only transactions of
        /// `txn_ids` whose initiator reported them.
        pub call_counts: BTreeMap<TxnId, u32>,
    }

    /// One transaction's vote.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PrepareResult {
        /// The transaction.
        pub txn_id: TxnId,
        /// The vote.
        pub vote: Vote,
    }

    /// How a phase-2 message was handled.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum AckStatus {
        /// Applied now, durably.
        Applied,
        /// Applied before; nothing changed.
        AlreadyApplied,
        /// Commit of a transaction never prepared here.
        NotPrepared,
        /// The decision conflicts with this participant's record.
        ConflictingOutcome,
        /// The store failed; retry.
        Retry,
    }

    impl AckStatus {
        /// True when the sender may stop resending: the message took effect (now or before).
        pub fn is_ack(self) -> bool {
            matches!(self, AckStatus::Applied | AckStatus::AlreadyApplied)
        }
    }

    /// One transaction's phase-2 result.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AckResult {
        /// The transaction.
        pub txn_id: TxnId,
        /// What happened.
        pub status: AckStatus,
        /// Detail for people.
        pub message: String,
    }

    /// One transaction's one-phase-commit result.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum OnePhaseOutcome {
        /// Committed durably.
        Committed,
        /// Aborted.
        Aborted {
            /// Why.
            reason: NoReason,
            /// Detail for people.
            message: String,
        },
        /// The store failed and nothing is known durable; retry.
        Unknown {
            /// Detail for people.
            message: String,
        },
    }

    /// One transaction's one-phase-commit result.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct OnePhaseResult {
        /// The transaction.
        pub txn_id: TxnId,
        /// What happened.
        pub outcome: OnePhaseOutcome,
    }
}

/// Messages of the admin API (`ratify.coordinator.v1.Admin`).
pub mod admin {
    use super::*;

    /// List transactions.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ListTxnsRequest {
        /// Only this phase; `None` for decided and completed.
        pub phase: Option<TxnPhase>,
        /// Page size (0 = the server's default).
        pub limit: u32,
        /// Where to continue; empty for the first page.
        pub page_token: String,
        /// Answer from the receiving node's applied state (may lag) instead of a linearizable
        /// read at the leader.
        pub local: bool,
    }

    /// One listed transaction.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TxnSummary {
        /// The transaction.
        pub txn_id: TxnId,
        /// Where it is.
        pub phase: TxnPhase,
        /// Its decision.
        pub decision: FinalDecision,
        /// Its phase-2 participants.
        pub participants: Vec<ParticipantId>,
        /// Those yet to acknowledge.
        pub pending_participants: Vec<ParticipantId>,
        /// When it was decided.
        pub decided_at_unix_ms: u64,
    }

    /// A page of transactions.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ListTxnsResponse {
        /// The transactions.
        pub txns: Vec<TxnSummary>,
        /// Empty on the last page.
        pub next_page_token: String,
    }

    /// Force a decision.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ForceResolveRequest {
        /// The transaction.
        pub txn_id: TxnId,
        /// The decision wanted.
        pub decision: Decision,
        /// Participants to tell if none are recorded.
        pub participants: Vec<ParticipantId>,
        /// Why.
        pub reason: String,
    }

    /// The applied decision.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ForceResolveResponse {
        /// What stands.
        pub decision: Decision,
        /// Whether this call recorded it.
        pub changed: bool,
    }

    /// A member's role.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum MemberRole {
        /// Votes.
        Voter,
        /// Receives the log, does not vote.
        Learner,
    }

    /// A cluster member.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Member {
        /// Non-zero node id.
        pub node_id: NodeId,
        /// Its gRPC endpoint.
        pub endpoint: Endpoint,
        /// Its role.
        pub role: MemberRole,
    }

    /// The known leader.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LeaderHint {
        /// Its node id.
        pub node_id: NodeId,
        /// Its endpoint, if known.
        pub endpoint: Option<Endpoint>,
    }

    /// A node's view of the cluster.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ClusterStatus {
        /// The node answering.
        pub node_id: NodeId,
        /// The leader, if known.
        pub leader: Option<LeaderHint>,
        /// Current term.
        pub term: u64,
        /// Members, voters and learners.
        pub members: Vec<Member>,
        /// Last log index here.
        pub last_log_index: u64,
        /// Last index known committed.
        pub committed_index: u64,
        /// Last index applied here.
        pub last_applied_index: u64,
        /// Last index in this node's snapshot.
        pub snapshot_index: u64,
        /// Last index purged from this node's log.
        pub purged_index: u64,
    }

    /// Initialize a cluster.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct InitClusterRequest {
        /// The first voters.
        pub members: Vec<Member>,
    }

    /// Add a learner.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct AddLearnerRequest {
        /// Its node id.
        pub node_id: NodeId,
        /// Its endpoint.
        pub endpoint: Endpoint,
    }

    /// A registered participant.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ParticipantInfo {
        /// Its name.
        pub participant: ParticipantId,
        /// Where it listens.
        pub endpoint: Endpoint,
        /// When it registered (from the Raft entry).
        pub registered_at_unix_ms: u64,
    }
}

/// The replicated state machine's commands: the payload of a normal Raft log entry.
pub mod command {
    use super::*;

    /// One decision to record.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct DecideItem {
        /// The transaction.
        pub txn_id: TxnId,
        /// The decision.
        pub decision: FinalDecision,
        /// Where it came from.
        pub source: DecisionSource,
        /// Who must acknowledge phase 2.
        pub participants: Vec<ParticipantId>,
    }

    /// Phase-2 acknowledgements for one transaction.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct PhaseTwoAck {
        /// The transaction.
        pub txn_id: TxnId,
        /// Who acknowledged.
        pub participants: Vec<ParticipantId>,
    }

    /// What a command does.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum CommandKind {
        /// Record decisions, first-wins.
        Decide(Vec<DecideItem>),
        /// Record phase-2 acks; fully acked transactions move to the outcome table.
        Forget(Vec<PhaseTwoAck>),
        /// Drop retained outcomes decided before this time.
        Compact {
            /// The cut-off.
            before_unix_ms: u64,
        },
        /// Add or update a participant.
        RegisterParticipant {
            /// Its name.
            participant: ParticipantId,
            /// Where it listens.
            endpoint: Endpoint,
        },
    }

    /// A replicated command.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Command {
        /// The proposing leader's clock; apply uses this, never its own.
        pub proposed_at_unix_ms: u64,
        /// What to do.
        pub kind: CommandKind,
    }
}
