//! Calling "the leader" of a coordinator cluster from outside it: try the known endpoints,
//! follow `NOT_LEADER` hints (rule W7), retry while a leader is being elected or a node is down,
//! all bounded by the caller's deadline. Used by the `ratify` CLI, the participant runtime
//! (registration, Resolve) and the initiator client.

use crate::hooks::EndpointExt as _;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::error::{ErrorCode, ErrorDetail};
use crate::types::Endpoint;

/// Retry timing for [`LeaderFollower`].
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Longest single attempt.
    pub attempt_timeout: Duration,
    /// Connecting to a node gives up after this long.
    pub connect_timeout: Duration,
    /// First pause between attempts; doubles up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
    /// Consecutive leader hints followed without a pause, at most (guards against a loop of
    /// stale hints).
    pub hint_hops_max: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_millis(500),
            backoff_min: Duration::from_millis(25),
            backoff_max: Duration::from_millis(1_000),
            hint_hops_max: 3,
        }
    }
}

/// Why a call through [`LeaderFollower`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The cluster answered with an error that retrying will not fix (e.g. INVALID_ARGUMENT).
    #[error("{endpoint} refused: {}", status.message())]
    Refused {
        /// Who answered.
        endpoint: String,
        /// The status (its details carry an [`ErrorDetail`]).
        status: Status,
    },
    /// No answer before the deadline.
    #[error("no answer before the deadline ({attempts} attempts; last: {last})")]
    Deadline {
        /// Attempts made.
        attempts: u32,
        /// The last error seen.
        last: String,
    },
}

impl CallError {
    /// The error detail of a refusal, if the server sent one.
    pub fn detail(&self) -> Option<ErrorDetail> {
        match self {
            CallError::Refused { status, .. } => ErrorDetail::from_status(status),
            CallError::Deadline { .. } => None,
        }
    }
}

struct State {
    /// Where the last successful call went (the leader, most likely).
    leader: Option<Endpoint>,
    channels: HashMap<Endpoint, Channel>,
    /// Rotation through `endpoints` when nobody is known to lead.
    next: usize,
}

/// Finds and calls the leader among a fixed set of endpoints (plus any leader it is told
/// about). Cheap to share; channels are kept and reconnect lazily.
pub struct LeaderFollower {
    endpoints: Vec<Endpoint>,
    policy: RetryPolicy,
    /// Where to really connect (see [`crate::dial`]); `None`: the process's map.
    dial: Option<std::collections::BTreeMap<String, String>>,
    state: Mutex<State>,
}

/// Whether a failed attempt is worth retrying elsewhere or later.
fn retryable(status: &Status, detail: Option<&ErrorDetail>) -> bool {
    match detail.map(|d| d.code) {
        Some(ErrorCode::NotLeader | ErrorCode::Unavailable | ErrorCode::Storage) => true,
        Some(_) => false,
        None => matches!(
            status.code(),
            Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Unknown
                | Code::Cancelled
                | Code::ResourceExhausted
        ),
    }
}

impl LeaderFollower {
    /// Over `endpoints` (at least one).
    pub fn new(endpoints: Vec<Endpoint>, policy: RetryPolicy) -> Result<Self, String> {
        if endpoints.is_empty() {
            return Err("at least one coordinator endpoint is needed".into());
        }
        Ok(Self {
            endpoints,
            policy,
            dial: None,
            state: Mutex::new(State {
                leader: None,
                channels: HashMap::new(),
                next: 0,
            }),
        })
    }

    /// Connect through `map` instead of the process's dial map (see [`crate::dial`]).
    pub fn with_dial_map(mut self, map: std::collections::BTreeMap<String, String>) -> Self {
        self.dial = Some(map);
        self
    }

    /// The endpoints given at construction.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn channel(&self, endpoint: &Endpoint) -> Result<Channel, Status> {
        let mut state = self.state();
        if let Some(c) = state.channels.get(endpoint) {
            return Ok(c.clone());
        }
        let channel = tonic::transport::Endpoint::from_shared(match &self.dial {
            Some(map) => crate::dial::target_in(map, endpoint.as_str()),
            None => crate::dial::target(endpoint.as_str()),
        })
        .map_err(|e| Status::invalid_argument(format!("{endpoint}: {e}")))?
        .connect_timeout(self.policy.connect_timeout)
        .tcp_nodelay(true)
        .lazy_channel();
        state.channels.insert(endpoint.clone(), channel.clone());
        Ok(channel)
    }

    fn first_target(&self) -> Endpoint {
        let state = self.state();
        state
            .leader
            .clone()
            .unwrap_or_else(|| self.endpoints[state.next % self.endpoints.len()].clone())
    }

    fn rotate(&self, failed: &Endpoint) -> Endpoint {
        let mut state = self.state();
        if state.leader.as_ref() == Some(failed) {
            state.leader = None;
        }
        state.next = (state.next + 1) % self.endpoints.len();
        self.endpoints[state.next].clone()
    }

    /// Call `f` on the leader's channel until it answers, a non-retryable error comes back, or
    /// `deadline` passes.
    pub async fn call<T, F, Fut>(&self, deadline: Instant, mut f: F) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut target = self.first_target();
        let mut backoff = self.policy.backoff_min;
        let mut hops = 0u32;
        let mut attempts = 0u32;
        let mut last = String::from("no attempt made");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(CallError::Deadline { attempts, last });
            }
            attempts += 1;
            let budget = (deadline - now).min(self.policy.attempt_timeout);
            let result = match self.channel(&target) {
                Ok(channel) => tokio::time::timeout(budget, f(channel))
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("attempt timed out"))),
                Err(status) => Err(status),
            };
            let status = match result {
                Ok(response) => {
                    self.state().leader = Some(target);
                    return Ok(response.into_inner());
                }
                Err(status) => status,
            };
            let detail = ErrorDetail::from_status(&status);
            last = format!("{target}: {}", status.message());
            if !retryable(&status, detail.as_ref()) {
                return Err(CallError::Refused {
                    endpoint: target.to_string(),
                    status,
                });
            }
            if let Some(leader) = detail
                .filter(|d| d.code == ErrorCode::NotLeader)
                .and_then(|d| d.leader_endpoint)
                && hops < self.policy.hint_hops_max
                && leader != target
            {
                hops += 1;
                self.state().leader = Some(leader.clone());
                target = leader;
                continue;
            }
            hops = 0;
            target = self.rotate(&target);
            let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(self.policy.backoff_max);
        }
    }
}
