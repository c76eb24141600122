//! The transaction context: which transaction a request belongs to, carried in gRPC metadata
//! (`ratify-txn-id`, `ratify-deadline-ms`, and for a retry `ratify-first-attempt`;
//! docs/protocol.md rule W8).
//!
//! On the participant side, [`TxnContext::from_request`] (or the [`require_context`]
//! interceptor) gives a handler its context. On the initiator side,
//! [`crate::client::Transaction::request`] attaches it.

use std::time::Duration;

use ratify_proto::metadata::{DEADLINE_MS, FIRST_ATTEMPT, TXN_ID};
use ratify_proto::types::TxnId;
use tonic::metadata::{MetadataMap, MetadataValue};

use crate::error::{Error, Result};

/// A transaction's context, as a participant's handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnContext {
    /// The transaction.
    pub txn_id: TxnId,
    /// Its deadline (ms since the Unix epoch), if the initiator set one.
    pub deadline_unix_ms: Option<u64>,
    /// For a retry of an aborted transaction: the first attempt's id. The retry keeps that
    /// age for the lock policy (P9), so a transaction that keeps losing conflicts grows older until it
    /// wins instead of being the youngest forever.
    pub first_attempt: Option<TxnId>,
}

/// A retry keeps its first attempt's age for at most this long (a claimed first attempt older
/// than this before the retry's own id counts as the retry itself). Ids are chosen by clients,
/// so this bounds honest retries, not a malicious client (which could mint old ids anyway):
/// participants trust their initiators' ids, as they trust their deadlines.
pub const FIRST_ATTEMPT_AGE_MAX: Duration = Duration::from_secs(600);

impl TxnContext {
    /// A context for `txn_id` with no deadline.
    pub fn new(txn_id: TxnId) -> Self {
        Self {
            txn_id,
            deadline_unix_ms: None,
            first_attempt: None,
        }
    }

    /// The id whose age counts for the lock policy: the first attempt's, when this is a retry and the
    /// first attempt is older than this one by at most [`FIRST_ATTEMPT_AGE_MAX`]; else its own.
    pub fn age(&self) -> TxnId {
        let own = self.txn_id;
        match (self.first_attempt, own.created_unix_ms()) {
            (Some(first), Some(own_ms))
                if first < own
                    && first.created_unix_ms().is_some_and(|f| {
                        f + FIRST_ATTEMPT_AGE_MAX.as_millis() as u64 >= own_ms
                    }) =>
            {
                first
            }
            _ => own,
        }
    }

    /// The context in `metadata`: `Ok(None)` when the request is not part of a transaction,
    /// `Err` when the metadata is present but malformed.
    pub fn from_metadata(metadata: &MetadataMap) -> Result<Option<Self>> {
        let Some(raw) = metadata.get(TXN_ID) else {
            return Ok(None);
        };
        let text = raw
            .to_str()
            .map_err(|_| Error::Context(format!("{TXN_ID} is not ASCII")))?;
        let txn_id: TxnId = text
            .parse()
            .map_err(|e| Error::Context(format!("{TXN_ID}: {e}")))?;
        let deadline_unix_ms: Option<u64> =
            optional(metadata, DEADLINE_MS, "a decimal number of ms")?;
        let first_attempt: Option<TxnId> = optional(metadata, FIRST_ATTEMPT, "a transaction id")?;
        Ok(Some(Self {
            txn_id,
            deadline_unix_ms,
            first_attempt,
        }))
    }

    /// The context of a request that must be part of a transaction.
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<Self> {
        Self::from_metadata(request.metadata())?.ok_or_else(|| {
            Error::Context(format!(
                "this call must be part of a transaction: no {TXN_ID} metadata"
            ))
        })
    }

    /// Write the context into `metadata`.
    pub fn attach(&self, metadata: &mut MetadataMap) {
        metadata.insert(
            TXN_ID,
            MetadataValue::try_from(self.txn_id.to_string())
                .expect("a UUID's text is valid metadata"),
        );
        if let Some(d) = self.deadline_unix_ms {
            metadata.insert(
                DEADLINE_MS,
                MetadataValue::try_from(d.to_string()).expect("digits are valid metadata"),
            );
        }
        if let Some(f) = self.first_attempt {
            metadata.insert(
                FIRST_ATTEMPT,
                MetadataValue::try_from(f.to_string()).expect("a UUID's text is valid metadata"),
            );
        }
    }
}

/// An optional metadata value, parsed; a present but malformed one is an error.
fn optional<T: std::str::FromStr>(
    metadata: &MetadataMap,
    key: &str,
    what: &str,
) -> Result<Option<T>> {
    metadata
        .get(key)
        .map(|raw| {
            raw.to_str()
                .ok()
                .and_then(|s| s.parse::<T>().ok())
                .ok_or_else(|| Error::Context(format!("{key} is not {what}")))
        })
        .transpose()
}

/// A tonic interceptor that refuses requests without a well-formed transaction context
/// (`INVALID_ARGUMENT` with an `ErrorDetail`), for services whose every call is transactional:
/// `MyServer::with_interceptor(service, require_context)`.
#[allow(clippy::result_large_err)] // tonic's interceptor signature
pub fn require_context(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    TxnContext::from_request(&request).map_err(|e| e.to_status())?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_round_trips_through_metadata() {
        let first = TxnId::new_v7();
        for first_attempt in [None, Some(first)] {
            let ctx = TxnContext {
                txn_id: TxnId::new_v7(),
                deadline_unix_ms: Some(1_790_000_000_000),
                first_attempt,
            };
            let mut md = MetadataMap::new();
            ctx.attach(&mut md);
            assert_eq!(TxnContext::from_metadata(&md).expect("valid"), Some(ctx));
        }
    }

    fn id_at(unix_ms: u64) -> TxnId {
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            unix_ms / 1000,
            (unix_ms % 1000) as u32 * 1_000_000,
        );
        TxnId::from_uuid(uuid::Uuid::new_v7(ts)).expect("a v7 id")
    }

    /// P9: a retry keeps its first attempt's age, within bounds.
    #[test]
    fn a_retry_keeps_its_first_attempts_age_within_bounds() {
        let now = 1_790_000_000_000;
        let first = id_at(now - 5_000);
        let retry = id_at(now);
        let ctx = |first_attempt| TxnContext {
            txn_id: retry,
            deadline_unix_ms: None,
            first_attempt,
        };
        assert_eq!(ctx(None).age(), retry);
        assert_eq!(ctx(Some(first)).age(), first);
        // A "first attempt" younger than the retry, or too old, counts for nothing.
        assert_eq!(ctx(Some(id_at(now + 5_000))).age(), retry);
        let too_old = id_at(now - FIRST_ATTEMPT_AGE_MAX.as_millis() as u64 - 1_000);
        assert_eq!(ctx(Some(too_old)).age(), retry);
    }

    #[test]
    fn malformed_context_is_a_clear_error() {
        let mut md = MetadataMap::new();
        md.insert(TXN_ID, MetadataValue::from_static("not-a-uuid"));
        let err = TxnContext::from_metadata(&md).expect_err("malformed");
        assert!(err.to_string().contains(TXN_ID), "{err}");
        assert_eq!(err.to_status().code(), tonic::Code::InvalidArgument);

        let mut md = MetadataMap::new();
        ctx_attach_id(&mut md);
        md.insert(DEADLINE_MS, MetadataValue::from_static("soon"));
        assert!(TxnContext::from_metadata(&md).is_err());

        let mut md = MetadataMap::new();
        ctx_attach_id(&mut md);
        md.insert(FIRST_ATTEMPT, MetadataValue::from_static("yesterday"));
        let err = TxnContext::from_metadata(&md).expect_err("malformed first attempt");
        assert!(err.to_string().contains(FIRST_ATTEMPT), "{err}");

        assert_eq!(
            TxnContext::from_metadata(&MetadataMap::new()).expect("absent is fine"),
            None
        );
    }

    fn ctx_attach_id(md: &mut MetadataMap) {
        TxnContext::new(TxnId::new_v7()).attach(md);
    }
}
