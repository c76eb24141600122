//! Forwarding to the leader, written once (docs/protocol.md C1): every call on the client API
//! is served by the leader. A tower layer around the whole `Coordinator` service passes the
//! call through on the leader; on a follower it relays the HTTP/2 request unchanged to the
//! leader, once (marked [`FORWARDED`], so a call never bounces between nodes); when no leader
//! is known, or the leader cannot be reached from here, the caller gets NOT_LEADER naming the
//! leader, to try it (or another node) itself. The handlers behind it never forward.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use openraft::BasicNode;
use ratify_proto::hooks::EndpointExt as _;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::Channel;

use super::not_leader;
use crate::limits;
use crate::raft::Raft;

/// Header set on a call a follower relayed, so the leader never relays it again.
pub const FORWARDED: &str = "ratify-forwarded";

/// Where a call is served.
pub enum Route {
    /// Here: this node leads (its driver answers NOT_LEADER if it is not ready yet).
    Here,
    /// At the leader, over this channel.
    Leader(Channel, u64, BasicNode),
    /// Nowhere from here: answer with this status.
    Refuse(tonic::Status),
}

/// The leader as this node's Raft metrics know it, and channels to it.
#[derive(Clone)]
pub struct LeaderRoute {
    node_id: u64,
    raft: Raft,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl LeaderRoute {
    /// For node `node_id`.
    pub fn new(node_id: u64, raft: Raft) -> Self {
        Self {
            node_id,
            raft,
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The leader: `(id, address)`.
    pub fn leader(&self) -> Option<(u64, Option<BasicNode>)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let id = m.current_leader?;
        Some((id, m.membership_config.membership().get_node(&id).cloned()))
    }

    /// NOT_LEADER naming the leader (not this node).
    pub fn not_leader(&self) -> tonic::Status {
        match self.leader() {
            Some((id, node)) if id != self.node_id => not_leader(Some(id), node.as_ref()),
            _ => not_leader(None, None),
        }
    }

    /// Where a call (already `forwarded` once, or not) is served.
    pub fn route(&self, forwarded: bool) -> Route {
        let Some((leader_id, node)) = self.leader() else {
            return Route::Refuse(self.not_leader());
        };
        if leader_id == self.node_id {
            return Route::Here;
        }
        let Some(node) = node.filter(|_| !forwarded) else {
            // Relayed to us but we do not lead (any more), or the leader's address is unknown.
            return Route::Refuse(self.not_leader());
        };
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&node.addr) {
            Some(c) => c.clone(),
            None => {
                let Ok(endpoint) =
                    tonic::transport::Endpoint::from_shared(ratify_proto::dial::target(&node.addr))
                else {
                    return Route::Refuse(self.not_leader());
                };
                let c = endpoint
                    .connect_timeout(limits::PEER_CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .lazy_channel();
                channels.insert(node.addr.clone(), c.clone());
                c
            }
        };
        Route::Leader(channel, leader_id, node)
    }
}

/// A gRPC service that only the leader serves, behind [`LeaderRoute`].
#[derive(Clone)]
pub struct AtLeader<S> {
    inner: S,
    route: LeaderRoute,
}

impl<S> AtLeader<S> {
    /// `inner`, served at the leader.
    pub fn new(inner: S, route: LeaderRoute) -> Self {
        Self { inner, route }
    }
}

impl<S: NamedService> NamedService for AtLeader<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S> tower_service::Service<http::Request<Body>> for AtLeader<S>
where
    S: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call drives its own clone of the inner service to readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let forwarded = request.headers().contains_key(FORWARDED);
        match self.route.route(forwarded) {
            Route::Here => {
                let mut inner = self.inner.clone();
                Box::pin(async move {
                    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                    inner.call(request).await
                })
            }
            Route::Refuse(status) => Box::pin(async move { Ok(status.into_http()) }),
            Route::Leader(mut channel, leader_id, node) => {
                request
                    .headers_mut()
                    .insert(FORWARDED, http::HeaderValue::from_static("1"));
                Box::pin(async move {
                    let relayed = async {
                        std::future::poll_fn(|cx| channel.poll_ready(cx)).await?;
                        channel.call(request).await
                    };
                    Ok(match relayed.await {
                        // The leader's side could not serve it (an error with no Ratify
                        // detail, W7: the connection to it failed mid-call): let the client
                        // try it itself.
                        Ok(response) if unavailable_without_detail(&response) => {
                            not_leader(Some(leader_id), Some(&node)).into_http()
                        }
                        Ok(response) => response,
                        // The leader is unreachable from here: let the client try it itself.
                        Err(e) => {
                            tracing::debug!(leader_id, error = %e, "relaying to the leader failed");
                            not_leader(Some(leader_id), Some(&node)).into_http()
                        }
                    })
                })
            }
        }
    }
}

/// A trailers-only gRPC error response with status UNAVAILABLE and no `ErrorDetail`: the
/// relay's own transport failing, not an answer from the leader's handlers (which always carry
/// a detail, W7).
fn unavailable_without_detail(response: &http::Response<Body>) -> bool {
    let headers = response.headers();
    headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"14")
        && !headers.contains_key("grpc-status-details-bin")
}
