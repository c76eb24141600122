//! Human-readable output for the CLI.

use ratify_proto::types::admin::{ClusterStatus, ListTxnsResponse, MemberRole, ParticipantInfo};
use ratify_proto::types::coordinator::StatusResponse;
use ratify_proto::types::{FinalDecision, Outcome, TxnId};

pub fn cluster_status(s: &ClusterStatus) {
    match &s.leader {
        Some(l) => println!(
            "leader: node {} ({}), term {}",
            l.node_id,
            l.endpoint
                .as_ref()
                .map_or("address unknown", |e| e.as_str()),
            s.term
        ),
        None => println!("leader: none known yet, term {}", s.term),
    }
    println!("asked:  node {}", s.node_id);
    println!(
        "log:    last {}, committed {}, applied {}, snapshot {}, purged {}",
        s.last_log_index, s.committed_index, s.last_applied_index, s.snapshot_index, s.purged_index
    );
    println!("{:<6} {:<8} endpoint", "node", "role");
    for m in &s.members {
        let role = match m.role {
            MemberRole::Voter => "voter",
            MemberRole::Learner => "learner",
        };
        println!("{:<6} {:<8} {}", m.node_id, role, m.endpoint);
    }
}

/// One row per node, each from that node's own view.
pub fn nodes(rows: &[(u64, Option<u32>, Result<ClusterStatus, String>)]) {
    println!(
        "  {:<5} {:<8} {:<9} {:>5} {:>9} {:>9}  endpoint",
        "node", "pid", "state", "term", "last log", "applied"
    );
    for (id, pid, status) in rows {
        let pid = pid.map_or("-".to_owned(), |p| p.to_string());
        match status {
            Ok(s) => {
                let state = match &s.leader {
                    Some(l) if l.node_id == *id => "leader",
                    Some(_) => "follower",
                    None => "candidate",
                };
                let endpoint = s
                    .members
                    .iter()
                    .find(|m| m.node_id == *id)
                    .map_or(String::new(), |m| m.endpoint.to_string());
                println!(
                    "  {:<5} {:<8} {:<9} {:>5} {:>9} {:>9}  {}",
                    id, pid, state, s.term, s.last_log_index, s.last_applied_index, endpoint
                );
            }
            Err(e) => println!("  {id:<5} {pid:<8} {:<9} {e}", "down"),
        }
    }
}

pub fn txns(r: &ListTxnsResponse) {
    if r.txns.is_empty() {
        println!("no transactions listed");
        return;
    }
    println!(
        "{:<36}  {:<9}  {:<8}  {:<14}  pending",
        "txn", "phase", "decision", "decided at ms"
    );
    for t in &r.txns {
        let decision = match &t.decision {
            FinalDecision::Commit => "COMMIT".to_owned(),
            FinalDecision::Abort(info) => format!("ABORT ({:?})", info.cause),
        };
        let pending: Vec<&str> = t.pending_participants.iter().map(|p| p.as_str()).collect();
        println!(
            "{:<36}  {:<9}  {:<8}  {:<14}  {}",
            t.txn_id,
            format!("{:?}", t.phase).to_lowercase(),
            decision,
            t.decided_at_unix_ms,
            pending.join(",")
        );
    }
    if !r.next_page_token.is_empty() {
        println!("(more: this listing is capped by --limit)");
    }
}

pub fn txn_status(txn_id: TxnId, s: &StatusResponse) {
    let outcome = match &s.outcome {
        Outcome::Committed => "COMMITTED".to_owned(),
        Outcome::Aborted(info) => format!(
            "ABORTED ({:?}{}{})",
            info.cause,
            info.participant
                .as_ref()
                .map_or(String::new(), |p| format!(", participant {p}")),
            if info.message.is_empty() {
                String::new()
            } else {
                format!(": {}", info.message)
            }
        ),
        Outcome::Unknown => {
            "UNKNOWN (no decision recorded: never seen, still preparing, or compacted)".to_owned()
        }
    };
    println!("txn:     {txn_id}");
    println!("outcome: {outcome}");
    println!("phase:   {:?}", s.phase);
    if let Some(at) = s.decided_at_unix_ms {
        println!("decided: {at} (unix ms)");
    }
    if !s.pending_participants.is_empty() {
        let p: Vec<&str> = s.pending_participants.iter().map(|p| p.as_str()).collect();
        println!("phase 2 pending at: {}", p.join(", "));
    }
}

pub fn participants(list: &[ParticipantInfo]) {
    if list.is_empty() {
        println!("no participants registered");
        return;
    }
    println!(
        "{:<24} {:<32} registered at (unix ms)",
        "participant", "endpoint"
    );
    for p in list {
        println!(
            "{:<24} {:<32} {}",
            p.participant, p.endpoint, p.registered_at_unix_ms
        );
    }
}
