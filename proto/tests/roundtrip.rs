//! Guarantee checked: every message of the wire contract converts to its domain type and back
//! without loss (domain → wire → bytes → wire → domain is the identity), and the test itself
//! fails if a message is added to the .proto files without a round trip here (docs/protocol.md,
//! rule W5). Malformed input is refused with the offending field named (rule W6).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

use prost::Message;
use ratify_proto::convert::{self, NodeIdRequest};
use ratify_proto::error::{ConvertError, ErrorCode, ErrorDetail};
use ratify_proto::pb::{common as pbc, coordinator as pbco, participant as pbp, raft as pbr};
use ratify_proto::types::admin::*;
use ratify_proto::types::command::*;
use ratify_proto::types::coordinator::*;
use ratify_proto::types::participant::*;
use ratify_proto::types::*;

/// Records which wire messages a round trip exercised.
#[derive(Default)]
struct Coverage {
    messages: BTreeSet<String>,
}

impl Coverage {
    fn note<W>(&mut self) {
        // ratify_proto::pb::ratify::coordinator::v1::CommitRequest -> ratify.coordinator.v1.CommitRequest
        let name = std::any::type_name::<W>();
        let name = name
            .strip_prefix("ratify_proto::pb::")
            .unwrap_or_else(|| panic!("not a generated type: {name}"))
            .replace("::", ".");
        self.messages.insert(name);
    }

    /// domain → wire → bytes → wire → domain must be the identity.
    fn rt<D, W>(&mut self, value: D)
    where
        D: Clone + PartialEq + Debug + TryFrom<W, Error = ConvertError>,
        W: From<D> + Message + Default + PartialEq + Debug,
    {
        let wire = W::from(value.clone());
        let bytes = wire.encode_to_vec();
        let decoded = W::decode(bytes.as_slice()).expect("decode what we encoded");
        assert_eq!(decoded, wire);
        let back = D::try_from(decoded).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(back, value);
        self.note::<W>();
    }

    /// The same for a conversion given as a pair of functions.
    fn rt_fn<D, W>(
        &mut self,
        value: D,
        to: impl Fn(D) -> W,
        from: impl Fn(W) -> Result<D, ConvertError>,
    ) where
        D: Clone + PartialEq + Debug,
        W: Message + Default + PartialEq + Debug,
    {
        let wire = to(value.clone());
        let decoded = W::decode(wire.encode_to_vec().as_slice()).expect("decode what we encoded");
        assert_eq!(decoded, wire);
        let back = from(decoded).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        assert_eq!(back, value);
        self.note::<W>();
    }

    /// A message with no fields: it encodes to nothing and decodes back.
    fn empty<W: Message + Default + PartialEq + Debug>(&mut self) {
        let wire = W::default();
        assert!(wire.encode_to_vec().is_empty());
        assert_eq!(W::decode(&[][..]).expect("empty decodes"), wire);
        self.note::<W>();
    }
}

fn txn(n: u8) -> TxnId {
    TxnId::from_bytes([
        0x01, 0x89, 0x0a, 0x5d, 0xac, 0x96, 0x77, 0x4b, 0xbc, 0xce, 0xb3, 0x02, 0x09, 0x9a, 0x80, n,
    ])
    .expect("non-nil")
}

fn p(name: &str) -> ParticipantId {
    ParticipantId::new(name).expect("valid name")
}

fn ep(url: &str) -> Endpoint {
    Endpoint::new(url).expect("valid endpoint")
}

fn every_abort_info() -> Vec<AbortInfo> {
    vec![
        AbortInfo {
            cause: AbortCause::VotedNo,
            participant: Some(p("payments")),
            no_reason: Some(NoReason::ValidationFailed),
            message: "insufficient funds".into(),
        },
        AbortInfo::new(AbortCause::PrepareTimeout, ""),
        AbortInfo {
            cause: AbortCause::ResolvedByParticipant,
            participant: Some(p("inventory-3")),
            no_reason: None,
            message: String::new(),
        },
        AbortInfo::new(AbortCause::ClientAbort, "user cancelled"),
        AbortInfo::new(AbortCause::Operator, "ticket OPS-12"),
        AbortInfo::new(AbortCause::DeadlineExpired, ""),
        AbortInfo::new(AbortCause::UnreachableParticipant, "no such participant"),
    ]
}

fn every_no_reason() -> Vec<NoReason> {
    vec![
        NoReason::Conflict,
        NoReason::UnknownTxn,
        NoReason::ValidationFailed,
        NoReason::AlreadyAborted,
        NoReason::StagedTimeout,
        NoReason::LimitExceeded,
        NoReason::StorageError,
        NoReason::CallFailed,
    ]
}

fn every_outcome() -> Vec<Outcome> {
    let mut v = vec![Outcome::Committed, Outcome::Unknown];
    v.extend(every_abort_info().into_iter().map(Outcome::Aborted));
    v
}

fn every_final_decision() -> Vec<FinalDecision> {
    let mut v = vec![FinalDecision::Commit];
    v.extend(every_abort_info().into_iter().map(FinalDecision::Abort));
    v
}

fn coordinator_api(c: &mut Coverage) {
    c.rt::<_, pbco::CommitRequest>(CommitRequest {
        txn_id: txn(1),
        participants: vec![p("accounts-eu"), p("accounts-us")],
        deadline_unix_ms: Some(1_790_000_000_000),
        call_counts: vec![2, 1],
    });
    c.rt::<_, pbco::CommitRequest>(CommitRequest {
        txn_id: txn(3),
        participants: vec![p("accounts-eu")],
        deadline_unix_ms: Some(1_790_000_000_000),
        call_counts: vec![],
    });
    c.rt::<_, pbco::CommitRequest>(CommitRequest {
        txn_id: txn(2),
        participants: vec![],
        deadline_unix_ms: None,
        call_counts: vec![],
    });
    for outcome in every_outcome() {
        c.rt::<_, pbco::CommitResponse>(CommitResponse {
            outcome: outcome.clone(),
        });
        c.rt::<_, pbco::AbortResponse>(AbortResponse {
            outcome: outcome.clone(),
        });
        for phase in [TxnPhase::Undecided, TxnPhase::Decided, TxnPhase::Completed] {
            c.rt::<_, pbco::StatusResponse>(StatusResponse {
                outcome: outcome.clone(),
                phase,
                pending_participants: vec![p("a"), p("b.c_d-e")],
                decided_at_unix_ms: Some(17),
            });
        }
    }
    c.rt::<_, pbco::StatusResponse>(StatusResponse {
        outcome: Outcome::Unknown,
        phase: TxnPhase::Undecided,
        pending_participants: vec![],
        decided_at_unix_ms: None,
    });
    c.rt::<_, pbco::AbortRequest>(AbortRequest {
        txn_id: txn(3),
        participants: vec![p("x")],
        message: "gave up".into(),
    });
    c.rt::<_, pbco::StatusRequest>(StatusRequest { txn_id: txn(4) });
    c.rt::<_, pbco::ResolveRequest>(ResolveRequest {
        txn_id: txn(5),
        participant: p("payments"),
    });
    for decision in every_final_decision() {
        c.rt::<_, pbco::ResolveResponse>(ResolveResponse { decision });
    }
    c.rt::<_, pbco::RegisterParticipantRequest>(RegisterParticipantRequest {
        participant: p("payments"),
        endpoint: ep("http://127.0.0.1:7100"),
    });
    c.empty::<pbco::RegisterParticipantResponse>();
}

fn admin_api(c: &mut Coverage) {
    c.rt::<_, pbco::ListTxnsRequest>(ListTxnsRequest {
        phase: None,
        limit: 0,
        page_token: String::new(),
        local: false,
    });
    c.rt::<_, pbco::ListTxnsRequest>(ListTxnsRequest {
        phase: Some(TxnPhase::Decided),
        limit: 500,
        page_token: "opaque".into(),
        local: true,
    });
    let txns: Vec<TxnSummary> = every_final_decision()
        .into_iter()
        .enumerate()
        .map(|(i, decision)| TxnSummary {
            txn_id: txn(10 + i as u8),
            phase: if i % 2 == 0 {
                TxnPhase::Decided
            } else {
                TxnPhase::Completed
            },
            decision,
            participants: vec![p("a"), p("b")],
            pending_participants: vec![p("b")],
            decided_at_unix_ms: 1_000 + i as u64,
        })
        .collect();
    c.rt::<_, pbco::TxnSummary>(txns[0].clone());
    c.rt::<_, pbco::ListTxnsResponse>(ListTxnsResponse {
        txns,
        next_page_token: "next".into(),
    });
    for decision in [Decision::Commit, Decision::Abort] {
        c.rt::<_, pbco::ForceResolveRequest>(ForceResolveRequest {
            txn_id: txn(30),
            decision,
            participants: vec![p("a")],
            reason: "stuck since Tuesday".into(),
        });
        c.rt::<_, pbco::ForceResolveResponse>(ForceResolveResponse {
            decision,
            changed: decision == Decision::Commit,
        });
    }
    c.empty::<pbco::ClusterStatusRequest>();
    let members = vec![
        Member {
            node_id: 1,
            endpoint: ep("http://127.0.0.1:7001"),
            role: MemberRole::Voter,
        },
        Member {
            node_id: 4,
            endpoint: ep("https://node4.example:7001"),
            role: MemberRole::Learner,
        },
    ];
    c.rt::<_, pbco::Member>(members[0].clone());
    for leader in [
        None,
        Some(LeaderHint {
            node_id: 1,
            endpoint: Some(ep("http://127.0.0.1:7001")),
        }),
        Some(LeaderHint {
            node_id: 2,
            endpoint: None,
        }),
    ] {
        c.rt::<_, pbco::ClusterStatusResponse>(ClusterStatus {
            node_id: 1,
            leader,
            term: 7,
            members: members.clone(),
            last_log_index: 100,
            committed_index: 99,
            last_applied_index: 98,
            snapshot_index: 50,
            purged_index: 40,
        });
    }
    c.rt::<_, pbco::InitClusterRequest>(InitClusterRequest {
        members: members.clone(),
    });
    c.rt::<_, pbco::AddLearnerRequest>(AddLearnerRequest {
        node_id: 4,
        endpoint: ep("http://127.0.0.1:7004"),
    });
    c.rt::<NodeIdRequest, pbco::PromoteRequest>(NodeIdRequest(4));
    c.rt::<NodeIdRequest, pbco::RemoveNodeRequest>(NodeIdRequest(3));
    c.empty::<pbco::ListParticipantsRequest>();
    let infos = vec![
        ParticipantInfo {
            participant: p("accounts-eu"),
            endpoint: ep("http://127.0.0.1:7100"),
            registered_at_unix_ms: 5,
        },
        ParticipantInfo {
            participant: p("accounts-us"),
            endpoint: ep("http://127.0.0.1:7101"),
            registered_at_unix_ms: 6,
        },
    ];
    c.rt::<_, pbco::ParticipantInfo>(infos[0].clone());
    c.rt_fn(
        infos,
        convert::participant_infos_to_wire,
        convert::participant_infos_from_wire,
    );
}

fn participant_api(c: &mut Coverage) {
    let batch = TxnBatch {
        coordinator_node_id: 2,
        txn_ids: vec![txn(1), txn(2), txn(3)],
    };
    c.rt::<_, pbp::CommitRequest>(batch.clone());
    c.rt::<_, pbp::AbortRequest>(batch.clone());
    let prepare = PrepareBatch {
        coordinator_node_id: 2,
        txn_ids: vec![txn(1), txn(2), txn(3)],
        call_counts: BTreeMap::from([(txn(1), 2), (txn(3), 0)]),
    };
    c.rt::<_, pbp::PrepareRequest>(prepare.clone());
    c.rt::<_, pbp::CommitOnePhaseRequest>(prepare);
    c.rt::<_, pbp::CommitOnePhaseRequest>(PrepareBatch {
        coordinator_node_id: 1,
        txn_ids: vec![],
        call_counts: BTreeMap::new(),
    });

    let mut votes = vec![Vote::Yes, Vote::ReadOnly];
    votes.extend(every_no_reason().into_iter().map(|reason| Vote::No {
        reason,
        message: format!("{reason:?}"),
    }));
    let results: Vec<PrepareResult> = votes
        .into_iter()
        .enumerate()
        .map(|(i, vote)| PrepareResult {
            txn_id: txn(i as u8 + 1),
            vote,
        })
        .collect();
    c.note::<pbp::PrepareResult>();
    c.rt_fn(
        results,
        convert::prepare_results_to_wire,
        convert::prepare_results_from_wire,
    );

    let acks: Vec<AckResult> = [
        AckStatus::Applied,
        AckStatus::AlreadyApplied,
        AckStatus::NotPrepared,
        AckStatus::ConflictingOutcome,
        AckStatus::Retry,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, status)| AckResult {
        txn_id: txn(i as u8 + 1),
        status,
        message: if status.is_ack() {
            String::new()
        } else {
            "disk full".into()
        },
    })
    .collect();
    c.note::<pbp::AckResult>();
    c.rt_fn(
        acks.clone(),
        convert::commit_acks_to_wire,
        convert::commit_acks_from_wire,
    );
    c.rt_fn(
        acks,
        convert::abort_acks_to_wire,
        convert::abort_acks_from_wire,
    );

    let mut outcomes = vec![
        OnePhaseOutcome::Committed,
        OnePhaseOutcome::Unknown {
            message: "fsync failed".into(),
        },
    ];
    outcomes.extend(
        every_no_reason()
            .into_iter()
            .map(|reason| OnePhaseOutcome::Aborted {
                reason,
                message: String::new(),
            }),
    );
    let results: Vec<OnePhaseResult> = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, outcome)| OnePhaseResult {
            txn_id: txn(i as u8 + 1),
            outcome,
        })
        .collect();
    c.note::<pbp::OnePhaseResult>();
    c.rt_fn(
        results,
        convert::one_phase_results_to_wire,
        convert::one_phase_results_from_wire,
    );
}

fn every_command() -> Vec<Command> {
    let mut items: Vec<DecideItem> = every_final_decision()
        .into_iter()
        .enumerate()
        .map(|(i, decision)| DecideItem {
            txn_id: txn(40 + i as u8),
            decision,
            source: DecisionSource::Commit,
            participants: vec![p("a"), p("b")],
        })
        .collect();
    for (i, source) in [
        DecisionSource::Resolve,
        DecisionSource::ClientAbort,
        DecisionSource::Operator,
    ]
    .into_iter()
    .enumerate()
    {
        items.push(DecideItem {
            txn_id: txn(60 + i as u8),
            decision: FinalDecision::Abort(AbortInfo::new(AbortCause::Operator, "")),
            source,
            participants: vec![],
        });
    }
    vec![
        Command {
            proposed_at_unix_ms: 1,
            kind: CommandKind::Decide(items),
        },
        Command {
            proposed_at_unix_ms: 2,
            kind: CommandKind::Forget(vec![
                PhaseTwoAck {
                    txn_id: txn(40),
                    participants: vec![p("a"), p("b")],
                },
                PhaseTwoAck {
                    txn_id: txn(41),
                    participants: vec![p("a")],
                },
            ]),
        },
        Command {
            proposed_at_unix_ms: 3,
            kind: CommandKind::Compact {
                before_unix_ms: 1_000,
            },
        },
        Command {
            proposed_at_unix_ms: 4,
            kind: CommandKind::RegisterParticipant {
                participant: p("payments"),
                endpoint: ep("http://127.0.0.1:7100"),
            },
        },
    ]
}

mod raft {
    use super::*;
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::{
        BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
        StoredMembership,
    };
    use ratify_proto::raft as conv;
    use std::io::Cursor;

    openraft::declare_raft_types!(
        pub TestConfig:
            D = Command,
            R = (),
    );

    fn log_id(term: u64, node: u64, index: u64) -> LogId<u64> {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn membership(joint: bool) -> Membership<u64, BasicNode> {
        let nodes: BTreeMap<u64, BasicNode> = (1..=4)
            .map(|id| {
                (
                    id,
                    BasicNode {
                        addr: format!("http://127.0.0.1:700{id}"),
                    },
                )
            })
            .collect();
        let mut configs = vec![BTreeSet::from([1, 2, 3])];
        if joint {
            configs.push(BTreeSet::from([1, 2, 4]));
        }
        Membership::new(configs, nodes)
    }

    fn cmp_via_debug<T: Debug>(a: &T, b: &T) {
        // openraft's Entry has no PartialEq; its Debug output is complete.
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    fn wire_rt<W: Message + Default + PartialEq + Debug>(c: &mut Coverage, wire: &W) -> W {
        let decoded = W::decode(wire.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(&decoded, wire);
        c.note::<W>();
        decoded
    }

    pub(super) fn raft_api(c: &mut Coverage) {
        let mut entries: Vec<Entry<TestConfig>> = vec![
            Entry {
                log_id: log_id(1, 1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(1, 1, 2),
                payload: EntryPayload::Membership(membership(false)),
            },
            Entry {
                log_id: log_id(2, 3, 3),
                payload: EntryPayload::Membership(membership(true)),
            },
        ];
        for (i, cmd) in every_command().into_iter().enumerate() {
            entries.push(Entry {
                log_id: log_id(2, 3, 4 + i as u64),
                payload: EntryPayload::Normal(cmd),
            });
        }
        for (prev, commit, vote) in [
            (None, None, openraft::Vote::new(1, 1)),
            (
                Some(log_id(1, 1, 0)),
                Some(log_id(2, 3, 2)),
                openraft::Vote::new_committed(2, 3),
            ),
        ] {
            let req = AppendEntriesRequest::<TestConfig> {
                vote,
                prev_log_id: prev,
                entries: entries.clone(),
                leader_commit: commit,
            };
            let wire = wire_rt(c, &conv::append_entries_to_wire(&req));
            let back = conv::append_entries_from_wire::<TestConfig>(wire).expect("valid");
            cmp_via_debug(&back, &req);
        }
        for resp in [
            AppendEntriesResponse::Success,
            AppendEntriesResponse::PartialSuccess(None),
            AppendEntriesResponse::PartialSuccess(Some(log_id(3, 2, 9))),
            AppendEntriesResponse::Conflict,
            AppendEntriesResponse::HigherVote(openraft::Vote::new_committed(5, 2)),
        ] {
            let wire = wire_rt(c, &conv::append_entries_response_to_wire(&resp));
            assert_eq!(
                conv::append_entries_response_from_wire(wire).expect("valid"),
                resp
            );
        }
        for last in [None, Some(log_id(4, 1, 77))] {
            let req = VoteRequest::new(openraft::Vote::new(5, 1), last);
            let wire = wire_rt(c, &conv::vote_request_to_wire(&req));
            assert_eq!(conv::vote_request_from_wire(wire).expect("valid"), req);
            for granted in [true, false] {
                let resp = VoteResponse::new(openraft::Vote::new_committed(5, 1), last, granted);
                let wire = wire_rt(c, &conv::vote_response_to_wire(&resp));
                assert_eq!(conv::vote_response_from_wire(wire).expect("valid"), resp);
            }
        }
        for (last_log_id, stored) in [
            (None, StoredMembership::default()),
            (
                Some(log_id(2, 3, 40)),
                StoredMembership::new(Some(log_id(1, 1, 2)), membership(false)),
            ),
            (
                Some(log_id(2, 3, 41)),
                StoredMembership::new(Some(log_id(2, 3, 3)), membership(true)),
            ),
        ] {
            let req = InstallSnapshotRequest::<TestConfig> {
                vote: openraft::Vote::new_committed(2, 3),
                meta: SnapshotMeta {
                    last_log_id,
                    last_membership: stored,
                    snapshot_id: "2-3-40-7".into(),
                },
                offset: 1 << 20,
                data: vec![0, 1, 2, 255],
                done: last_log_id.is_some(),
            };
            let wire = wire_rt(c, &conv::install_snapshot_to_wire(&req));
            assert_eq!(
                conv::install_snapshot_from_wire::<TestConfig>(wire).expect("valid"),
                req
            );
        }
        let resp = InstallSnapshotResponse {
            vote: openraft::Vote::new(9, 2),
        };
        let wire = wire_rt(c, &conv::install_snapshot_response_to_wire(&resp));
        assert_eq!(
            conv::install_snapshot_response_from_wire(wire).expect("valid"),
            resp
        );
    }

    pub(super) fn malformed(c: &mut Coverage) {
        let _ = c;
        // A voter without a node entry.
        let bad = pbr::Membership {
            configs: vec![pbr::VoterSet {
                node_ids: vec![1, 9],
            }],
            nodes: [(
                1,
                pbr::Node {
                    addr: "http://a:1".into(),
                },
            )]
            .into(),
        };
        let err = conv::membership_from_wire("membership", bad).expect_err("must refuse");
        assert_eq!(err.field(), "membership.configs[0]");
        // A vote without a leader id.
        let err = conv::vote_request_from_wire(pbr::VoteRequest {
            vote: Some(pbr::RaftVote {
                leader_id: None,
                committed: false,
            }),
            last_log_id: None,
        })
        .expect_err("must refuse");
        assert_eq!(err.field(), "vote.leader_id");
        // An entry whose command is malformed names the entry.
        let err = conv::append_entries_from_wire::<TestConfig>(pbr::AppendEntriesRequest {
            vote: Some(conv::vote_to_wire(&openraft::Vote::new(1, 1))),
            prev_log_id: None,
            entries: vec![pbr::Entry {
                log_id: Some(conv::log_id_to_wire(&log_id(1, 1, 1))),
                payload: Some(pbr::entry::Payload::Command(pbr::Command {
                    proposed_at_unix_ms: 0,
                    kind: None,
                })),
            }],
            leader_commit: None,
        })
        .expect_err("must refuse");
        assert_eq!(err.field(), "entries[0].command");
    }
}

fn commands(c: &mut Coverage) {
    for cmd in every_command() {
        c.rt::<_, pbr::Command>(cmd);
    }
}

fn errors(c: &mut Coverage) {
    let codes = [
        ErrorCode::NotLeader,
        ErrorCode::MalformedTxnId,
        ErrorCode::MalformedParticipantId,
        ErrorCode::DuplicateParticipant,
        ErrorCode::UnknownParticipant,
        ErrorCode::LimitExceeded,
        ErrorCode::InvalidField,
        ErrorCode::UnknownTxn,
        ErrorCode::Unavailable,
        ErrorCode::Storage,
        ErrorCode::TxnAborted,
        ErrorCode::Conflict,
        ErrorCode::Precondition,
    ];
    for code in codes {
        let mut detail = ErrorDetail::new(code, format!("{code:?} happened"));
        c.rt::<_, pbc::ErrorDetail>(detail.clone());
        detail.field = Some("participants[2]".into());
        detail.limit = Some("participants_per_txn_max=64".into());
        detail.leader_id = Some(2);
        detail.leader_endpoint = Some(ep("http://127.0.0.1:7002"));
        detail.txn_id = Some(txn(9));
        detail.participant = Some(p("payments"));
        c.rt::<_, pbc::ErrorDetail>(detail.clone());
        // Through a tonic::Status and back, as a client in any language would read it.
        let status = detail.clone().into_status();
        assert_eq!(status.code(), code.grpc_code());
        assert_eq!(ErrorDetail::from_status(&status), Some(detail));
    }
    // AbortInfo rides inside responses; every cause and reason went through above.
    c.note::<pbc::AbortInfo>();
}

/// Every message in the descriptor set, without map-entry helper types.
fn all_messages() -> BTreeMap<String, prost_types::DescriptorProto> {
    let set = prost_types::FileDescriptorSet::decode(ratify_proto::FILE_DESCRIPTOR_SET)
        .expect("descriptor set decodes");
    let mut out = BTreeMap::new();
    fn walk(
        prefix: &str,
        msgs: &[prost_types::DescriptorProto],
        out: &mut BTreeMap<String, prost_types::DescriptorProto>,
    ) {
        for m in msgs {
            let name = format!("{prefix}.{}", m.name());
            walk(&name, &m.nested_type, out);
            if !m.options.as_ref().is_some_and(|o| o.map_entry()) {
                out.insert(name, m.clone());
            }
        }
    }
    for file in &set.file {
        // Example services and the harness's KV service use their wire types directly; they
        // have no domain types.
        if file.package().starts_with("ratify.example.")
            || file.package().starts_with("ratify.jepsen.")
        {
            continue;
        }
        walk(file.package(), &file.message_type, &mut out);
    }
    out
}

#[test]
fn every_message_round_trips() {
    let mut c = Coverage::default();
    coordinator_api(&mut c);
    admin_api(&mut c);
    participant_api(&mut c);
    commands(&mut c);
    errors(&mut c);
    raft::raft_api(&mut c);

    // Messages reached through the fields of a covered message were exercised by its round
    // trip (the values above use every variant of every nested type).
    let all = all_messages();
    let mut covered = c.messages.clone();
    let mut frontier: Vec<String> = covered.iter().cloned().collect();
    while let Some(name) = frontier.pop() {
        let Some(desc) = all.get(&name) else { continue };
        for field in &desc.field {
            if field.r#type() != prost_types::field_descriptor_proto::Type::Message {
                continue; // scalars and enums
            }
            let ty = field.type_name().trim_start_matches('.').to_owned();
            // Map fields point at a synthetic entry type; follow its value type.
            let targets: Vec<String> = if let Some(entry) = ty
                .rsplit_once('.')
                .and_then(|(parent, entry)| all.get(parent).map(|p| (p, entry)))
                .and_then(|(p, entry)| p.nested_type.iter().find(|n| n.name() == entry))
            {
                entry
                    .field
                    .iter()
                    .filter(|f| f.r#type() == prost_types::field_descriptor_proto::Type::Message)
                    .map(|f| f.type_name().trim_start_matches('.').to_owned())
                    .collect()
            } else {
                vec![ty]
            };
            for t in targets {
                if !t.is_empty() && covered.insert(t.clone()) {
                    frontier.push(t);
                }
            }
        }
    }
    let missing: Vec<&String> = all.keys().filter(|m| !covered.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "messages without a round trip: {missing:?}"
    );
    let unknown: Vec<&String> = covered.iter().filter(|m| !all.contains_key(*m)).collect();
    assert!(
        unknown.is_empty(),
        "covered names not in the descriptor: {unknown:?}"
    );
}

#[test]
fn malformed_input_is_refused_with_the_field_named() {
    let mut c = Coverage::default();
    raft::malformed(&mut c);

    let err = CommitRequest::try_from(pbco::CommitRequest {
        txn_id: "not-a-uuid".into(),
        participants: vec![],
        deadline_unix_ms: 0,
        call_counts: vec![],
    })
    .expect_err("malformed id");
    assert_eq!(err.code(), ErrorCode::MalformedTxnId);
    assert_eq!(err.field(), "txn_id");

    // Upper case, braces, no hyphens, nil: all refused (one txn, one spelling).
    for bad in [
        "01890A5D-AC96-774B-BCCE-B302099A8057",
        "{01890a5d-ac96-774b-bcce-b302099a8057}",
        "01890a5dac96774bbcceb302099a8057",
        "00000000-0000-0000-0000-000000000000",
        "",
    ] {
        assert!(bad.parse::<TxnId>().is_err(), "{bad:?} accepted");
    }

    let err = CommitRequest::try_from(pbco::CommitRequest {
        txn_id: txn(1).to_string(),
        participants: vec!["a".into(), "b".into(), "a".into()],
        deadline_unix_ms: 0,
        call_counts: vec![],
    })
    .expect_err("duplicate");
    assert_eq!(err.code(), ErrorCode::DuplicateParticipant);
    assert_eq!(err.field(), "participants[2]");

    let err = CommitRequest::try_from(pbco::CommitRequest {
        txn_id: txn(1).to_string(),
        participants: vec!["ok".into(), "Not OK".into()],
        deadline_unix_ms: 0,
        call_counts: vec![],
    })
    .expect_err("bad name");
    assert_eq!(err.code(), ErrorCode::MalformedParticipantId);
    assert_eq!(err.field(), "participants[1]");

    // P10: call counts are one per participant, or none.
    let err = CommitRequest::try_from(pbco::CommitRequest {
        txn_id: txn(1).to_string(),
        participants: vec!["a".into(), "b".into()],
        deadline_unix_ms: 0,
        call_counts: vec![1],
    })
    .expect_err("one count for two participants");
    assert_eq!(err.code(), ErrorCode::InvalidField);
    assert_eq!(err.field(), "call_counts");
    let err = PrepareBatch::try_from(pbp::PrepareRequest {
        txn_ids: vec![txn(1).to_string()],
        coordinator_node_id: 1,
        call_counts: [(txn(2).to_string(), 1)].into(),
    })
    .expect_err("a count for a transaction not in the batch");
    assert_eq!(err.code(), ErrorCode::InvalidField);
    assert!(err.field().starts_with("call_counts["), "{}", err.field());

    // UNSPECIFIED and unknown enum values.
    for raw in [0, 99] {
        let err = convert::prepare_results_from_wire(pbp::PrepareResponse {
            results: vec![pbp::PrepareResult {
                txn_id: txn(1).to_string(),
                vote: raw,
                no_reason: 0,
                message: String::new(),
            }],
        })
        .expect_err("bad vote");
        assert_eq!(err.field(), "results[0].vote");
    }
    // A NO without a reason.
    let err = convert::prepare_results_from_wire(pbp::PrepareResponse {
        results: vec![pbp::PrepareResult {
            txn_id: txn(1).to_string(),
            vote: pbc::Vote::No as i32,
            no_reason: 0,
            message: String::new(),
        }],
    })
    .expect_err("NO needs a reason");
    assert_eq!(err.field(), "results[0].no_reason");
    // An ABORTED outcome without its details.
    let err = CommitResponse::try_from(pbco::CommitResponse {
        outcome: pbc::Outcome::Aborted as i32,
        abort_info: None,
    })
    .expect_err("abort info required");
    assert_eq!(err.field(), "abort_info");
    // Node id 0 is no node.
    let err = AddLearnerRequest::try_from(pbco::AddLearnerRequest {
        node_id: 0,
        endpoint: "http://127.0.0.1:1".into(),
    })
    .expect_err("node 0");
    assert_eq!(err.field(), "node_id");
    // Endpoints need a scheme.
    let err = RegisterParticipantRequest::try_from(pbco::RegisterParticipantRequest {
        participant_id: "a".into(),
        endpoint: "127.0.0.1:7100".into(),
    })
    .expect_err("no scheme");
    assert_eq!(err.field(), "endpoint");
    // A command without a kind.
    let err = Command::try_from(pbr::Command {
        proposed_at_unix_ms: 1,
        kind: None,
    })
    .expect_err("no kind");
    assert_eq!(err.field(), "kind");
    // The status a server returns for a conversion error carries the field.
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let detail = ErrorDetail::from_status(&status).expect("detail attached");
    assert_eq!(detail.code, ErrorCode::InvalidField);
    assert_eq!(detail.field.as_deref(), Some("kind"));
}

#[test]
fn long_messages_are_truncated_at_a_char_boundary() {
    let long = "é".repeat(MESSAGE_LEN_MAX); // 2 bytes each
    let back = AbortRequest::try_from(pbco::AbortRequest {
        txn_id: txn(1).to_string(),
        participants: vec![],
        message: long,
    })
    .expect("valid");
    assert_eq!(back.message.len(), MESSAGE_LEN_MAX);
    assert!(back.message.chars().all(|c| c == 'é'));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text either parses to an id whose canonical form is that text, or is refused;
        /// nothing panics.
        #[test]
        fn txn_id_text_is_canonical_or_refused(s in "\\PC{0,40}") {
            if let Ok(id) = s.parse::<TxnId>() {
                prop_assert_eq!(id.to_string(), s);
            }
        }

        #[test]
        fn txn_id_round_trips(bytes in any::<[u8; 16]>()) {
            if let Ok(id) = TxnId::from_bytes(bytes) {
                prop_assert_eq!(id.to_string().parse::<TxnId>(), Ok(id));
                prop_assert_eq!(TxnId::from_bytes(id.to_bytes()), Ok(id));
            }
        }

        #[test]
        fn participant_ids_are_valid_or_refused(s in "[a-zA-Z0-9._ -]{0,70}") {
            match ParticipantId::new(s.clone()) {
                Ok(id) => {
                    prop_assert!(s.len() <= PARTICIPANT_ID_LEN_MAX);
                    prop_assert_eq!(id.as_str(), s.as_str());
                }
                Err(_) => prop_assert!(
                    s.is_empty()
                        || s.len() > PARTICIPANT_ID_LEN_MAX
                        || s.bytes().any(|b| b.is_ascii_uppercase() || b == b' ')
                        || !s.as_bytes()[0].is_ascii_alphanumeric()
                ),
            }
        }

        /// Arbitrary bytes decoded as a request never panic the conversion.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(w) = pbco::CommitRequest::decode(bytes.as_slice()) {
                let _ = CommitRequest::try_from(w);
            }
            if let Ok(w) = pbr::Command::decode(bytes.as_slice()) {
                let _ = Command::try_from(w);
            }
            if let Ok(w) = pbp::PrepareResponse::decode(bytes.as_slice()) {
                let _ = convert::prepare_results_from_wire(w);
            }
        }
    }
}

#[test]
fn v7_ids_carry_their_creation_time() {
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    let id = TxnId::new_v7();
    let created = id.created_unix_ms().expect("v7");
    assert!(created >= before && created <= before + 60_000);
    assert!(txn(1).created_unix_ms().is_some());
}
