//! A store's limits and timeouts ([`StoreConfig`]) and its counters ([`StoreStats`]).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::locks::LockPolicy;
use crate::error::{Error, Result};

/// Limits and timeouts of a store. Every field has a default; `validate` checks them.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Staged (unprepared) work older than this is aborted locally (P4).
    pub staged_timeout: Duration,
    /// Bytes of keys and values one transaction may stage.
    pub staged_bytes_per_txn_max: usize,
    /// Keys one transaction may write.
    pub keys_per_txn_max: usize,
    /// Transactions staged or prepared at once.
    pub concurrent_txns_max: usize,
    /// Largest key.
    pub key_bytes_max: usize,
    /// Largest value.
    pub value_bytes_max: usize,
    /// Rows one prefix scan returns, at most.
    pub scan_rows_max: usize,
    /// How long outcomes and tombstones are kept (they answer retries and refuse late work).
    pub outcome_retention: Duration,
    /// How many outcomes and tombstones are kept, at most (the oldest go first).
    pub outcomes_max: usize,
    /// Default lock wait for new transactions: `None` fails fast on a conflict.
    pub lock_wait: Option<Duration>,
    /// How waiting transactions avoid deadlock (P9): wound-wait (the default) or wait-die.
    pub lock_policy: LockPolicy,
    /// The largest clock difference assumed between an initiator and this participant. After
    /// a restart, a transaction that began earlier than the restart plus this margin is refused:
    /// its staged work here may have been lost (P4).
    pub clock_skew_max: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            staged_timeout: Duration::from_secs(60),
            staged_bytes_per_txn_max: 16 << 20,
            keys_per_txn_max: 10_000,
            concurrent_txns_max: 10_000,
            key_bytes_max: 4 << 10,
            value_bytes_max: 4 << 20,
            scan_rows_max: 10_000,
            outcome_retention: Duration::from_secs(24 * 3600),
            outcomes_max: 1_000_000,
            lock_wait: None,
            lock_policy: LockPolicy::default(),
            clock_skew_max: Duration::from_millis(500),
        }
    }
}

impl StoreConfig {
    /// Check the settings.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Context(format!("store config: {what}")));
        if self.staged_timeout.is_zero() {
            return bad("staged_timeout must be positive");
        }
        if self.keys_per_txn_max == 0 || self.concurrent_txns_max == 0 || self.scan_rows_max == 0 {
            return bad("limits must be positive");
        }
        if self.key_bytes_max == 0
            || self.value_bytes_max == 0
            || self.staged_bytes_per_txn_max == 0
        {
            return bad("size limits must be positive");
        }
        if self.outcomes_max == 0 {
            return bad("outcomes_max must be positive");
        }
        Ok(())
    }
}

/// Counters, for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Write-ahead-log fsyncs done.
    pub fsyncs: AtomicU64,
    /// Transactions prepared.
    pub prepared: AtomicU64,
    /// Transactions committed.
    pub committed: AtomicU64,
    /// Transactions aborted.
    pub aborted: AtomicU64,
}
