//! A bank branch as a Ratify participant: the reference for embedding the SDK.
//!
//! Each branch (`accounts-eu`, `accounts-us`, ...) is its own process with its own RocksDB
//! directory. Its `Bank` gRPC handlers take the transaction context from the request, and read
//! and write balances through `store.txn(&ctx)` — under locks, invisible to others until the
//! coordinator commits. A withdrawal that would overdraw marks the transaction as refused
//! (`txn.reject`): this branch then votes NO and the transfer aborts everywhere.
//!
//! The service is served behind the participant's call guard (`participant.guard(..)`, in
//! `main.rs`; docs/protocol.md P10): any error a handler returns for a call in a transaction —
//! a deposit to a missing account, a lock conflict — dooms the transaction at this branch, so
//! an initiator that commits anyway gets ABORTED, never a transfer with one leg. `Balance`
//! inside a transaction is a read that may legitimately find nothing: its `NOT_FOUND` is
//! declared harmless (`ratify_participant::harmless`) and dooms nothing.

#![deny(missing_docs)]

use std::time::Duration;

use ratify_participant::{RocksStore, Txn, TxnContext, harmless};
use ratify_proto::pb::bank as pb;
use ratify_proto::pb::bank::bank_server::Bank;
use tonic::{Request, Response, Status};

/// Longest account name, in bytes.
pub const ACCOUNT_LEN_MAX: usize = 64;
/// Accounts listed by ListAccounts, at most.
pub const LIST_ACCOUNTS_MAX: usize = 100_000;

const PREFIX: &[u8] = b"acct/";

fn key(account: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(account.as_bytes());
    k
}

fn encode(balance: i64) -> [u8; 8] {
    balance.to_be_bytes()
}

#[allow(clippy::result_large_err)] // tonic::Status
fn decode(account: &str, bytes: &[u8]) -> Result<i64, Status> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| {
        Status::data_loss(format!("account {account}: stored balance is not 8 bytes"))
    })?;
    Ok(i64::from_be_bytes(b))
}

#[allow(clippy::result_large_err)] // tonic::Status
fn check_account(account: &str) -> Result<(), Status> {
    if account.is_empty() || account.len() > ACCOUNT_LEN_MAX {
        return Err(Status::invalid_argument(format!(
            "account: 1 to {ACCOUNT_LEN_MAX} bytes, got {}",
            account.len()
        )));
    }
    Ok(())
}

#[allow(clippy::result_large_err)] // tonic::Status
fn check_amount(amount: i64) -> Result<(), Status> {
    if amount <= 0 {
        return Err(Status::invalid_argument(format!(
            "amount must be positive, got {amount}"
        )));
    }
    Ok(())
}

/// The branch's `Bank` service.
pub struct Branch {
    store: RocksStore,
    lock_wait: Option<Duration>,
}

impl Branch {
    /// A branch over `store`; a transaction waits up to `lock_wait` for a lock held by a
    /// younger one (wait-die), `None` to fail fast.
    pub fn new(store: RocksStore, lock_wait: Option<Duration>) -> Self {
        Self { store, lock_wait }
    }

    #[allow(clippy::result_large_err)] // tonic::Status
    fn txn<T>(&self, request: &Request<T>) -> Result<Txn, Status> {
        let ctx = TxnContext::from_request(request)?;
        Ok(self.store.txn(&ctx)?.with_lock_wait(self.lock_wait))
    }

    async fn balance_in(&self, txn: &Txn, account: &str) -> Result<i64, Status> {
        match txn.get(&key(account)).await? {
            Some(bytes) => decode(account, &bytes),
            None => Err(Status::not_found(format!("no account {account}"))),
        }
    }
}

fn reply(account: String, balance: i64) -> Response<pb::AccountReply> {
    Response::new(pb::AccountReply { account, balance })
}

#[tonic::async_trait]
impl Bank for Branch {
    async fn open_account(
        &self,
        request: Request<pb::OpenAccountRequest>,
    ) -> Result<Response<pb::AccountReply>, Status> {
        let txn = self.txn(&request)?;
        let req = request.into_inner();
        check_account(&req.account)?;
        if req.initial_balance < 0 {
            return Err(Status::invalid_argument(
                "initial_balance must not be negative",
            ));
        }
        if txn.get(&key(&req.account)).await?.is_some() {
            return Err(Status::already_exists(format!(
                "account {} exists",
                req.account
            )));
        }
        txn.put(&key(&req.account), &encode(req.initial_balance))
            .await?;
        Ok(reply(req.account, req.initial_balance))
    }

    async fn deposit(
        &self,
        request: Request<pb::AmountRequest>,
    ) -> Result<Response<pb::AccountReply>, Status> {
        let txn = self.txn(&request)?;
        let req = request.into_inner();
        check_account(&req.account)?;
        check_amount(req.amount)?;
        let balance = self.balance_in(&txn, &req.account).await?;
        let new = balance
            .checked_add(req.amount)
            .ok_or_else(|| Status::invalid_argument("the balance would overflow"))?;
        txn.put(&key(&req.account), &encode(new)).await?;
        Ok(reply(req.account, new))
    }

    async fn withdraw(
        &self,
        request: Request<pb::AmountRequest>,
    ) -> Result<Response<pb::AccountReply>, Status> {
        let txn = self.txn(&request)?;
        let req = request.into_inner();
        check_account(&req.account)?;
        check_amount(req.amount)?;
        let balance = self.balance_in(&txn, &req.account).await?;
        if balance < req.amount {
            // This branch will vote NO: the whole transfer aborts, on every branch.
            txn.reject(format!("insufficient funds in {}", req.account))?;
            return Err(Status::failed_precondition(format!(
                "insufficient funds in {}: balance {balance}, asked {}",
                req.account, req.amount
            )));
        }
        let new = balance - req.amount;
        txn.put(&key(&req.account), &encode(new)).await?;
        Ok(reply(req.account, new))
    }

    async fn balance(
        &self,
        request: Request<pb::BalanceRequest>,
    ) -> Result<Response<pb::AccountReply>, Status> {
        let ctx = TxnContext::from_metadata(request.metadata())?;
        let account = request.into_inner().account;
        check_account(&account)?;
        let balance = match ctx {
            Some(ctx) => {
                let txn = self.store.txn(&ctx)?.with_lock_wait(self.lock_wait);
                match txn.get(&key(&account)).await? {
                    Some(bytes) => decode(&account, &bytes)?,
                    // An answer, not a failure: the transaction may go on (P10).
                    None => {
                        return Err(harmless(Status::not_found(format!("no account {account}"))));
                    }
                }
            }
            None => match self.store.read_committed(&key(&account))? {
                Some((_, bytes)) => decode(&account, &bytes)?,
                None => return Err(Status::not_found(format!("no account {account}"))),
            },
        };
        Ok(reply(account, balance))
    }

    async fn list_accounts(
        &self,
        _request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsReply>, Status> {
        let rows = self
            .store
            .scan_committed(PREFIX, LIST_ACCOUNTS_MAX)
            .map_err(|e| e.to_status())?;
        let mut accounts = Vec::with_capacity(rows.len());
        for (k, v) in rows {
            let account = String::from_utf8_lossy(&k[PREFIX.len()..]).into_owned();
            let balance = decode(&account, &v)?;
            accounts.push(pb::AccountReply { account, balance });
        }
        Ok(Response::new(pb::ListAccountsReply { accounts }))
    }
}
