//! Ratify: a 3-node coordinator cluster and two `ratify-bank` participant services, all
//! release-built processes on loopback with production defaults (fsync on) — or a deployment
//! given on the command line.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use ratify_devtools::deployment::Deployment;
use ratify_participant::{Client, Transaction};
use ratify_proto::pb::bank as pbb;
use ratify_proto::pb::bank::bank_client::BankClient;
use ratify_proto::types::{Endpoint, Outcome, ParticipantId};
use tonic::transport::Channel;

use super::{ATTEMPTS_MAX, Done, LOAD_CONCURRENCY, backoff, for_each_concurrent};
use crate::cpu::Groups;
use crate::workload::{BRANCHES, OPENING_BALANCE, Transfer, account_name};

/// Ratify under test.
pub struct RatifySystem {
    deployment: Option<Deployment>,
    client: Client,
    banks: [(ParticipantId, BankClient<Channel>); 2],
    accounts: u64,
}

/// Where an existing deployment runs.
pub struct External {
    /// Coordinator endpoints.
    pub coordinators: Vec<Endpoint>,
    /// The two bank services: (participant id, endpoint).
    pub branches: [(String, String); 2],
}

fn bank_client(endpoint: &str) -> Result<BankClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .with_context(|| format!("bad bank endpoint {endpoint:?}"))?
        .tcp_nodelay(true)
        .connect_lazy();
    Ok(BankClient::new(channel))
}

impl RatifySystem {
    /// Start a local deployment (or use `external`) and open `accounts` accounts per branch.
    pub async fn start(accounts: u64, external: Option<External>) -> Result<Self> {
        let (deployment, coordinators, branches) = match external {
            Some(e) => (None, e.coordinators, e.branches),
            None => {
                let d = Deployment::start("bench", &BRANCHES, vec![], vec![]).await;
                let endpoint = |b: &str| -> Result<String> {
                    Ok(d.banks[b]
                        .endpoint()
                        .context("a started branch has an endpoint")?
                        .to_string())
                };
                let branches = [
                    (BRANCHES[0].to_owned(), endpoint(BRANCHES[0])?),
                    (BRANCHES[1].to_owned(), endpoint(BRANCHES[1])?),
                ];
                let coordinators = d.cluster.endpoints();
                (Some(d), coordinators, branches)
            }
        };
        let client = Client::connect(coordinators)?;
        let [(id0, url0), (id1, url1)] = branches;
        let banks = [
            (ParticipantId::new(&id0)?, bank_client(&url0)?),
            (ParticipantId::new(&id1)?, bank_client(&url1)?),
        ];
        let s = Self {
            deployment,
            client,
            banks,
            accounts,
        };
        s.open_accounts().await?;
        Ok(s)
    }

    async fn open_accounts(&self) -> Result<()> {
        for (pid, bank) in &self.banks {
            for_each_concurrent(self.accounts, LOAD_CONCURRENCY, |n| {
                let mut bank = bank.clone();
                async move {
                    let txn = self.client.begin();
                    let opened = bank
                        .open_account(txn.request(
                            pid,
                            pbb::OpenAccountRequest {
                                account: account_name(n),
                                initial_balance: OPENING_BALANCE,
                            },
                        ))
                        .await;
                    match opened {
                        Ok(_) => match txn.commit().await? {
                            Outcome::Committed => Ok(()),
                            other => bail!("opening {} at {pid}: {other:?}", account_name(n)),
                        },
                        // Left from an earlier run against the same deployment: fine.
                        Err(s) if s.code() == tonic::Code::AlreadyExists => {
                            let _ = txn.abort("account exists").await;
                            Ok(())
                        }
                        Err(s) => bail!("opening {} at {pid}: {s}", account_name(n)),
                    }
                }
            })
            .await?;
        }
        Ok(())
    }

    /// What runs.
    pub fn describe(&self) -> String {
        match &self.deployment {
            Some(_) => "3 coordinators + 2 ratify-bank participants (local processes, release \
                        build, production defaults: fsync on, wound-wait locks with a 200 ms wait)"
                .to_owned(),
            None => "an existing deployment (given on the command line)".to_owned(),
        }
    }

    /// One leg: withdraw (negative change) or deposit at participant `branch`.
    async fn leg(
        &self,
        txn: &Transaction,
        branch: usize,
        account: u64,
        change: i64,
    ) -> Result<(), tonic::Status> {
        let (pid, bank) = &self.banks[branch];
        let mut bank = bank.clone();
        let req = pbb::AmountRequest {
            account: account_name(account),
            amount: change.abs(),
        };
        if change < 0 {
            bank.withdraw(txn.request(pid, req)).await.map(drop)
        } else {
            bank.deposit(txn.request(pid, req)).await.map(drop)
        }
    }

    /// Withdraw and deposit (concurrently: the two services are independent), then commit;
    /// after a conflict, retry as a new transaction that keeps the first attempt's age.
    pub async fn transfer(&self, t: &Transfer) -> Result<Done> {
        let [a, b] = t.legs();
        let mut first = None;
        for attempt in 0..ATTEMPTS_MAX {
            let txn = match first {
                None => self.client.begin(),
                Some(f) => self.client.begin_retry(f),
            };
            first = Some(txn.first_attempt());
            let (ra, rb) = futures_util::future::join(
                self.leg(&txn, a.0, a.1, a.2),
                self.leg(&txn, b.0, b.1, b.2),
            )
            .await;
            if let Err(s) = ra.and(rb) {
                // Release whatever the other leg staged, at once.
                let _ = txn.abort("a leg failed").await;
                if s.code() == tonic::Code::Aborted {
                    tokio::time::sleep(backoff(attempt + 1)).await;
                    continue;
                }
                bail!("transfer leg failed: {s}");
            }
            let start = Instant::now();
            match txn.commit().await? {
                Outcome::Committed => {
                    return Ok(Done {
                        commit: start.elapsed(),
                        conflicts: attempt,
                    });
                }
                // A NO vote (a staged write lost to a wait-die abort or its deadline).
                Outcome::Aborted(_) => tokio::time::sleep(backoff(attempt + 1)).await,
                Outcome::Unknown => bail!("commit outcome unknown"),
            }
        }
        bail!("transfer conflicted {ATTEMPTS_MAX} times")
    }

    /// Sum of every account's committed balance.
    pub async fn total_balance(&self) -> Result<i64> {
        let total = std::sync::atomic::AtomicI64::new(0);
        for (pid, bank) in &self.banks {
            for_each_concurrent(self.accounts, LOAD_CONCURRENCY, |n| {
                let mut bank = bank.clone();
                let total = &total;
                async move {
                    let b = bank
                        .balance(pbb::BalanceRequest {
                            account: account_name(n),
                        })
                        .await
                        .with_context(|| format!("balance of {} at {pid}", account_name(n)))?;
                    total.fetch_add(b.into_inner().balance, std::sync::atomic::Ordering::Relaxed);
                    Ok(())
                }
            })
            .await?;
        }
        Ok(total.into_inner())
    }

    /// Coordinators and participants (nothing when the deployment is external).
    pub fn cpu_groups(&self) -> Groups {
        let mut g = Groups::default();
        if let Some(d) = &self.deployment {
            g.add(
                "coordinators",
                d.cluster.nodes().filter_map(|(_, p)| p.pid()).collect(),
                true,
            );
            g.add(
                "participants",
                d.banks.values().filter_map(|p| p.pid()).collect(),
                true,
            );
        }
        g
    }

    /// Stop the local deployment.
    pub async fn stop(self) {
        if let Some(d) = self.deployment {
            d.stop().await;
        }
    }
}
