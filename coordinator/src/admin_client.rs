//! A client for the admin API that finds the leader by itself (see
//! [`ratify_proto::leader::LeaderFollower`]). Used by the `ratify` CLI.

use std::future::Future;
use std::time::Duration;

use ratify_proto::hooks::EndpointExt as _;
use ratify_proto::leader::{CallError, LeaderFollower, RetryPolicy};
use ratify_proto::pb::coordinator::admin_client::AdminClient as PbAdminClient;
use ratify_proto::types::Endpoint;
use tonic::transport::Channel;
use tonic::{Response, Status};

/// How long an admin call may take in all, retries included.
pub const ADMIN_CALL_DEADLINE: Duration = Duration::from_secs(30);

/// Why an admin call failed.
pub type AdminError = CallError;

/// Finds the leader among `endpoints` and calls it.
pub struct AdminClient {
    follower: LeaderFollower,
}

impl AdminClient {
    /// A client over these endpoints (any nodes of the cluster; at least one).
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        Self {
            follower: LeaderFollower::new(endpoints, RetryPolicy::default())
                .expect("callers pass at least one endpoint"),
        }
    }

    /// Call the leader (following hints, retrying elections and unreachable nodes).
    pub async fn call_leader<T, F, Fut>(&self, mut f: F) -> Result<T, AdminError>
    where
        F: FnMut(PbAdminClient<Channel>) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let deadline = tokio::time::Instant::now() + ADMIN_CALL_DEADLINE;
        self.follower
            .call(deadline, |channel| f(PbAdminClient::new(channel)))
            .await
    }
}

/// How long connecting to one node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one admin call to one node may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Connect to one node's admin API (no leader following), over a channel made by
/// `ratify_proto::hooks` like every other (keepalive; the simulation's network when hooked).
/// The connection opens with the first call, which fails UNAVAILABLE if the node is down.
pub async fn connect(endpoint: &Endpoint) -> Result<PbAdminClient<Channel>, Status> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| Status::invalid_argument(format!("{endpoint}: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .lazy_channel();
    Ok(PbAdminClient::new(channel))
}
