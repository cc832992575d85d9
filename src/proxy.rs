//! The per-request service: route the request, build the upstream request, stream the answer
//! back, and write one access-log line when the response body is done.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{header, Request, Response};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::body::Body;
use crate::config::{Config, HeaderOptions, Rule};
use crate::error::GatewayError;
use crate::headers::{self, Forwarded};
use crate::route;
use crate::upstream::{Outgoing, ReplyBody, Upstreams};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub local: SocketAddr,
}

pub struct Proxy {
    rules: Vec<Rule>,
    upstreams: Arc<Upstreams>,
    headers: HeaderOptions,
    stall: Duration,
    /// Used when a request names no host (HTTP/1.0 without `Host`).
    fallback_host: Option<String>,
}

impl Proxy {
    pub fn new(config: &Config, upstreams: Arc<Upstreams>) -> Proxy {
        Proxy {
            rules: config.rules.clone(),
            upstreams,
            headers: config.headers.clone(),
            stall: config.timeouts.body_stall,
            fallback_host: config.hostnames.first().cloned(),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let mut log = AccessLog::new(conn.remote, req.method().clone(), Instant::now());
        match self.forward(req, conn, &mut log).await {
            Ok(resp) => {
                log.status = resp.status().as_u16();
                let (parts, body) = resp.into_parts();
                let body = match body {
                    ReplyBody::Streamed(incoming) => Body::response(incoming, self.stall, log),
                    ReplyBody::Full(bytes) => {
                        log.bytes_out = bytes.len() as u64;
                        Body::full(bytes)
                    }
                };
                Response::from_parts(parts, body)
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
    ) -> Result<Response<ReplyBody>, GatewayError> {
        let (mut parts, incoming) = req.into_parts();
        let path = route::normalize(parts.uri.path())
            .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
        log.path = path.to_string();
        let public = self.public_authority(&parts, conn)?;
        let route = route::route(&parts.method, &path, &self.rules, self.upstreams.has_web());
        let up = self.upstreams.pick(route.target);
        log.reason = route.reason.as_str();
        log.upstream = up.name;

        headers::strip_hop_by_hop(&mut parts.headers);
        headers::set_forwarded(
            &mut parts.headers,
            &Forwarded {
                client_ip: conn.remote.ip(),
                public: public.as_str(),
                public_port: public.port_u16().unwrap_or(conn.local.port()),
                // The server is chosen below; the upstream layer sets its own Host then.
                upstream_host: None,
                forwarded_host: self.headers.forwarded_host,
            },
        );
        // hyper has already answered `Expect: 100-continue` (when the body is first read);
        // passed on, it would make the upstream wait for a second go-ahead.
        parts.headers.remove(header::EXPECT);

        let (body, body_done) = if incoming.is_end_stream() {
            (Body::empty(), None)
        } else {
            let counted = Arc::new(AtomicU64::new(0));
            log.bytes_in = Some(counted.clone());
            let (tx, rx) = oneshot::channel();
            (Body::request(incoming, self.stall, counted, tx), Some(rx))
        };
        let out = Outgoing {
            method: parts.method,
            headers: parts.headers,
            path: path.into_owned(),
            query: parts.uri.query().map(str::to_string),
            body,
            body_done,
            reason: route.reason,
        };
        let reply = self.upstreams.send(up, out).await?;
        let mut resp = reply.response;
        if let Some(server) = reply.server {
            log.server = Some(server.url.authority.clone());
            let headers = resp.headers_mut();
            headers::strip_hop_by_hop(headers);
            headers::rewrite_response(headers, self.upstreams.urls(), &server.url, public.as_str());
        }
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
