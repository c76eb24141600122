//! The pure 2PC driver: one full transaction (Commit, two votes, applied decision from the apply
//! feed, two acks,
//! Forget) through `step`, no I/O.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ratify_coordinator::state::{AppliedDecision, Effect};
use ratify_coordinator::txn::driver::{Driver, DriverConfig, Input};
use ratify_proto::types::participant::AckStatus;
use ratify_proto::types::{DecisionSource, FinalDecision, ParticipantId, TxnId, Vote};

fn one_transaction(c: &mut Criterion) {
    let a = ParticipantId::new("a").expect("valid");
    let b = ParticipantId::new("b").expect("valid");
    let mut driver = Driver::new(DriverConfig::default());
    driver.step(0, Input::BecameLeader { pending: vec![] });
    let mut now = 1u64;
    let mut reply = 0u64;
    let mut group = c.benchmark_group("driver");
    group.throughput(Throughput::Elements(1));
    group.bench_function("commit_two_participants", |bench| {
        bench.iter(|| {
            now += 1;
            reply += 1;
            let t = TxnId::new_v7();
            let mut actions = driver.step(
                now,
                Input::Commit {
                    txn_id: t,
                    participants: vec![a.clone(), b.clone()],
                    deadline_unix_ms: now + 1_000,
                    call_counts: vec![1, 1],
                    recorded: None,
                    reply,
                },
            );
            actions.extend(driver.step(
                now,
                Input::Votes {
                    participant: a.clone(),
                    votes: vec![(t, Vote::Yes)],
                },
            ));
            actions.extend(driver.step(
                now,
                Input::Votes {
                    participant: b.clone(),
                    votes: vec![(t, Vote::Yes)],
                },
            ));
            actions.extend(driver.step(
                now,
                Input::Applied {
                    effects: vec![Effect::Decided(AppliedDecision {
                        txn_id: t,
                        decision: FinalDecision::Commit,
                        newly_decided: true,
                        pending: vec![a.clone(), b.clone()],
                        source: DecisionSource::Commit,
                    })],
                },
            ));
            actions.extend(driver.step(
                now,
                Input::Acks {
                    participant: a.clone(),
                    acks: vec![(t, AckStatus::Applied)],
                },
            ));
            actions.extend(driver.step(
                now,
                Input::Acks {
                    participant: b.clone(),
                    acks: vec![(t, AckStatus::Applied)],
                },
            ));
            actions.extend(driver.step(now, Input::Tick));
            std::hint::black_box(actions)
        });
    });
    group.finish();
}

criterion_group!(benches, one_transaction);
criterion_main!(benches);
