//! The history being recorded: operations (Jepsen/Elle JSON lines) and the nemesis timeline,
//! on one clock (nanoseconds since the run began).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
// tokio's clock: the real one in the harness, the simulated one under simulation.
use tokio::time::Instant;

use ratify_check::{NemesisEvent, NemesisPhase, Op, OpType};

/// Operations recorded in one run, at most (a longer run stops invoking; the cap is far above
/// what a run of hours produces here).
pub const OPS_MAX: usize = 20_000_000;

/// Thread-safe recorder.
pub struct Recorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
    nemesis: Mutex<Vec<NemesisEvent>>,
    next_process: AtomicU64,
    next_nemesis: AtomicU64,
}

impl Recorder {
    /// Starting now; processes `0..workers` are taken by the workers.
    pub fn new(workers: u64) -> Self {
        Self {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
            nemesis: Mutex::new(Vec::new()),
            next_process: AtomicU64::new(workers),
            next_nemesis: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// A fresh process number (a worker continues under a new one after an `info`).
    pub fn new_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::SeqCst)
    }

    /// Whether the history is full.
    pub fn full(&self) -> bool {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).len() >= OPS_MAX
    }

    /// Record an entry; returns its index.
    pub fn record(
        &self,
        process: u64,
        kind: OpType,
        f: &str,
        value: serde_json::Value,
        error: Option<String>,
        txn_id: Option<String>,
    ) -> u64 {
        self.complete(process, kind, f, value, error, txn_id, Vec::new())
    }

    /// Record an entry with what its business calls showed (see [`Op::call_notes`]); returns
    /// its index.
    #[allow(clippy::too_many_arguments)]
    pub fn complete(
        &self,
        process: u64,
        kind: OpType,
        f: &str,
        value: serde_json::Value,
        error: Option<String>,
        txn_id: Option<String>,
        call_notes: Vec<String>,
    ) -> u64 {
        let mut ops = self.ops.lock().unwrap_or_else(|p| p.into_inner());
        let index = ops.len() as u64;
        ops.push(Op {
            index,
            time: self.now(),
            process,
            kind,
            f: f.to_owned(),
            value,
            error,
            txn_id,
            call_notes,
        });
        index
    }

    /// Open a nemesis interval; returns its id.
    pub fn nemesis_start(&self, f: &str, value: serde_json::Value) -> u64 {
        let id = self.next_nemesis.fetch_add(1, Ordering::SeqCst);
        self.nemesis_event(id, NemesisPhase::Start, f, value);
        id
    }

    /// Close a nemesis interval.
    pub fn nemesis_stop(&self, id: u64, f: &str, value: serde_json::Value) {
        self.nemesis_event(id, NemesisPhase::Stop, f, value);
    }

    /// An instantaneous nemesis event.
    pub fn nemesis_info(&self, f: &str, value: serde_json::Value) {
        let id = self.next_nemesis.fetch_add(1, Ordering::SeqCst);
        self.nemesis_event(id, NemesisPhase::Info, f, value);
    }

    fn nemesis_event(&self, id: u64, phase: NemesisPhase, f: &str, value: serde_json::Value) {
        tracing::info!(nemesis = f, ?phase, %value, "nemesis");
        let time = self.now();
        self.nemesis
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(NemesisEvent {
                time,
                phase,
                id,
                f: f.to_owned(),
                value,
            });
    }

    /// Everything recorded.
    pub fn take(&self) -> (Vec<Op>, Vec<NemesisEvent>) {
        let ops = std::mem::take(&mut *self.ops.lock().unwrap_or_else(|p| p.into_inner()));
        let nem = std::mem::take(&mut *self.nemesis.lock().unwrap_or_else(|p| p.into_inner()));
        (ops, nem)
    }
}
