//! Errors on the wire: the machine-readable [`ErrorDetail`] every Ratify server attaches to a
//! non-OK gRPC status, and [`ConvertError`], what the conversion boundary reports for a malformed
//! message. This module is the one place that builds and reads `tonic::Status` details.

use prost::Message;
use tonic::{Code, Status};

use crate::pb::common as pb;
use crate::types::{
    Endpoint, IdError, MESSAGE_LEN_MAX, NodeId, ParticipantId, TxnId, truncate_utf8,
};

/// Machine-readable error codes (see `ErrorCode` in common.proto for each one's gRPC code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Not the leader.
    NotLeader,
    /// A malformed transaction id.
    MalformedTxnId,
    /// A malformed participant id.
    MalformedParticipantId,
    /// A participant named twice.
    DuplicateParticipant,
    /// A participant that is not registered.
    UnknownParticipant,
    /// A limit exceeded.
    LimitExceeded,
    /// A missing or invalid field.
    InvalidField,
    /// A transaction unknown to the receiver.
    UnknownTxn,
    /// No quorum or shutting down.
    Unavailable,
    /// Storage failed.
    Storage,
    /// The transaction was aborted here.
    TxnAborted,
    /// A lock conflict.
    Conflict,
    /// Well-formed, but the receiver's state does not allow it.
    Precondition,
}

impl ErrorCode {
    /// The gRPC status code that goes with this error code.
    pub fn grpc_code(self) -> Code {
        match self {
            ErrorCode::NotLeader | ErrorCode::Precondition => Code::FailedPrecondition,
            ErrorCode::MalformedTxnId
            | ErrorCode::MalformedParticipantId
            | ErrorCode::DuplicateParticipant
            | ErrorCode::UnknownParticipant
            | ErrorCode::LimitExceeded
            | ErrorCode::InvalidField => Code::InvalidArgument,
            ErrorCode::UnknownTxn => Code::NotFound,
            ErrorCode::Unavailable | ErrorCode::Storage => Code::Unavailable,
            ErrorCode::TxnAborted | ErrorCode::Conflict => Code::Aborted,
        }
    }
}

/// The details attached to an error status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    /// What kind of error.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// The offending field, e.g. `participants[2]`.
    pub field: Option<String>,
    /// The limit exceeded, e.g. `participants_per_txn_max=64`.
    pub limit: Option<String>,
    /// For [`ErrorCode::NotLeader`]: the leader, when known.
    pub leader_id: Option<NodeId>,
    /// For [`ErrorCode::NotLeader`]: the leader's endpoint, when known.
    pub leader_endpoint: Option<Endpoint>,
    /// The transaction concerned.
    pub txn_id: Option<TxnId>,
    /// The participant concerned.
    pub participant: Option<ParticipantId>,
}

impl ErrorDetail {
    /// An error with just a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            limit: None,
            leader_id: None,
            leader_endpoint: None,
            txn_id: None,
            participant: None,
        }
    }

    /// The status to return: the code's gRPC code, the message, and this detail encoded.
    pub fn into_status(self) -> Status {
        let code = self.code.grpc_code();
        let message = truncate_utf8(&self.message, MESSAGE_LEN_MAX).to_owned();
        let bytes = pb::ErrorDetail::from(self).encode_to_vec();
        Status::with_details(code, message, bytes.into())
    }

    /// Read the detail from a status, if it carries one (statuses from the transport itself,
    /// such as a refused connection, do not).
    pub fn from_status(status: &Status) -> Option<Self> {
        if status.details().is_empty() {
            return None;
        }
        let wire = pb::ErrorDetail::decode(status.details()).ok()?;
        Self::try_from(wire).ok()
    }
}

impl From<ConvertError> for ErrorDetail {
    fn from(err: ConvertError) -> Self {
        let mut detail = ErrorDetail::new(err.code(), err.to_string());
        detail.field = Some(err.field().to_owned());
        detail
    }
}

impl From<ConvertError> for Status {
    fn from(err: ConvertError) -> Self {
        ErrorDetail::from(err).into_status()
    }
}

/// A wire message that does not convert to a domain value. The server answers INVALID_ARGUMENT
/// with the field path; nothing is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required message field is absent.
    #[error("{field}: required field is missing")]
    Missing {
        /// The field path.
        field: String,
    },
    /// An enum is UNSPECIFIED or a value this build does not know.
    #[error("{field}: enum value {value} is unspecified or unknown")]
    BadEnum {
        /// The field path.
        field: String,
        /// The numeric value received.
        value: i32,
    },
    /// A malformed id or endpoint.
    #[error("{field}: {source}")]
    Id {
        /// The field path.
        field: String,
        /// What is wrong with it.
        source: IdError,
    },
    /// The same participant twice in one list.
    #[error("{field}: participant {participant} is named more than once")]
    DuplicateParticipant {
        /// The field path.
        field: String,
        /// The repeated name.
        participant: String,
    },
    /// Any other invalid value.
    #[error("{field}: {why}")]
    Invalid {
        /// The field path.
        field: String,
        /// What is wrong.
        why: String,
    },
}

impl ConvertError {
    /// The field path the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConvertError::Missing { field }
            | ConvertError::BadEnum { field, .. }
            | ConvertError::Id { field, .. }
            | ConvertError::DuplicateParticipant { field, .. }
            | ConvertError::Invalid { field, .. } => field,
        }
    }

    /// The wire error code for it.
    pub fn code(&self) -> ErrorCode {
        match self {
            ConvertError::Id {
                source: IdError::MalformedTxnId { .. },
                ..
            } => ErrorCode::MalformedTxnId,
            ConvertError::Id {
                source: IdError::MalformedParticipantId { .. },
                ..
            } => ErrorCode::MalformedParticipantId,
            ConvertError::DuplicateParticipant { .. } => ErrorCode::DuplicateParticipant,
            ConvertError::Id { .. }
            | ConvertError::Missing { .. }
            | ConvertError::BadEnum { .. }
            | ConvertError::Invalid { .. } => ErrorCode::InvalidField,
        }
    }
}
