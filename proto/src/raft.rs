//! Conversions between the Raft transport messages (`ratify.raft.v1`) and openraft 0.9's types.
//!
//! Generic over the coordinator's type configuration, which must use `u64` node ids,
//! [`BasicNode`], openraft's [`Entry`] and [`Command`] as application data.

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftTypeConfig,
    SnapshotMeta, StoredMembership, Vote,
};

use crate::convert::{field_at as at, required_field as required};
use crate::error::ConvertError;
use crate::pb::raft as pbr;
use crate::types::command::Command;

/// The openraft type configurations these conversions serve.
pub trait WireTypeConfig:
    RaftTypeConfig<NodeId = u64, Node = BasicNode, D = Command, Entry = Entry<Self>>
{
}

impl<C> WireTypeConfig for C where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode, D = Command, Entry = Entry<C>>
{
}

fn leader_id_to_wire(term: u64, node_id: u64) -> pbr::LeaderId {
    pbr::LeaderId { term, node_id }
}

/// A vote on the wire.
pub fn vote_to_wire(v: &Vote<u64>) -> pbr::RaftVote {
    pbr::RaftVote {
        leader_id: Some(leader_id_to_wire(v.leader_id.term, v.leader_id.node_id)),
        committed: v.committed,
    }
}

/// A vote from the wire.
pub fn vote_from_wire(field: &str, v: Option<pbr::RaftVote>) -> Result<Vote<u64>, ConvertError> {
    let v = required(field.to_owned(), v)?;
    let l = required(at(field, "leader_id"), v.leader_id)?;
    Ok(if v.committed {
        Vote::new_committed(l.term, l.node_id)
    } else {
        Vote::new(l.term, l.node_id)
    })
}

/// A log id on the wire.
pub fn log_id_to_wire(v: &LogId<u64>) -> pbr::LogId {
    pbr::LogId {
        leader_id: Some(leader_id_to_wire(v.leader_id.term, v.leader_id.node_id)),
        index: v.index,
    }
}

fn opt_log_id_to_wire(v: &Option<LogId<u64>>) -> Option<pbr::LogId> {
    v.as_ref().map(log_id_to_wire)
}

/// A log id from the wire.
pub fn log_id_from_wire(field: &str, v: pbr::LogId) -> Result<LogId<u64>, ConvertError> {
    let l = required(at(field, "leader_id"), v.leader_id)?;
    Ok(LogId::new(
        CommittedLeaderId::new(l.term, l.node_id),
        v.index,
    ))
}

fn opt_log_id_from_wire(
    field: &str,
    v: Option<pbr::LogId>,
) -> Result<Option<LogId<u64>>, ConvertError> {
    v.map(|v| log_id_from_wire(field, v)).transpose()
}

/// A membership on the wire.
pub fn membership_to_wire(m: &Membership<u64, BasicNode>) -> pbr::Membership {
    pbr::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|set| pbr::VoterSet {
                node_ids: set.iter().copied().collect(),
            })
            .collect(),
        nodes: m
            .nodes()
            .map(|(id, n)| {
                (
                    *id,
                    pbr::Node {
                        addr: n.addr.clone(),
                    },
                )
            })
            .collect(),
    }
}

/// A membership from the wire: every voter must have a node entry.
pub fn membership_from_wire(
    field: &str,
    m: pbr::Membership,
) -> Result<Membership<u64, BasicNode>, ConvertError> {
    if m.configs.is_empty() || m.configs.len() > 2 {
        return Err(ConvertError::Invalid {
            field: at(field, "configs"),
            why: format!("expected 1 or 2 voter sets, got {}", m.configs.len()),
        });
    }
    let nodes: BTreeMap<u64, BasicNode> = m
        .nodes
        .into_iter()
        .map(|(id, n)| (id, BasicNode { addr: n.addr }))
        .collect();
    let configs: Vec<BTreeSet<u64>> = m
        .configs
        .into_iter()
        .map(|set| set.node_ids.into_iter().collect())
        .collect();
    for (i, set) in configs.iter().enumerate() {
        if let Some(id) = set.iter().find(|id| !nodes.contains_key(id)) {
            return Err(ConvertError::Invalid {
                field: format!("{}[{i}]", at(field, "configs")),
                why: format!("voter {id} has no entry in nodes"),
            });
        }
    }
    Ok(Membership::new(configs, nodes))
}

/// A stored membership on the wire.
pub fn stored_membership_to_wire(m: &StoredMembership<u64, BasicNode>) -> pbr::StoredMembership {
    pbr::StoredMembership {
        log_id: opt_log_id_to_wire(m.log_id()),
        membership: Some(membership_to_wire(m.membership())),
    }
}

/// A stored membership from the wire. The initial, empty membership has no voter set.
pub fn stored_membership_from_wire(
    field: &str,
    m: pbr::StoredMembership,
) -> Result<StoredMembership<u64, BasicNode>, ConvertError> {
    let log_id = opt_log_id_from_wire(&at(field, "log_id"), m.log_id)?;
    let membership = match m.membership {
        Some(w) if w.configs.is_empty() && w.nodes.is_empty() => Membership::default(),
        Some(w) => membership_from_wire(&at(field, "membership"), w)?,
        None => Membership::default(),
    };
    Ok(StoredMembership::new(log_id, membership))
}

/// A log entry on the wire.
pub fn entry_to_wire<C: WireTypeConfig>(e: &Entry<C>) -> pbr::Entry {
    use pbr::entry::Payload;
    let payload = match &e.payload {
        EntryPayload::Blank => Payload::Blank(pbr::Blank {}),
        EntryPayload::Normal(cmd) => Payload::Command(cmd.clone().into()),
        EntryPayload::Membership(m) => Payload::Membership(membership_to_wire(m)),
    };
    pbr::Entry {
        log_id: Some(log_id_to_wire(&e.log_id)),
        payload: Some(payload),
    }
}

/// A log entry from the wire.
pub fn entry_from_wire<C: WireTypeConfig>(
    field: &str,
    e: pbr::Entry,
) -> Result<Entry<C>, ConvertError> {
    use pbr::entry::Payload;
    let log_id = log_id_from_wire(
        &at(field, "log_id"),
        required(at(field, "log_id"), e.log_id)?,
    )?;
    let payload = match required(at(field, "payload"), e.payload)? {
        Payload::Blank(_) => EntryPayload::Blank,
        Payload::Command(c) => {
            EntryPayload::Normal(Command::try_from(c).map_err(|e| ConvertError::Invalid {
                field: at(field, "command"),
                why: e.to_string(),
            })?)
        }
        Payload::Membership(m) => {
            EntryPayload::Membership(membership_from_wire(&at(field, "membership"), m)?)
        }
    };
    Ok(Entry { log_id, payload })
}

/// AppendEntries request on the wire.
pub fn append_entries_to_wire<C: WireTypeConfig>(
    r: &AppendEntriesRequest<C>,
) -> pbr::AppendEntriesRequest {
    pbr::AppendEntriesRequest {
        vote: Some(vote_to_wire(&r.vote)),
        prev_log_id: opt_log_id_to_wire(&r.prev_log_id),
        entries: r.entries.iter().map(entry_to_wire).collect(),
        leader_commit: opt_log_id_to_wire(&r.leader_commit),
    }
}

/// AppendEntries request from the wire.
pub fn append_entries_from_wire<C: WireTypeConfig>(
    r: pbr::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<C>, ConvertError> {
    Ok(AppendEntriesRequest {
        vote: vote_from_wire("vote", r.vote)?,
        prev_log_id: opt_log_id_from_wire("prev_log_id", r.prev_log_id)?,
        entries: r
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| entry_from_wire(&format!("entries[{i}]"), e))
            .collect::<Result<_, _>>()?,
        leader_commit: opt_log_id_from_wire("leader_commit", r.leader_commit)?,
    })
}

/// AppendEntries response on the wire.
pub fn append_entries_response_to_wire(
    r: &AppendEntriesResponse<u64>,
) -> pbr::AppendEntriesResponse {
    use pbr::append_entries_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(pbr::Blank {}),
        AppendEntriesResponse::PartialSuccess(m) => R::PartialSuccess(pbr::PartialSuccess {
            matching: opt_log_id_to_wire(m),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pbr::Blank {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_to_wire(v)),
    };
    pbr::AppendEntriesResponse {
        result: Some(result),
    }
}

/// AppendEntries response from the wire.
pub fn append_entries_response_from_wire(
    r: pbr::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<u64>, ConvertError> {
    use pbr::append_entries_response::Result as R;
    Ok(match required("result".into(), r.result)? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(p) => AppendEntriesResponse::PartialSuccess(opt_log_id_from_wire(
            "partial_success.matching",
            p.matching,
        )?),
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => {
            AppendEntriesResponse::HigherVote(vote_from_wire("higher_vote", Some(v))?)
        }
    })
}

/// Vote request on the wire.
pub fn vote_request_to_wire(r: &VoteRequest<u64>) -> pbr::VoteRequest {
    pbr::VoteRequest {
        vote: Some(vote_to_wire(&r.vote)),
        last_log_id: opt_log_id_to_wire(&r.last_log_id),
    }
}

/// Vote request from the wire.
pub fn vote_request_from_wire(r: pbr::VoteRequest) -> Result<VoteRequest<u64>, ConvertError> {
    Ok(VoteRequest {
        vote: vote_from_wire("vote", r.vote)?,
        last_log_id: opt_log_id_from_wire("last_log_id", r.last_log_id)?,
    })
}

/// Vote response on the wire.
pub fn vote_response_to_wire(r: &VoteResponse<u64>) -> pbr::VoteResponse {
    pbr::VoteResponse {
        vote: Some(vote_to_wire(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id_to_wire(&r.last_log_id),
    }
}

/// Vote response from the wire.
pub fn vote_response_from_wire(r: pbr::VoteResponse) -> Result<VoteResponse<u64>, ConvertError> {
    Ok(VoteResponse {
        vote: vote_from_wire("vote", r.vote)?,
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id_from_wire("last_log_id", r.last_log_id)?,
    })
}

/// Snapshot metadata on the wire.
pub fn snapshot_meta_to_wire(m: &SnapshotMeta<u64, BasicNode>) -> pbr::SnapshotMeta {
    pbr::SnapshotMeta {
        last_log_id: opt_log_id_to_wire(&m.last_log_id),
        last_membership: Some(stored_membership_to_wire(&m.last_membership)),
        snapshot_id: m.snapshot_id.clone(),
    }
}

/// Snapshot metadata from the wire.
pub fn snapshot_meta_from_wire(
    field: &str,
    m: pbr::SnapshotMeta,
) -> Result<SnapshotMeta<u64, BasicNode>, ConvertError> {
    Ok(SnapshotMeta {
        last_log_id: opt_log_id_from_wire(&at(field, "last_log_id"), m.last_log_id)?,
        last_membership: stored_membership_from_wire(
            &at(field, "last_membership"),
            required(at(field, "last_membership"), m.last_membership)?,
        )?,
        snapshot_id: m.snapshot_id,
    })
}

/// InstallSnapshot request on the wire.
pub fn install_snapshot_to_wire<C: WireTypeConfig>(
    r: &InstallSnapshotRequest<C>,
) -> pbr::InstallSnapshotRequest {
    pbr::InstallSnapshotRequest {
        vote: Some(vote_to_wire(&r.vote)),
        meta: Some(snapshot_meta_to_wire(&r.meta)),
        offset: r.offset,
        data: r.data.clone(),
        done: r.done,
    }
}

/// InstallSnapshot request from the wire.
pub fn install_snapshot_from_wire<C: WireTypeConfig>(
    r: pbr::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<C>, ConvertError> {
    Ok(InstallSnapshotRequest {
        vote: vote_from_wire("vote", r.vote)?,
        meta: snapshot_meta_from_wire("meta", required("meta".into(), r.meta)?)?,
        offset: r.offset,
        data: r.data,
        done: r.done,
    })
}

/// InstallSnapshot response on the wire.
pub fn install_snapshot_response_to_wire(
    r: &InstallSnapshotResponse<u64>,
) -> pbr::InstallSnapshotResponse {
    pbr::InstallSnapshotResponse {
        vote: Some(vote_to_wire(&r.vote)),
    }
}

/// InstallSnapshot response from the wire.
pub fn install_snapshot_response_from_wire(
    r: pbr::InstallSnapshotResponse,
) -> Result<InstallSnapshotResponse<u64>, ConvertError> {
    Ok(InstallSnapshotResponse {
        vote: vote_from_wire("vote", r.vote)?,
    })
}
