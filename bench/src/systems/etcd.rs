//! etcd, the shared-database strategy: both participants' accounts live in one 3-member etcd
//! cluster (Debian's `etcd-server`, started by the bench on loopback with its defaults: every
//! write fsynced on a majority). A transfer reads both balances and their mod revisions in one
//! Txn, then writes both in a Txn guarded by `mod_revision` compares; on a lost race the Txn's
//! failure branch returns fresh values and the transfer retries at once (clientv3's STM does
//! the same).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use super::{
    ATTEMPTS_MAX, Done, LOAD_CONCURRENCY, for_each_concurrent, free_port, log_files, wait_until,
};
use crate::cpu::Groups;
use crate::etcdpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::etcdpb::kv_client::KvClient;
use crate::etcdpb::request_op::Request;
use crate::etcdpb::response_op::Response;
use crate::etcdpb::{Compare, KeyValue, PutRequest, RangeRequest, RequestOp, TxnRequest};
use crate::workload::{BRANCHES, OPENING_BALANCE, Transfer, account_name};

/// Where Debian's `etcd-server` puts the binary (`$RATIFY_BENCH_ETCD` overrides).
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// Members of the cluster.
pub const MEMBERS: usize = 3;

/// Puts per Txn when loading accounts (etcd's default `--max-txn-ops` is 128).
const LOAD_BATCH: u64 = 100;

/// etcd under test.
pub struct EtcdSystem {
    _dir: tempfile::TempDir,
    members: Vec<Child>,
    clients: Vec<KvClient<Channel>>,
    accounts: u64,
}

/// The binary to run, if installed.
pub fn binary() -> Option<std::path::PathBuf> {
    let p: std::path::PathBuf =
        std::env::var_os("RATIFY_BENCH_ETCD").map_or_else(|| ETCD_BIN.into(), Into::into);
    p.exists().then_some(p)
}

fn key(branch: usize, account: u64) -> Vec<u8> {
    format!("{}/{}", BRANCHES[branch], account_name(account)).into_bytes()
}

fn range(key: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key,
            ..RangeRequest::default()
        })),
    }
}

fn put(key: Vec<u8>, value: i64) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key,
            value: value.to_string().into_bytes(),
            ..PutRequest::default()
        })),
    }
}

/// The single key-value each Range response of a Txn carries.
fn kvs_of(responses: Vec<crate::etcdpb::ResponseOp>) -> Result<Vec<KeyValue>> {
    responses
        .into_iter()
        .map(|r| match r.response {
            Some(Response::ResponseRange(mut rr)) if rr.kvs.len() == 1 => Ok(rr.kvs.swap_remove(0)),
            other => bail!("expected one key-value in a Range response, got {other:?}"),
        })
        .collect()
}

fn balance(kv: &KeyValue) -> Result<i64> {
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!(
                "malformed balance {:?}",
                kv.value.escape_ascii().to_string()
            )
        })
}

impl EtcdSystem {
    /// Start a 3-member cluster in a fresh directory and load `accounts` per participant.
    pub async fn start(bin: &Path, accounts: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("ratify-bench-etcd-")
            .tempdir()?;
        let ports: Vec<(u16, u16)> = (0..MEMBERS)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<Result<_>>()?;
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let (out, err) = log_files(dir.path(), &format!("etcd-{name}"))?;
            let child = Command::new(bin)
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.path().join(&name))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster={initial_cluster}"))
                .args([
                    "--initial-cluster-state=new",
                    "--initial-cluster-token=ratify-bench",
                    "--logger=zap",
                    "--log-level=warn",
                ])
                .stdin(std::process::Stdio::null())
                .stdout(out)
                .stderr(err)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            members.push(child);
        }
        let clients: Vec<KvClient<Channel>> = ports
            .iter()
            .map(|(client, _)| {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{client}"))?
                        .tcp_nodelay(true)
                        .connect_lazy();
                Ok(KvClient::new(channel))
            })
            .collect::<Result<_>>()?;
        for c in &clients {
            wait_until("etcd member", || {
                let mut c = c.clone();
                async move {
                    c.put(PutRequest {
                        key: b"ratify-bench/ready".to_vec(),
                        value: b"1".to_vec(),
                        ..PutRequest::default()
                    })
                    .await?;
                    Ok(())
                }
            })
            .await?;
        }
        let s = Self {
            _dir: dir,
            members,
            clients,
            accounts,
        };
        s.load().await?;
        Ok(s)
    }

    async fn load(&self) -> Result<()> {
        let batches = self.accounts.div_ceil(LOAD_BATCH);
        for branch in 0..BRANCHES.len() {
            for_each_concurrent(batches, LOAD_CONCURRENCY / 8, |b| {
                let mut c = self.clients[0].clone();
                async move {
                    let success = (b * LOAD_BATCH..((b + 1) * LOAD_BATCH).min(self.accounts))
                        .map(|n| put(key(branch, n), OPENING_BALANCE))
                        .collect();
                    c.txn(TxnRequest {
                        success,
                        ..TxnRequest::default()
                    })
                    .await?;
                    Ok(())
                }
            })
            .await?;
        }
        Ok(())
    }

    /// What runs.
    pub fn describe(&self) -> String {
        format!(
            "{MEMBERS}-member etcd cluster ({ETCD_BIN}, defaults: WAL fsync on every commit), \
             read-then-Txn with mod_revision compares, retried on conflict"
        )
    }

    /// Read both balances, then write both if neither changed; retry with the fresh values
    /// the failure branch returns.
    pub async fn transfer(&self, worker: usize, t: &Transfer) -> Result<Done> {
        let mut c = self.clients[worker % self.clients.len()].clone();
        let [a, b] = t.legs();
        let (ka, kb) = (key(a.0, a.1), key(b.0, b.1));
        let read = c
            .txn(TxnRequest {
                success: vec![range(ka.clone()), range(kb.clone())],
                ..TxnRequest::default()
            })
            .await?
            .into_inner();
        let mut kvs = kvs_of(read.responses)?;
        for attempt in 0..ATTEMPTS_MAX {
            let (va, vb) = (balance(&kvs[0])? + a.2, balance(&kvs[1])? + b.2);
            if va < 0 || vb < 0 {
                bail!("insufficient funds (the bench's opening balances should prevent this)");
            }
            let guard = |kv: &KeyValue| Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: kv.key.clone(),
                target_union: Some(TargetUnion::ModRevision(kv.mod_revision)),
                ..Compare::default()
            };
            // Same key twice (a transfer within one participant cannot happen: legs differ).
            let start = Instant::now();
            let reply = c
                .txn(TxnRequest {
                    compare: vec![guard(&kvs[0]), guard(&kvs[1])],
                    success: vec![put(ka.clone(), va), put(kb.clone(), vb)],
                    failure: vec![range(ka.clone()), range(kb.clone())],
                })
                .await?
                .into_inner();
            if reply.succeeded {
                return Ok(Done {
                    commit: start.elapsed(),
                    conflicts: attempt,
                });
            }
            kvs = kvs_of(reply.responses)?;
        }
        bail!("transfer conflicted {ATTEMPTS_MAX} times")
    }

    /// Sum of every account's balance (one linearizable Range per participant).
    pub async fn total_balance(&self) -> Result<i64> {
        let mut total = 0;
        for branch in BRANCHES {
            let prefix = format!("{branch}/").into_bytes();
            let mut end = prefix.clone();
            if let Some(last) = end.last_mut() {
                *last += 1;
            }
            let mut c = self.clients[0].clone();
            let reply = c
                .range(RangeRequest {
                    key: prefix,
                    range_end: end,
                    ..RangeRequest::default()
                })
                .await?
                .into_inner();
            if reply.kvs.len() as u64 != self.accounts {
                bail!(
                    "{} accounts under {branch}/, expected {}",
                    reply.kvs.len(),
                    self.accounts
                );
            }
            for kv in &reply.kvs {
                total += balance(kv)?;
            }
        }
        Ok(total)
    }

    /// The members.
    pub fn cpu_groups(&self) -> Groups {
        let mut g = Groups::default();
        g.add(
            "etcd members",
            self.members.iter().filter_map(Child::id).collect(),
            true,
        );
        g
    }

    /// Kill the members (their data directory goes with the bench's temporary directory).
    pub async fn stop(mut self) {
        for m in &mut self.members {
            let _ = m.kill().await;
        }
    }
}
