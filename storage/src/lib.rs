//! Ratify's storage engine, shared by the coordinator's node database and the participant
//! store: column families of ordered keys, written in atomic [`Batch`]es, over two engines
//! behind the same calls ([`Db`]), and one group-commit syncer ([`Syncer`]).
//!
//! # Engines
//! - **RocksDB** ([`Db::open`]): production. One database per store, the column families fixed
//!   at open, one write-ahead log shared by all of them.
//! - **The memory disk** ([`Db::memory`], [`MemDisk`]): the deterministic simulation's disk,
//!   and tests'. Same column families, keys, values and durability contract; it outlives the
//!   simulated process that uses it (a restart reopens the same disk) and starts no thread.
//!
//! # Crash semantics (both engines)
//! A write is visible at once and durable only once synced: a synced write, [`Db::sync_wal`]
//! or a [`Syncer`] round makes it **and every earlier write** durable (one shared write-ahead
//! log). A crash — SIGKILL of the process over RocksDB, [`MemDisk::crash`] over the memory
//! disk — keeps exactly the synced prefix and forgets the rest, as a power loss would.
//! [`Db::write_unlogged`] (planted bugs only) writes outside the log: never durable.
//!
//! # Group commit
//! A [`Syncer`] makes writes durable for many writers with one fsync: a writer writes its batch
//! unsynced, then waits on the syncer, which takes every waiter queued at that moment (at most
//! [`SYNC_BATCH_MAX`]), syncs once, and tells them all. Over RocksDB it is an OS thread; over
//! the memory disk a tokio task (an OS thread would break the simulation's determinism) that
//! takes [`SIMULATED_FSYNC`] of (simulated) time per sync, so a batch is visible before it is
//! durable and a crash can fall in between, as on a real disk.

mod engine;
pub mod memdisk;
mod syncer;

pub use engine::{Db, Row, StorageError};
pub use memdisk::{Batch, MemDisk, Op};
pub use syncer::{SIMULATED_FSYNC, SYNC_BATCH_MAX, SYNC_QUEUE_MAX, Syncer, Waiter};
