//! The systems compared: each runs the same bank transfer its own way.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::cpu::Groups;
use crate::workload::Transfer;

pub mod etcd;
pub mod postgres;
pub mod ratify;

/// Attempts of one transfer before the bench gives up on it (and counts an error): conflicts
/// are retried, but a transfer that conflicts this often points at a livelock worth seeing.
pub const ATTEMPTS_MAX: u32 = 1_000;

/// Pause before retrying after a lock conflict, per attempt so far (capped at
/// [`RETRY_BACKOFF_CAP`]): an immediate retry would meet the same holder.
pub const RETRY_BACKOFF: Duration = Duration::from_micros(200);

/// Cap of the conflict back-off.
pub const RETRY_BACKOFF_CAP: Duration = Duration::from_millis(5);

/// How long a system waits for its servers to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Accounts opened/loaded concurrently when setting a system up.
pub const LOAD_CONCURRENCY: usize = 64;

/// A transfer that committed.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    /// How long the commit step took (Ratify's `commit()`, PostgreSQL's PREPARE, decision
    /// record and COMMIT PREPARED, etcd's conditional Txn) of the attempt that committed.
    pub commit: Duration,
    /// Attempts that lost to a conflict before this one committed.
    pub conflicts: u32,
}

/// The back-off before attempt `attempt + 1` after a conflict.
pub fn backoff(attempt: u32) -> Duration {
    (RETRY_BACKOFF * attempt).min(RETRY_BACKOFF_CAP)
}

/// One system under test (one of each per run: the size difference between variants does not
/// matter).
#[allow(clippy::large_enum_variant)]
pub enum System {
    /// Ratify: coordinators + two participant services.
    Ratify(ratify::RatifySystem),
    /// A 3-member etcd cluster holding both participants' accounts.
    Etcd(etcd::EtcdSystem),
    /// Two PostgreSQL clusters and an in-bench 2PC coordinator.
    Postgres(postgres::PgSystem),
}

impl System {
    /// Its short name.
    pub fn name(&self) -> &'static str {
        match self {
            System::Ratify(_) => "ratify",
            System::Etcd(_) => "etcd",
            System::Postgres(_) => "postgres",
        }
    }

    /// What runs, with which settings (for the report).
    pub fn describe(&self) -> String {
        match self {
            System::Ratify(s) => s.describe(),
            System::Etcd(s) => s.describe(),
            System::Postgres(s) => s.describe(),
        }
    }

    /// Run one transfer to commit for worker `worker` (retrying conflicts).
    pub async fn transfer(&self, worker: usize, t: &Transfer) -> Result<Done> {
        match self {
            System::Ratify(s) => s.transfer(t).await,
            System::Etcd(s) => s.transfer(worker, t).await,
            System::Postgres(s) => s.transfer(worker, t).await,
        }
    }

    /// The sum of every account's balance at both participants (conservation check).
    pub async fn total_balance(&self) -> Result<i64> {
        match self {
            System::Ratify(s) => s.total_balance().await,
            System::Etcd(s) => s.total_balance().await,
            System::Postgres(s) => s.total_balance().await,
        }
    }

    /// Its processes, by role (empty when it runs elsewhere).
    pub fn cpu_groups(&self) -> Groups {
        match self {
            System::Ratify(s) => s.cpu_groups(),
            System::Etcd(s) => s.cpu_groups(),
            System::Postgres(s) => s.cpu_groups(),
        }
    }

    /// Stop whatever the bench started.
    pub async fn stop(self) {
        match self {
            System::Ratify(s) => s.stop().await,
            System::Etcd(s) => s.stop().await,
            System::Postgres(s) => s.stop().await,
        }
    }
}

/// Run `f` over `0..n` with at most `concurrency` at once, failing on the first error.
pub async fn for_each_concurrent<F, Fut>(n: u64, concurrency: usize, f: F) -> Result<()>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    use futures_util::StreamExt;
    let mut results =
        futures_util::stream::iter((0..n).map(&f)).buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// Poll `probe` until it succeeds or [`START_TIMEOUT`] passes.
pub async fn wait_until<F, Fut, T>(what: &str, probe: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match probe().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                anyhow::bail!("{what} not ready after {START_TIMEOUT:?}: {e:#}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A free loopback TCP port (bound then released: the servers started next take them).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A log file for a server process in `dir`, for its stdout and stderr.
pub fn log_files(dir: &std::path::Path, name: &str) -> Result<(std::fs::File, std::fs::File)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let log2 = log.try_clone()?;
    Ok((log, log2))
}
