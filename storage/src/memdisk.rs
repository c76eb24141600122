//! An in-memory disk for the deterministic simulation: ordered key/value column families with
//! atomic batches and RocksDB's durability contract — a write is visible at once, durable only
//! once synced (a synced write, or [`MemDisk::sync`], makes every earlier write durable too, as
//! one shared write-ahead log does). [`MemDisk::crash`] forgets every unsynced write, as a power
//! loss would, so a store that acknowledges before it syncs loses data under simulation.
//!
//! The coordinator's and the participant store's databases have a RocksDB engine and this one
//! behind the same calls; the disk outlives the simulated process that uses it (a restart
//! reopens the same disk).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// One change in a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` in column family `cf`.
    Put {
        /// Column family.
        cf: &'static str,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` from `cf`.
    Delete {
        /// Column family.
        cf: &'static str,
        /// Key.
        key: Vec<u8>,
    },
    /// Remove every key in `[from, to)` from `cf`.
    DeleteRange {
        /// Column family.
        cf: &'static str,
        /// First key removed.
        from: Vec<u8>,
        /// First key kept.
        to: Vec<u8>,
    },
}

/// An atomic group of changes, engine-neutral (the RocksDB engines turn it into a
/// `WriteBatch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `key` to `value` in `cf`.
    pub fn put(&mut self, cf: &'static str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops.push(Op::Put {
            cf,
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
        });
    }

    /// Remove `key` from `cf`.
    pub fn delete(&mut self, cf: &'static str, key: impl AsRef<[u8]>) {
        self.ops.push(Op::Delete {
            cf,
            key: key.as_ref().to_vec(),
        });
    }

    /// Remove the keys in `[from, to)` from `cf`.
    pub fn delete_range(&mut self, cf: &'static str, from: impl AsRef<[u8]>, to: impl AsRef<[u8]>) {
        self.ops.push(Op::DeleteRange {
            cf,
            from: from.as_ref().to_vec(),
            to: to.as_ref().to_vec(),
        });
    }

    /// The changes, in order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Take the changes.
    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// No changes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// How many changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

type Tables = BTreeMap<&'static str, BTreeMap<Vec<u8>, Vec<u8>>>;

#[derive(Default)]
struct Inner {
    /// What readers see.
    current: Tables,
    /// What survives a crash.
    durable: Tables,
    /// Written since the last sync, in order (replayed onto `durable` by a sync).
    unsynced: Vec<Op>,
    /// Counters, for tests and the simulation's report.
    writes: u64,
    syncs: u64,
    crashes: u64,
}

fn apply(tables: &mut Tables, op: &Op) {
    match op {
        Op::Put { cf, key, value } => {
            tables
                .entry(cf)
                .or_default()
                .insert(key.clone(), value.clone());
        }
        Op::Delete { cf, key } => {
            if let Some(t) = tables.get_mut(cf) {
                t.remove(key);
            }
        }
        Op::DeleteRange { cf, from, to } => {
            if let Some(t) = tables.get_mut(cf)
                && from < to
            {
                let doomed: Vec<Vec<u8>> = t
                    .range::<Vec<u8>, _>((Bound::Included(from), Bound::Excluded(to)))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in doomed {
                    t.remove(&k);
                }
            }
        }
    }
}

/// The in-memory disk. Share it with `Arc`; it outlives the processes that open it.
#[derive(Default)]
pub struct MemDisk {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for MemDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.lock();
        f.debug_struct("MemDisk")
            .field("writes", &g.writes)
            .field("syncs", &g.syncs)
            .field("crashes", &g.crashes)
            .field("unsynced", &g.unsynced.len())
            .finish()
    }
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Read one value.
    pub fn get(&self, cf: &str, key: &[u8]) -> Option<Vec<u8>> {
        self.lock().current.get(cf)?.get(key).cloned()
    }

    /// Apply `batch` atomically; with `sync`, make it and every earlier write durable.
    pub fn write(&self, batch: Batch, sync: bool) {
        let mut g = self.lock();
        g.writes += 1;
        for op in batch.ops {
            apply(&mut g.current, &op);
            g.unsynced.push(op);
        }
        if sync {
            Self::sync_locked(&mut g);
        }
    }

    /// Apply `batch` so that readers see it but no sync ever makes it durable (a write that
    /// bypasses the write-ahead log): a crash forgets it. For the planted bug
    /// `yes-without-sync`.
    pub fn write_unlogged(&self, batch: Batch) {
        let mut g = self.lock();
        g.writes += 1;
        for op in batch.ops {
            apply(&mut g.current, &op);
        }
    }

    /// Make every write so far durable.
    pub fn sync(&self) {
        Self::sync_locked(&mut self.lock());
    }

    fn sync_locked(g: &mut Inner) {
        g.syncs += 1;
        let ops = std::mem::take(&mut g.unsynced);
        for op in &ops {
            apply(&mut g.durable, op);
        }
    }

    /// The entries of `cf` in `(from, to)` bounds, ascending or (with `reverse`) descending,
    /// at most `limit` of them. A copy: later writes do not change it.
    pub fn scan(
        &self,
        cf: &str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let g = self.lock();
        let Some(t) = g.current.get(cf) else {
            return Vec::new();
        };
        let bounds = (from.map(<[u8]>::to_vec), to.map(<[u8]>::to_vec));
        if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
            (&bounds.0, &bounds.1)
        {
            // BTreeMap::range panics on an inverted range; an inverted range is empty.
            let touching_excluded = a == b
                && (matches!(bounds.0, Bound::Excluded(_))
                    || matches!(bounds.1, Bound::Excluded(_)));
            if a > b || touching_excluded {
                return Vec::new();
            }
        }
        let range = t.range::<Vec<u8>, _>(bounds);
        let clone = |(k, v): (&Vec<u8>, &Vec<u8>)| (k.clone(), v.clone());
        if reverse {
            range.rev().take(limit).map(clone).collect()
        } else {
            range.take(limit).map(clone).collect()
        }
    }

    /// A crash (power loss): every write not yet synced is forgotten.
    pub fn crash(&self) {
        let mut g = self.lock();
        g.crashes += 1;
        g.unsynced.clear();
        g.current = g.durable.clone();
    }

    /// How many entries of `cf` are durable (would survive a crash now), counting at most
    /// `max`. For a simulation that crashes a process once it has made something durable (a
    /// participant's prepare record, say).
    pub fn durable_len(&self, cf: &str, max: usize) -> usize {
        self.lock().durable.get(cf).map_or(0, |t| t.len().min(max))
    }

    /// (writes, syncs, crashes) so far.
    pub fn counters(&self) -> (u64, u64, u64) {
        let g = self.lock();
        (g.writes, g.syncs, g.crashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_loses_exactly_the_unsynced_writes() {
        let d = MemDisk::new();
        let mut b = Batch::new();
        b.put("a", b"k1", b"v1");
        d.write(b, true);
        let mut b = Batch::new();
        b.put("a", b"k2", b"v2");
        b.delete("a", b"k1");
        d.write(b, false);
        assert_eq!(d.get("a", b"k1"), None);
        assert_eq!(d.get("a", b"k2"), Some(b"v2".to_vec()));
        d.crash();
        assert_eq!(d.get("a", b"k1"), Some(b"v1".to_vec()));
        assert_eq!(d.get("a", b"k2"), None);
        // A later sync makes earlier unsynced writes durable too (one shared log), but never
        // an unlogged one.
        let mut b = Batch::new();
        b.put("a", b"k3", b"v3");
        d.write(b, false);
        let mut b = Batch::new();
        b.put("a", b"k4", b"v4");
        d.write_unlogged(b);
        assert_eq!(d.get("a", b"k4"), Some(b"v4".to_vec()));
        d.sync();
        d.crash();
        assert_eq!(d.get("a", b"k3"), Some(b"v3".to_vec()));
        assert_eq!(d.get("a", b"k4"), None);
    }

    #[test]
    fn scans_ranges_both_ways_and_tolerates_inverted_bounds() {
        let d = MemDisk::new();
        let mut b = Batch::new();
        for i in 0u8..10 {
            b.put("t", [i], [i]);
        }
        b.delete_range("t", [7u8], [9u8]);
        d.write(b, false);
        let keys =
            |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k[0]).collect::<Vec<_>>();
        assert_eq!(
            keys(d.scan(
                "t",
                Bound::Included(&[2u8]),
                Bound::Excluded(&[5u8]),
                false,
                10
            )),
            vec![2, 3, 4]
        );
        assert_eq!(
            keys(d.scan("t", Bound::Unbounded, Bound::Unbounded, true, 2)),
            vec![9, 6]
        );
        assert!(
            d.scan(
                "t",
                Bound::Included(&[5u8]),
                Bound::Excluded(&[2u8]),
                false,
                10
            )
            .is_empty()
        );
        assert!(
            d.scan(
                "t",
                Bound::Excluded(&[5u8]),
                Bound::Excluded(&[5u8]),
                false,
                10
            )
            .is_empty()
        );
        assert!(
            d.scan("missing", Bound::Unbounded, Bound::Unbounded, false, 10)
                .is_empty()
        );
    }
}
