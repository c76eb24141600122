//! tonic over turmoil's simulated TCP: a server-side stream of accepted connections (with
//! tonic's `Connected`), and the client-side connector installed through
//! `ratify_proto::hooks`, so every channel Ratify opens (peers, participants, leader hints,
//! the SDK's client) dials the simulated network.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use ratify_proto::hooks::{BoxIo, Connector};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// An accepted simulated connection.
pub struct SimConn(turmoil::net::TcpStream);

impl Connected for SimConn {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepted connections of `listener`, for tonic's `serve_with_incoming`.
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> impl Stream<Item = io::Result<SimConn>> + Send + 'static {
    futures_util::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(s, _)| SimConn(s));
        Some((next, listener))
    })
}

/// Bind `port` on this simulated host.
pub async fn bind(port: u16) -> io::Result<turmoil::net::TcpListener> {
    turmoil::net::TcpListener::bind(("0.0.0.0", port)).await
}

/// Dials `host:port` of a URI on the simulated network.
pub fn connector() -> Connector {
    Connector::new(|uri: tonic::codegen::http::Uri| async move {
        let host = uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri}: no host")))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
        Ok(Box::new(stream) as BoxIo)
    })
}

/// A service that counts the calls it has answered (the simulation crashes a participant right
/// after one: `Fault::CrashAfterCall`).
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<S> Counted<S> {
    /// `inner`, counting into `answered`.
    pub fn new(inner: S, answered: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self { inner, answered }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for Counted<S>
where
    S: tower_service::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let answered = self.answered.clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            response
        })
    }
}
