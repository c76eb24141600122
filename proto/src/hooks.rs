//! The seams a deterministic simulation replaces: the wall clock, the source of transaction
//! ids, and how outgoing connections are opened. Production never installs hooks and gets the
//! system clock, UUIDv7 ids and TCP.
//!
//! Hooks are per thread: the simulation (`ratify-sim`, on turmoil) runs every simulated
//! process on one thread, and installs its hooks there for the length of a run
//! ([`install`] returns a guard that removes them). Code that runs under simulation must not
//! move work to other OS threads (the memory engines of the stores start none).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::types::TxnId;

/// A connection opened by a [`Connector`].
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// What a [`Connector`] returns.
pub type BoxIo = Box<dyn Io>;

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<BoxIo>> + Send>>;
type ConnectFn = dyn Fn(Uri) -> ConnectFuture + Send + Sync;

/// Opens a connection to a URI's `host:port` (the simulation's network instead of TCP). A
/// tower service, so tonic can use it (`Endpoint::connect_with_connector_lazy`).
#[derive(Clone)]
pub struct Connector(Arc<ConnectFn>);

impl Connector {
    /// A connector from a function.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(Uri) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<BoxIo>> + Send + 'static,
    {
        Self(Arc::new(move |uri| Box::pin(f(uri))))
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connector")
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<BoxIo>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<BoxIo>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connect = (self.0)(uri);
        Box::pin(async move { connect.await.map(TokioIo::new) })
    }
}

/// The hooks of one simulation run.
pub struct Hooks {
    /// Wall-clock ms since the Unix epoch.
    pub now_unix_ms: Box<dyn Fn() -> u64>,
    /// A new transaction id (deterministic under simulation).
    pub txn_id: Box<dyn Fn() -> TxnId>,
    /// How to open connections.
    pub connector: Connector,
}

thread_local! {
    static HOOKS: RefCell<Option<Rc<Hooks>>> = const { RefCell::new(None) };
}

/// Removes the thread's hooks when dropped.
#[must_use = "the hooks are removed when the guard is dropped"]
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        HOOKS.with(|h| h.borrow_mut().take());
    }
}

/// Install `hooks` on this thread until the guard is dropped. Replaces hooks already there.
pub fn install(hooks: Hooks) -> Installed {
    HOOKS.with(|h| *h.borrow_mut() = Some(Rc::new(hooks)));
    Installed(())
}

fn current() -> Option<Rc<Hooks>> {
    HOOKS.with(|h| h.borrow().clone())
}

/// Whether this thread runs under simulation hooks.
pub fn installed() -> bool {
    HOOKS.with(|h| h.borrow().is_some())
}

/// Wall-clock ms since the Unix epoch (the simulated clock under simulation).
pub fn now_unix_ms() -> u64 {
    match current() {
        Some(h) => (h.now_unix_ms)(),
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    }
}

/// A transaction id from the simulation's source, when one is installed.
pub(crate) fn sim_txn_id() -> Option<TxnId> {
    current().map(|h| (h.txn_id)())
}

/// HTTP/2 PING interval on every outgoing channel, idle or not.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);
/// A connection whose PING is not answered within this long is closed (the channel
/// reconnects on the next call).
pub const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A lazily connecting channel to `endpoint`: over TCP, or over the simulation's network when
/// hooks are installed. Every outgoing gRPC channel in Ratify is made here.
///
/// Every channel sends HTTP/2 keepalive PINGs ([`KEEPALIVE_INTERVAL`], [`KEEPALIVE_TIMEOUT`]):
/// a connection black-holed by a partition or a peer that lost power (no RST ever comes) is
/// dropped within seconds and the next call reconnects, instead of every call timing out on
/// the dead connection until the kernel gives up (~15 min). Found by the simulation, whose
/// partitions lose segments for good.
pub fn channel(endpoint: Endpoint) -> Channel {
    let endpoint = endpoint
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match current() {
        Some(h) => endpoint.connect_with_connector_lazy(h.connector.clone()),
        None => endpoint.connect_lazy(),
    }
}

/// [`channel`] as a method, for builder chains: `Endpoint::from_shared(url)?.lazy_channel()`.
pub trait EndpointExt {
    /// A lazily connecting channel (TCP, or the simulation's network under hooks).
    fn lazy_channel(&self) -> Channel;
}

impl EndpointExt for Endpoint {
    fn lazy_channel(&self) -> Channel {
        channel(self.clone())
    }
}
