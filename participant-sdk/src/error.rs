//! The SDK's errors, and their gRPC form for a service's own handlers.

use std::time::Duration;

use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::types::TxnId;

/// An error from the participant store or runtime.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Another transaction holds a conflicting lock on `key`. The caller's transaction may
    /// retry the operation, or give up (abort); nothing it did so far is lost.
    #[error(
        "conflict on key {key} with transaction {holder}{}",
        if *died { " (wait-die: a younger transaction does not wait for an older one)".to_owned() }
        else if waited.is_zero() { String::new() }
        else { format!(" after waiting {waited:?}") }
    )]
    Conflict {
        /// The key (shown escaped).
        key: EscapedKey,
        /// A transaction holding a conflicting lock.
        holder: TxnId,
        /// How long this request waited.
        waited: Duration,
        /// True when wait-die refused to wait.
        died: bool,
    },
    /// The transaction was aborted at this participant (tombstone, staged timeout, restart);
    /// it will never commit here. Start a new transaction.
    #[error("transaction {txn_id} was aborted here: {why}")]
    TxnAborted {
        /// The transaction.
        txn_id: TxnId,
        /// Why.
        why: String,
    },
    /// The transaction is prepared or finished here: it takes no more reads or writes.
    #[error("transaction {txn_id} is {state} here and takes no more reads or writes")]
    TxnNotActive {
        /// The transaction.
        txn_id: TxnId,
        /// `prepared`, `committed`, ...
        state: &'static str,
    },
    /// A limit was exceeded; the operation did nothing.
    #[error("{limit} exceeded: {asked} > {max}")]
    LimitExceeded {
        /// Which limit (`keys_per_txn_max`, ...).
        limit: &'static str,
        /// The limit.
        max: usize,
        /// What was asked.
        asked: usize,
    },
    /// The store failed (I/O error, disk full). Nothing was acknowledged; retry later.
    #[error("storage failed: {0}")]
    Storage(#[source] ratify_storage::StorageError),
    /// Stored data did not decode: the database is damaged or from another version.
    #[error("corrupt {what} in the store: {why}")]
    Corrupt {
        /// Which value.
        what: String,
        /// Why.
        why: String,
    },
    /// A request had no (or a malformed) transaction context.
    #[error("transaction context: {0}")]
    Context(String),
    /// The coordinator could not be reached or refused.
    #[error("coordinator: {0}")]
    Coordinator(String),
}

impl Error {
    /// A storage failure of a store of one's own (a custom [`crate::Resource`]).
    pub fn storage(why: impl Into<String>) -> Self {
        Error::Storage(ratify_storage::StorageError::Other(why.into()))
    }
}

impl From<ratify_storage::StorageError> for Error {
    fn from(e: ratify_storage::StorageError) -> Self {
        match e {
            ratify_storage::StorageError::Corrupt { what, why } => Error::Corrupt { what, why },
            e => Error::Storage(e),
        }
    }
}

/// A key shown as text where it is printable, `\xNN` elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscapedKey(pub Vec<u8>);

impl std::fmt::Display for EscapedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

impl Error {
    /// The machine-readable code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Conflict { .. } => ErrorCode::Conflict,
            Error::TxnAborted { .. } => ErrorCode::TxnAborted,
            Error::TxnNotActive { .. } => ErrorCode::Precondition,
            Error::LimitExceeded { .. } => ErrorCode::LimitExceeded,
            Error::Storage(_) | Error::Corrupt { .. } => ErrorCode::Storage,
            Error::Context(_) => ErrorCode::InvalidField,
            Error::Coordinator(_) => ErrorCode::Unavailable,
        }
    }

    /// The gRPC status a service handler returns for this error, with an `ErrorDetail`, so
    /// the initiator (in any language) can tell a conflict from a dead transaction.
    pub fn to_status(&self) -> tonic::Status {
        let mut d = ErrorDetail::new(self.code(), self.to_string());
        match self {
            Error::TxnAborted { txn_id, .. } | Error::TxnNotActive { txn_id, .. } => {
                d.txn_id = Some(*txn_id);
            }
            Error::LimitExceeded { limit, max, .. } => d.limit = Some(format!("{limit}={max}")),
            Error::Context(_) => d.field = Some("metadata".into()),
            _ => {}
        }
        d.into_status()
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.to_status()
    }
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
