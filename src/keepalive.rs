//! An idle HTTP/1.1 keep-alive connection gives its buffers back, as nginx does.
//!
//! hyper keeps an 8 KiB read buffer, an 8 KiB write buffer and a header map for a connection's
//! whole life, which made an idle keep-alive connection cost more than nginx's (bench/
//! workload 6). Once a connection has been between requests for `PARK_AFTER` (nothing in
//! flight, nothing left to write, hyper waiting to read), hyper's connection is taken apart
//! and only the TLS session waits for the client's next bytes; then a fresh hyper connection
//! serves it. A busy connection never waits that long between requests, so the request path
//! pays only a few counter updates for this.

use std::future::{poll_fn, Future};
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::HttpService;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

/// How long a connection sits between requests before its buffers are freed: long enough that
/// a client reusing its connection (a pull's HEAD, GET, GET...) never pays for new ones.
const PARK_AFTER: Duration = Duration::from_millis(500);

/// What the connection's I/O and its service tell the driver, all within the connection's own
/// task (atomics only because hyper requires `Send`).
#[derive(Default)]
pub struct Activity {
    /// Responses whose body has not ended (or been dropped).
    in_flight: AtomicU32,
    /// The last request came with a body. hyper may still be reading an unfinished one after
    /// the response (a lingering upload), so such a connection is not parked until a request
    /// without a body has been answered.
    had_body: AtomicBool,
    /// The last read found nothing to read.
    read_waiting: AtomicBool,
    /// Bytes have arrived since the last request started: the start of the next request's
    /// head, which hyper's header timeout must keep bounding (a client trickling a head must
    /// not restart that timeout by pausing).
    read_since_request: AtomicBool,
    /// Everything written has been flushed.
    write_settled: AtomicBool,
    /// Bumped on every read or write that moved bytes.
    moves: AtomicU64,
}

impl Activity {
    /// A request has arrived; the returned guard goes with its response body.
    pub fn request(self: &Arc<Self>, has_body: bool) -> Busy {
        self.had_body.store(has_body, Ordering::Relaxed);
        self.read_since_request.store(false, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn between_requests(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && !self.had_body.load(Ordering::Relaxed)
            && !self.read_since_request.load(Ordering::Relaxed)
            && self.read_waiting.load(Ordering::Relaxed)
            && self.write_settled.load(Ordering::Relaxed)
    }

    fn moved(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts a response as in flight until its body ends or is dropped.
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its connection's [`Busy`] guard.
pub struct Held<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Held<B> {
    pub fn new(inner: B, busy: Busy) -> Held<B> {
        Held { inner, _busy: busy }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client's TLS stream as hyper sees it: it reports what moved to [`Activity`], and first
/// replays the bytes a previous hyper connection had read but not used.
pub struct Watched {
    io: Box<TlsStream<TcpStream>>,
    unread: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            this.activity.read_waiting.store(false, Ordering::Relaxed);
            this.activity
                .read_since_request
                .store(true, Ordering::Relaxed);
            this.activity.moved();
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        this.activity
            .read_waiting
            .store(polled.is_pending(), Ordering::Relaxed);
        if polled.is_ready() {
            this.activity.moved();
            this.activity
                .read_since_request
                .store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.activity.write_settled.store(false, Ordering::Relaxed);
        self.activity.moved();
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.activity.write_settled.store(false, Ordering::Relaxed);
        self.activity.moved();
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.activity.write_settled.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves an HTTP/1.1 connection to its end, parking it whenever it idles. `keep_alive` is how
/// long a parked connection waits for the client's next request (hyper's own header timeout
/// covers the time after its first byte). On shutdown, a busy connection finishes its request
/// and an idle one closes at once.
pub async fn serve<S>(
    builder: &http1::Builder,
    io: Box<TlsStream<TcpStream>>,
    activity: Arc<Activity>,
    mut service: S,
    keep_alive: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> hyper::Result<()>
where
    S: HttpService<Incoming> + Unpin,
    S::Future: Send,
    S::ResBody: 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    <S::ResBody as HttpBody>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut io = Watched {
        io,
        unread: Bytes::new(),
        activity: activity.clone(),
    };
    loop {
        io.activity.read_waiting.store(false, Ordering::Relaxed);
        io.activity.write_settled.store(true, Ordering::Relaxed);
        // Boxed, so that while parked the task holds no trace of it.
        let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), service));
        let idle_since = tokio::select! {
            outcome = until_idle(&mut conn, &activity) => match outcome {
                Outcome::Ended(r) => return r,
                Outcome::Idle(since) => since,
            },
            _ = shutdown.changed() => {
                Pin::new(&mut *conn).graceful_shutdown();
                return (&mut *conn).await;
            }
        };
        let http1::Parts {
            io: parked,
            read_buf,
            service: kept,
            ..
        } = conn.into_parts();
        service = kept;
        io = parked.into_inner();
        // `read_buf` shares hyper's whole read buffer: keep it only if it holds bytes, and
        // then as a copy of just them.
        if !read_buf.is_empty() {
            // Part of a request head arrived before the pause: hand it to the next connection.
            let mut unread = read_buf.to_vec();
            unread.extend_from_slice(&io.unread);
            io.unread = unread.into();
        }
        drop(read_buf);
        let deadline = idle_since + keep_alive;
        tokio::select! {
            ready = io.io.get_ref().0.readable() => if ready.is_err() { return Ok(()) },
            () = tokio::time::sleep_until(deadline) => {
                // As hyper closes a keep-alive connection whose next request never starts.
                let _ = tokio::time::timeout(Duration::from_secs(1), io.io.shutdown()).await;
                return Ok(());
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

enum Outcome {
    Ended(hyper::Result<()>),
    /// Between requests since this instant.
    Idle(Instant),
}

/// Drives `conn` until it ends or has been between requests for `PARK_AFTER`. The timer is
/// re-armed only when it fires early, so a busy connection costs one clock read per request
/// and no timer-wheel work.
async fn until_idle<F>(conn: &mut F, activity: &Activity) -> Outcome
where
    F: Future<Output = hyper::Result<()>> + Unpin,
{
    let timer = tokio::time::sleep(PARK_AFTER);
    tokio::pin!(timer);
    // The current pause: the move count when it started, and when.
    let mut pause: Option<(u64, Instant)> = None;
    poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut *conn).poll(cx) {
            return Poll::Ready(Outcome::Ended(r));
        }
        if !activity.between_requests() {
            pause = None;
            return Poll::Pending;
        }
        let moves = activity.moves.load(Ordering::Relaxed);
        let since = match pause {
            Some((seen, since)) if seen == moves => since,
            _ => {
                let now = Instant::now();
                pause = Some((moves, now));
                now
            }
        };
        let due = since + PARK_AFTER;
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= due {
                return Poll::Ready(Outcome::Idle(since));
            }
            timer.as_mut().reset(due);
        }
        Poll::Pending
    })
    .await
}
