//! The per-request service: route the request, build the upstream request, stream the answer
//! back, and write one access-log line when the response body is done.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Authority;
use http::{header, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use percent_encoding::percent_decode_str;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::access_log::AccessLog;
use crate::body::{Body, BodyError};
use crate::config::{Config, HeaderOptions, Rule};
use crate::error::GatewayError;
use crate::headers::{self, Forwarded};
use crate::policy::{self, Policy, Refusal};
use crate::registry::backfill::Backfill;
use crate::registry::copy::CopyError;
use crate::registry::manifest::{Manifest, MAX_MANIFEST_BYTES};
use crate::route::{self, Reason};
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
    /// `None` when `[backfill] enabled = false`.
    backfill: Option<Backfill>,
    headers: HeaderOptions,
    stall: Duration,
    drain: Duration,
    /// Used when a request names no host (HTTP/1.0 without `Host`).
    fallback_host: Option<String>,
    policy: Policy,
    underscore_headers: bool,
    /// `upstreams.token`'s path, routed to the token service.
    token_path: Option<String>,
    /// `max_requests_in_flight`; `None`: no limit.
    in_flight: Option<Arc<tokio::sync::Semaphore>>,
}

impl Proxy {
    pub fn new(config: &Config, upstreams: Arc<Upstreams>) -> Proxy {
        Proxy {
            rules: config.rules.clone(),
            backfill: Backfill::new(config, upstreams.clone()),
            upstreams,
            headers: config.headers.clone(),
            stall: config.timeouts.body_stall,
            drain: config.timeouts.early_response_drain,
            fallback_host: config.hostnames.first().cloned(),
            policy: Policy {
                max_uri_bytes: config.limits.max_uri_bytes,
                allowed_hosts: if config.limits.strict_host && !config.hostnames.is_empty() {
                    config.certificate_names()
                } else {
                    Vec::new()
                },
            },
            underscore_headers: config.limits.underscore_headers,
            token_path: config
                .upstreams
                .spec(crate::config::Target::Token)
                .and_then(|s| s.servers().next())
                .map(|u| u.base_path.clone()),
            in_flight: (config.limits.max_requests_in_flight > 0).then(|| {
                Arc::new(tokio::sync::Semaphore::new(
                    config.limits.max_requests_in_flight,
                ))
            }),
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: ConnInfo) -> Response<Body> {
        let mut log = AccessLog::new(conn.remote, req.method().clone(), Instant::now());
        if let Some(limit) = &self.in_flight {
            // Held by the access log, so a request counts until its response body ends.
            match limit.clone().try_acquire_owned() {
                Ok(permit) => log.permit = Some(permit),
                Err(_) => {
                    let err = GatewayError::Refused(Refusal::Busy);
                    log.status = err.status().as_u16();
                    log.error = Some(format!("{} fault: {err}", err.fault()));
                    log.path = req.uri().path().to_string();
                    self.linger(req.into_body());
                    return err.into_response();
                }
            }
        }
        // Boxed: hyper keeps the allocation of a request's future for the life of its HTTP/1.1
        // connection, so what `forward` needs while it runs (upstream retries, group fallback,
        // backfill) is allocated per request instead of held by every idle connection
        // (bench/ workload 6: 29 KiB per idle connection unboxed, 18 KiB boxed).
        match Box::pin(self.forward(req, conn, &mut log)).await {
            Ok(resp) => {
                log.status = resp.status().as_u16();
                crate::metrics::metrics().first_byte(log.reason, log.start.elapsed().as_secs_f64());
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
        let checked = policy::check(
            &self.policy,
            &parts.method,
            &parts.uri,
            parts.version,
            &parts.headers,
        )
        .map_err(GatewayError::from)
        .and_then(|()| {
            route::normalize(parts.uri.path()).map_err(|e| GatewayError::BadRequest(e.to_string()))
        });
        let path = match checked {
            Ok(path) => path,
            Err(e) => {
                log.path = parts.uri.path().chars().take(256).collect();
                self.linger(incoming);
                return Err(e);
            }
        };
        if !self.underscore_headers {
            policy::drop_underscored(&mut parts.headers);
        }
        log.path = path.to_string();
        let public = self.public_authority(&parts, conn)?;
        let configured = route::Configured {
            web: self.upstreams.has_web(),
            token_path: self.token_path.as_deref(),
        };
        let route = route::route(&parts.method, &path, &self.rules, configured);
        let up = self.upstreams.pick(route.target);
        log.reason = Some(route.reason);
        log.upstream = Some(route.target);

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

        let backfill = self.backfill.as_ref();
        let (body, body_done) = if incoming.is_end_stream() {
            (Body::empty(), None)
        } else if let (Reason::ManifestPush, Some(bf)) = (route.reason, backfill) {
            // A manifest is small and must be read to know what it needs; what is forwarded
            // afterwards is exactly the bytes the client sent.
            // The backfill paths are boxed: hyper keeps the request future's allocation for the
            // life of an HTTP/1.1 connection, and these would make every idle one larger.
            let bytes = Box::pin(self.read_manifest(&parts.headers, incoming)).await?;
            log.bytes_in = Some(Arc::new(AtomicU64::new(bytes.len() as u64)));
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if let Ok(manifest) = Manifest::parse(content_type, &bytes) {
                let repo = repository(&path, "/manifests/");
                let creds = bf.credentials(&parts.headers);
                match Box::pin(bf.complete(&creds, repo, &manifest)).await {
                    Ok(s) => log.backfill = Some(format!("copied={} bytes={}", s.copied, s.bytes)),
                    Err(f) if matches!(f.error, CopyError::Refused { .. }) => {
                        log.backfill = Some(format!("skipped: {}", f.error));
                    }
                    Err(f) => {
                        return Err(GatewayError::Backfill {
                            digest: f.digest,
                            reason: f.error.to_string(),
                        })
                    }
                }
            }
            (Body::full(bytes), None)
        } else {
            let mut incoming = incoming;
            // HTTP/2: wait for the body to start before an upstream is chosen. One connection
            // carries up to h2_max_concurrent_streams requests, and streams that send headers and
            // then nothing would each hold an upstream socket: eight connections filled 1,024
            // descriptors. (An HTTP/1.1 connection holds at most one, and connections are
            // bounded by max_connections; there a client may also wait for an early answer
            // before sending its body.)
            let first = if parts.version == http::Version::HTTP_2 {
                match tokio::time::timeout(self.stall, incoming.frame()).await {
                    Err(_) => return Err(GatewayError::ClientBody(BodyError::Stalled(self.stall))),
                    Ok(Some(Err(e))) => {
                        return Err(GatewayError::ClientBody(BodyError::Transport(Arc::new(e))))
                    }
                    Ok(Some(Ok(frame))) => Some(frame),
                    Ok(None) => None,
                }
            } else {
                None
            };
            let counted = Arc::new(AtomicU64::new(0));
            log.bytes_in = Some(counted.clone());
            let (tx, rx) = oneshot::channel();
            let body = Body::request(incoming, first, self.stall, counted, tx, self.drain);
            (body, Some(rx))
        };
        let query = parts.uri.query().map(str::to_string);
        let path = path.into_owned();
        let out = Outgoing {
            method: parts.method,
            headers: parts.headers,
            path: path.clone(),
            query: query.clone(),
            body,
            body_done,
            reason: route.reason,
        };
        // Only a mount or a blob check may need copies, and only those pay for their headers.
        let plans = matches!(route.reason, Reason::UploadStart | Reason::BlobCheck);
        let creds = backfill
            .filter(|_| plans)
            .map(|bf| bf.credentials(&out.headers));
        let mut reply = self.upstreams.send(up, out).await?;
        if let (Some(bf), Some(creds)) = (backfill, &creds) {
            reply = match route.reason {
                Reason::UploadStart => match mount_request(query.as_deref()) {
                    Some((digest, from)) => {
                        let repo = repository(&path, "/blobs/uploads/");
                        let (reply, copied) =
                            Box::pin(bf.mount(reply, creds, repo, &digest, from.as_deref())).await;
                        if copied {
                            log.backfill = Some("mounted from get".into());
                        }
                        reply
                    }
                    None => reply,
                },
                Reason::BlobCheck
                    if bf.on_blob_check
                        && reply.response.status() == http::StatusCode::NOT_FOUND =>
                {
                    let repo = repository(&path, "/blobs/");
                    let digest = path.rsplit('/').next().unwrap_or_default();
                    match Box::pin(bf.blob_check(creds, repo, digest)).await {
                        Some(found) => {
                            log.backfill = Some("copied from get".into());
                            found
                        }
                        None => reply,
                    }
                }
                _ => reply,
            };
        }
        let mut resp = reply.response;
        if let Some(server) = reply.server {
            log.server = Some(server.url.authority.clone());
            let headers = resp.headers_mut();
            headers::strip_hop_by_hop(headers);
            headers::rewrite_response(headers, self.upstreams.urls(), &server.url, public.as_str());
        }
        Ok(resp)
    }

    /// A refused request's body is read (and discarded) in the background, so the client reads
    /// the refusal instead of a reset.
    fn linger(&self, incoming: Incoming) {
        if !incoming.is_end_stream() {
            crate::body::linger(incoming, self.drain);
        }
    }

    /// Reads a manifest PUT's body whole, within the stall timeout per frame and the size
    /// cap. A body over the cap is refused; the rest of it is still read in the background so
    /// the client reads the 413.
    async fn read_manifest(
        &self,
        headers: &http::HeaderMap,
        mut incoming: Incoming,
    ) -> Result<bytes::Bytes, GatewayError> {
        let too_large = GatewayError::ManifestTooLarge {
            limit: MAX_MANIFEST_BYTES,
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_MANIFEST_BYTES) {
            crate::body::linger(incoming, self.drain);
            return Err(too_large);
        }
        let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(8192));
        loop {
            match tokio::time::timeout(self.stall, incoming.frame()).await {
                Err(_) => return Err(GatewayError::ClientBody(BodyError::Stalled(self.stall))),
                Ok(None) => return Ok(buf.freeze()),
                Ok(Some(Err(e))) => {
                    return Err(GatewayError::ClientBody(BodyError::Transport(Arc::new(e))))
                }
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        if buf.len() + data.len() > MAX_MANIFEST_BYTES {
                            crate::body::linger(incoming, self.drain);
                            return Err(too_large);
                        }
                        buf.extend_from_slice(data);
                    }
                }
            }
        }
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

/// `<name>` of `/v2/<name>/<marker>...` (the last occurrence: a name may contain `blobs`).
fn repository<'p>(path: &'p str, marker: &str) -> &'p str {
    let rest = path.strip_prefix("/v2/").unwrap_or(path);
    rest.rfind(marker).map_or(rest, |i| &rest[..i])
}

/// `mount` and `from` of a cross-repository mount request.
fn mount_request(query: Option<&str>) -> Option<(String, Option<String>)> {
    let mut mount = None;
    let mut from = None;
    for pair in query?.split('&') {
        let decode = |v: &str| percent_decode_str(v).decode_utf8_lossy().into_owned();
        match pair.split_once('=') {
            Some(("mount", v)) => mount = Some(decode(v)),
            Some(("from", v)) => from = Some(decode(v)),
            _ => {}
        }
    }
    Some((mount?, from))
}
