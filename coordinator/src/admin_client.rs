//! A client for the admin API that finds the leader by itself: it tries the endpoints it was
//! given, follows NOT_LEADER hints, and retries (bounded, with backoff) while a leader is being
//! elected. Used by the `ratify` CLI.

use std::future::Future;
use std::time::Duration;

use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::pb::coordinator::admin_client::AdminClient as PbAdminClient;
use ratify_proto::types::Endpoint;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

/// Attempts per call before giving up.
pub const ADMIN_ATTEMPTS_MAX: u32 = 40;
/// First retry delay; doubles up to [`ADMIN_BACKOFF_MAX`].
pub const ADMIN_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest retry delay.
pub const ADMIN_BACKOFF_MAX: Duration = Duration::from_millis(1_000);
/// Per-attempt deadline.
pub const ADMIN_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The cluster answered with an error that retrying will not fix.
    #[error("{endpoint}: {message}")]
    Refused {
        /// Who answered.
        endpoint: String,
        /// The status message.
        message: String,
        /// The details, when the server sent them.
        detail: Option<Box<ErrorDetail>>,
        /// The gRPC code.
        code: Code,
    },
    /// No endpoint gave an answer within the attempts.
    #[error("no answer after {attempts} attempts (last: {last})")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error seen.
        last: String,
    },
}

/// Finds the leader among `endpoints` and calls it.
pub struct AdminClient {
    endpoints: Vec<Endpoint>,
}

impl AdminClient {
    /// A client over these endpoints (any node of the cluster; at least one).
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        assert!(
            !endpoints.is_empty(),
            "an admin client needs at least one endpoint"
        );
        Self { endpoints }
    }

    /// Call the leader (following hints, retrying elections and unreachable nodes).
    pub async fn call_leader<T, F, Fut>(&self, mut f: F) -> Result<T, AdminError>
    where
        F: FnMut(PbAdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let mut target: Endpoint = self.endpoints[0].clone();
        let mut next = 0usize;
        let mut backoff = ADMIN_BACKOFF_MIN;
        let mut last = String::new();
        for _ in 0..ADMIN_ATTEMPTS_MAX {
            let result = match connect(&target).await {
                Ok(client) => tokio::time::timeout(ADMIN_ATTEMPT_TIMEOUT, f(client))
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time"))),
                Err(status) => Err(status),
            };
            match result {
                Ok(r) => return Ok(r.into_inner()),
                Err(status) => {
                    let detail = ErrorDetail::from_status(&status);
                    last = format!("{target}: {}", status.message());
                    match detail.as_ref().map(|d| d.code) {
                        Some(ErrorCode::NotLeader) => {
                            if let Some(leader) = detail.and_then(|d| d.leader_endpoint) {
                                target = leader;
                                continue; // Go straight to the leader.
                            }
                        }
                        Some(ErrorCode::Unavailable) => {}
                        _ if matches!(
                            status.code(),
                            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown
                        ) => {}
                        _ => {
                            return Err(AdminError::Refused {
                                endpoint: target.to_string(),
                                message: status.message().to_owned(),
                                detail: detail.map(Box::new),
                                code: status.code(),
                            });
                        }
                    }
                    // Election in progress or node down: try the next endpoint after a pause.
                    next = (next + 1) % self.endpoints.len();
                    target = self.endpoints[next].clone();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ADMIN_BACKOFF_MAX);
                }
            }
        }
        Err(AdminError::Exhausted {
            attempts: ADMIN_ATTEMPTS_MAX,
            last,
        })
    }
}

/// Connect to one node's admin API.
pub async fn connect(endpoint: &Endpoint) -> Result<PbAdminClient<Channel>, Status> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| Status::invalid_argument(format!("{endpoint}: {e}")))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(ADMIN_ATTEMPT_TIMEOUT)
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot connect to {endpoint}: {e}")))?;
    Ok(PbAdminClient::new(channel))
}
