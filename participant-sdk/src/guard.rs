//! The call guard: what stands between the network and a service's own gRPC handlers
//! ([`crate::Participant::guard`]), so that the contract of docs/protocol.md P10 holds whatever
//! the handlers and the initiators do:
//!
//! - **A failed call dooms its transaction here.** When a handler answers a call that carried a
//!   transaction context with an error, the initiator saw an error, and this participant cannot
//!   know what it will do next (commit anyway, retry, give up): the transaction is doomed here
//!   ([`crate::Resource::doom`]), so it can only abort. A handler that handles a failure on
//!   purpose says so with [`harmless`]; the error then travels with `ratify-harmless` and dooms
//!   nothing. A doomed answer carries `ratify-doomed`.
//! - **A retried call runs once.** A call with a `ratify-call-id` is recorded with its
//!   response; a retry of it (the same id and request) is answered from the first attempt, or
//!   waits for it while it still runs, and never reaches the handler again. A retry that cannot
//!   be answered that way is refused, and dooms the transaction.
//! - **Calls run to the end.** The handler runs in a task of its own, so a caller that gives
//!   up (its deadline, a broken connection) does not leave a call half done; its effect and its
//!   answer are recorded as if the caller had waited.
//! - **Nothing runs during or after the commit.** Once Prepare (or a one-phase commit) for the
//!   transaction arrives here, new calls are refused; a call still running then makes this
//!   participant vote NO ([`crate::calls::Closed::refusal`]).
//!
//! Calls without a transaction context pass through untouched.
//!
//! Limits: a call's request is read whole when it has a call id (at most
//! [`REQUEST_BYTES_MAX`]) and its response always (at most [`RESPONSE_BYTES_MAX`]); all of it
//! together within `CallLimits::buffer_bytes_max`, with at most `CallLimits::running_max`
//! calls running. So transactional calls are unary, or streams that end: a bidirectional
//! stream whose client waits for answers before it ends would wait forever. A call that does
//! not fit fails and dooms its transaction.

use std::collections::hash_map::DefaultHasher;
use std::convert::Infallible;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::{HeaderMap, HeaderValue};
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use ratify_proto::error::{ErrorCode, ErrorDetail};
use ratify_proto::metadata::{CALL_ID, DOOMED, HARMLESS, TXN_ID};
use ratify_proto::types::TxnId;
use tokio::time::Instant;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::calls::{Admission, CallId, Calls, Finished, Refusal, Ticket};
use crate::context::TxnContext;
use crate::resource::Resource;

/// The largest request of a call with a call id (the guard reads it whole to tell a retry
/// from a different request): gRPC's default largest message.
pub const REQUEST_BYTES_MAX: usize = 4 << 20;
/// The largest response the guard carries for a transactional call (it reads the response
/// whole, to learn its status and keep it for retries; a call answering more fails and dooms).
/// All calls' buffers together are bounded by `CallLimits::buffer_bytes_max`.
pub const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// Room taken in the guard's buffer budget (`CallLimits::buffer_bytes_max`), given back when
/// dropped.
struct Held {
    budget: Arc<tokio::sync::Semaphore>,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Held {
    fn new(budget: &Arc<tokio::sync::Semaphore>) -> Self {
        Self {
            budget: budget.clone(),
            permit: None,
        }
    }

    /// Take `bytes` more, or say why not.
    fn take(&mut self, bytes: usize) -> Result<(), String> {
        let n = u32::try_from(bytes).map_err(|_| format!("is {bytes} bytes, too large"))?;
        let more = self.budget.clone().try_acquire_many_owned(n).map_err(|_| {
            "could not be held: the participant's call buffers are full (buffer_bytes_max)"
                .to_owned()
        })?;
        match &mut self.permit {
            Some(p) => p.merge(more),
            None => self.permit = Some(more),
        }
        Ok(())
    }
}

/// Declare a handler's error harmless for the transaction (docs/protocol.md P10): the call
/// failed, but on purpose and without leaving anything half done, so the transaction need not
/// be doomed here — e.g. a handler that probes for a row and reports `NOT_FOUND` as an answer.
/// Without it, any error a handler returns for a call in a transaction dooms the transaction
/// at this participant. The initiator sees `ratify-harmless` on the error and may go on.
///
/// ```
/// # use tonic::Status;
/// let status = ratify_participant::harmless(Status::not_found("no such coupon"));
/// assert!(status.metadata().contains_key("ratify-harmless"));
/// ```
pub fn harmless(mut status: Status) -> Status {
    if let Ok(token) = tonic::metadata::MetadataValue::try_from(harmless_token()) {
        status.metadata_mut().insert(HARMLESS, token);
    }
    status
}

/// What [`harmless`] marks an error with: private to this process, so an error a handler
/// merely passes on — another service's answer, harmless *there* — is not taken for its own
/// declaration. The guard turns it into `1` on the way out.
fn harmless_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        // Random per process (std's hasher keys), and no simulation hook is consumed.
        let h = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        format!("h{h:016x}")
    })
}

/// Whether a response's error (in `map`, its headers or trailers) was declared harmless by
/// this process's handler; the mark is then made public (`1`), and any other dropped.
fn take_harmless(map: &mut HeaderMap) -> bool {
    let ours = map
        .get(HARMLESS)
        .is_some_and(|v| v.as_bytes() == harmless_token().as_bytes());
    map.remove(HARMLESS);
    if ours {
        map.insert(HARMLESS, HeaderValue::from_static("1"));
    }
    ours
}

/// A response kept to answer a retried call exactly as the first attempt was answered.
#[derive(Debug)]
pub struct Kept {
    status: http::StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Kept {
    fn size(&self) -> usize {
        let map = |m: &HeaderMap| {
            m.iter()
                .map(|(k, v)| k.as_str().len() + v.len())
                .sum::<usize>()
        };
        self.body.len() + map(&self.headers) + self.trailers.as_ref().map_or(0, map)
    }

    fn response(&self) -> http::Response<Body> {
        let mut r = http::Response::new(Body::new(KeptBody {
            data: (!self.body.is_empty()).then(|| self.body.clone()),
            trailers: self.trailers.clone(),
        }));
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        r
    }

    /// The gRPC status: from the trailers, else the headers (a trailers-only response).
    fn grpc_status(&self) -> (Option<Status>, bool) {
        match self.trailers.as_ref().and_then(Status::from_header_map) {
            Some(s) => (Some(s), true),
            None => (Status::from_header_map(&self.headers), false),
        }
    }
}

/// The body of a kept response: its data, then its trailers.
struct KeptBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for KeptBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// A service's own gRPC service behind the call guard (see the module docs). Made by
/// [`crate::Participant::guard`]; add it to the tonic server in place of the bare service.
pub struct Guarded<S, R> {
    inner: S,
    resource: Arc<R>,
    calls: Arc<Calls<Arc<Kept>>>,
    buffers: Arc<tokio::sync::Semaphore>,
}

impl<S: Clone, R> Clone for Guarded<S, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            resource: self.resource.clone(),
            calls: self.calls.clone(),
            buffers: self.buffers.clone(),
        }
    }
}

impl<S: NamedService, R> NamedService for Guarded<S, R> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> Guarded<S, R> {
    pub(crate) fn new(
        inner: S,
        resource: Arc<R>,
        calls: Arc<Calls<Arc<Kept>>>,
        buffers: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        Self {
            inner,
            resource,
            calls,
            buffers,
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the guard wraps: a tonic service, such as a generated `*Server`.
pub trait GrpcService:
    tower_service::Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> GrpcService for T where
    T: tower_service::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

impl<S, R> tower_service::Service<http::Request<Body>> for Guarded<S, R>
where
    S: GrpcService,
    R: Resource,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call drives its own clone of the inner service to readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.handle(request).await) })
    }
}

/// A gRPC error as an HTTP response, with `ratify-doomed` when the transaction was doomed.
fn refusal(code: ErrorCode, why: String, doomed: bool) -> http::Response<Body> {
    refusal_status(code, why, doomed).into_http()
}

fn refusal_status(code: ErrorCode, why: String, doomed: bool) -> Status {
    let mut status = ErrorDetail::new(code, why).into_status();
    if doomed {
        status
            .metadata_mut()
            .insert(DOOMED, tonic::metadata::MetadataValue::from_static("1"));
    }
    status
}

impl<S, R> Guarded<S, R>
where
    S: GrpcService,
    R: Resource,
{
    async fn handle(self, request: http::Request<Body>) -> http::Response<Body> {
        if !request.headers().contains_key(TXN_ID) {
            // Outside any transaction: nothing to record (and no header copy on this path).
            return self.pass(request).await;
        }
        let metadata = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
        let path = request.uri().path().to_owned();
        let ctx = match TxnContext::from_metadata(&metadata) {
            Ok(Some(ctx)) => ctx,
            Ok(None) => return self.pass(request).await,
            Err(e) => {
                // Refused (W8). If the transaction id itself is well-formed, the initiator
                // made a call of it that did not run: doom it.
                let txn_id = metadata
                    .get(TXN_ID)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.parse::<TxnId>().ok());
                let Some(txn_id) = txn_id else {
                    return e.to_status().into_http();
                };
                self.doom(txn_id, format!("a call ({path}) was refused: {e}"))
                    .await;
                let mut status = e.to_status();
                status
                    .metadata_mut()
                    .insert(DOOMED, tonic::metadata::MetadataValue::from_static("1"));
                return status.into_http();
            }
        };
        let txn_id = ctx.txn_id;
        let call_id = match metadata.get(CALL_ID).map(|v| {
            v.to_str()
                .map_err(|_| format!("{CALL_ID} is not ASCII"))
                .and_then(CallId::new)
        }) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(why)) => {
                let why = format!("{CALL_ID}: {why}");
                self.doom(txn_id, format!("a call ({path}) was refused: {why}"))
                    .await;
                return refusal(ErrorCode::InvalidField, why, true);
            }
        };
        let what = match &call_id {
            Some(id) => format!("call {id} ({path})"),
            None => format!("a call ({path})"),
        };
        // A call with an id is read whole: a retry must ask exactly what the first attempt
        // asked. A call without one cannot be retried safely, so it is never compared.
        let mut held = Held::new(&self.buffers);
        let (request, fingerprint) = match &call_id {
            None => (request, 0),
            Some(_) => {
                let (parts, body) = request.into_parts();
                let bytes = match read_whole(body, REQUEST_BYTES_MAX, &mut held).await {
                    Ok((b, _)) => b,
                    Err(why) => {
                        let why = format!("{what}: the request {why}");
                        self.doom(txn_id, format!("{why}; it did not run")).await;
                        return refusal(ErrorCode::LimitExceeded, why, true);
                    }
                };
                let mut h = DefaultHasher::new();
                path.hash(&mut h);
                bytes.hash(&mut h);
                let fingerprint = h.finish();
                let body = Body::new(http_body_util::Full::new(bytes));
                (http::Request::from_parts(parts, body), fingerprint)
            }
        };
        let admission =
            self.calls
                .admit(txn_id, call_id.as_ref(), fingerprint, &what, Instant::now());
        if matches!(admission, Admission::Replay(_) | Admission::Wait(_))
            && ratify_proto::planted::active(ratify_proto::planted::Bug::CallsRunTwice)
        {
            // Planted bug (i): a retry runs the handler again (still counted once).
            return self.pass(request).await;
        }
        match admission {
            Admission::Run(ticket) => {
                // To completion in its own task: a caller that goes away must not leave the
                // call half done or unrecorded.
                let this = self.clone();
                match tokio::spawn(this.run(ticket, what.clone(), request)).await {
                    Ok(response) => response,
                    Err(e) => {
                        // The task panicked: the ticket was dropped with it, so the record
                        // still says running — Prepare will vote NO, and the store is doomed.
                        let why = format!("{what} stopped: {e}");
                        self.doom(txn_id, why.clone()).await;
                        refusal(ErrorCode::Storage, why, true)
                    }
                }
            }
            Admission::Replay(kept) => kept.response(),
            Admission::Wait(mut rx) => {
                let finished = loop {
                    if let Some(f) = rx.borrow_and_update().clone() {
                        break Some(f);
                    }
                    if rx.changed().await.is_err() {
                        break None;
                    }
                };
                match finished {
                    Some(Finished::Kept(kept)) => kept.response(),
                    Some(Finished::NotKept(why)) => {
                        let why = format!("a retry of {what} cannot be answered: {why}");
                        self.doom(txn_id, why.clone()).await;
                        refusal(ErrorCode::Precondition, why, true)
                    }
                    None => {
                        let why = format!("the first attempt of {what} stopped");
                        self.doom(txn_id, why.clone()).await;
                        refusal(ErrorCode::Storage, why, true)
                    }
                }
            }
            Admission::Refuse { why, kind } => {
                if kind.dooms() {
                    self.doom(txn_id, format!("{what} was refused: {why}"))
                        .await;
                }
                let code = match kind {
                    Refusal::Exhausted => ErrorCode::LimitExceeded,
                    Refusal::Reused => ErrorCode::InvalidField,
                    Refusal::NotKept | Refusal::Closed => ErrorCode::Precondition,
                    Refusal::Doomed => ErrorCode::TxnAborted,
                };
                let doomed = kind.dooms() || kind == Refusal::Doomed;
                refusal(code, format!("{what}: {why}"), doomed)
            }
        }
    }

    /// A call outside any transaction: straight to the handler.
    async fn pass(mut self, request: http::Request<Body>) -> http::Response<Body> {
        let Ok(()) = std::future::poll_fn(|cx| self.inner.poll_ready(cx)).await;
        let Ok(response) = self.inner.call(request).await;
        response
    }

    /// The first attempt of a call: run the handler, read its whole answer, doom the
    /// transaction if it failed, record the answer for retries.
    async fn run(
        self,
        ticket: Ticket,
        what: String,
        request: http::Request<Body>,
    ) -> http::Response<Body> {
        let txn_id = ticket.txn_id();
        let response = match AssertUnwindSafe(self.clone().pass(request))
            .catch_unwind()
            .await
        {
            Ok(response) => response,
            // A handler that panics failed its call (and the record must not stay running).
            Err(_) => refusal(
                ErrorCode::Storage,
                format!("{what}: its handler panicked"),
                false,
            ),
        };
        let (parts, body) = response.into_parts();
        let mut held = Held::new(&self.buffers);
        let collected = read_whole(body, RESPONSE_BYTES_MAX, &mut held).await;
        let (kept, failure) = match collected {
            Err(why) => {
                let why = format!("{what} failed: its response {why}");
                let kept = Kept::from_status(refusal_status(ErrorCode::Storage, why.clone(), true));
                (kept, Some(why))
            }
            Ok((body, trailers)) => {
                let mut kept = Kept {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                    trailers,
                };
                let (status, in_trailers) = kept.grpc_status();
                let harmless = take_harmless(&mut kept.headers)
                    | kept.trailers.as_mut().is_some_and(take_harmless);
                let failure = match status {
                    // Planted bug (f): a failed call is taken for a completed one.
                    _ if ratify_proto::planted::active(
                        ratify_proto::planted::Bug::ErrorsDoNotDoom,
                    ) =>
                    {
                        None
                    }
                    _ if kept.status != http::StatusCode::OK => {
                        Some(format!("{what} failed: HTTP {}", kept.status))
                    }
                    None => Some(format!("{what} failed: no gRPC status in its response")),
                    Some(s) if s.code() == Code::Ok => None,
                    Some(_) if harmless => None,
                    Some(s) => Some(format!("{what} failed: {:?}: {}", s.code(), s.message())),
                };
                if failure.is_some() {
                    let target = if in_trailers {
                        kept.trailers.get_or_insert_with(HeaderMap::new)
                    } else {
                        &mut kept.headers
                    };
                    target.insert(DOOMED, HeaderValue::from_static("1"));
                }
                (kept, failure)
            }
        };
        if let Some(why) = &failure {
            // Before the caller hears of the failure, the transaction is doomed here.
            self.doom(txn_id, why.clone()).await;
        }
        let kept = Arc::new(kept);
        let size = kept.size();
        self.calls
            .complete(ticket, failure, Ok((kept.clone(), size)), Instant::now());
        kept.response()
    }

    async fn doom(&self, txn_id: ratify_proto::types::TxnId, why: String) {
        tracing::debug!(%txn_id, why = %why, "dooming the transaction here");
        if let Err(e) = self.resource.doom(txn_id, why).await {
            // The record below still refuses the commit: Prepare votes NO for a failed call.
            tracing::warn!(%txn_id, error = %e, "could not doom the transaction in the store");
        }
    }
}

impl Kept {
    /// One of the guard's own answers (small, in memory already).
    fn from_status(status: Status) -> Self {
        let (parts, _) = status.into_http::<Body>().into_parts();
        Self {
            status: parts.status,
            headers: parts.headers,
            body: Bytes::new(),
            trailers: None,
        }
    }
}

/// A body's data and trailers, whole, up to `max` bytes of data, held in the guard's buffer
/// budget.
async fn read_whole(
    mut body: Body,
    max: usize,
    held: &mut Held,
) -> Result<(Bytes, Option<HeaderMap>), String> {
    let mut data = BytesMut::new();
    let mut trailers: Option<HeaderMap> = None;
    if let Some(n) = body.size_hint().upper()
        && n > max as u64
    {
        return Err(format!("is larger than {max} bytes"));
    }
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("could not be read: {e}"))?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > max {
                    return Err(format!("is larger than {max} bytes"));
                }
                held.take(chunk.len())?;
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
            }
        }
    }
    Ok((data.freeze(), trailers))
}
