//! A deployment for end-to-end tests: a 3-node coordinator cluster and bank branches
//! (`ratify-bank`), all real processes on loopback, plus an initiator client in the test.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use crate::local_cluster::{LocalCluster, ServiceProcess};
use ratify_participant::{Client, ClientConfig, Transaction};
use ratify_proto::hooks::EndpointExt as _;
use ratify_proto::pb::bank as pbb;
use ratify_proto::pb::bank::bank_client::BankClient;
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::types::{Outcome, ParticipantId, TxnId, TxnPhase};
use tonic::transport::Channel;

use crate::{bank_bin, dump_logs, ratify_bin, test_dir};

/// How long a test waits for the system to reach a state.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Environment for a process.
pub type Env = Vec<(String, String)>;

/// Coordinators, bank branches and a client.
pub struct Deployment {
    /// The test's directory (data, logs, failpoint markers).
    pub dir: tempfile::TempDir,
    /// The coordinator cluster.
    pub cluster: LocalCluster,
    /// The branches by name (also their participant id).
    pub banks: BTreeMap<String, ServiceProcess>,
    /// The initiator's client.
    pub client: Client,
}

/// A branch's participant id.
pub fn pid(name: &str) -> ParticipantId {
    ParticipantId::new(name).expect("test branch names are valid participant ids")
}

impl Deployment {
    /// Start 3 coordinators (with `coordinator_env`) and the named branches (with
    /// `bank_env`), and wait until the branches are registered.
    pub async fn start(name: &str, branches: &[&str], coordinator_env: Env, bank_env: Env) -> Self {
        let dir = test_dir(name);
        let cluster =
            LocalCluster::start_with(&ratify_bin(), dir.path(), 3, vec![], coordinator_env)
                .await
                .unwrap_or_else(|e| {
                    dump_logs(dir.path());
                    panic!("cluster start: {e}")
                });
        cluster
            .wait_for_leader(SETTLE, None)
            .await
            .expect("a leader");
        let endpoints: Vec<String> = cluster.endpoints().iter().map(|e| e.to_string()).collect();
        let mut banks = BTreeMap::new();
        for b in branches {
            let args: Vec<OsString> = vec![
                "--id".into(),
                (*b).into(),
                "--data".into(),
                dir.path().join(format!("bank-{b}")).into(),
                "--coordinator".into(),
                endpoints.join(",").into(),
                "--resolve-after-ms".into(),
                "1000".into(),
            ];
            let mut p = ServiceProcess::new(
                &format!("bank-{b}"),
                &bank_bin(),
                args,
                bank_env.clone(),
                dir.path(),
            );
            p.start().await.unwrap_or_else(|e| {
                dump_logs(dir.path());
                panic!("bank start: {e}")
            });
            banks.insert((*b).to_owned(), p);
        }
        let client = Client::with_config(
            cluster.endpoints(),
            ClientConfig {
                txn_timeout: Duration::from_secs(5),
                ..ClientConfig::default()
            },
        )
        .expect("client");
        let d = Self {
            dir,
            cluster,
            banks,
            client,
        };
        d.wait_registered(branches).await;
        d
    }

    async fn wait_registered(&self, branches: &[&str]) {
        crate::wait::until("the branches to register", SETTLE, async || {
            let list = self
                .cluster
                .admin()
                .call_leader(|mut c| async move {
                    c.list_participants(pbco::ListParticipantsRequest {}).await
                })
                .await
                .ok()?;
            branches
                .iter()
                .all(|b| list.participants.iter().any(|p| p.participant_id == *b))
                .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Print every process's log (on failure).
    pub fn dump_logs(&self) {
        dump_logs(self.dir.path());
    }

    /// A client of a branch's Bank API.
    pub fn bank(&self, branch: &str) -> BankClient<Channel> {
        let endpoint = self.banks[branch]
            .endpoint()
            .expect("started branches have endpoints")
            .to_string();
        let channel = tonic::transport::Endpoint::from_shared(endpoint)
            .expect("valid endpoint")
            .lazy_channel();
        BankClient::new(channel)
    }

    /// Open an account in a transaction of its own (one participant: one-phase commit).
    pub async fn open_account(&self, branch: &str, account: &str, balance: i64) {
        let txn = self.client.begin();
        self.bank(branch)
            .open_account(txn.request(
                &pid(branch),
                pbb::OpenAccountRequest {
                    account: account.into(),
                    initial_balance: balance,
                },
            ))
            .await
            .expect("open account");
        assert_eq!(txn.commit().await.expect("commit"), Outcome::Committed);
    }

    /// An account's committed balance.
    pub async fn balance(&self, branch: &str, account: &str) -> i64 {
        self.bank(branch)
            .balance(pbb::BalanceRequest {
                account: account.into(),
            })
            .await
            .expect("balance")
            .into_inner()
            .balance
    }

    /// Stage a transfer: withdraw at `from`, deposit at `to`. Business errors (insufficient
    /// funds) are returned, not raised: the transaction can still be committed (and will abort).
    pub async fn stage_transfer(
        &self,
        txn: &Transaction,
        from: (&str, &str),
        to: (&str, &str),
        amount: i64,
    ) -> Vec<tonic::Status> {
        let mut errors = Vec::new();
        if let Err(s) = self
            .bank(from.0)
            .withdraw(txn.request(
                &pid(from.0),
                pbb::AmountRequest {
                    account: from.1.into(),
                    amount,
                },
            ))
            .await
        {
            errors.push(s);
        }
        if let Err(s) = self
            .bank(to.0)
            .deposit(txn.request(
                &pid(to.0),
                pbb::AmountRequest {
                    account: to.1.into(),
                    amount,
                },
            ))
            .await
        {
            errors.push(s);
        }
        errors
    }

    /// Wait until the coordinator reports `txn_id` completed (decided, and phase 2
    /// acknowledged by every participant: nobody is in doubt).
    pub async fn wait_completed(&self, txn_id: TxnId) -> Outcome {
        let completed = crate::wait::until(&format!("{txn_id} to complete"), SETTLE, async || {
            let s = self.client.status(txn_id).await.ok()?;
            (s.phase == TxnPhase::Completed).then_some(s.outcome)
        })
        .await;
        completed.unwrap_or_else(|e| {
            self.dump_logs();
            panic!("{e}")
        })
    }

    /// Stop everything.
    pub async fn stop(mut self) {
        for b in self.banks.values_mut() {
            let _ = b.stop().await;
        }
        self.cluster.stop_all().await;
    }
}
