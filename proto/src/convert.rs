//! The one place that converts between wire messages ([`crate::pb`]) and domain types
//! ([`crate::types`]). Domain → wire is infallible (`From`); wire → domain checks everything a
//! peer could get wrong (`TryFrom`, with the path of the offending field), so a server converts
//! a request first and works only with valid values after.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{ConvertError, ErrorCode, ErrorDetail};
use crate::pb::{common as pbc, coordinator as pbco, participant as pbp, raft as pbr};
use crate::types::admin::{
    AddLearnerRequest, ClusterStatus, ForceResolveRequest, ForceResolveResponse,
    InitClusterRequest, LeaderHint, ListTxnsRequest, ListTxnsResponse, Member, MemberRole,
    ParticipantInfo, TxnSummary,
};
use crate::types::command::{Command, CommandKind, DecideItem, PhaseTwoAck};
use crate::types::coordinator::{
    AbortRequest, AbortResponse, CommitRequest, CommitResponse, RegisterParticipantRequest,
    ResolveRequest, ResolveResponse, StatusRequest, StatusResponse,
};
use crate::types::participant::{
    AckResult, AckStatus, OnePhaseOutcome, OnePhaseResult, PrepareBatch, PrepareResult, TxnBatch,
};
use crate::types::{
    AbortCause, AbortInfo, Decision, DecisionSource, Endpoint, FinalDecision, MESSAGE_LEN_MAX,
    NoReason, NodeId, Outcome, ParticipantId, TxnId, TxnPhase, Vote, truncate_utf8,
};

// ---------------------------------------------------------------------------------------------
// Field helpers

pub(crate) fn at(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn txn_id(field: String, raw: &str) -> Result<TxnId, ConvertError> {
    raw.parse()
        .map_err(|source| ConvertError::Id { field, source })
}

fn txn_ids(field: &str, raw: Vec<String>) -> Result<Vec<TxnId>, ConvertError> {
    raw.iter()
        .enumerate()
        .map(|(i, s)| txn_id(format!("{field}[{i}]"), s))
        .collect()
}

fn participant(field: String, raw: String) -> Result<ParticipantId, ConvertError> {
    ParticipantId::new(raw).map_err(|source| ConvertError::Id { field, source })
}

/// A participant list: each well-formed, none twice.
fn participants(field: &str, raw: Vec<String>) -> Result<Vec<ParticipantId>, ConvertError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let id = participant(format!("{field}[{i}]"), s)?;
        if !seen.insert(id.clone()) {
            return Err(ConvertError::DuplicateParticipant {
                field: format!("{field}[{i}]"),
                participant: id.to_string(),
            });
        }
        out.push(id);
    }
    Ok(out)
}

fn optional_participant(field: String, raw: String) -> Result<Option<ParticipantId>, ConvertError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        participant(field, raw).map(Some)
    }
}

fn endpoint(field: String, raw: String) -> Result<Endpoint, ConvertError> {
    Endpoint::new(raw).map_err(|source| ConvertError::Id { field, source })
}

fn optional_endpoint(field: String, raw: String) -> Result<Option<Endpoint>, ConvertError> {
    if raw.is_empty() {
        Ok(None)
    } else {
        endpoint(field, raw).map(Some)
    }
}

fn node_id(field: String, raw: u64) -> Result<NodeId, ConvertError> {
    if raw == 0 {
        return Err(ConvertError::Invalid {
            field,
            why: "node id 0 is reserved (no node)".to_owned(),
        });
    }
    Ok(raw)
}

pub(crate) fn required<T>(field: String, raw: Option<T>) -> Result<T, ConvertError> {
    raw.ok_or(ConvertError::Missing { field })
}

fn message(raw: String) -> String {
    if raw.len() <= MESSAGE_LEN_MAX {
        raw
    } else {
        truncate_utf8(&raw, MESSAGE_LEN_MAX).to_owned()
    }
}

/// A commit's call counts: none, or exactly one per participant (P10).
fn call_counts(participants: &[String], counts: Vec<u32>) -> Result<Vec<u32>, ConvertError> {
    if !counts.is_empty() && counts.len() != participants.len() {
        return Err(ConvertError::Invalid {
            field: "call_counts".into(),
            why: format!(
                "{} counts for {} participants: give one per participant, or none",
                counts.len(),
                participants.len()
            ),
        });
    }
    Ok(counts)
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(ToString::to_string).collect()
}

fn nonzero(raw: u64) -> Option<u64> {
    (raw != 0).then_some(raw)
}

// ---------------------------------------------------------------------------------------------
// Enums: UNSPECIFIED (0) and unknown values are refused.

/// A domain enum with a wire enum: `i32` on the wire, refused when unspecified or unknown.
pub trait WireEnum: Sized + Copy {
    /// The wire value.
    fn to_wire(self) -> i32;
    /// From the wire value; `field` names it in the error.
    fn from_wire(field: String, raw: i32) -> Result<Self, ConvertError>;
}

macro_rules! wire_enum {
    ($domain:ty, $wire:ty, { $($d:path => $w:path),+ $(,)? }) => {
        impl WireEnum for $domain {
            fn to_wire(self) -> i32 {
                let wire: $wire = match self { $($d => $w),+ };
                wire as i32
            }
            fn from_wire(field: String, raw: i32) -> Result<Self, ConvertError> {
                match <$wire>::try_from(raw) {
                    $(Ok($w) => Ok($d),)+
                    _ => Err(ConvertError::BadEnum { field, value: raw }),
                }
            }
        }
    };
}

wire_enum!(NoReason, pbc::NoReason, {
    NoReason::Conflict => pbc::NoReason::Conflict,
    NoReason::UnknownTxn => pbc::NoReason::UnknownTxn,
    NoReason::ValidationFailed => pbc::NoReason::ValidationFailed,
    NoReason::AlreadyAborted => pbc::NoReason::AlreadyAborted,
    NoReason::StagedTimeout => pbc::NoReason::StagedTimeout,
    NoReason::LimitExceeded => pbc::NoReason::LimitExceeded,
    NoReason::StorageError => pbc::NoReason::StorageError,
    NoReason::CallFailed => pbc::NoReason::CallFailed,
});

wire_enum!(Decision, pbc::Decision, {
    Decision::Commit => pbc::Decision::Commit,
    Decision::Abort => pbc::Decision::Abort,
});

wire_enum!(AbortCause, pbc::AbortCause, {
    AbortCause::VotedNo => pbc::AbortCause::VotedNo,
    AbortCause::PrepareTimeout => pbc::AbortCause::PrepareTimeout,
    AbortCause::ResolvedByParticipant => pbc::AbortCause::ResolvedByParticipant,
    AbortCause::ClientAbort => pbc::AbortCause::ClientAbort,
    AbortCause::Operator => pbc::AbortCause::Operator,
    AbortCause::DeadlineExpired => pbc::AbortCause::DeadlineExpired,
    AbortCause::UnreachableParticipant => pbc::AbortCause::UnreachableParticipant,
});

wire_enum!(TxnPhase, pbco::TxnPhase, {
    TxnPhase::Undecided => pbco::TxnPhase::Undecided,
    TxnPhase::Decided => pbco::TxnPhase::Decided,
    TxnPhase::Completed => pbco::TxnPhase::Completed,
});

wire_enum!(DecisionSource, pbr::DecisionSource, {
    DecisionSource::Commit => pbr::DecisionSource::Commit,
    DecisionSource::Resolve => pbr::DecisionSource::Resolve,
    DecisionSource::ClientAbort => pbr::DecisionSource::ClientAbort,
    DecisionSource::Operator => pbr::DecisionSource::Operator,
});

wire_enum!(AckStatus, pbp::AckStatus, {
    AckStatus::Applied => pbp::AckStatus::Applied,
    AckStatus::AlreadyApplied => pbp::AckStatus::AlreadyApplied,
    AckStatus::NotPrepared => pbp::AckStatus::NotPrepared,
    AckStatus::ConflictingOutcome => pbp::AckStatus::ConflictingOutcome,
    AckStatus::Retry => pbp::AckStatus::Retry,
});

wire_enum!(MemberRole, pbco::MemberRole, {
    MemberRole::Voter => pbco::MemberRole::Voter,
    MemberRole::Learner => pbco::MemberRole::Learner,
});

wire_enum!(ErrorCode, pbc::ErrorCode, {
    ErrorCode::NotLeader => pbc::ErrorCode::NotLeader,
    ErrorCode::MalformedTxnId => pbc::ErrorCode::MalformedTxnId,
    ErrorCode::MalformedParticipantId => pbc::ErrorCode::MalformedParticipantId,
    ErrorCode::DuplicateParticipant => pbc::ErrorCode::DuplicateParticipant,
    ErrorCode::UnknownParticipant => pbc::ErrorCode::UnknownParticipant,
    ErrorCode::LimitExceeded => pbc::ErrorCode::LimitExceeded,
    ErrorCode::InvalidField => pbc::ErrorCode::InvalidField,
    ErrorCode::UnknownTxn => pbc::ErrorCode::UnknownTxn,
    ErrorCode::Unavailable => pbc::ErrorCode::Unavailable,
    ErrorCode::Storage => pbc::ErrorCode::Storage,
    ErrorCode::TxnAborted => pbc::ErrorCode::TxnAborted,
    ErrorCode::Conflict => pbc::ErrorCode::Conflict,
    ErrorCode::Precondition => pbc::ErrorCode::Precondition,
});

fn optional_enum<E: WireEnum>(field: String, raw: i32) -> Result<Option<E>, ConvertError> {
    if raw == 0 {
        Ok(None)
    } else {
        E::from_wire(field, raw).map(Some)
    }
}

// ---------------------------------------------------------------------------------------------
// Shared pieces: abort info, decisions, outcomes, votes

impl From<AbortInfo> for pbc::AbortInfo {
    fn from(v: AbortInfo) -> Self {
        Self {
            cause: v.cause.to_wire(),
            participant_id: v.participant.map(String::from).unwrap_or_default(),
            no_reason: v.no_reason.map_or(0, WireEnum::to_wire),
            message: v.message,
        }
    }
}

fn abort_info(prefix: &str, raw: pbc::AbortInfo) -> Result<AbortInfo, ConvertError> {
    Ok(AbortInfo {
        cause: AbortCause::from_wire(at(prefix, "cause"), raw.cause)?,
        participant: optional_participant(at(prefix, "participant_id"), raw.participant_id)?,
        no_reason: optional_enum(at(prefix, "no_reason"), raw.no_reason)?,
        message: message(raw.message),
    })
}

/// `(decision, abort_info)` on the wire → a final decision; ABORT requires its info.
fn final_decision(
    decision_field: &str,
    info_field: &str,
    decision: i32,
    info: Option<pbc::AbortInfo>,
) -> Result<FinalDecision, ConvertError> {
    match Decision::from_wire(decision_field.to_owned(), decision)? {
        Decision::Commit => Ok(FinalDecision::Commit),
        Decision::Abort => {
            let info = required(info_field.to_owned(), info)?;
            Ok(FinalDecision::Abort(abort_info(info_field, info)?))
        }
    }
}

fn final_decision_to_wire(d: FinalDecision) -> (i32, Option<pbc::AbortInfo>) {
    match d {
        FinalDecision::Commit => (Decision::Commit.to_wire(), None),
        FinalDecision::Abort(info) => (Decision::Abort.to_wire(), Some(info.into())),
    }
}

fn outcome_to_wire(o: Outcome) -> (i32, Option<pbc::AbortInfo>) {
    match o {
        Outcome::Committed => (pbc::Outcome::Committed as i32, None),
        Outcome::Aborted(info) => (pbc::Outcome::Aborted as i32, Some(info.into())),
        Outcome::Unknown => (pbc::Outcome::Unknown as i32, None),
    }
}

fn outcome(
    outcome_field: &str,
    info_field: &str,
    raw: i32,
    info: Option<pbc::AbortInfo>,
) -> Result<Outcome, ConvertError> {
    match pbc::Outcome::try_from(raw) {
        Ok(pbc::Outcome::Committed) => Ok(Outcome::Committed),
        Ok(pbc::Outcome::Aborted) => {
            let info = required(info_field.to_owned(), info)?;
            Ok(Outcome::Aborted(abort_info(info_field, info)?))
        }
        Ok(pbc::Outcome::Unknown) => Ok(Outcome::Unknown),
        _ => Err(ConvertError::BadEnum {
            field: outcome_field.to_owned(),
            value: raw,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

impl From<ErrorDetail> for pbc::ErrorDetail {
    fn from(v: ErrorDetail) -> Self {
        Self {
            code: v.code.to_wire(),
            message: v.message,
            field: v.field.unwrap_or_default(),
            limit: v.limit.unwrap_or_default(),
            leader_id: v.leader_id.unwrap_or(0),
            leader_endpoint: v.leader_endpoint.map(String::from).unwrap_or_default(),
            txn_id: v.txn_id.map(String::from).unwrap_or_default(),
            participant_id: v.participant.map(String::from).unwrap_or_default(),
        }
    }
}

impl TryFrom<pbc::ErrorDetail> for ErrorDetail {
    type Error = ConvertError;
    fn try_from(v: pbc::ErrorDetail) -> Result<Self, ConvertError> {
        Ok(Self {
            code: ErrorCode::from_wire("code".into(), v.code)?,
            message: message(v.message),
            field: (!v.field.is_empty()).then_some(v.field),
            limit: (!v.limit.is_empty()).then_some(v.limit),
            leader_id: nonzero(v.leader_id),
            leader_endpoint: optional_endpoint("leader_endpoint".into(), v.leader_endpoint)?,
            txn_id: if v.txn_id.is_empty() {
                None
            } else {
                Some(txn_id("txn_id".into(), &v.txn_id)?)
            },
            participant: optional_participant("participant_id".into(), v.participant_id)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Coordinator client API

impl From<CommitRequest> for pbco::CommitRequest {
    fn from(v: CommitRequest) -> Self {
        Self {
            txn_id: v.txn_id.to_string(),
            participants: strings(&v.participants),
            deadline_unix_ms: v.deadline_unix_ms.unwrap_or(0),
            call_counts: v.call_counts,
        }
    }
}

impl TryFrom<pbco::CommitRequest> for CommitRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::CommitRequest) -> Result<Self, ConvertError> {
        Ok(Self {
            txn_id: txn_id("txn_id".into(), &v.txn_id)?,
            call_counts: call_counts(&v.participants, v.call_counts)?,
            participants: participants("participants", v.participants)?,
            deadline_unix_ms: nonzero(v.deadline_unix_ms),
        })
    }
}

impl From<CommitResponse> for pbco::CommitResponse {
    fn from(v: CommitResponse) -> Self {
        let (outcome, abort_info) = outcome_to_wire(v.outcome);
        Self {
            outcome,
            abort_info,
        }
    }
}

impl TryFrom<pbco::CommitResponse> for CommitResponse {
    type Error = ConvertError;
    fn try_from(v: pbco::CommitResponse) -> Result<Self, ConvertError> {
        Ok(Self {
            outcome: outcome("outcome", "abort_info", v.outcome, v.abort_info)?,
        })
    }
}

impl From<AbortRequest> for pbco::AbortRequest {
    fn from(v: AbortRequest) -> Self {
        Self {
            txn_id: v.txn_id.to_string(),
            participants: strings(&v.participants),
            message: v.message,
        }
    }
}

impl TryFrom<pbco::AbortRequest> for AbortRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::AbortRequest) -> Result<Self, ConvertError> {
        Ok(Self {
            txn_id: txn_id("txn_id".into(), &v.txn_id)?,
            participants: participants("participants", v.participants)?,
            message: message(v.message),
        })
    }
}

impl From<AbortResponse> for pbco::AbortResponse {
    fn from(v: AbortResponse) -> Self {
        let (outcome, abort_info) = outcome_to_wire(v.outcome);
        Self {
            outcome,
            abort_info,
        }
    }
}

impl TryFrom<pbco::AbortResponse> for AbortResponse {
    type Error = ConvertError;
    fn try_from(v: pbco::AbortResponse) -> Result<Self, ConvertError> {
        Ok(Self {
            outcome: outcome("outcome", "abort_info", v.outcome, v.abort_info)?,
        })
    }
}

impl From<StatusRequest> for pbco::StatusRequest {
    fn from(v: StatusRequest) -> Self {
        Self {
            txn_id: v.txn_id.to_string(),
        }
    }
}

impl TryFrom<pbco::StatusRequest> for StatusRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::StatusRequest) -> Result<Self, ConvertError> {
        Ok(Self {
            txn_id: txn_id("txn_id".into(), &v.txn_id)?,
        })
    }
}

impl From<StatusResponse> for pbco::StatusResponse {
    fn from(v: StatusResponse) -> Self {
        let (outcome, abort_info) = outcome_to_wire(v.outcome);
        Self {
            outcome,
            phase: v.phase.to_wire(),
            abort_info,
            pending_participants: strings(&v.pending_participants),
            decided_at_unix_ms: v.decided_at_unix_ms.unwrap_or(0),
        }
    }
}

impl TryFrom<pbco::StatusResponse> for StatusResponse {
    type Error = ConvertError;
    fn try_from(v: pbco::StatusResponse) -> Result<Self, ConvertError> {
        Ok(Self {
            outcome: outcome("outcome", "abort_info", v.outcome, v.abort_info)?,
            phase: TxnPhase::from_wire("phase".into(), v.phase)?,
            pending_participants: participants("pending_participants", v.pending_participants)?,
            decided_at_unix_ms: nonzero(v.decided_at_unix_ms),
        })
    }
}

impl From<ResolveRequest> for pbco::ResolveRequest {
    fn from(v: ResolveRequest) -> Self {
        Self {
            txn_id: v.txn_id.to_string(),
            participant_id: v.participant.into(),
        }
    }
}

impl TryFrom<pbco::ResolveRequest> for ResolveRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::ResolveRequest) -> Result<Self, ConvertError> {
        Ok(Self {
            txn_id: txn_id("txn_id".into(), &v.txn_id)?,
            participant: participant("participant_id".into(), v.participant_id)?,
        })
    }
}

impl From<ResolveResponse> for pbco::ResolveResponse {
    fn from(v: ResolveResponse) -> Self {
        let (decision, abort_info) = final_decision_to_wire(v.decision);
        Self {
            decision,
            abort_info,
        }
    }
}

impl TryFrom<pbco::ResolveResponse> for ResolveResponse {
    type Error = ConvertError;
    fn try_from(v: pbco::ResolveResponse) -> Result<Self, ConvertError> {
        Ok(Self {
            decision: final_decision("decision", "abort_info", v.decision, v.abort_info)?,
        })
    }
}

impl From<RegisterParticipantRequest> for pbco::RegisterParticipantRequest {
    fn from(v: RegisterParticipantRequest) -> Self {
        Self {
            participant_id: v.participant.into(),
            endpoint: v.endpoint.into(),
        }
    }
}

impl TryFrom<pbco::RegisterParticipantRequest> for RegisterParticipantRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::RegisterParticipantRequest) -> Result<Self, ConvertError> {
        Ok(Self {
            participant: participant("participant_id".into(), v.participant_id)?,
            endpoint: endpoint("endpoint".into(), v.endpoint)?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Admin API

impl From<ListTxnsRequest> for pbco::ListTxnsRequest {
    fn from(v: ListTxnsRequest) -> Self {
        Self {
            phase: v.phase.map_or(0, WireEnum::to_wire),
            limit: v.limit,
            page_token: v.page_token,
            local: v.local,
        }
    }
}

impl TryFrom<pbco::ListTxnsRequest> for ListTxnsRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::ListTxnsRequest) -> Result<Self, ConvertError> {
        Ok(Self {
            phase: optional_enum("phase".into(), v.phase)?,
            limit: v.limit,
            page_token: v.page_token,
            local: v.local,
        })
    }
}

impl From<TxnSummary> for pbco::TxnSummary {
    fn from(v: TxnSummary) -> Self {
        let (decision, abort_info) = final_decision_to_wire(v.decision);
        Self {
            txn_id: v.txn_id.to_string(),
            phase: v.phase.to_wire(),
            decision,
            abort_info,
            participants: strings(&v.participants),
            pending_participants: strings(&v.pending_participants),
            decided_at_unix_ms: v.decided_at_unix_ms,
        }
    }
}

impl TryFrom<pbco::TxnSummary> for TxnSummary {
    type Error = ConvertError;
    fn try_from(v: pbco::TxnSummary) -> Result<Self, ConvertError> {
        txn_summary("", v)
    }
}

fn txn_summary(prefix: &str, v: pbco::TxnSummary) -> Result<TxnSummary, ConvertError> {
    Ok(TxnSummary {
        txn_id: txn_id(at(prefix, "txn_id"), &v.txn_id)?,
        phase: TxnPhase::from_wire(at(prefix, "phase"), v.phase)?,
        decision: final_decision(
            &at(prefix, "decision"),
            &at(prefix, "abort_info"),
            v.decision,
            v.abort_info,
        )?,
        participants: participants(&at(prefix, "participants"), v.participants)?,
        pending_participants: participants(
            &at(prefix, "pending_participants"),
            v.pending_participants,
        )?,
        decided_at_unix_ms: v.decided_at_unix_ms,
    })
}

impl From<ListTxnsResponse> for pbco::ListTxnsResponse {
    fn from(v: ListTxnsResponse) -> Self {
        Self {
            txns: v.txns.into_iter().map(Into::into).collect(),
            next_page_token: v.next_page_token,
        }
    }
}

impl TryFrom<pbco::ListTxnsResponse> for ListTxnsResponse {
    type Error = ConvertError;
    fn try_from(v: pbco::ListTxnsResponse) -> Result<Self, ConvertError> {
        Ok(Self {
            txns: v
                .txns
                .into_iter()
                .enumerate()
                .map(|(i, t)| txn_summary(&format!("txns[{i}]"), t))
                .collect::<Result<_, _>>()?,
            next_page_token: v.next_page_token,
        })
    }
}

impl From<ForceResolveRequest> for pbco::ForceResolveRequest {
    fn from(v: ForceResolveRequest) -> Self {
        Self {
            txn_id: v.txn_id.to_string(),
            decision: v.decision.to_wire(),
            participants: strings(&v.participants),
            reason: v.reason,
        }
    }
}

impl TryFrom<pbco::ForceResolveRequest> for ForceResolveRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::ForceResolveRequest) -> Result<Self, ConvertError> {
        Ok(Self {
            txn_id: txn_id("txn_id".into(), &v.txn_id)?,
            decision: Decision::from_wire("decision".into(), v.decision)?,
            participants: participants("participants", v.participants)?,
            reason: message(v.reason),
        })
    }
}

impl From<ForceResolveResponse> for pbco::ForceResolveResponse {
    fn from(v: ForceResolveResponse) -> Self {
        Self {
            decision: v.decision.to_wire(),
            changed: v.changed,
        }
    }
}

impl TryFrom<pbco::ForceResolveResponse> for ForceResolveResponse {
    type Error = ConvertError;
    fn try_from(v: pbco::ForceResolveResponse) -> Result<Self, ConvertError> {
        Ok(Self {
            decision: Decision::from_wire("decision".into(), v.decision)?,
            changed: v.changed,
        })
    }
}

impl From<Member> for pbco::Member {
    fn from(v: Member) -> Self {
        Self {
            node_id: v.node_id,
            endpoint: v.endpoint.into(),
            role: v.role.to_wire(),
        }
    }
}

impl TryFrom<pbco::Member> for Member {
    type Error = ConvertError;
    fn try_from(v: pbco::Member) -> Result<Self, ConvertError> {
        member("", v)
    }
}

fn member(prefix: &str, v: pbco::Member) -> Result<Member, ConvertError> {
    Ok(Member {
        node_id: node_id(at(prefix, "node_id"), v.node_id)?,
        endpoint: endpoint(at(prefix, "endpoint"), v.endpoint)?,
        role: MemberRole::from_wire(at(prefix, "role"), v.role)?,
    })
}

fn members(field: &str, raw: Vec<pbco::Member>) -> Result<Vec<Member>, ConvertError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, m) in raw.into_iter().enumerate() {
        let m = member(&format!("{field}[{i}]"), m)?;
        if !seen.insert(m.node_id) {
            return Err(ConvertError::Invalid {
                field: format!("{field}[{i}].node_id"),
                why: format!("node {} is listed more than once", m.node_id),
            });
        }
        out.push(m);
    }
    Ok(out)
}

impl From<ClusterStatus> for pbco::ClusterStatusResponse {
    fn from(v: ClusterStatus) -> Self {
        let (leader_id, leader_endpoint) = match v.leader {
            Some(l) => (l.node_id, l.endpoint.map(String::from).unwrap_or_default()),
            None => (0, String::new()),
        };
        Self {
            node_id: v.node_id,
            leader_id,
            leader_endpoint,
            term: v.term,
            members: v.members.into_iter().map(Into::into).collect(),
            last_log_index: v.last_log_index,
            committed_index: v.committed_index,
            last_applied_index: v.last_applied_index,
            snapshot_index: v.snapshot_index,
            purged_index: v.purged_index,
        }
    }
}

impl TryFrom<pbco::ClusterStatusResponse> for ClusterStatus {
    type Error = ConvertError;
    fn try_from(v: pbco::ClusterStatusResponse) -> Result<Self, ConvertError> {
        let leader = match nonzero(v.leader_id) {
            Some(node_id) => Some(LeaderHint {
                node_id,
                endpoint: optional_endpoint("leader_endpoint".into(), v.leader_endpoint)?,
            }),
            None => None,
        };
        Ok(Self {
            node_id: node_id("node_id".into(), v.node_id)?,
            leader,
            term: v.term,
            members: members("members", v.members)?,
            last_log_index: v.last_log_index,
            committed_index: v.committed_index,
            last_applied_index: v.last_applied_index,
            snapshot_index: v.snapshot_index,
            purged_index: v.purged_index,
        })
    }
}

impl From<InitClusterRequest> for pbco::InitClusterRequest {
    fn from(v: InitClusterRequest) -> Self {
        Self {
            members: v.members.into_iter().map(Into::into).collect(),
        }
    }
}

impl TryFrom<pbco::InitClusterRequest> for InitClusterRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::InitClusterRequest) -> Result<Self, ConvertError> {
        let members = members("members", v.members)?;
        if members.is_empty() {
            return Err(ConvertError::Invalid {
                field: "members".into(),
                why: "a cluster needs at least one member".into(),
            });
        }
        Ok(Self { members })
    }
}

impl From<AddLearnerRequest> for pbco::AddLearnerRequest {
    fn from(v: AddLearnerRequest) -> Self {
        Self {
            node_id: v.node_id,
            endpoint: v.endpoint.into(),
        }
    }
}

impl TryFrom<pbco::AddLearnerRequest> for AddLearnerRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::AddLearnerRequest) -> Result<Self, ConvertError> {
        Ok(Self {
            node_id: node_id("node_id".into(), v.node_id)?,
            endpoint: endpoint("endpoint".into(), v.endpoint)?,
        })
    }
}

/// `PromoteRequest` and `RemoveNodeRequest` carry only a node id.
impl TryFrom<pbco::PromoteRequest> for NodeIdRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::PromoteRequest) -> Result<Self, ConvertError> {
        Ok(NodeIdRequest(node_id("node_id".into(), v.node_id)?))
    }
}

impl TryFrom<pbco::RemoveNodeRequest> for NodeIdRequest {
    type Error = ConvertError;
    fn try_from(v: pbco::RemoveNodeRequest) -> Result<Self, ConvertError> {
        Ok(NodeIdRequest(node_id("node_id".into(), v.node_id)?))
    }
}

impl From<NodeIdRequest> for pbco::PromoteRequest {
    fn from(v: NodeIdRequest) -> Self {
        Self { node_id: v.0 }
    }
}

impl From<NodeIdRequest> for pbco::RemoveNodeRequest {
    fn from(v: NodeIdRequest) -> Self {
        Self { node_id: v.0 }
    }
}

/// A request naming one node (Promote, RemoveNode): the id is non-zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIdRequest(pub NodeId);

impl From<ParticipantInfo> for pbco::ParticipantInfo {
    fn from(v: ParticipantInfo) -> Self {
        Self {
            participant_id: v.participant.into(),
            endpoint: v.endpoint.into(),
            registered_at_unix_ms: v.registered_at_unix_ms,
        }
    }
}

impl TryFrom<pbco::ParticipantInfo> for ParticipantInfo {
    type Error = ConvertError;
    fn try_from(v: pbco::ParticipantInfo) -> Result<Self, ConvertError> {
        Ok(Self {
            participant: participant("participant_id".into(), v.participant_id)?,
            endpoint: endpoint("endpoint".into(), v.endpoint)?,
            registered_at_unix_ms: v.registered_at_unix_ms,
        })
    }
}

/// Participants listed by `Admin.ListParticipants`.
pub fn participant_infos_from_wire(
    v: pbco::ListParticipantsResponse,
) -> Result<Vec<ParticipantInfo>, ConvertError> {
    v.participants
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            ParticipantInfo::try_from(p).map_err(|e| prefix_error(&format!("participants[{i}]"), e))
        })
        .collect()
}

/// The wire form of a participant list.
pub fn participant_infos_to_wire(v: Vec<ParticipantInfo>) -> pbco::ListParticipantsResponse {
    pbco::ListParticipantsResponse {
        participants: v.into_iter().map(Into::into).collect(),
    }
}

fn prefix_error(prefix: &str, e: ConvertError) -> ConvertError {
    let re = |field: String| at(prefix, &field);
    match e {
        ConvertError::Missing { field } => ConvertError::Missing { field: re(field) },
        ConvertError::BadEnum { field, value } => ConvertError::BadEnum {
            field: re(field),
            value,
        },
        ConvertError::Id { field, source } => ConvertError::Id {
            field: re(field),
            source,
        },
        ConvertError::DuplicateParticipant { field, participant } => {
            ConvertError::DuplicateParticipant {
                field: re(field),
                participant,
            }
        }
        ConvertError::Invalid { field, why } => ConvertError::Invalid {
            field: re(field),
            why,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Participant API

macro_rules! txn_batch {
    ($wire:ty) => {
        impl From<TxnBatch> for $wire {
            fn from(v: TxnBatch) -> Self {
                Self {
                    txn_ids: strings(&v.txn_ids),
                    coordinator_node_id: v.coordinator_node_id,
                }
            }
        }

        impl TryFrom<$wire> for TxnBatch {
            type Error = ConvertError;
            fn try_from(v: $wire) -> Result<Self, ConvertError> {
                Ok(Self {
                    coordinator_node_id: v.coordinator_node_id,
                    txn_ids: txn_ids("txn_ids", v.txn_ids)?,
                })
            }
        }
    };
}

txn_batch!(pbp::CommitRequest);
txn_batch!(pbp::AbortRequest);

macro_rules! prepare_batch {
    ($wire:ty) => {
        impl From<PrepareBatch> for $wire {
            fn from(v: PrepareBatch) -> Self {
                Self {
                    txn_ids: strings(&v.txn_ids),
                    coordinator_node_id: v.coordinator_node_id,
                    call_counts: v
                        .call_counts
                        .into_iter()
                        .map(|(id, n)| (id.to_string(), n))
                        .collect(),
                }
            }
        }

        impl TryFrom<$wire> for PrepareBatch {
            type Error = ConvertError;
            fn try_from(v: $wire) -> Result<Self, ConvertError> {
                let txn_ids = txn_ids("txn_ids", v.txn_ids)?;
                let mut call_counts = BTreeMap::new();
                for (raw, n) in v.call_counts {
                    let field = format!("call_counts[{raw}]");
                    let id = txn_id(field.clone(), &raw)?;
                    if !txn_ids.contains(&id) {
                        return Err(ConvertError::Invalid {
                            field,
                            why: "not a transaction of this batch".into(),
                        });
                    }
                    call_counts.insert(id, n);
                }
                Ok(Self {
                    coordinator_node_id: v.coordinator_node_id,
                    txn_ids,
                    call_counts,
                })
            }
        }
    };
}

prepare_batch!(pbp::PrepareRequest);
prepare_batch!(pbp::CommitOnePhaseRequest);

impl From<PrepareResult> for pbp::PrepareResult {
    fn from(v: PrepareResult) -> Self {
        let (vote, no_reason, message) = match v.vote {
            Vote::Yes => (pbc::Vote::Yes, 0, String::new()),
            Vote::ReadOnly => (pbc::Vote::ReadOnly, 0, String::new()),
            Vote::No { reason, message } => (pbc::Vote::No, reason.to_wire(), message),
        };
        Self {
            txn_id: v.txn_id.to_string(),
            vote: vote as i32,
            no_reason,
            message,
        }
    }
}

fn prepare_result(prefix: &str, v: pbp::PrepareResult) -> Result<PrepareResult, ConvertError> {
    let vote = match pbc::Vote::try_from(v.vote) {
        Ok(pbc::Vote::Yes) => Vote::Yes,
        Ok(pbc::Vote::ReadOnly) => Vote::ReadOnly,
        Ok(pbc::Vote::No) => Vote::No {
            reason: NoReason::from_wire(at(prefix, "no_reason"), v.no_reason)?,
            message: message(v.message),
        },
        _ => {
            return Err(ConvertError::BadEnum {
                field: at(prefix, "vote"),
                value: v.vote,
            });
        }
    };
    Ok(PrepareResult {
        txn_id: txn_id(at(prefix, "txn_id"), &v.txn_id)?,
        vote,
    })
}

/// The votes of a Prepare response, in order.
pub fn prepare_results_from_wire(
    v: pbp::PrepareResponse,
) -> Result<Vec<PrepareResult>, ConvertError> {
    v.results
        .into_iter()
        .enumerate()
        .map(|(i, r)| prepare_result(&format!("results[{i}]"), r))
        .collect()
}

/// The wire form of a Prepare response.
pub fn prepare_results_to_wire(v: Vec<PrepareResult>) -> pbp::PrepareResponse {
    pbp::PrepareResponse {
        results: v.into_iter().map(Into::into).collect(),
    }
}

impl From<AckResult> for pbp::AckResult {
    fn from(v: AckResult) -> Self {
        Self {
            txn_id: v.txn_id.to_string(),
            status: v.status.to_wire(),
            message: v.message,
        }
    }
}

fn ack_result(prefix: &str, v: pbp::AckResult) -> Result<AckResult, ConvertError> {
    Ok(AckResult {
        txn_id: txn_id(at(prefix, "txn_id"), &v.txn_id)?,
        status: AckStatus::from_wire(at(prefix, "status"), v.status)?,
        message: message(v.message),
    })
}

fn ack_results(raw: Vec<pbp::AckResult>) -> Result<Vec<AckResult>, ConvertError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| ack_result(&format!("results[{i}]"), r))
        .collect()
}

/// The acks of a participant Commit response, in order.
pub fn commit_acks_from_wire(v: pbp::CommitResponse) -> Result<Vec<AckResult>, ConvertError> {
    ack_results(v.results)
}

/// The wire form of a participant Commit response.
pub fn commit_acks_to_wire(v: Vec<AckResult>) -> pbp::CommitResponse {
    pbp::CommitResponse {
        results: v.into_iter().map(Into::into).collect(),
    }
}

/// The acks of a participant Abort response, in order.
pub fn abort_acks_from_wire(v: pbp::AbortResponse) -> Result<Vec<AckResult>, ConvertError> {
    ack_results(v.results)
}

/// The wire form of a participant Abort response.
pub fn abort_acks_to_wire(v: Vec<AckResult>) -> pbp::AbortResponse {
    pbp::AbortResponse {
        results: v.into_iter().map(Into::into).collect(),
    }
}

impl From<OnePhaseResult> for pbp::OnePhaseResult {
    fn from(v: OnePhaseResult) -> Self {
        let (outcome, no_reason, message) = match v.outcome {
            OnePhaseOutcome::Committed => (pbc::Outcome::Committed, 0, String::new()),
            OnePhaseOutcome::Aborted { reason, message } => {
                (pbc::Outcome::Aborted, reason.to_wire(), message)
            }
            OnePhaseOutcome::Unknown { message } => (pbc::Outcome::Unknown, 0, message),
        };
        Self {
            txn_id: v.txn_id.to_string(),
            outcome: outcome as i32,
            no_reason,
            message,
        }
    }
}

fn one_phase_result(prefix: &str, v: pbp::OnePhaseResult) -> Result<OnePhaseResult, ConvertError> {
    let outcome = match pbc::Outcome::try_from(v.outcome) {
        Ok(pbc::Outcome::Committed) => OnePhaseOutcome::Committed,
        Ok(pbc::Outcome::Aborted) => OnePhaseOutcome::Aborted {
            reason: NoReason::from_wire(at(prefix, "no_reason"), v.no_reason)?,
            message: message(v.message),
        },
        Ok(pbc::Outcome::Unknown) => OnePhaseOutcome::Unknown {
            message: message(v.message),
        },
        _ => {
            return Err(ConvertError::BadEnum {
                field: at(prefix, "outcome"),
                value: v.outcome,
            });
        }
    };
    Ok(OnePhaseResult {
        txn_id: txn_id(at(prefix, "txn_id"), &v.txn_id)?,
        outcome,
    })
}

/// The results of a CommitOnePhase response, in order.
pub fn one_phase_results_from_wire(
    v: pbp::CommitOnePhaseResponse,
) -> Result<Vec<OnePhaseResult>, ConvertError> {
    v.results
        .into_iter()
        .enumerate()
        .map(|(i, r)| one_phase_result(&format!("results[{i}]"), r))
        .collect()
}

/// The wire form of a CommitOnePhase response.
pub fn one_phase_results_to_wire(v: Vec<OnePhaseResult>) -> pbp::CommitOnePhaseResponse {
    pbp::CommitOnePhaseResponse {
        results: v.into_iter().map(Into::into).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Replicated commands

impl From<DecideItem> for pbr::DecideItem {
    fn from(v: DecideItem) -> Self {
        let (decision, abort_info) = final_decision_to_wire(v.decision);
        Self {
            txn_id: v.txn_id.to_string(),
            decision,
            source: v.source.to_wire(),
            participants: strings(&v.participants),
            abort_info,
        }
    }
}

fn decide_item(prefix: &str, v: pbr::DecideItem) -> Result<DecideItem, ConvertError> {
    Ok(DecideItem {
        txn_id: txn_id(at(prefix, "txn_id"), &v.txn_id)?,
        decision: final_decision(
            &at(prefix, "decision"),
            &at(prefix, "abort_info"),
            v.decision,
            v.abort_info,
        )?,
        source: DecisionSource::from_wire(at(prefix, "source"), v.source)?,
        participants: participants(&at(prefix, "participants"), v.participants)?,
    })
}

impl From<PhaseTwoAck> for pbr::PhaseTwoAck {
    fn from(v: PhaseTwoAck) -> Self {
        Self {
            txn_id: v.txn_id.to_string(),
            participants: strings(&v.participants),
        }
    }
}

fn phase_two_ack(prefix: &str, v: pbr::PhaseTwoAck) -> Result<PhaseTwoAck, ConvertError> {
    Ok(PhaseTwoAck {
        txn_id: txn_id(at(prefix, "txn_id"), &v.txn_id)?,
        participants: participants(&at(prefix, "participants"), v.participants)?,
    })
}

impl From<Command> for pbr::Command {
    fn from(v: Command) -> Self {
        use pbr::command::Kind;
        let kind = match v.kind {
            CommandKind::Decide(items) => Kind::Decide(pbr::Decide {
                items: items.into_iter().map(Into::into).collect(),
            }),
            CommandKind::Forget(acks) => Kind::Forget(pbr::Forget {
                acks: acks.into_iter().map(Into::into).collect(),
            }),
            CommandKind::Compact { before_unix_ms } => {
                Kind::Compact(pbr::Compact { before_unix_ms })
            }
            CommandKind::RegisterParticipant {
                participant,
                endpoint,
            } => Kind::RegisterParticipant(pbr::RegisterParticipant {
                participant_id: participant.into(),
                endpoint: endpoint.into(),
            }),
        };
        Self {
            proposed_at_unix_ms: v.proposed_at_unix_ms,
            kind: Some(kind),
        }
    }
}

impl TryFrom<pbr::Command> for Command {
    type Error = ConvertError;
    fn try_from(v: pbr::Command) -> Result<Self, ConvertError> {
        use pbr::command::Kind;
        let kind = match required("kind".into(), v.kind)? {
            Kind::Decide(d) => CommandKind::Decide(
                d.items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| decide_item(&format!("decide.items[{i}]"), item))
                    .collect::<Result<_, _>>()?,
            ),
            Kind::Forget(f) => CommandKind::Forget(
                f.acks
                    .into_iter()
                    .enumerate()
                    .map(|(i, ack)| phase_two_ack(&format!("forget.acks[{i}]"), ack))
                    .collect::<Result<_, _>>()?,
            ),
            Kind::Compact(c) => CommandKind::Compact {
                before_unix_ms: c.before_unix_ms,
            },
            Kind::RegisterParticipant(r) => CommandKind::RegisterParticipant {
                participant: participant(
                    "register_participant.participant_id".into(),
                    r.participant_id,
                )?,
                endpoint: endpoint("register_participant.endpoint".into(), r.endpoint)?,
            },
        };
        Ok(Self {
            proposed_at_unix_ms: v.proposed_at_unix_ms,
            kind,
        })
    }
}

#[cfg(feature = "raft")]
pub(crate) use {at as field_at, required as required_field};
