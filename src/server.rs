//! Accept -> TLS handshake in the connection's own task -> HTTP/1.1 or HTTP/2 (by ALPN) ->
//! the proxy service; and the graceful drain on shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::config::{Limits, Timeouts};
use crate::keepalive::{self, Activity, Held};
use crate::live::Live;
use crate::metrics::{metrics, ResultLabels};
use crate::proxy::ConnInfo;

/// Binds every listen address before anything is served, so a busy port fails the start.
pub fn bind(addrs: &[SocketAddr]) -> std::io::Result<Vec<(SocketAddr, TcpListener)>> {
    addrs
        .iter()
        .map(|addr| {
            let domain = socket2::Domain::for_address(*addr);
            let socket =
                socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
            if addr.is_ipv6() {
                // As nginx does: `[::]` and `0.0.0.0` can then both be listed.
                socket.set_only_v6(true)?;
            }
            socket.set_reuse_address(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&(*addr).into())?;
            // CI fleets open many connections at once; the default backlog of 128 drops SYNs.
            socket.listen(4096)?;
            let listener = TcpListener::from_std(socket.into())?;
            let local = listener.local_addr()?;
            Ok((local, listener))
        })
        .collect()
}

/// Serves until `shutdown` changes to true, then stops accepting and lets open connections
/// finish their requests for up to the grace period.
pub async fn run(
    listeners: Vec<(SocketAddr, TcpListener)>,
    acceptor: TlsAcceptor,
    live: Arc<Live>,
    timeouts: Timeouts,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.client_headers)
        .keep_alive(true)
        // An unfinished head holds at most this much; past it the client gets 431.
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        // The read buffer also carries upload bodies: 64 KiB per read is plenty for a TLS
        // stream of 16 KiB records, and keeps a concurrent upload's memory small.
        .max_buf_size(H1_MAX_BUF.max(limits.max_header_bytes));
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Large windows let one HTTP/2 stream carry a layer at full speed; memory per stream is
        // bounded by them.
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .keep_alive_interval(Some(Duration::from_secs(60)));
    let max_connections = if limits.max_connections == 0 {
        connections_from_fd_limit()
    } else {
        limits.max_connections
    };
    tracing::info!(max_connections, "client connection limit");
    let shared = Arc::new(Shared {
        http1,
        http2,
        acceptor,
        live,
        handshake_timeout: timeouts.tls_handshake,
        keep_alive: timeouts.client_headers,
        connections: Arc::new(Semaphore::new(max_connections)),
        per_ip: PerIp::new(limits.max_connections_per_ip),
        h2_max_requests: limits.h2_max_requests_per_connection,
    });

    // Each connection task holds a sender; when all are gone, `recv` returns None.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let mut accept_tasks = Vec::new();
    for (local, listener) in listeners {
        tracing::info!(%local, "listening");
        let shared = shared.clone();
        let alive = alive_tx.clone();
        let shutdown = shutdown.clone();
        accept_tasks.push(tokio::spawn(accept_loop(
            listener, local, shared, alive, shutdown,
        )));
    }
    drop(alive_tx);

    while !*shutdown.borrow() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    for t in &accept_tasks {
        t.abort();
    }
    tracing::info!(
        grace_s = timeouts.shutdown_grace.as_secs(),
        "shutting down: no new connections, draining open ones"
    );
    match tokio::time::timeout(timeouts.shutdown_grace, alive_rx.recv()).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!("grace period over; closing the connections still open"),
    }
}

/// hyper's HTTP/1.1 read buffer ceiling (its default is ~400 KB).
const H1_MAX_BUF: usize = 64 * 1024;

struct Shared {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    acceptor: TlsAcceptor,
    live: Arc<Live>,
    handshake_timeout: Duration,
    /// How long an idle HTTP/1.1 connection waits for its next request.
    keep_alive: Duration,
    /// One permit per open client connection: at the limit, accept waits and new clients wait
    /// in the listen backlog while established ones keep working.
    connections: Arc<Semaphore>,
    per_ip: PerIp,
    h2_max_requests: u64,
}

/// Open connections per client address, when `max_connections_per_ip` is set.
struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    /// When the limit was last logged (seconds since start), so a flood logs once a minute.
    last_log: AtomicU64,
    start: std::time::Instant,
}

impl PerIp {
    fn new(max: usize) -> PerIp {
        PerIp {
            max,
            open: Mutex::new(HashMap::new()),
            last_log: AtomicU64::new(u64::MAX),
            start: std::time::Instant::now(),
        }
    }

    /// Counts a new connection from `ip`; false when that address is at its limit.
    fn admit(&self, ip: IpAddr) -> bool {
        if self.max == 0 {
            return true;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            drop(open);
            let now = self.start.elapsed().as_secs();
            let last = self.last_log.load(Ordering::Relaxed);
            if last == u64::MAX || now >= last + 60 {
                self.last_log.store(now, Ordering::Relaxed);
                tracing::warn!(client = %ip, limit = self.max, "connections refused: this address is at max_connections_per_ip (logged once a minute)");
            }
            return false;
        }
        *n += 1;
        true
    }

    fn release(&self, ip: IpAddr) {
        if self.max == 0 {
            return;
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&ip);
            }
        }
    }
}

/// Three quarters of the open-file limit, less room for listeners and files: most client
/// connections are idle keep-alive ones holding no upstream socket, and the rest leaves room
/// for those that do (the upstream pool reuses its sockets).
fn connections_from_fd_limit() -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX / 2);
    (soft / 4 * 3).saturating_sub(64).max(16)
}

async fn accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
    alive: mpsc::Sender<()>,
    shutdown: watch::Receiver<bool>,
) {
    let mut full_logged = false;
    loop {
        let permit = match shared.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !full_logged {
                    tracing::warn!(%local, "at max_connections: new clients wait in the backlog");
                    full_logged = true;
                }
                match shared.connections.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                }
            }
        };
        match listener.accept().await {
            Ok((stream, remote)) => {
                if !shared.per_ip.admit(remote.ip()) {
                    // Closed before any TLS work: cheap for us, clear for the client.
                    drop(stream);
                    continue;
                }
                full_logged = false;
                let _ = stream.set_nodelay(true);
                let info = ConnInfo { remote, local };
                tokio::spawn(connection(
                    stream,
                    info,
                    shared.clone(),
                    (alive.clone(), permit),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors or a transient error: back off instead of spinning,
                // and keep serving the connections already open.
                tracing::error!(%local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One client connection, from TLS handshake to close. The handshake happens here, under a
/// timeout, so a slow or silent client never holds up `accept`.
async fn connection(
    stream: TcpStream,
    info: ConnInfo,
    shared: Arc<Shared>,
    held: (mpsc::Sender<()>, OwnedSemaphorePermit),
    mut shutdown: watch::Receiver<bool>,
) {
    let open = &metrics().connections;
    open.inc();
    serve_connection(stream, info, &shared, &mut shutdown).await;
    open.dec();
    shared.per_ip.release(info.remote.ip());
    drop(held);
}

async fn serve_connection(
    stream: TcpStream,
    info: ConnInfo,
    shared: &Arc<Shared>,
    shutdown: &mut watch::Receiver<bool>,
) {
    // The handshake state, the TLS stream and the HTTP/2 connection are boxed so that the task
    // itself, which an idle keep-alive connection holds for its lifetime, stays small: an async
    // fn keeps a slot for every place a value lives, and the 1.2 KB TLS stream moves through
    // several (measured with bench/ workload 6).
    let acceptor = shared.acceptor.clone();
    let handshake = Box::pin(async move {
        // A TLS record starts with 0x16; a letter means plain HTTP sent to the TLS port, which
        // gets a readable answer (as nginx gives) instead of a TLS alert it cannot print.
        let mut first = [0u8; 1];
        if matches!(stream.peek(&mut first).await, Ok(1)) && first[0].is_ascii_uppercase() {
            plain_http_answer(stream).await;
            return Err(std::io::Error::other("plain HTTP on the TLS port"));
        }
        acceptor.accept(stream).await.map(Box::new)
    });
    let handshakes = |result| {
        metrics()
            .handshakes
            .get_or_create(&ResultLabels { result })
            .inc()
    };
    let tls = tokio::select! {
        r = tokio::time::timeout(shared.handshake_timeout, handshake) => match r {
            Ok(Ok(tls)) => {
                handshakes("ok");
                tls
            }
            Ok(Err(e)) => {
                handshakes("failed");
                tracing::debug!(client = %info.remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                handshakes("timeout");
                tracing::debug!(client = %info.remote, "TLS handshake timed out");
                return;
            }
        },
        // A client still in its handshake (or one that never sends a ClientHello) has nothing
        // in flight: it must not hold a shutdown for the whole grace period.
        _ = shutdown.changed() => return,
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let live = shared.live.clone();
    // HTTP/2 only: after this many requests the connection is asked to close (GOAWAY), as
    // nginx's keepalive_requests does, so one connection cannot pin its upstream sockets and
    // memory forever.
    let served = Arc::new(AtomicU64::new(0));
    let enough = Arc::new(Notify::new());
    let cap = if h2 { shared.h2_max_requests } else { u64::MAX };
    let (counter, notify) = (served.clone(), enough.clone());
    let activity = Arc::new(Activity::default());
    let busy = activity.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        // Each request takes the proxy current when it arrives and keeps it to its end, so a
        // reload never changes a request in flight.
        let proxy = live.proxy();
        if counter.fetch_add(1, Ordering::Relaxed) + 1 == cap {
            notify.notify_one();
        }
        let busy = busy.request(!http_body::Body::is_end_stream(req.body()));
        async move {
            let response = proxy.handle(req, info).await;
            Ok::<_, Infallible>(response.map(|body| Held::new(body, busy)))
        }
    });
    // ALPN has chosen the protocol, so no bytes need sniffing (clients that offer no ALPN
    // speak HTTP/1.1).
    let result = if h2 {
        let mut conn = Box::pin(shared.http2.serve_connection(TokioIo::new(tls), service));
        drive(conn.as_mut(), shutdown, &enough, |c| c.graceful_shutdown()).await
    } else {
        keepalive::serve(
            &shared.http1,
            tls,
            activity,
            service,
            shared.keep_alive,
            shutdown,
        )
        .await
    };
    if let Err(e) = result {
        tracing::debug!(client = %info.remote, error = %e, "connection ended with an error");
    }
}

/// Answers a plain-HTTP request on the TLS port with a 400 that says what to do, in the
/// registry error format docker and containerd print.
async fn plain_http_answer(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read the request head first: closing with it unread would reset the connection before
    // the client reads the answer.
    let mut head = [0u8; 8192];
    let mut len = 0;
    let read_head = async {
        while len < head.len() && !head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut head[len..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => len += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), read_head).await;
    let body = "{\"errors\":[{\"code\":\"UNSUPPORTED\",\"message\":\"this port speaks HTTPS: use https:// (and trust dockgate's ca.crt)\"}]}";
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Drives an HTTP/2 connection to its end; on shutdown, or when it has served its share of
/// requests, asks it to finish the requests in flight and close (GOAWAY). HTTP/1.1 has its own
/// driver in `keepalive`.
async fn drive<C>(
    mut conn: Pin<&mut C>,
    shutdown: &mut watch::Receiver<bool>,
    enough: &Notify,
    graceful: fn(Pin<&mut C>),
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.changed() => {
            graceful(conn.as_mut());
            conn.await
        }
        _ = enough.notified() => {
            graceful(conn.as_mut());
            tokio::select! {
                r = conn.as_mut() => r,
                _ = shutdown.changed() => conn.await,
            }
        }
    }
}
