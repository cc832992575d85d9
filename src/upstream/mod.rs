//! The upstreams as values: each routing target (put, get, web) is an ordered list of members,
//! each member a pool of servers with the same content. One server, a pool and a group are the
//! same shape, so the proxy asks for a response and never knows which it spoke to.
//!
//! - One member (a server or a pool): a request goes to one server; a request without a body
//!   is tried on the next server of the pool when its server fails.
//! - Several members (a group, like Nexus's): members are asked in order and the first that
//!   has the thing answers (`group`); tag lists and the catalog are the union of all members.

mod client;
mod group;
mod health;
mod pool;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::body::Body;
use crate::config::{self, Target, UpstreamUrl};
use crate::error::GatewayError;
use crate::route::Reason;

pub use client::{uri, Client};
pub use health::{spawn_probes, Health};
pub use pool::{Pool, Server};

use client::Peer;

/// The query parameter that pins an upload session to the server of a pool that created it.
/// dockgate adds it to the upload `Location` and strips it before forwarding.
pub const PIN_PARAM: &str = "_dockgate_server";

pub struct Upstreams {
    /// Shared with the configuration a reload replaces, when the connect settings are the same.
    client: Arc<Client>,
    response_headers: std::time::Duration,
    /// Indexed by `Target::index`.
    by_target: [Option<Upstream>; Target::ALL.len()],
    /// Every server's URL, for rewriting response headers that point at any of them.
    urls: Vec<UpstreamUrl>,
    health: config::Health,
    /// Send each server's own `Host` instead of the public one.
    upstream_host: bool,
}

/// One routing target's members.
pub struct Upstream {
    pub name: &'static str,
    pub members: Vec<Pool>,
}

/// A request on its way upstream, before a server is chosen: method, headers already rewritten
/// for upstreams, the normalised path and the client's query.
pub struct Outgoing {
    pub method: Method,
    pub headers: HeaderMap,
    pub path: String,
    pub query: Option<String>,
    pub body: Body,
    /// Fired when the request body has been sent; `None` when there is no body.
    pub body_done: Option<oneshot::Receiver<()>>,
    pub reason: Reason,
}

/// An upstream's answer: streamed from a server, or read whole (a group's 404 kept while the
/// next member is asked, a tag list made from several members).
pub struct Reply<'a> {
    pub response: Response<ReplyBody>,
    /// Who answered, for header rewriting and the access log; `None` for a union.
    pub server: Option<&'a Server>,
}

pub enum ReplyBody {
    Streamed(Incoming),
    Full(Bytes),
}

impl Upstreams {
    /// Builds the upstreams of `cfg` on `client`. Servers that `previous` (the configuration a
    /// reload replaces) also had keep their health; `track_all` follows lone servers too, for
    /// `/readyz`.
    pub fn new(
        cfg: &config::Config,
        client: Arc<Client>,
        previous: Option<&Upstreams>,
        track_all: bool,
    ) -> Upstreams {
        let ups = &cfg.upstreams;
        let mut by_target: [Option<Upstream>; Target::ALL.len()] = Default::default();
        let mut urls = Vec::new();
        for (target, spec) in ups.iter() {
            let several_members = spec.members.len() > 1;
            let members = spec
                .members
                .iter()
                .map(|servers| {
                    let gated = several_members || servers.len() > 1;
                    Pool::new(
                        servers
                            .iter()
                            .map(|u| {
                                // The token service is reached at the path clients were given
                                // (its realm's path), so nothing is put in front of it.
                                let u = &if target == Target::Token {
                                    UpstreamUrl {
                                        base_path: String::new(),
                                        ..u.clone()
                                    }
                                } else {
                                    u.clone()
                                };
                                let kept =
                                    previous.and_then(|p| p.health_of(target, u)).filter(|h| {
                                        h.gated() == gated && h.tracked() == (gated || track_all)
                                    });
                                let health = kept.unwrap_or_else(|| {
                                    Arc::new(Health::new(
                                        gated,
                                        track_all,
                                        target.as_str(),
                                        &u.to_string(),
                                    ))
                                });
                                Server::new(u.clone(), health)
                            })
                            .collect(),
                    )
                })
                .collect();
            urls.extend(spec.servers().map(|u| match target {
                Target::Token => UpstreamUrl {
                    base_path: String::new(),
                    ..u.clone()
                },
                _ => u.clone(),
            }));
            by_target[target.index()] = Some(Upstream {
                name: target.as_str(),
                members,
            });
        }
        Upstreams {
            client,
            response_headers: cfg.timeouts.response_headers,
            by_target,
            urls,
            health: cfg.health.clone(),
            upstream_host: cfg.headers.upstream_host,
        }
    }

    /// The upstream for a routing decision. `route()` only names `web` when it is configured
    /// (config checking refuses rules that name a missing web), and put and get always exist.
    pub fn pick(&self, target: Target) -> &Upstream {
        self.by_target[target.index()]
            .as_ref()
            .or(self.by_target[Target::Get.index()].as_ref())
            .expect("get always has an upstream (it has a default)")
    }

    fn health_of(&self, target: Target, url: &UpstreamUrl) -> Option<Arc<Health>> {
        let up = self.by_target[target.index()].as_ref()?;
        up.members
            .iter()
            .flat_map(|m| m.servers.iter())
            .find(|s| s.url == *url)
            .map(|s| s.health.clone())
    }

    /// The metric labels of every server, to drop those a reload removed.
    pub fn server_labels(&self) -> Vec<crate::metrics::ServerLabels> {
        self.all()
            .flat_map(|up| up.members.iter().flat_map(|m| m.servers.iter()))
            .map(|s| s.health.labels().clone())
            .collect()
    }

    /// Every target has a server that probes and requests find healthy (for `/readyz`).
    pub fn ready(&self) -> bool {
        self.all().all(|up| {
            up.members
                .iter()
                .flat_map(|m| m.servers.iter())
                .any(|s| s.health.healthy())
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &Upstream> {
        self.by_target.iter().flatten()
    }

    pub fn urls(&self) -> &[UpstreamUrl] {
        &self.urls
    }

    pub fn has_web(&self) -> bool {
        self.by_target[Target::Web.index()].is_some()
    }

    /// Sends `out` to `up`: one server, a pool or a group.
    pub async fn send<'a>(
        &'a self,
        up: &'a Upstream,
        mut out: Outgoing,
    ) -> Result<Reply<'a>, GatewayError> {
        let pin = take_pin(&mut out.query);
        if let [member] = up.members.as_slice() {
            return self.send_pool(up, member, out, pin.as_deref()).await;
        }
        // Boxed: hyper keeps the request future's allocation for the life of an HTTP/1.1
        // connection, so a rare, large path must not make every idle connection larger.
        Box::pin(group::send(self, up, out)).await
    }

    /// Sends `out` to a server of `pool`: the pinned one, else round-robin over the healthy
    /// ones, moving on to the next only when nothing was sent that cannot be sent again.
    async fn send_pool<'a>(
        &'a self,
        up: &'a Upstream,
        pool: &'a Pool,
        out: Outgoing,
        pin: Option<&str>,
    ) -> Result<Reply<'a>, GatewayError> {
        if let Some(server) = pin.and_then(|id| pool.by_id(id)) {
            // An upload's state lives on the server that created it; another cannot continue it.
            return self.send_server(up, pool, server, out).await;
        }
        if let [server] = pool.servers.as_slice() {
            return self.send_server(up, pool, server, out).await;
        }
        if out.has_body() {
            // A body can be sent once: one server, no retry.
            let server = pool
                .order()
                .next()
                .ok_or_else(|| no_healthy_server(up, pool))?;
            return self.send_server(up, pool, server, out).await;
        }
        let read = out.method == Method::GET || out.method == Method::HEAD;
        let mut last = None;
        for server in pool.order() {
            match self.send_server(up, pool, server, out.replay()).await {
                Ok(reply) if read && is_server_down(reply.response.status()) => {
                    last = Some(Ok(reply));
                }
                Ok(reply) => return Ok(reply),
                // Nothing reached the server, so even a POST can go to the next one; a read
                // can be asked again whatever happened.
                Err(e) if e.is_connect() || (read && e.is_upstream()) => last = Some(Err(e)),
                Err(e) => return Err(e),
            }
        }
        last.unwrap_or_else(|| Err(no_healthy_server(up, pool)))
    }

    async fn send_server<'a>(
        &'a self,
        up: &'a Upstream,
        pool: &'a Pool,
        server: &'a Server,
        out: Outgoing,
    ) -> Result<Reply<'a>, GatewayError> {
        let uri = client::uri(&server.url, &out.path, out.query.as_deref())?;
        let mut req = Request::new(out.body);
        *req.method_mut() = out.method;
        *req.uri_mut() = uri;
        // The pooled client speaks HTTP/1.1 upstream whatever the client spoke to us; an
        // HTTP/2 request kept as such would be refused on an HTTP/1 connection.
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = out.headers;
        if self.upstream_host {
            if let Ok(v) = HeaderValue::from_str(server.url.authority.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        let peer = Peer {
            upstream: up.name,
            url: &server.url,
        };
        let result = self
            .client
            .send(peer, req, out.body_done, self.response_headers)
            .await;
        let health = &server.health;
        if health.gated() {
            let origin = server.url.to_string();
            match &result {
                Ok(r) if r.status().is_server_error() => {
                    let cause = format!("answered {}", r.status());
                    health.failure(up.name, &origin, self.health.fails, &cause);
                }
                Ok(_) => health.success(up.name, &origin),
                Err(e) if e.is_upstream() => {
                    health.failure(up.name, &origin, self.health.fails, &e.to_string())
                }
                Err(_) => {}
            }
        }
        let mut resp = result?;
        if pool.servers.len() > 1 && resp.status() == StatusCode::ACCEPTED {
            pin_location(resp.headers_mut(), &server.id);
        }
        Ok(Reply {
            response: resp.map(ReplyBody::Streamed),
            server: Some(server),
        })
    }
}

impl Outgoing {
    /// A request with a body can be sent once; one without can go to another server.
    pub fn has_body(&self) -> bool {
        !self.body.is_end_stream()
    }

    /// The same bodyless request again, for another server or member.
    fn replay(&self) -> Outgoing {
        Outgoing {
            method: self.method.clone(),
            headers: self.headers.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            body: Body::empty(),
            body_done: None,
            reason: self.reason,
        }
    }
}

/// 502, 503 and 504 say the server (or what is behind it) cannot serve now: another replica may.
fn is_server_down(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

fn no_healthy_server(up: &Upstream, pool: &Pool) -> GatewayError {
    let last = pool
        .servers
        .iter()
        .map(|s| s.health.last_failure())
        .find(|l| !l.is_empty())
        .unwrap_or_else(|| "none recorded".into());
    GatewayError::NoHealthyServer {
        upstream: up.name,
        servers: pool.describe(),
        last,
    }
}

/// Removes `_dockgate_server=<id>` from a query and returns the id.
fn take_pin(query: &mut Option<String>) -> Option<String> {
    let q = query.as_deref()?;
    if !q.contains(PIN_PARAM) {
        return None;
    }
    let mut id = None;
    let rest: Vec<&str> = q
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((k, v)) if k == PIN_PARAM => {
                id = Some(v.to_string());
                false
            }
            _ => true,
        })
        .collect();
    *query = (!rest.is_empty()).then(|| rest.join("&"));
    id
}

/// Adds `_dockgate_server=<id>` to an upload `Location`, so the client's next PATCH or PUT of
/// this session comes back to the same server.
fn pin_location(headers: &mut HeaderMap, id: &str) {
    let Some(loc) = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if !loc.contains("/blobs/uploads/") {
        return;
    }
    let sep = if loc.contains('?') { '&' } else { '?' };
    if let Ok(v) = HeaderValue::from_str(&format!("{loc}{sep}{PIN_PARAM}={id}")) {
        headers.insert(header::LOCATION, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_added_to_upload_locations_and_taken_off_queries() {
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("http://r:5000/v2/a/blobs/uploads/u1?_state=x"),
        );
        pin_location(&mut h, "0badf00d");
        assert_eq!(
            h[header::LOCATION],
            "http://r:5000/v2/a/blobs/uploads/u1?_state=x&_dockgate_server=0badf00d"
        );
        let mut q = Some("_state=x&_dockgate_server=0badf00d&digest=sha256:1".to_string());
        assert_eq!(take_pin(&mut q).as_deref(), Some("0badf00d"));
        assert_eq!(q.as_deref(), Some("_state=x&digest=sha256:1"));
        let mut q = Some("_dockgate_server=ab".to_string());
        assert_eq!(take_pin(&mut q).as_deref(), Some("ab"));
        assert_eq!(q, None);
        let mut q = Some("n=1".to_string());
        assert_eq!(take_pin(&mut q), None);
        assert_eq!(q.as_deref(), Some("n=1"));

        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("/v2/a/blobs/uploads/u1"),
        );
        pin_location(&mut h, "01");
        assert_eq!(
            h[header::LOCATION],
            "/v2/a/blobs/uploads/u1?_dockgate_server=01"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::LOCATION,
            HeaderValue::from_static("/v2/a/blobs/sha256:1"),
        );
        pin_location(&mut h, "01");
        assert_eq!(h[header::LOCATION], "/v2/a/blobs/sha256:1");
    }
}
