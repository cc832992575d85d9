//! The one body type for both directions: a streamed hyper body under a stall timeout, or a
//! small synthetic reply. Streams are passed through frame by frame, never collected.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use sha2::{Digest as _, Sha256};
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::access_log::AccessLog;

pub struct Body {
    kind: Kind,
}

// Most bodies are streams; boxing that variant would cost an allocation per request to save
// bytes on the rarer synthetic replies.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Full(Option<Bytes>),
    Stream(Stream),
}

struct Stream {
    /// Taken only when an unfinished request body is handed to `drain` on drop.
    inner: Option<Incoming>,
    stall: Duration,
    /// Time of the last frame; the timer is only re-armed when it fires, so a moving transfer
    /// costs one clock read per frame and no timer-wheel work.
    last: Instant,
    timer: Option<Pin<Box<Sleep>>>,
    counted: Counter,
    /// Fired when the request body has been read to its end (or dropped), which is when the
    /// wait for the upstream's response headers starts.
    done: Option<oneshot::Sender<()>>,
    /// Written once, when the response body is finished or dropped. Boxed, like `first`, so
    /// that a body, moved several times on the way through hyper, stays small.
    log: Option<Box<AccessLog>>,
    /// A blob being copied: its sha256 is checked as it passes, and a mismatch ends the body
    /// with an error before its last frame, so the registry never commits it.
    verify: Option<Box<Verify>>,
    /// A client's request body: if it is dropped unfinished (the upstream answered early, or
    /// failed), keep reading it for this long so the client reads the answer instead of a
    /// reset, as nginx's `lingering_close` does.
    drain: Option<Duration>,
    /// A request body's first frame, read before the upstream was chosen: a body that never
    /// starts must not hold an upstream connection (and a file descriptor) while it waits.
    first: Option<Box<Frame<Bytes>>>,
}

struct Verify {
    hasher: Sha256,
    expected: [u8; 32],
}

/// Where a stream counts its bytes: shared with the access log for request bodies, owned by
/// the access log for response bodies.
enum Counter {
    Shared(Arc<AtomicU64>),
    Log,
}

/// Why a streamed body ended early.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BodyError {
    #[error("no data for {}s", .0.as_secs())]
    Stalled(Duration),
    #[error("{0}")]
    Transport(Arc<hyper::Error>),
    #[error("the content does not match its digest (sha256:{got})")]
    Digest { got: String },
}

impl Body {
    pub fn empty() -> Body {
        Body {
            kind: Kind::Full(None),
        }
    }

    pub fn full(bytes: Bytes) -> Body {
        Body {
            kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())),
        }
    }

    /// A client's request body on its way upstream; `drain` is how long an unfinished one is
    /// still read after it is dropped.
    /// `first` is the body's first frame, already read (see `Proxy::forward`).
    pub fn request(
        inner: Incoming,
        first: Option<Frame<Bytes>>,
        stall: Duration,
        counted: Arc<AtomicU64>,
        done: oneshot::Sender<()>,
        drain: Duration,
    ) -> Body {
        let mut body = Body::stream(inner, stall, Counter::Shared(counted), Some(done), None);
        if let Kind::Stream(s) = &mut body.kind {
            s.drain = Some(drain);
            s.first = first.map(Box::new);
        }
        body
    }

    /// A blob on its way from one upstream to another, checked against its sha256 digest.
    pub fn verified(
        inner: Incoming,
        stall: Duration,
        counted: Arc<AtomicU64>,
        expected: [u8; 32],
    ) -> Body {
        let mut body = Body::stream(inner, stall, Counter::Shared(counted), None, None);
        if let Kind::Stream(s) = &mut body.kind {
            s.verify = Some(Box::new(Verify {
                hasher: Sha256::new(),
                expected,
            }));
        }
        body
    }

    /// An upstream's response body on its way to the client; `log` is written when it ends.
    pub fn response(inner: Incoming, stall: Duration, log: AccessLog) -> Body {
        Body::stream(inner, stall, Counter::Log, None, Some(Box::new(log)))
    }

    fn stream(
        inner: Incoming,
        stall: Duration,
        counted: Counter,
        done: Option<oneshot::Sender<()>>,
        log: Option<Box<AccessLog>>,
    ) -> Body {
        Body {
            kind: Kind::Stream(Stream {
                inner: Some(inner),
                stall,
                last: Instant::now(),
                timer: None,
                counted,
                done,
                log,
                verify: None,
                drain: None,
                first: None,
            }),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(s) => s.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(s) => {
                s.first.is_none() && s.inner.as_ref().is_none_or(Incoming::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Stream(s) => {
                let rest = s
                    .inner
                    .as_ref()
                    .map(Incoming::size_hint)
                    .unwrap_or_default();
                // The frame already read counts: an HTTP/2 request without Content-Length is
                // sized upstream from this hint.
                let first = s
                    .first
                    .as_ref()
                    .and_then(|f| f.data_ref())
                    .map_or(0, |d| d.len() as u64);
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + first);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + first);
                }
                hint
            }
        }
    }
}

impl Verify {
    /// `Some(error)` when what passed does not hash to the expected digest.
    fn check(self: Box<Self>) -> Option<BodyError> {
        let got: [u8; 32] = self.hasher.finalize().into();
        (got != self.expected).then(|| BodyError::Digest {
            got: got.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }
}

impl Stream {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.first.take().map(|f| *f) {
            self.last = Instant::now();
            if let (Some(data), Counter::Shared(c)) = (frame.data_ref(), &self.counted) {
                c.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.last = Instant::now();
                    if let Some(data) = frame.data_ref() {
                        if let Some(v) = &mut self.verify {
                            v.hasher.update(data);
                            if self.inner.as_ref().is_none_or(Incoming::is_end_stream) {
                                // hyper knows a sized body ended with this frame: check now, so
                                // a bad blob never gets its last byte sent.
                                if let Some(err) = self.verify.take().and_then(|v| v.check()) {
                                    return Poll::Ready(Some(Err(err)));
                                }
                            }
                        }
                        let n = data.len() as u64;
                        match &self.counted {
                            Counter::Shared(c) => {
                                c.fetch_add(n, Ordering::Relaxed);
                            }
                            Counter::Log => {
                                if let Some(log) = &mut self.log {
                                    log.bytes_out += n;
                                }
                            }
                        }
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let err = BodyError::Transport(Arc::new(e));
                    if let Some(log) = &mut self.log {
                        log.body_error = Some(err.to_string());
                    }
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    if let Some(err) = self.verify.take().and_then(|v| v.check()) {
                        return Poll::Ready(Some(Err(err)));
                    }
                    if let Some(done) = self.done.take() {
                        let _ = done.send(());
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
            let deadline = self.last + self.stall;
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() < deadline {
                // Data came since the timer was armed: push it out and poll again so the new
                // deadline is registered with the runtime.
                timer.as_mut().reset(deadline);
            }
            ready!(timer.as_mut().poll(cx));
            if Instant::now() >= self.last + self.stall {
                let err = BodyError::Stalled(self.stall);
                if let Some(log) = &mut self.log {
                    log.body_error = Some(err.to_string());
                }
                return Poll::Ready(Some(Err(err)));
            }
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        // `done` is taken when a request body ends: still here means it did not.
        let (Some(how_long), Some(_)) = (self.drain, &self.done) else {
            return;
        };
        let Some(inner) = self.inner.take().filter(|i| !i.is_end_stream()) else {
            return;
        };
        linger(inner, how_long);
    }
}

/// Reads what is left of a request body in the background, so a client that is still sending
/// reads the answer already written instead of a reset (RFC 9112 section 9.6).
pub fn linger(inner: Incoming, linger: Duration) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(drain(inner, linger));
    }
}

/// Reads and discards what is left of a request body, for at most `linger` in all and
/// `LINGER_GAP` between frames, so that the connection stays readable while the client
/// finishes sending and then reads the response already written.
async fn drain(mut inner: Incoming, linger: Duration) {
    use http_body_util::BodyExt;
    /// nginx's `lingering_timeout`.
    const LINGER_GAP: Duration = Duration::from_secs(5);
    let end = Instant::now() + linger;
    let mut bytes = 0u64;
    loop {
        let until = end.min(Instant::now() + LINGER_GAP);
        match tokio::time::timeout_at(until, inner.frame()).await {
            Ok(Some(Ok(frame))) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
            Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
        }
    }
    tracing::debug!(bytes, "read the rest of a request body answered early");
}
