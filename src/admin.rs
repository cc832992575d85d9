//! The admin listener, plain HTTP and never on the TLS port (`[admin] listen`):
//! - `GET /metrics`: the Prometheus text format (`metrics`);
//! - `GET /healthz`: 200 while the process serves; it never depends on upstreams;
//! - `GET /readyz`: 200 when the listeners are bound and every upstream has a healthy server,
//!   else 503, for a Kubernetes readiness probe.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::live::Live;
use crate::metrics::metrics;

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
pub async fn run(listener: TcpListener, live: Arc<Live>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let live = live.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let live = live.clone();
                async move { Ok::<_, Infallible>(answer(&req, &live)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(req: &Request<Incoming>, live: &Live) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut resp = text(StatusCode::OK, metrics().encode());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                // prometheus-client writes OpenMetrics (`# EOF`, counters typed without
                // `_total`); said otherwise, a scraper would read the counters as untyped.
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if live.ready() => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: an upstream has no healthy server\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "/metrics, /healthz, /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp
}

/// Binds the admin address, so a busy port fails the start like the main listeners.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}
