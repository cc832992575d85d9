//! Health of a server that has an alternative: passive (consecutive failures of real requests
//! take it out) and active (a `GET /v2/` probe every interval takes it out or brings it back).
//! A lone server is never taken out: there is nothing to fail over to, so it is always tried,
//! as nginx ignores `max_fails` for a single server.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;

use crate::body::Body;
use crate::metrics::{metrics, ServerLabels};

use super::client::{self, Peer};
use super::pool::Server;
use super::Upstreams;

pub struct Health {
    /// False for a lone server: never taken out.
    gated: bool,
    /// Probed and followed: every gated server, and every server when `/readyz` needs to know.
    tracked: bool,
    labels: ServerLabels,
    fails: AtomicU32,
    down: AtomicBool,
    /// A probe or a request has found it answering at least once: `/readyz` waits for that,
    /// so a gateway whose upstream was never reachable does not start out ready.
    seen: AtomicBool,
    /// The last failure, for the 502 a client gets when every server is down.
    last: Mutex<String>,
}

impl Health {
    pub fn new(gated: bool, tracked: bool, upstream: &str, server: &str) -> Health {
        let labels = ServerLabels {
            upstream: upstream.to_string(),
            server: server.to_string(),
        };
        let tracked = tracked || gated;
        metrics()
            .server_up
            .get_or_create(&labels)
            .set(i64::from(!tracked));
        Health {
            gated,
            tracked,
            labels,
            fails: AtomicU32::new(0),
            down: AtomicBool::new(false),
            seen: AtomicBool::new(false),
            last: Mutex::new(String::new()),
        }
    }

    pub fn gated(&self) -> bool {
        self.gated
    }

    pub fn tracked(&self) -> bool {
        self.tracked
    }

    /// Whether requests may go to it: a lone server always may.
    pub fn is_up(&self) -> bool {
        !self.gated || !self.down.load(Ordering::Relaxed)
    }

    /// Whether probes and requests find it healthy (for `/readyz`).
    pub fn healthy(&self) -> bool {
        self.seen.load(Ordering::Relaxed) && !self.down.load(Ordering::Relaxed)
    }

    /// Its labels in `dockgate_upstream_server_up`.
    pub fn labels(&self) -> &ServerLabels {
        &self.labels
    }

    pub fn last_failure(&self) -> String {
        self.last.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A real request or a probe got an answer that is not a server failure.
    pub fn success(&self, upstream: &str, server: &str) {
        if !self.tracked {
            return;
        }
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
        if !self.seen.swap(true, Ordering::Relaxed) {
            metrics().server_up.get_or_create(&self.labels).set(1);
        }
        if self.down.swap(false, Ordering::Relaxed) {
            metrics().server_up.get_or_create(&self.labels).set(1);
            tracing::info!(upstream, server, "upstream server is healthy again");
        }
    }

    /// A connect failure, a timeout or a 5xx. `threshold` consecutive ones take it out.
    pub fn failure(&self, upstream: &str, server: &str, threshold: u32, cause: &str) {
        if !self.tracked {
            return;
        }
        if let Ok(mut last) = self.last.lock() {
            cause.clone_into(&mut last);
        }
        let fails = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        if fails >= threshold && !self.down.swap(true, Ordering::Relaxed) {
            metrics().server_up.get_or_create(&self.labels).set(0);
            tracing::warn!(
                upstream,
                server,
                fails,
                cause,
                "upstream server marked down until a probe of /v2/ succeeds"
            );
        }
    }
}

/// Probes every gated server every `interval`, each in its own task, until aborted.
pub fn spawn_probes(ups: &Arc<Upstreams>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (u, up) in ups.all().enumerate() {
        for (m, member) in up.members.iter().enumerate() {
            for (s, server) in member.servers.iter().enumerate() {
                if !server.health.tracked() {
                    continue;
                }
                let ups = ups.clone();
                tasks.push(tokio::spawn(async move {
                    let interval = ups.health.interval;
                    // The first probe goes out at once, so `/readyz` knows within one round trip.
                    loop {
                        let Some(up) = ups.all().nth(u) else { return };
                        let server = &up.members[m].servers[s];
                        probe(&ups, up.name, server, interval).await;
                        tokio::time::sleep(interval).await;
                    }
                }));
            }
        }
    }
    tasks
}

/// `GET <base>/v2/`: 200 (anonymous) or 401 (asks for credentials) means the registry serves.
async fn probe(ups: &Upstreams, upstream: &'static str, server: &Server, within: Duration) {
    let origin = server.url.to_string();
    let req = client::uri(&server.url, "/v2/", None).map(|uri| {
        let mut req = Request::new(Body::empty());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = uri;
        if let Ok(v) = http::HeaderValue::from_str(server.url.authority.as_str()) {
            req.headers_mut().insert(header::HOST, v);
        }
        req
    });
    let Ok(req) = req else { return };
    let peer = Peer {
        upstream,
        url: &server.url,
    };
    let within = within.max(Duration::from_secs(1));
    match ups.client.send(peer, req, None, within).await {
        Ok(resp)
            if resp.status() == StatusCode::OK || resp.status() == StatusCode::UNAUTHORIZED =>
        {
            // Read the small body so the connection goes back to the pool.
            let _ = resp.into_body().collect().await;
            server.health.success(upstream, &origin);
        }
        Ok(resp) => {
            let cause = format!("probe GET /v2/ answered {}", resp.status());
            server
                .health
                .failure(upstream, &origin, ups.health.fails, &cause);
        }
        Err(e) => {
            let cause = format!("probe GET /v2/: {e}");
            server
                .health
                .failure(upstream, &origin, ups.health.fails, &cause);
        }
    }
}
