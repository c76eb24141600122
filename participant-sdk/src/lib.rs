//! Ratify's participant SDK: what a service embeds to take part in distributed transactions.
//!
//! A service that owns data keeps it in a [`RocksStore`] (or its own store implementing
//! [`Resource`]). Its request handlers get the transaction's context from gRPC metadata, and
//! read and write through `store.txn(&ctx)` under strict two-phase locking. The participant
//! runtime answers the coordinator's Prepare / Commit / Abort, registers the service, and
//! resolves transactions left in doubt by a crash. Initiators use [`Client`] to begin and commit
//! transactions.
//!
//! # Layout
//! - [`store`]: the RocksDB store — staged writes in memory, durable prepare, one synced batch
//!   per commit or abort, group commit, recovery; [`store::locks`]: shared/exclusive locks with
//!   wound-wait (default) or wait-die. The same store runs over the deterministic simulation's
//!   in-memory disk ([`RocksStore::open_in_memory`]).
//! - [`resource`]: the trait the runtime drives; custom stores implement it.
//! - [`runtime`]: the participant gRPC service, registration, resolver, maintenance.
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
//!     // .add_service(PaymentsServer::new(my_handlers))
//!     .serve_with_shutdown("127.0.0.1:7100".parse()?, shutdown)
//!     .await?;
//! background.stop().await;
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod client;
pub mod context;
pub mod error;
pub mod resource;
pub mod runtime;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{Client, ClientConfig, Transaction};
pub use context::TxnContext;
pub use error::{Error, Result};
pub use resource::{InDoubt, Resource};
pub use runtime::{Background, Participant, ParticipantConfig};
pub use store::{LockPolicy, RocksStore, StoreConfig, Txn};
