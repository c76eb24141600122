//! The transaction context: which transaction a request belongs to, carried in gRPC metadata
//! (`ratify-txn-id`, `ratify-deadline-ms`; docs/protocol.md rule W8).
//!
//! On the participant side, [`TxnContext::from_request`] (or the [`require_context`]
//! interceptor) gives a handler its context. On the initiator side,
//! [`crate::client::Transaction::request`] attaches it.

use ratify_proto::metadata::{DEADLINE_MS, TXN_ID};
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
}

impl TxnContext {
    /// A context for `txn_id` with no deadline.
    pub fn new(txn_id: TxnId) -> Self {
        Self {
            txn_id,
            deadline_unix_ms: None,
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
        let deadline_unix_ms = match metadata.get(DEADLINE_MS) {
            None => None,
            Some(raw) => Some(
                raw.to_str()
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        Error::Context(format!("{DEADLINE_MS} is not a decimal number of ms"))
                    })?,
            ),
        };
        Ok(Some(Self {
            txn_id,
            deadline_unix_ms,
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
    }
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
        let ctx = TxnContext {
            txn_id: TxnId::new_v7(),
            deadline_unix_ms: Some(1_790_000_000_000),
        };
        let mut md = MetadataMap::new();
        ctx.attach(&mut md);
        assert_eq!(TxnContext::from_metadata(&md).expect("valid"), Some(ctx));
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

        assert_eq!(
            TxnContext::from_metadata(&MetadataMap::new()).expect("absent is fine"),
            None
        );
    }

    fn ctx_attach_id(md: &mut MetadataMap) {
        TxnContext::new(TxnId::new_v7()).attach(md);
    }
}
