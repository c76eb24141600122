//! The harness's participant service (`ratify-jepsen-node`): a small transactional key-value
//! store on the participant SDK's RocksDB store, with the operations the workloads need.
//!
//! Values: integers as 8 big-endian bytes (`acct/NAME`), strings as UTF-8 (`marker/TXN`),
//! lists as concatenated 8-byte big-endian elements (`list/K`). [`decode`] turns a dumped
//! entry back into JSON for the checkers.

use std::time::Duration;

use ratify_participant::{Resource, RocksStore, Txn, TxnContext};
use ratify_proto::pb::jepsen as pb;
use ratify_proto::pb::jepsen::jepsen_kv_server::JepsenKv;
use tonic::{Request, Response, Status};

/// Longest key, in bytes.
pub const KEY_LEN_MAX: usize = 128;
/// Longest list, in elements (a list-append key is retired by the workload long before).
pub const LIST_LEN_MAX: usize = 100_000;
/// Keys read in one call, at most.
pub const READ_KEYS_MAX: usize = 1_000;
/// Entries returned by one Dump, at most; a participant holding more refuses the Dump rather
/// than return part of its data (the checkers would read the rest as lost).
pub const DUMP_ENTRIES_MAX: usize = 1_000_000;
/// Largest Dump reply, in bytes.
pub const DUMP_BYTES_MAX: usize = 512 * 1024 * 1024;

#[allow(clippy::result_large_err)] // tonic::Status
fn check_key(key: &str) -> Result<(), Status> {
    if key.is_empty() || key.len() > KEY_LEN_MAX {
        return Err(Status::invalid_argument(format!(
            "key: 1 to {KEY_LEN_MAX} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}

#[allow(clippy::result_large_err)] // tonic::Status
fn decode_int(key: &str, bytes: &[u8]) -> Result<i64, Status> {
    let b: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Status::data_loss(format!("{key}: stored integer is not 8 bytes")))?;
    Ok(i64::from_be_bytes(b))
}

#[allow(clippy::result_large_err)] // tonic::Status
fn decode_list(key: &str, bytes: &[u8]) -> Result<Vec<u64>, Status> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Status::data_loss(format!(
            "{key}: stored list is not a multiple of 8 bytes"
        )));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_be_bytes(b)
        })
        .collect())
}

/// A dumped entry as JSON: integers, strings or lists by key prefix; anything else as an
/// error string (the checkers report it).
pub fn decode(key: &str, bytes: &[u8]) -> serde_json::Value {
    let value = if key.starts_with("acct/") {
        decode_int(key, bytes).map(serde_json::Value::from)
    } else if key.starts_with("list/") {
        decode_list(key, bytes).map(serde_json::Value::from)
    } else {
        Ok(String::from_utf8(bytes.to_vec())
            .map(serde_json::Value::from)
            .unwrap_or_else(|_| {
                serde_json::Value::from(format!("<{} bytes, not UTF-8>", bytes.len()))
            }))
    };
    value.unwrap_or_else(|s| serde_json::Value::from(format!("<undecodable: {}>", s.message())))
}

/// The service.
pub struct Kv {
    store: RocksStore,
    lock_wait: Option<Duration>,
}

impl Kv {
    /// Over `store`; lock conflicts wait up to `lock_wait`.
    pub fn new(store: RocksStore, lock_wait: Option<Duration>) -> Self {
        Self { store, lock_wait }
    }

    #[allow(clippy::result_large_err)] // tonic::Status
    fn txn<T>(&self, request: &Request<T>) -> Result<Txn, Status> {
        let ctx = TxnContext::from_request(request)?;
        Ok(self.store.txn(&ctx)?.with_lock_wait(self.lock_wait))
    }
}

#[tonic::async_trait]
impl JepsenKv for Kv {
    async fn add(
        &self,
        request: Request<pb::AddRequest>,
    ) -> Result<Response<pb::IntReply>, Status> {
        let txn = self.txn(&request)?;
        let req = request.into_inner();
        check_key(&req.key)?;
        let old = match txn.get(req.key.as_bytes()).await? {
            Some(b) => decode_int(&req.key, &b)?,
            None => 0,
        };
        let new = old.checked_add(req.delta).ok_or_else(|| {
            Status::out_of_range(format!("{}: {old} + {} overflows", req.key, req.delta))
        })?;
        if req.has_floor && new < req.floor {
            txn.reject(format!("{}: {new} would be below {}", req.key, req.floor))?;
            return Err(Status::failed_precondition(format!(
                "{}: {old} + {} is below the floor {}",
                req.key, req.delta, req.floor
            )));
        }
        txn.put(req.key.as_bytes(), &new.to_be_bytes()).await?;
        Ok(Response::new(pb::IntReply { value: new }))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutReply>, Status> {
        let txn = self.txn(&request)?;
        let req = request.into_inner();
        check_key(&req.key)?;
        txn.put(req.key.as_bytes(), req.value.as_bytes()).await?;
        Ok(Response::new(pb::PutReply {}))
    }

    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendReply>, Status> {
        let txn = self.txn(&request)?;
        let req = request.into_inner();
        check_key(&req.key)?;
        let mut bytes = txn.get(req.key.as_bytes()).await?.unwrap_or_default();
        if bytes.len() / 8 >= LIST_LEN_MAX {
            return Err(Status::resource_exhausted(format!(
                "{}: lists hold at most {LIST_LEN_MAX} elements",
                req.key
            )));
        }
        bytes.extend_from_slice(&req.element.to_be_bytes());
        txn.put(req.key.as_bytes(), &bytes).await?;
        Ok(Response::new(pb::AppendReply {}))
    }

    async fn read_ints(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadIntsReply>, Status> {
        let txn = self.txn(&request)?;
        let req = request.into_inner();
        check_read(&req.keys)?;
        let mut values = std::collections::HashMap::new();
        for key in req.keys {
            if let Some(b) = txn.get(key.as_bytes()).await? {
                values.insert(key.clone(), decode_int(&key, &b)?);
            }
        }
        Ok(Response::new(pb::ReadIntsReply { values }))
    }

    async fn read_lists(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadListsReply>, Status> {
        let txn = self.txn(&request)?;
        let req = request.into_inner();
        check_read(&req.keys)?;
        let mut lists = std::collections::HashMap::new();
        for key in req.keys {
            if let Some(b) = txn.get(key.as_bytes()).await? {
                let elements = decode_list(&key, &b)?;
                lists.insert(key, pb::IntList { elements });
            }
        }
        Ok(Response::new(pb::ReadListsReply { lists }))
    }

    async fn dump(
        &self,
        request: Request<pb::DumpRequest>,
    ) -> Result<Response<pb::DumpReply>, Status> {
        let req = request.into_inner();
        let rows = self
            .store
            .scan_committed(req.prefix.as_bytes(), DUMP_ENTRIES_MAX + 1)?;
        if rows.len() > DUMP_ENTRIES_MAX {
            return Err(Status::resource_exhausted(format!(
                "more than {DUMP_ENTRIES_MAX} entries under {:?}",
                req.prefix
            )));
        }
        let entries = rows
            .into_iter()
            .map(|(k, value)| pb::Entry {
                key: String::from_utf8_lossy(&k).into_owned(),
                value,
            })
            .collect();
        let in_doubt = self
            .store
            .in_doubt()
            .await?
            .into_iter()
            .map(|d| d.txn_id.to_string())
            .collect();
        Ok(Response::new(pb::DumpReply { entries, in_doubt }))
    }
}

#[allow(clippy::result_large_err)] // tonic::Status
fn check_read(keys: &[String]) -> Result<(), Status> {
    if keys.len() > READ_KEYS_MAX {
        return Err(Status::invalid_argument(format!(
            "at most {READ_KEYS_MAX} keys per read, got {}",
            keys.len()
        )));
    }
    keys.iter().try_for_each(|k| check_key(k))
}

/// A client of a participant's KV service at `endpoint`: lazy, 500 ms to connect, 5 s per
/// call, big enough for a final dump. Through `ratify_proto::hooks::channel`, so the
/// simulation's network when a simulation runs, TCP otherwise.
pub fn client(
    endpoint: &ratify_proto::types::Endpoint,
) -> ratify_proto::pb::jepsen::jepsen_kv_client::JepsenKvClient<tonic::transport::Channel> {
    use ratify_proto::hooks::EndpointExt as _;
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .expect("a validated endpoint is a valid URI")
        .connect_timeout(std::time::Duration::from_millis(500))
        .timeout(std::time::Duration::from_secs(5))
        .tcp_nodelay(true)
        .lazy_channel();
    ratify_proto::pb::jepsen::jepsen_kv_client::JepsenKvClient::new(channel)
        .max_decoding_message_size(DUMP_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_by_prefix() {
        assert_eq!(
            decode("acct/a", &(-5i64).to_be_bytes()),
            serde_json::json!(-5)
        );
        let mut l = 1u64.to_be_bytes().to_vec();
        l.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(decode("list/3", &l), serde_json::json!([1, 7]));
        assert_eq!(decode("marker/x", b"x"), serde_json::json!("x"));
        assert!(
            decode("acct/a", b"abc")
                .as_str()
                .is_some_and(|s| s.contains("undecodable"))
        );
        assert!(
            decode("list/1", b"abc")
                .as_str()
                .is_some_and(|s| s.contains("undecodable"))
        );
    }
}
