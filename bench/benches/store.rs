//! The participant store's prepare+commit pairs per second, at concurrency 1 and 64, on real
//! RocksDB with fsync (issue 3's target: >= 10,000 pairs/s at 64 with < 1 fsync per txn).
//! After each group, prints the fsyncs per transaction it took.

use std::sync::atomic::Ordering;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use ratify_participant::{Resource, RocksStore, StoreConfig, TxnContext};
use ratify_proto::types::{TxnId, Vote};

async fn pair(store: &RocksStore, key: &[u8]) {
    let t = TxnId::new_v7();
    store
        .txn(&TxnContext::new(t))
        .expect("begin")
        .put(key, b"value")
        .await
        .expect("stage");
    assert_eq!(store.prepare(t).await.expect("prepare"), Vote::Yes);
    store.commit(t).await.expect("commit");
}

fn prepare_commit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = RocksStore::open(dir.path(), StoreConfig::default()).expect("open");
    let mut group = c.benchmark_group("store_prepare_commit");
    for concurrency in [1usize, 64] {
        group.throughput(Throughput::Elements(concurrency as u64));
        let before = (
            store.stats().fsyncs.load(Ordering::Relaxed),
            store.stats().committed.load(Ordering::Relaxed),
        );
        group.bench_with_input(
            BenchmarkId::from_parameter(concurrency),
            &concurrency,
            |b, &n| {
                b.to_async(&rt).iter(|| {
                    let store = store.clone();
                    async move {
                        // Distinct keys: this measures durability and batching, not lock conflicts.
                        let keys: Vec<Vec<u8>> = (0..n)
                            .map(|_| TxnId::new_v7().to_bytes().to_vec())
                            .collect();
                        join_all(keys.iter().map(|k| pair(&store, k))).await;
                    }
                });
            },
        );
        let fsyncs = store.stats().fsyncs.load(Ordering::Relaxed) - before.0;
        let txns = store.stats().committed.load(Ordering::Relaxed) - before.1;
        println!(
            "concurrency {concurrency}: {txns} transactions, {fsyncs} fsyncs, {:.3} fsyncs per transaction",
            fsyncs as f64 / txns.max(1) as f64
        );
    }
    group.finish();
}

criterion_group!(benches, prepare_commit);
criterion_main!(benches);
