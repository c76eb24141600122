//! PostgreSQL's native two-phase commit, driven the way a plain XA coordinator drives it: two
//! local PostgreSQL clusters (one per participant, Debian's `postgresql`, defaults: fsync and
//! synchronous_commit on), and the coordinator inside the bench. A transfer updates one row on
//! each cluster (the "eu" side first, so two transfers never wait on each other in a cycle),
//! runs PREPARE TRANSACTION on both, appends its COMMIT decision to a log file that is
//! fdatasynced before COMMIT PREPARED goes to both. The decision log group-commits (one
//! fdatasync serves every decision waiting), which is the strongest version of this baseline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::{ATTEMPTS_MAX, Done, LOAD_CONCURRENCY, backoff, free_port, log_files, wait_until};
use crate::cpu::Groups;
use crate::workload::{OPENING_BALANCE, Transfer};

/// Decisions queued for the log, at most (senders wait beyond it).
const DECISION_QUEUE_MAX: usize = 4_096;

/// Decisions written per fdatasync, at most.
const DECISION_BATCH_MAX: usize = 1_024;

/// A prepared transaction waits this long for a row lock before it errors (a safety net:
/// the fixed eu-then-us order means no cycle can form).
const LOCK_TIMEOUT_MS: u32 = 5_000;

/// Where Debian keeps PostgreSQL's server binaries: `/usr/lib/postgresql/<major>/bin`
/// (`$RATIFY_BENCH_PG_BIN` overrides). The newest major installed is used.
pub fn binaries() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RATIFY_BENCH_PG_BIN") {
        let p = PathBuf::from(p);
        return p.join("postgres").exists().then_some(p);
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").exists())
        .collect();
    majors.sort();
    majors.pop().map(|(_, bin)| bin)
}

/// A decision waiting for the log, and who to tell once it is on disk.
type Pending = (String, tokio::sync::oneshot::Sender<std::io::Result<()>>);

/// The coordinator's decision log: COMMIT records appended and fdatasynced before phase 2.
struct DecisionLog {
    tx: tokio::sync::mpsc::Sender<Pending>,
}

impl DecisionLog {
    fn open(path: &Path) -> Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(DECISION_QUEUE_MAX);
        std::thread::Builder::new()
            .name("decision-log".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut batch = vec![first];
                    while batch.len() < DECISION_BATCH_MAX {
                        match rx.try_recv() {
                            Ok(d) => batch.push(d),
                            Err(_) => break,
                        }
                    }
                    let mut buf = String::new();
                    for (gid, _) in &batch {
                        buf.push_str("COMMIT ");
                        buf.push_str(gid);
                        buf.push('\n');
                    }
                    let r = file
                        .write_all(buf.as_bytes())
                        .and_then(|()| file.sync_data());
                    for (_, done) in batch {
                        let _ = done.send(match &r {
                            Ok(()) => Ok(()),
                            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                        });
                    }
                }
            })?;
        Ok(Self { tx })
    }

    /// Record COMMIT for `gid`; returns once it is on disk.
    async fn commit(&self, gid: String) -> Result<()> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.tx
            .send((gid, done))
            .await
            .map_err(|_| anyhow::anyhow!("decision log stopped"))?;
        wait.await??;
        Ok(())
    }
}

/// PostgreSQL 2PC under test.
pub struct PgSystem {
    dir: tempfile::TempDir,
    bin: PathBuf,
    servers: Vec<Child>,
    /// Per worker, a connection to each cluster ("eu", "us").
    conns: Vec<[Client; 2]>,
    log: DecisionLog,
    next_gid: AtomicU64,
}

/// Whether this process runs as root (PostgreSQL refuses to).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn id_of(flag: &str) -> Result<u32> {
    let out = std::process::Command::new("id")
        .args([flag, "postgres"])
        .output()
        .context("running id")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("no 'postgres' user (Debian's postgresql package creates it)")
}

/// `bin/name` as a command, run as the `postgres` user when the bench is root (`setpriv`
/// execs in place, so the child's pid is PostgreSQL's own).
fn command(bin: &Path, name: &str) -> Command {
    if running_as_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(bin.join(name));
        c
    } else {
        Command::new(bin.join(name))
    }
}

async fn connect(port: u16) -> Result<Client> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect(NoTls)
        .await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Rows the simple query's last statement affected.
fn affected(messages: &[SimpleQueryMessage]) -> u64 {
    messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0)
}

/// Attempts of a COMMIT PREPARED after the decision is durable (a coordinator must not give
/// up: the prepared transaction holds its locks until it is told).
const COMMIT_PREPARED_ATTEMPTS: u32 = 50;

/// Phase 2 of one side: retried, since the COMMIT decision is on disk.
async fn commit_prepared(conn: &Client, sql: &str) -> Result<()> {
    let mut last = None;
    for attempt in 0..COMMIT_PREPARED_ATTEMPTS {
        match conn.batch_execute(sql).await {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(backoff(attempt + 1)).await;
    }
    Err(anyhow::anyhow!(
        "COMMIT PREPARED failed {COMMIT_PREPARED_ATTEMPTS} times: {last:?}"
    ))
}

/// Whether a database error is a lost lock race worth retrying.
fn is_conflict(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        [
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::QUERY_CANCELED,
        ]
        .contains(c)
    })
}

impl PgSystem {
    /// initdb and start two clusters, load `accounts` rows in each, and open
    /// `connections` connections per cluster.
    pub async fn start(bin: &Path, accounts: u64, connections: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ratify-bench-pg-")
            .tempdir()?;
        if running_as_root() {
            std::os::unix::fs::chown(dir.path(), Some(id_of("-u")?), Some(id_of("-g")?))
                .context("handing the data directory to the postgres user")?;
        }
        let max_connections = connections + 10;
        let mut servers = Vec::new();
        let mut ports = Vec::new();
        for name in ["pg-eu", "pg-us"] {
            let data = dir.path().join(name);
            let (out, err) = log_files(dir.path(), name)?;
            let status = command(bin, "initdb")
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
                .stdout(out)
                .stderr(err)
                .status()
                .await
                .context("running initdb")?;
            if !status.success() {
                bail!(
                    "initdb failed ({status}); see {}",
                    dir.path().join(format!("{name}.log")).display()
                );
            }
            let port = free_port()?;
            let (out, err) = log_files(dir.path(), name)?;
            let server = command(bin, "postgres")
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .arg("-c")
                .arg(format!("unix_socket_directories={}", dir.path().display()))
                .arg("-c")
                .arg(format!("max_connections={max_connections}"))
                .arg("-c")
                .arg(format!("max_prepared_transactions={max_connections}"))
                .arg("-c")
                .arg(format!("lock_timeout={LOCK_TIMEOUT_MS}"))
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .kill_on_drop(true)
                .spawn()
                .context("starting postgres")?;
            servers.push(server);
            ports.push(port);
        }
        for &port in &ports {
            let c = wait_until("postgres", || connect(port)).await?;
            c.batch_execute(&format!(
                "CREATE TABLE accounts (id integer PRIMARY KEY, balance bigint NOT NULL);
                 INSERT INTO accounts SELECT g, {OPENING_BALANCE} FROM generate_series(0, {}) g;",
                accounts.saturating_sub(1)
            ))
            .await
            .context("loading accounts")?;
        }
        let mut conns = Vec::with_capacity(connections);
        while conns.len() < connections {
            let batch = (connections - conns.len()).min(LOAD_CONCURRENCY);
            let opened = futures_util::future::try_join_all((0..batch).map(|_| async {
                Ok::<_, anyhow::Error>([connect(ports[0]).await?, connect(ports[1]).await?])
            }))
            .await?;
            conns.extend(opened);
        }
        let log = DecisionLog::open(&dir.path().join("decisions.log"))?;
        Ok(Self {
            dir,
            bin: bin.to_owned(),
            servers,
            conns,
            log,
            next_gid: AtomicU64::new(0),
        })
    }

    /// What runs.
    pub fn describe(&self) -> String {
        format!(
            "2 PostgreSQL clusters ({}, defaults: fsync and synchronous_commit on), \
             PREPARE TRANSACTION on both, decision fdatasynced by the bench's coordinator \
             (group commit), COMMIT PREPARED on both",
            self.bin.display()
        )
    }

    /// Undo phase 1 on both connections (whatever state each is in).
    async fn roll_back(conns: &[Client; 2], gid: &str, prepared: [bool; 2]) {
        for (c, p) in conns.iter().zip(prepared) {
            let sql = if p {
                format!("ROLLBACK PREPARED '{gid}'")
            } else {
                "ROLLBACK".to_owned()
            };
            let _ = c.batch_execute(&sql).await;
        }
    }

    /// Update both rows, prepare both, log the decision, commit both.
    pub async fn transfer(&self, worker: usize, t: &Transfer) -> Result<Done> {
        let conns = self
            .conns
            .get(worker)
            .context("more workers than connections")?;
        let legs = t.legs();
        for attempt in 0..ATTEMPTS_MAX {
            let gid = format!("rb-{}", self.next_gid.fetch_add(1, Ordering::Relaxed));
            // Phase 0: the business updates, eu first (one round trip each).
            let mut failed = None;
            for ((_, account, change), c) in legs.iter().zip(conns) {
                let guard = if *change < 0 {
                    format!(" AND balance >= {}", -change)
                } else {
                    String::new()
                };
                let sql = format!(
                    "BEGIN; UPDATE accounts SET balance = balance + {change} WHERE id = {account}{guard}"
                );
                match c.simple_query(&sql).await {
                    Ok(m) if affected(&m) == 1 => {}
                    Ok(_) => {
                        failed = Some(anyhow::anyhow!(
                            "account {account} missing or short of funds"
                        ));
                        break;
                    }
                    Err(e) => {
                        failed = Some(e.into());
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                Self::roll_back(conns, &gid, [false, false]).await;
                match e.downcast_ref::<tokio_postgres::Error>() {
                    Some(pe) if is_conflict(pe) => {
                        tokio::time::sleep(backoff(attempt + 1)).await;
                        continue;
                    }
                    _ => return Err(e),
                }
            }
            // Phase 1: prepare both at once.
            let start = Instant::now();
            let prepare = format!("PREPARE TRANSACTION '{gid}'");
            let (pa, pb) = futures_util::future::join(
                conns[0].batch_execute(&prepare),
                conns[1].batch_execute(&prepare),
            )
            .await;
            // A PREPARE that failed without a database error (the connection broke) may
            // have happened: roll that side back as prepared too (harmless if it was not).
            let prepared = [
                pa.as_ref().map_or_else(|e| e.code().is_none(), |_| true),
                pb.as_ref().map_or_else(|e| e.code().is_none(), |_| true),
            ];
            if let Err(e) = pa.and(pb) {
                Self::roll_back(conns, &gid, prepared).await;
                if is_conflict(&e) {
                    tokio::time::sleep(backoff(attempt + 1)).await;
                    continue;
                }
                return Err(e.into());
            }
            // The decision, durable before phase 2; without it, the answer is ABORT.
            if let Err(e) = self.log.commit(gid.clone()).await {
                Self::roll_back(conns, &gid, [true, true]).await;
                return Err(e.context("the decision log"));
            }
            let commit = format!("COMMIT PREPARED '{gid}'");
            let (ca, cb) = futures_util::future::join(
                commit_prepared(&conns[0], &commit),
                commit_prepared(&conns[1], &commit),
            )
            .await;
            ca.and(cb)?;
            return Ok(Done {
                commit: start.elapsed(),
                conflicts: attempt,
            });
        }
        bail!("transfer conflicted {ATTEMPTS_MAX} times")
    }

    /// Sum of both clusters' balances.
    pub async fn total_balance(&self) -> Result<i64> {
        let mut total = 0;
        for c in self.conns.first().context("no connection")? {
            let row = c
                .query_one(
                    "SELECT coalesce(sum(balance), 0)::bigint FROM accounts",
                    &[],
                )
                .await?;
            total += row.get::<_, i64>(0);
        }
        Ok(total)
    }

    /// The two clusters, backends included.
    pub fn cpu_groups(&self) -> Groups {
        let mut g = Groups::default();
        g.add(
            "postgres clusters",
            self.servers.iter().filter_map(Child::id).collect(),
            true,
        );
        g
    }

    /// Fast shutdown of both clusters (SIGINT), then their directory goes.
    pub async fn stop(mut self) {
        drop(std::mem::take(&mut self.conns));
        for s in &mut self.servers {
            if let Some(pid) = s.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.wait()).await;
            let _ = s.kill().await;
        }
        drop(self.dir);
    }
}
