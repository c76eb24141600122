//! The final reads of a run, shared by the harness ([`crate::system::System`]) and the
//! deterministic simulation (`ratify-sim`): the coordinator's replicated decisions, its phase-2
//! backlog, and a participant's committed data.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use ratify_coordinator::admin_client::AdminClient;
use ratify_proto::pb::coordinator as pbco;
use ratify_proto::pb::jepsen::jepsen_kv_client::JepsenKvClient;
use ratify_proto::types::admin::{ListTxnsRequest, ListTxnsResponse};
use ratify_proto::types::{FinalDecision, TxnPhase};
use tonic::transport::Channel;

/// A participant's final dump may take this long.
pub const DUMP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Transactions per ListTxns page.
const LIST_PAGE: u32 = 1_000;

/// One page of ListTxns, read linearizably at the leader.
async fn list_page(
    admin: &AdminClient,
    phase: Option<TxnPhase>,
    page_token: String,
) -> Result<ListTxnsResponse> {
    let req: pbco::ListTxnsRequest = ListTxnsRequest {
        phase,
        limit: LIST_PAGE,
        page_token,
        local: false,
    }
    .into();
    let page = admin
        .call_leader(|mut c| {
            let req = req.clone();
            async move { c.list_txns(req).await }
        })
        .await
        .map_err(|e| anyhow!("ListTxns: {e}"))?;
    ListTxnsResponse::try_from(page).map_err(|e| anyhow!("ListTxns reply: {e}"))
}

/// Every replicated decision, read from the leader.
pub async fn decisions(admin: &AdminClient) -> Result<BTreeMap<String, ratify_check::Decision>> {
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = list_page(admin, None, token).await?;
        for t in page.txns {
            let d = match t.decision {
                FinalDecision::Commit => ratify_check::Decision::Commit,
                FinalDecision::Abort(_) => ratify_check::Decision::Abort,
            };
            out.insert(t.txn_id.to_string(), d);
        }
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// Transactions still decided-but-unacknowledged (phase 2 pending) at the leader.
/// (`txn_id: decision, waiting for [participants]`, one per transaction.)
pub async fn phase2_pending(admin: &AdminClient) -> Result<Vec<String>> {
    let page = list_page(admin, Some(TxnPhase::Decided), String::new()).await?;
    Ok(page
        .txns
        .into_iter()
        .map(|t| {
            let pending: Vec<String> = t
                .pending_participants
                .iter()
                .map(|p| p.to_string())
                .collect();
            format!(
                "{}: {:?}, waiting for [{}]",
                t.txn_id,
                t.decision.decision(),
                pending.join(", ")
            )
        })
        .collect())
}

/// A participant's (`name`, served by `kv`) committed data under `prefix` (decoded) and its
/// in-doubt transactions.
pub async fn dump(
    mut kv: JepsenKvClient<Channel>,
    name: &str,
    prefix: &str,
) -> Result<ratify_check::ParticipantState> {
    let call = kv.dump(ratify_proto::pb::jepsen::DumpRequest {
        prefix: prefix.to_owned(),
    });
    let reply = tokio::time::timeout(DUMP_TIMEOUT, call)
        .await
        .map_err(|_| anyhow!("dump of {name} timed out"))?
        .map_err(|s| anyhow!("dump of {name}: {s}"))?
        .into_inner();
    Ok(ratify_check::ParticipantState {
        reachable: true,
        data: reply
            .entries
            .into_iter()
            .map(|e| {
                let v = crate::kv::decode(&e.key, &e.value);
                (e.key, v)
            })
            .collect(),
        in_doubt: reply.in_doubt,
    })
}
