//! Ratify's wire contract.
//!
//! # Layout
//! - [`pb`]: code generated from `proto/ratify/**/*.proto` (clients and servers for the
//!   `Coordinator`, `Admin`, `Participant` and `Raft` services, and their messages).
//! - [`types`]: the domain types the rest of Ratify works with; valid by construction.
//! - [`convert`]: the one place that converts between the two. Wire → domain is `TryFrom` and
//!   names the offending field; domain → wire is `From`.
//! - [`error`]: [`error::ErrorDetail`], carried in every error status, and the conversion error.
//! - [`raft`] (feature `raft`): the Raft transport messages ↔ openraft's types.
//! - [`metadata`]: the gRPC metadata keys that carry a transaction's context.
//! - [`leader`]: calling a coordinator cluster's leader from outside (hints, retries).
//! - [`failpoint`]: crash points for tests (feature `failpoints`).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.

#![deny(missing_docs)]

pub mod convert;
pub mod dial;
pub mod error;
pub mod failpoint;
pub mod hooks;
pub mod leader;
pub mod planted;
#[cfg(feature = "raft")]
pub mod raft;
pub mod types;

/// Generated code, nested as the proto packages are (`pb::ratify::common::v1`, ...), with a
/// short alias per package.
#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
pub mod pb {
    /// The `ratify.*` packages.
    pub mod ratify {
        /// `ratify.common.*`
        pub mod common {
            /// `ratify.common.v1`: votes, decisions, outcomes, error details.
            pub mod v1 {
                tonic::include_proto!("ratify.common.v1");
            }
        }
        /// `ratify.coordinator.*`
        pub mod coordinator {
            /// `ratify.coordinator.v1`: the client API (`Coordinator`) and the admin API (`Admin`).
            pub mod v1 {
                tonic::include_proto!("ratify.coordinator.v1");
            }
        }
        /// `ratify.participant.*`
        pub mod participant {
            /// `ratify.participant.v1`: Prepare / Commit / Abort / CommitOnePhase.
            pub mod v1 {
                tonic::include_proto!("ratify.participant.v1");
            }
        }
        /// `ratify.jepsen.*`: the fault-injection harness's participant service.
        pub mod jepsen {
            /// `ratify.jepsen.v1`: a small transactional key-value store.
            pub mod v1 {
                tonic::include_proto!("ratify.jepsen.v1");
            }
        }
        /// `ratify.example.*`: example services built on the SDK.
        pub mod example {
            /// `ratify.example.bank.*`
            pub mod bank {
                /// `ratify.example.bank.v1`: the example bank branch service.
                pub mod v1 {
                    tonic::include_proto!("ratify.example.bank.v1");
                }
            }
        }
        /// `ratify.raft.*`
        pub mod raft {
            /// `ratify.raft.v1`: the Raft transport and the replicated commands.
            pub mod v1 {
                tonic::include_proto!("ratify.raft.v1");
            }
        }
    }
    pub use self::ratify::common::v1 as common;
    pub use self::ratify::coordinator::v1 as coordinator;
    pub use self::ratify::example::bank::v1 as bank;
    pub use self::ratify::jepsen::v1 as jepsen;
    pub use self::ratify::participant::v1 as participant;
    pub use self::ratify::raft::v1 as raft;
}

/// The encoded `FileDescriptorSet` of every Ratify proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/ratify_descriptor.bin"));

/// gRPC metadata keys that carry a transaction's context from an initiator to the participant
/// services it calls (docs/protocol.md rule W8).
pub mod metadata {
    /// The transaction id, canonical UUID text.
    pub const TXN_ID: &str = "ratify-txn-id";
    /// The transaction's deadline, ms since the Unix epoch, decimal.
    pub const DEADLINE_MS: &str = "ratify-deadline-ms";
    /// For a retry: the id of the first attempt it retries (canonical UUID text), whose age
    /// the retry keeps for the lock policy (P9).
    pub const FIRST_ATTEMPT: &str = "ratify-first-attempt";
    /// One business call of the transaction: 1–64 bytes of `[A-Za-z0-9._-]`, unique among the
    /// transaction's calls; a retry of the same call carries the same id, and the participant
    /// answers it from the first attempt's result instead of running it again (P10).
    pub const CALL_ID: &str = "ratify-call-id";
    /// On an error response: the participant's handler declared the error harmless, so the
    /// transaction was not doomed there (P10). Absent on every other error.
    pub const HARMLESS: &str = "ratify-harmless";
    /// On an error response to a call that carried a transaction context and was not declared
    /// harmless: the transaction is doomed at that participant and can no longer commit (P10).
    pub const DOOMED: &str = "ratify-doomed";
}
