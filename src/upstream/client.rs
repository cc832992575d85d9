//! The pooled keep-alive client shared by every upstream server, and sending one request to one
//! server under the connect and response-header timeouts. It lives outside anything a reload
//! would replace, so pooled connections survive one.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use crate::body::Body;
use crate::config::{Defaults, UpstreamCa, UpstreamUrl};
use crate::error::GatewayError;

/// The one connection pool and its timeouts.
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpsConnector<HttpConnector>, Body>,
}

/// What a failure is reported as: which upstream, and which of its servers.
#[derive(Clone, Copy)]
pub struct Peer<'a> {
    pub upstream: &'static str,
    pub url: &'a UpstreamUrl,
}

impl Client {
    pub fn new(ca: Option<&UpstreamCa>, connect: Duration) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect));
        // Registry traffic is many small request/response pairs: Nagle would add a delay to
        // each one.
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // https:// upstreams (Harbor, a Nexus behind TLS) are verified against `upstreams.ca`
        // or the system's trust store; http:// ones go through unchanged.
        connector.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(upstream_tls(ca))
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Defaults::POOL_IDLE)
            .pool_max_idle_per_host(Defaults::POOL_MAX_IDLE_PER_HOST)
            // hyper queues up to this much of a request body before it pushes back on the
            // client; ~400 KB by default, which 64 concurrent uploads pay 64 times over.
            .http1_max_buf_size(Defaults::UPSTREAM_MAX_BUF)
            .build(connector);
        Client { inner }
    }

    /// Sends `req` (its URI already absolute, see `uri`). The response-header timeout `within`
    /// runs from the end of the request body (`body_done`), so a multi-GB upload is bounded by
    /// the stall timeout while it flows, not by this one.
    pub async fn send(
        &self,
        peer: Peer<'_>,
        req: Request<Body>,
        body_done: Option<oneshot::Receiver<()>>,
        within: Duration,
    ) -> Result<Response<Incoming>, GatewayError> {
        let response = self.inner.request(req);
        let deadline = async {
            if let Some(done) = body_done {
                // Err means the body was dropped, which also ends the upload.
                let _ = done.await;
            }
            tokio::time::sleep(within).await;
        };
        tokio::select! {
            biased;
            r = response => r.map_err(|e| GatewayError::from_client(e, peer.upstream, peer.url.to_string())),
            () = deadline => Err(GatewayError::UpstreamTimeout {
                upstream: peer.upstream,
                origin: peer.url.to_string(),
                after: within,
            }),
        }
    }
}

/// The absolute URI on `url` for a normalised `path` and the client's raw `query`.
pub fn uri(url: &UpstreamUrl, path: &str, query: Option<&str>) -> Result<Uri, GatewayError> {
    let mut pq = String::with_capacity(url.base_path.len() + path.len() + 64);
    pq.push_str(&url.base_path);
    pq.push_str(path);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        pq.push('?');
        pq.push_str(q);
    }
    let pq = PathAndQuery::try_from(pq)
        .map_err(|e| GatewayError::BadRequest(format!("cannot forward this path: {e}")))?;
    Uri::builder()
        .scheme(url.scheme.clone())
        .authority(url.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|e| GatewayError::BadRequest(format!("cannot forward this path: {e}")))
}

/// The client side of TLS to https:// upstreams.
fn upstream_tls(ca: Option<&UpstreamCa>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            let (added, ignored) = roots.add_parsable_certificates(ca.certs.iter().cloned());
            if ignored > 0 {
                tracing::warn!(file = %ca.path.display(), added, ignored, "some upstream CA certificates are unusable");
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::debug!(error = %e, "reading the system trust store");
            }
            roots.add_parsable_certificates(native.certs);
        }
    }
    rustls::ClientConfig::builder_with_provider(crate::tls::crypto())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
