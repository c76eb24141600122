//! Ratify's participant SDK: what a service embeds to take part in distributed transactions.
//!
//! A service that owns data keeps it in a [`RocksStore`] (or its own store implementing
//! [`Resource`]). Its request handlers get the transaction's context from gRPC metadata, and
//! read and write through `store.txn(&ctx)` under strict two-phase locking. The participant
//! runtime answers the coordinator's Prepare / Commit / Abort, registers the service, and
//! resolves transactions left in doubt by a crash; its call guard ([`Participant::guard`])
//! wraps the service's own gRPC API. Initiators use [`Client`] to begin and commit
//! transactions.
//!
//! # The contract between handlers, the participant and the initiator
//!
//! docs/protocol.md rule P10 — PostgreSQL's rule (after an error in a transaction, COMMIT is
//! ROLLBACK), across services:
//!
//! - **A failed call dooms its transaction here.** Any error a handler returns for a call that
//!   carried a transaction context, and any error of a read or write through [`Txn`] (a lock
//!   conflict, a limit, a storage error), dooms the transaction at this participant: its staged
//!   writes and locks go at once, its later calls fail at once, and Prepare votes NO naming the
//!   failed call. An initiator that commits after an error gets ABORTED, never a transaction
//!   with a leg missing. A handler whose error is an answer, not a failure (a probe that finds
//!   nothing), returns [`harmless`]`(status)`; a store operation expected to fail goes through
//!   [`Txn::harmless_errors`]. Both are meant to stand out in review.
//! - **A call runs once.** Each call carries a call id (`ratify-call-id`); a repeat of it —
//!   a retry after a lost answer, a gRPC retry policy — is answered from the first attempt and
//!   never reaches the handler again. Handlers run to completion when their caller goes away.
//! - **The commit closes the door.** Once Prepare arrives, calls are refused; a call still
//!   running makes this participant vote NO. With the calls made to each participant in the
//!   Commit ([`Transaction::commit`] sends them), a call that never arrived aborts the
//!   transaction too.
//! - **The initiator** makes calls through [`Transaction::call`] (ids, retries of lost answers,
//!   failures remembered); [`Transaction::commit`] after a failed call aborts and says which.
//!
//! A non-Rust initiator sends, on each call, `ratify-txn-id`, `ratify-deadline-ms` and a
//! `ratify-call-id` of its own (the same on a retry), and on Commit the participants with
//! `call_counts` (`participant-sdk/bank-example/python/transfer.py`).
//!
//! # Layout
//! - [`store`]: the RocksDB store — staged writes in memory, durable prepare, one synced batch
//!   per commit or abort, group commit, recovery; [`store::locks`]: shared/exclusive locks with
//!   wound-wait (default) or wait-die. The same store runs over the deterministic simulation's
//!   in-memory disk ([`RocksStore::open_in_memory`]).
//! - [`resource`]: the trait the runtime drives; custom stores implement it.
//! - [`runtime`]: the participant gRPC service, registration, resolver, maintenance.
//! - [`guard`]: the call guard around a service's own API; [`calls`]: its record of each
//!   transaction's calls (P10).
//! - [`context`]: the transaction context in gRPC metadata.
//! - [`client`]: the initiator's client.
//! - `testing` (feature `testing`): the conformance suite any [`Resource`] must pass.
//!
//! # A transaction at one participant
//!
//! What the coordinator drives over the network, run by hand on a store:
//!
//! ```
//! use ratify_participant::{Resource, RocksStore, StoreConfig, TxnContext};
//! use ratify_proto::types::{TxnId, Vote};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = RocksStore::open(dir.path(), StoreConfig::default())?;
//!
//! // A handler, inside transaction `ctx`: reads see the transaction's own writes.
//! let ctx = TxnContext::new(TxnId::new_v7());
//! let txn = store.txn(&ctx)?;
//! txn.put(b"balance/alice", b"90").await?;
//! assert_eq!(txn.get(b"balance/alice").await?, Some(b"90".to_vec()));
//! assert_eq!(store.read_committed(b"balance/alice")?, None); // invisible until commit
//!
//! // The coordinator: phase 1, then phase 2.
//! assert_eq!(store.prepare(ctx.txn_id).await?, Vote::Yes); // durable before the vote
//! store.commit(ctx.txn_id).await?;
//! assert_eq!(store.read_committed(b"balance/alice")?, Some((1, b"90".to_vec())));
//! # Ok(())
//! # }
//! ```
//!
//! # Embedding in a service
//!
//! ```no_run
//! use std::sync::Arc;
//! use ratify_participant::{Participant, ParticipantConfig, RocksStore, StoreConfig, TxnContext};
//! use ratify_proto::types::{Endpoint, ParticipantId};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(RocksStore::open("/var/lib/payments".as_ref(), StoreConfig::default())?);
//! let config = ParticipantConfig::new(
//!     ParticipantId::new("payments")?,
//!     Endpoint::new("http://127.0.0.1:7100")?,
//!     vec![Endpoint::new("http://127.0.0.1:7001")?],
//! );
//! let participant = Participant::new(store.clone(), config)?;
//!
//! // Your own service's handlers call `store.txn(&TxnContext::from_request(&request)?)`.
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! let background = participant.spawn_background(); // registration, resolver, maintenance
//! tonic::transport::Server::builder()
//!     .add_service(participant.service())
//!     // Your own API, behind the call guard (P10):
//!     // .add_service(participant.guard(PaymentsServer::new(my_handlers)))
//!     .serve_with_shutdown("127.0.0.1:7100".parse()?, shutdown)
//!     .await?;
//! background.stop().await;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod calls;
pub mod client;
pub mod context;
pub mod error;
pub mod guard;
pub mod resource;
pub mod runtime;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{Client, ClientConfig, Transaction};
pub use context::TxnContext;
pub use error::{Error, Result};
pub use guard::{Guarded, harmless};
pub use resource::{InDoubt, Resource};
pub use runtime::{Background, Participant, ParticipantConfig};
pub use store::{LockPolicy, RocksStore, StoreConfig, Txn};
