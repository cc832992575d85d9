//! The doctor's HTTP client: one request to one upstream server, answered within a deadline,
//! its failure sorted the way a fix needs it (refused, timed out, unresolvable, TLS).

use std::error::Error as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{Config, UpstreamCa, UpstreamUrl};

/// How long an answer may take once connected. `timeouts.response_headers` (two minutes by
/// default) suits a registry assembling a large blob, not a doctor asking for `/v2/`.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);
/// Enough of a body to tell an HTML page from JSON and to count a catalog.
const BODY_BYTES: usize = 64 * 1024;

/// A small client for every upstream: http:// as is, https:// verified against `upstreams.ca`
/// or the system's trust store, as `serve` does.
pub struct Probe {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    connect: Duration,
    within: Duration,
}

/// An answer: status, headers and the start of the body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a server gave no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("connection refused")]
    Refused,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot resolve the host name ({0})")]
    Resolve(String),
    #[error("the TLS handshake failed ({0})")]
    Tls(String),
    #[error("{0}")]
    Other(String),
}

impl Probe {
    pub fn new(config: &Config) -> Probe {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.timeouts.connect));
        connector.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls(config.upstreams.ca.as_ref()))
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        Probe {
            client: Client::builder(TokioExecutor::new()).build(connector),
            connect: config.timeouts.connect,
            within: config.timeouts.connect + ANSWER_WITHIN,
        }
    }

    /// `method` of `path` (which may carry a query) under `url`'s base path.
    pub async fn send(
        &self,
        method: Method,
        url: &UpstreamUrl,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, Unreachable> {
        let uri = on_server(url, &format!("{}{path}", url.base_path))?;
        self.send_uri(method, uri, headers).await
    }

    /// `method` of an absolute `uri`, with `headers` (a `Host` given here replaces the URI's).
    pub async fn send_uri(
        &self,
        method: Method,
        uri: Uri,
        headers: &[(&str, &str)],
    ) -> Result<Answer, Unreachable> {
        let mut req = Request::new(Empty::new());
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        for (name, value) in headers {
            let name =
                HeaderName::try_from(*name).map_err(|e| Unreachable::Other(e.to_string()))?;
            let value =
                HeaderValue::try_from(*value).map_err(|e| Unreachable::Other(e.to_string()))?;
            req.headers_mut().insert(name, value);
        }
        // Registries read an upload start's body length; say "none" rather than leave it to
        // the client library.
        if method == Method::POST {
            req.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| classify(e, self.connect))?;
            let (parts, mut body) = resp.into_parts();
            let mut buf = BytesMut::new();
            while buf.len() < BODY_BYTES {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            buf.extend_from_slice(data);
                        }
                    }
                    // The status and headers are the answer; a body cut short changes nothing.
                    Some(Err(_)) | None => break,
                }
            }
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body: buf.freeze(),
            })
        };
        tokio::time::timeout(self.within, exchange)
            .await
            .unwrap_or(Err(Unreachable::Timeout(self.within)))
    }
}

impl Answer {
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// An HTML page: a UI or a web server's error page, never a registry's answer.
    pub fn is_html(&self) -> bool {
        let typed = self
            .header(header::CONTENT_TYPE)
            .is_some_and(|t| t.to_ascii_lowercase().contains("html"));
        let start: Vec<u8> = self.body.iter().take(64).copied().collect();
        let start = String::from_utf8_lossy(&start)
            .trim_start()
            .to_ascii_lowercase();
        typed || start.starts_with("<!doctype html") || start.starts_with("<html")
    }

    /// Sonatype Nexus says so in `Server: Nexus/3.x.y-zz (OSS)`.
    pub fn is_nexus(&self) -> bool {
        self.header(header::SERVER)
            .is_some_and(|s| s.to_ascii_lowercase().starts_with("nexus/"))
    }
}

/// `path_and_query` on `url`'s origin: a `Location` path from this server already carries
/// its base path, so none is added.
pub fn on_server(url: &UpstreamUrl, path_and_query: &str) -> Result<Uri, Unreachable> {
    let pq = PathAndQuery::try_from(path_and_query)
        .map_err(|e| Unreachable::Other(format!("cannot build the path: {e}")))?;
    Uri::builder()
        .scheme(url.scheme.clone())
        .authority(url.authority.clone())
        .path_and_query(pq)
        .build()
        .map_err(|e| Unreachable::Other(format!("cannot build the URL: {e}")))
}

/// Sorts a client error by its causes.
fn classify(err: hyper_util::client::legacy::Error, connect: Duration) -> Unreachable {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = err.source();
    let mut last = err.to_string();
    while let Some(e) = cause {
        last = e.to_string();
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Unreachable::Tls(tls.to_string());
        }
        if last.starts_with("dns error") {
            let detail = e.source().map_or(last.clone(), |s| s.to_string());
            return Unreachable::Resolve(detail);
        }
        cause = e.source();
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => return Unreachable::Refused,
                std::io::ErrorKind::TimedOut => return Unreachable::Timeout(connect),
                _ => {}
            }
            // An `io::Error`'s `source()` skips the error it wraps, and hyper-rustls wraps the
            // rustls error in two of them.
            if let Some(inner) = io.get_ref() {
                cause = Some(inner);
            }
        }
    }
    Unreachable::Other(last)
}

/// The client side of TLS to https:// upstreams, trusting what `serve` trusts.
fn tls(ca: Option<&UpstreamCa>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(ca) => {
            roots.add_parsable_certificates(ca.certs.iter().cloned());
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    rustls::ClientConfig::builder_with_provider(crate::tls::crypto())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
