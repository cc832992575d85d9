//! The per-request service: route the request, build the upstream request, stream the answer
//! back, and write one access-log line when the response body is done.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{header, Method, Request, Response, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::body::Body;
use crate::config::{Config, HeaderOptions, Rule};
use crate::error::GatewayError;
use crate::headers::{self, Forwarded};
use crate::route;
use crate::upstream::Upstreams;

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

pub struct Proxy {
    rules: Vec<Rule>,
    upstreams: Upstreams,
    headers: HeaderOptions,
    stall: Duration,
    /// Used when a request names no host (HTTP/1.0 without `Host`).
    fallback_host: Option<String>,
}

impl Proxy {
    pub fn new(config: &Config) -> Proxy {
        Proxy {
            rules: config.rules.clone(),
            upstreams: Upstreams::new(&config.upstreams, &config.timeouts),
            headers: config.headers.clone(),
            stall: config.timeouts.body_stall,
            fallback_host: config.hostnames.first().cloned(),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let start = Instant::now();
        let mut log = AccessLog {
            client: conn.remote,
            method: req.method().clone(),
            path: String::new(),
            reason: "-",
            upstream: "-",
            status: 0,
            bytes_in: None,
            bytes_out: 0,
            start,
            error: None,
            body_error: None,
        };
        match self.forward(req, conn, &mut log).await {
            Ok(resp) => {
                log.status = resp.status().as_u16();
                let (parts, body) = resp.into_parts();
                Response::from_parts(parts, Body::response(body, self.stall, log))
            }
            Err(err) => {
                let status = err.status();
                log.status = status.as_u16();
                log.error = Some(format!("{} fault: {err}", err.fault()));
                drop(log);
                err.into_response()
            }
        }
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        log: &mut AccessLog,
    ) -> Result<Response<Incoming>, GatewayError> {
        let (mut parts, incoming) = req.into_parts();
        let path = route::normalize(parts.uri.path())
            .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        log.path = path.to_string();
        let public = self.public_authority(&parts, conn)?;
        let route = route::route(&parts.method, &path, &self.rules, self.upstreams.has_web());
        let up = self.upstreams.pick(route.target);
        log.reason = route.reason.as_str();
        log.upstream = up.name;

        let uri = up.uri(&path, parts.uri.query())?;
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarded(
            &mut parts.headers,
            &Forwarded {
                client_ip: conn.remote.ip(),
                public: public.as_str(),
                public_port: public.port_u16().unwrap_or(conn.local.port()),
                upstream_host: self
                    .headers
                    .upstream_host
                    .then(|| up.url.authority.as_str()),
                forwarded_host: self.headers.forwarded_host,
            },
        );
        // hyper has already answered `Expect: 100-continue` (when the body is first read);
        // passed on, it would make the upstream wait for a second go-ahead.
        parts.headers.remove(header::EXPECT);
        parts.uri = uri;
        // The pooled client speaks HTTP/1.1 upstream whatever the client spoke to us; an
        // HTTP/2 request kept as such would be refused on an HTTP/1 connection.
        parts.version = Version::HTTP_11;

        let (body, done) = if incoming.is_end_stream() {
            (Body::empty(), None)
        } else {
            let counted = Arc::new(AtomicU64::new(0));
            log.bytes_in = Some(counted.clone());
            let (tx, rx) = oneshot::channel();
            (Body::request(incoming, self.stall, counted, tx), Some(rx))
        };
        let mut resp = self
            .upstreams
            .send(up, Request::from_parts(parts, body), done)
            .await?;

        let headers = resp.headers_mut();
        headers::strip_hop_by_hop(headers);
        headers::rewrite_response(headers, self.upstreams.urls(), &up.url, public.as_str());
        Ok(resp)
    }

    /// The `host[:port]` the client used: `:authority` for HTTP/2, `Host` for HTTP/1.1.
    fn public_authority(
        &self,
        parts: &http::request::Parts,
        conn: ConnInfo,
    ) -> Result<Authority, GatewayError> {
        if let Some(a) = parts.uri.authority() {
            return Ok(a.clone());
        }
        if let Some(host) = parts.headers.get(header::HOST) {
            return Authority::try_from(host.as_bytes()).map_err(|_| {
                GatewayError::BadRequest("the Host header is not a valid host[:port]".into())
            });
        }
        let host = match &self.fallback_host {
            Some(h) if h.contains(':') => format!("[{h}]:{}", conn.local.port()),
            Some(h) => format!("{h}:{}", conn.local.port()),
            None => conn.local.to_string(),
        };
        Authority::try_from(host)
            .map_err(|_| GatewayError::BadRequest("the request names no host".into()))
    }
}

/// One access-log line, written when the response body is finished or dropped, so that it can
/// carry the bytes moved each way. Never holds header values: no `Authorization`, no tokens.
pub struct AccessLog {
    client: SocketAddr,
    method: Method,
    path: String,
    reason: &'static str,
    upstream: &'static str,
    status: u16,
    bytes_in: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    start: Instant,
    error: Option<String>,
    pub body_error: Option<String>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let bytes_in = self
            .bytes_in
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed));
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        if self.status == 0 {
            // Dropped before the upstream answered: the client went away. nginx logs 499.
            self.status = 499;
            self.error.get_or_insert_with(|| {
                "client fault: closed the connection before the response".into()
            });
        }
        // tracing needs the level at compile time; the fields are the same either way.
        macro_rules! line {
            ($level:expr, $($error:tt)*) => {
                tracing::event!(
                    target: "access",
                    $level,
                    client = %self.client,
                    method = %self.method,
                    path = %self.path,
                    route = %self.reason,
                    upstream = %self.upstream,
                    status = self.status,
                    bytes_in,
                    bytes_out = self.bytes_out,
                    ms = format_args!("{ms:.1}"),
                    $($error)*
                )
            };
        }
        match self.error.as_deref().or(self.body_error.as_deref()) {
            None => line!(tracing::Level::INFO,),
            Some(error) => line!(tracing::Level::WARN, error),
        }
    }
}
