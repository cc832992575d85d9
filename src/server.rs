//! Accept -> TLS handshake in the connection's own task -> HTTP/1.1 or HTTP/2 (by ALPN) ->
//! the proxy service; and the graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::Timeouts;
use crate::proxy::{ConnInfo, Proxy};

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
    proxy: Arc<Proxy>,
    timeouts: Timeouts,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.client_headers)
        .keep_alive(true);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        // Large windows let one HTTP/2 stream carry a layer at full speed; memory per stream is
        // bounded by them.
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .keep_alive_interval(Some(Duration::from_secs(60)));
    let shared = Arc::new(Shared {
        http1,
        http2,
        acceptor,
        proxy,
        handshake_timeout: timeouts.tls_handshake,
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

struct Shared {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    acceptor: TlsAcceptor,
    proxy: Arc<Proxy>,
    handshake_timeout: Duration,
}

async fn accept_loop(
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<Shared>,
    alive: mpsc::Sender<()>,
    shutdown: watch::Receiver<bool>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                let info = ConnInfo { remote, local };
                tokio::spawn(connection(
                    stream,
                    info,
                    shared.clone(),
                    alive.clone(),
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
    _alive: mpsc::Sender<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The handshake state and the HTTP/2 connection are boxed so that the task itself, which an
    // idle HTTP/1.1 keep-alive connection holds for its lifetime, is only as large as the
    // HTTP/1.1 path needs (measured with bench/ workload 6).
    let handshake = Box::pin(shared.acceptor.accept(stream));
    let tls = match tokio::time::timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(client = %info.remote, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(client = %info.remote, "TLS handshake timed out");
            return;
        }
    };
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let proxy = shared.proxy.clone();
    let service = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, Infallible>(proxy.handle(req, info).await) }
    });
    let io = TokioIo::new(tls);
    // ALPN has chosen the protocol, so no bytes need sniffing (clients that offer no ALPN
    // speak HTTP/1.1).
    let result = if h2 {
        let mut conn = Box::pin(shared.http2.serve_connection(io, service));
        drive(conn.as_mut(), &mut shutdown, |c| c.graceful_shutdown()).await
    } else {
        let conn = shared.http1.serve_connection(io, service);
        tokio::pin!(conn);
        drive(conn, &mut shutdown, |c| c.graceful_shutdown()).await
    };
    if let Err(e) = result {
        tracing::debug!(client = %info.remote, error = %e, "connection ended with an error");
    }
}

/// Drives a connection to its end; on shutdown, asks it to finish the requests in flight and
/// close (HTTP/2: GOAWAY; HTTP/1.1: close after the current response).
async fn drive<C>(
    mut conn: Pin<&mut C>,
    shutdown: &mut watch::Receiver<bool>,
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
    }
}
