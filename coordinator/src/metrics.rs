//! Prometheus metrics on an HTTP port (`--metrics-listen`): commit latency, outcomes, votes,
//! the phase-2 backlog, in-doubt transactions and their age, Raft term and leadership.
//!
//! The HTTP side is a deliberately small HTTP/1.1 responder (GET /metrics, one response per
//! connection), bounded in request size, time and concurrent connections; it needs no HTTP
//! server dependency.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use openraft::ServerState;
use ratify_proto::types::{Outcome, Vote};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::raft::Raft;
use crate::raft::state_machine::StateView;

/// Upper bounds of the commit latency histogram, in milliseconds.
const LATENCY_BUCKETS_MS: [u64; 13] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000,
];
/// Largest request head accepted from a scraper.
const REQUEST_BYTES_MAX: usize = 8 << 10;
/// A scrape must send its request within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once, at most.
const CONNECTIONS_MAX: usize = 16;

/// Counters and gauges, updated by the server and the 2PC runtime.
#[derive(Default)]
pub struct Metrics {
    commits_committed: AtomicU64,
    commits_aborted: AtomicU64,
    commits_unknown: AtomicU64,
    commits_refused: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    votes_yes: AtomicU64,
    votes_no: AtomicU64,
    votes_read_only: AtomicU64,
    resolves: AtomicU64,
    deciding: AtomicU64,
    phase2_backlog: AtomicU64,
}

impl Metrics {
    /// A Commit call's answer and how long it took.
    pub fn commit_answered(&self, outcome: &Outcome, took: Duration) {
        let counter = match outcome {
            Outcome::Committed => &self.commits_committed,
            Outcome::Aborted(_) => &self.commits_aborted,
            Outcome::Unknown => &self.commits_unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ms = took.as_millis() as u64;
        for (i, bound) in LATENCY_BUCKETS_MS.iter().enumerate() {
            if ms <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A Commit call refused (invalid, not leader, overloaded).
    pub fn commit_refused(&self) {
        self.commits_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A participant's vote arrived.
    pub fn vote(&self, vote: &Vote) {
        match vote {
            Vote::Yes => &self.votes_yes,
            Vote::No { .. } => &self.votes_no,
            Vote::ReadOnly => &self.votes_read_only,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// A Resolve call arrived.
    pub fn resolve(&self) {
        self.resolves.fetch_add(1, Ordering::Relaxed);
    }

    /// The driver's in-memory load after a round.
    pub fn driver_load(&self, deciding: usize, phase2_backlog: usize) {
        self.deciding.store(deciding as u64, Ordering::Relaxed);
        self.phase2_backlog
            .store(phase2_backlog as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, node_id: u64, raft: &Raft, view: &StateView, now_unix_ms: u64) -> String {
        let mut out = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        write_metric(
            &mut out,
            "ratify_commit_requests_total",
            "counter",
            "Commit calls answered here, by answer.",
            &[
                ("{outcome=\"committed\"}", get(&self.commits_committed)),
                ("{outcome=\"aborted\"}", get(&self.commits_aborted)),
                ("{outcome=\"unknown\"}", get(&self.commits_unknown)),
                ("{outcome=\"refused\"}", get(&self.commits_refused)),
            ],
        );
        let bucket_labels: Vec<String> = LATENCY_BUCKETS_MS
            .iter()
            .map(|ms| format!("{{le=\"{}\"}}", *ms as f64 / 1000.0))
            .collect();
        let mut buckets: Vec<(&str, f64)> = bucket_labels
            .iter()
            .zip(&self.latency_buckets)
            .map(|(l, b)| (l.as_str(), get(b)))
            .collect();
        buckets.push(("{le=\"+Inf\"}", get(&self.latency_count)));
        let _ = writeln!(
            out,
            "# HELP ratify_commit_latency_seconds Commit call latency at this node.\n# TYPE ratify_commit_latency_seconds histogram"
        );
        for (labels, value) in &buckets {
            let _ = writeln!(out, "ratify_commit_latency_seconds_bucket{labels} {value}");
        }
        let _ = writeln!(
            out,
            "ratify_commit_latency_seconds_sum {}\nratify_commit_latency_seconds_count {}",
            get(&self.latency_sum_us) / 1e6,
            get(&self.latency_count)
        );
        write_metric(
            &mut out,
            "ratify_votes_total",
            "counter",
            "Participant votes received by this node's 2PC driver.",
            &[
                ("{vote=\"yes\"}", get(&self.votes_yes)),
                ("{vote=\"no\"}", get(&self.votes_no)),
                ("{vote=\"read_only\"}", get(&self.votes_read_only)),
            ],
        );
        write_metric(
            &mut out,
            "ratify_resolve_requests_total",
            "counter",
            "Resolve calls from in-doubt participants.",
            &[("", get(&self.resolves))],
        );
        write_metric(
            &mut out,
            "ratify_txns_deciding",
            "gauge",
            "Transactions being prepared or decided by this leader.",
            &[("", get(&self.deciding))],
        );
        write_metric(
            &mut out,
            "ratify_phase2_backlog",
            "gauge",
            "Phase-2 deliveries (transaction, participant) outstanding at this leader.",
            &[("", get(&self.phase2_backlog))],
        );
        let (decided, completed, oldest) = {
            let v = view.read();
            let oldest = v.state.decided.values().map(|r| r.decided_at_unix_ms).min();
            (v.state.decided.len(), v.state.completed.len(), oldest)
        };
        write_metric(
            &mut out,
            "ratify_decided_pending",
            "gauge",
            "Decided transactions not yet acknowledged by every participant (replicated state).",
            &[("", decided as f64)],
        );
        write_metric(
            &mut out,
            "ratify_decided_pending_oldest_age_seconds",
            "gauge",
            "Age of the oldest decided transaction still in phase 2 (0 when none).",
            &[(
                "",
                oldest.map_or(0.0, |t| now_unix_ms.saturating_sub(t) as f64 / 1000.0),
            )],
        );
        write_metric(
            &mut out,
            "ratify_outcomes_retained",
            "gauge",
            "Completed outcomes kept for retries.",
            &[("", completed as f64)],
        );
        let m = raft.metrics().borrow().clone();
        write_metric(
            &mut out,
            "ratify_raft_term",
            "gauge",
            "Current Raft term.",
            &[("", m.current_term as f64)],
        );
        write_metric(
            &mut out,
            "ratify_raft_is_leader",
            "gauge",
            "1 if this node leads.",
            &[(
                "",
                if m.state == ServerState::Leader && m.current_leader == Some(node_id) {
                    1.0
                } else {
                    0.0
                },
            )],
        );
        write_metric(
            &mut out,
            "ratify_raft_leader_id",
            "gauge",
            "The leader this node knows (0: none).",
            &[("", m.current_leader.unwrap_or(0) as f64)],
        );
        write_metric(
            &mut out,
            "ratify_raft_last_log_index",
            "gauge",
            "Last log index here.",
            &[("", m.last_log_index.unwrap_or(0) as f64)],
        );
        write_metric(
            &mut out,
            "ratify_raft_last_applied_index",
            "gauge",
            "Last applied index here.",
            &[("", m.last_applied.map_or(0, |l| l.index) as f64)],
        );
        write_metric(
            &mut out,
            "ratify_raft_snapshot_index",
            "gauge",
            "Last index in this node's snapshot.",
            &[("", m.snapshot.map_or(0, |l| l.index) as f64)],
        );
        out
    }
}

/// One metric's HELP, TYPE and samples (`labels` include their braces, or are empty).
fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// Serve `GET /metrics` on `listener` with the text `render` returns, until the task is
/// dropped.
pub async fn serve(listener: TcpListener, render: Arc<dyn Fn() -> String + Send + Sync>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue; // Too many scrapers at once: drop the connection.
        };
        let render = render.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut head = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let complete = tokio::time::timeout(REQUEST_TIMEOUT, async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_BYTES_MAX {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                true
            })
            .await
            .unwrap_or(false);
            if !complete {
                return;
            }
            let (status, body) =
                if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                    ("200 OK", render())
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_owned())
                };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    /// The endpoint answers GET /metrics with the exposition, anything else with 404, and a
    /// scraper that sends garbage without a header end is cut off without harm.
    #[tokio::test]
    async fn serves_metrics_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let m = Arc::new(Metrics::default());
        m.commit_answered(&Outcome::Committed, Duration::from_millis(3));
        m.vote(&Vote::Yes);
        let rendered = {
            let m = m.clone();
            move || {
                format!(
                    "ratify_commit_requests_total{{outcome=\"committed\"}} {}\n",
                    m.commits_committed.load(Ordering::Relaxed)
                )
            }
        };
        let task = tokio::spawn(serve(listener, Arc::new(rendered)));
        let ok = get(addr, "/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(
            ok.contains("ratify_commit_requests_total{outcome=\"committed\"} 1"),
            "{ok}"
        );
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 404"));
        let mut junk = tokio::net::TcpStream::connect(addr).await.expect("connect");
        junk.write_all(&[b'x'; 100]).await.expect("write");
        drop(junk);
        assert!(
            get(addr, "/metrics").await.starts_with("HTTP/1.1 200"),
            "still serving"
        );
        task.abort();
    }

    #[test]
    fn latency_histogram_is_cumulative() {
        let m = Metrics::default();
        m.commit_answered(&Outcome::Committed, Duration::from_millis(3));
        m.commit_answered(&Outcome::Unknown, Duration::from_millis(700));
        let counts: Vec<u64> = m
            .latency_buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts, vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
    }
}
