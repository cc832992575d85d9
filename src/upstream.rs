//! The upstreams: where each one is, the pooled keep-alive client shared by all of them, and
//! sending one request under the connect and response-header timeouts.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;

use crate::body::Body;
use crate::config::{self, Defaults, Target, Timeouts, UpstreamCa, UpstreamUrl};
use crate::error::GatewayError;

/// One configured upstream.
pub struct Upstream {
    pub name: &'static str,
    pub url: UpstreamUrl,
    /// `scheme://authority/base`, for messages.
    pub origin: String,
}

pub struct Upstreams {
    put: Upstream,
    get: Upstream,
    web: Option<Upstream>,
    /// Every upstream's URL, for rewriting response headers that point at any of them.
    urls: Vec<UpstreamUrl>,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    response_headers: Duration,
}

impl Upstreams {
    pub fn new(cfg: &config::Upstreams, timeouts: &Timeouts) -> Upstreams {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        // Registry traffic is many small request/response pairs: Nagle would add a delay to
        // each one.
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        // https:// upstreams (Harbor, a Nexus behind TLS) are verified against `upstreams.ca`
        // or the system's trust store; http:// ones go through unchanged.
        connector.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(upstream_tls(cfg.ca.as_ref()))
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Defaults::POOL_IDLE)
            .pool_max_idle_per_host(Defaults::POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        let make = |name: &'static str, url: &UpstreamUrl| Upstream {
            name,
            origin: url.to_string(),
            url: url.clone(),
        };
        let mut urls = vec![cfg.put.clone(), cfg.get.clone()];
        urls.extend(cfg.web.clone());
        Upstreams {
            urls,
            put: make("put", &cfg.put),
            get: make("get", &cfg.get),
            web: cfg.web.as_ref().map(|w| make("web", w)),
            client,
            response_headers: timeouts.response_headers,
        }
    }

    /// The upstream for a routing decision. `route()` only names `web` when it is configured
    /// (config checking refuses rules that name a missing web), so the fallback is defensive.
    pub fn pick(&self, target: Target) -> &Upstream {
        match target {
            Target::Put => &self.put,
            Target::Get => &self.get,
            Target::Web => self.web.as_ref().unwrap_or(&self.get),
        }
    }

    pub fn urls(&self) -> &[UpstreamUrl] {
        &self.urls
    }

    pub fn has_web(&self) -> bool {
        self.web.is_some()
    }

    /// Sends `req` (whose URI is only path and query) to `up`. The response-header timeout runs
    /// from the end of the request body (`body_done`), so a multi-GB upload is bounded by the
    /// stall timeout while it flows, not by this one.
    pub async fn send(
        &self,
        up: &Upstream,
        req: Request<Body>,
        body_done: Option<oneshot::Receiver<()>>,
    ) -> Result<Response<Incoming>, GatewayError> {
        let response = self.client.request(req);
        let deadline = async {
            if let Some(done) = body_done {
                // Err means the body was dropped, which also ends the upload.
                let _ = done.await;
            }
            tokio::time::sleep(self.response_headers).await;
        };
        tokio::select! {
            biased;
            r = response => r.map_err(|e| GatewayError::from_client(e, up.name, up.origin.clone())),
            () = deadline => Err(GatewayError::UpstreamTimeout {
                upstream: up.name,
                origin: up.origin.clone(),
                after: self.response_headers,
            }),
        }
    }
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

impl Upstream {
    /// The absolute URI for a normalised `path` and the client's raw `query`.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, GatewayError> {
        let mut pq = String::with_capacity(self.url.base_path.len() + path.len() + 64);
        pq.push_str(&self.url.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq)
            .map_err(|e| GatewayError::BadRequest(format!("cannot forward this path: {e}")))?;
        Uri::builder()
            .scheme(self.url.scheme.clone())
            .authority(self.url.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| GatewayError::BadRequest(format!("cannot forward this path: {e}")))
    }
}
