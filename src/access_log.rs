//! One access-log line per request, written when the response body is finished or dropped, so
//! that it can carry the bytes moved each way. Both the proxy (which fills it) and the body
//! (which counts the bytes) use it. Never holds header values: no `Authorization`, no tokens.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::uri::Authority;
use http::Method;
use tokio::time::Instant;

use crate::config::Target;
use crate::metrics::metrics;
use crate::route::Reason;

pub struct AccessLog {
    pub client: SocketAddr,
    pub method: Method,
    pub path: String,
    /// The routing table's row.
    pub reason: Option<Reason>,
    /// The routing target: put, get or web.
    pub upstream: Option<Target>,
    /// The server that answered (`None`: no server, or a union of a group's members).
    pub server: Option<Authority>,
    pub status: u16,
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    pub start: Instant,
    pub error: Option<String>,
    pub body_error: Option<String>,
    /// What backfill did for this request (`copied=N bytes=M`), when it ran.
    pub backfill: Option<String>,
    /// A place under `max_requests_in_flight`, given back when the line is written.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AccessLog {
    pub fn new(client: SocketAddr, method: Method, start: Instant) -> AccessLog {
        AccessLog {
            client,
            method,
            path: String::new(),
            reason: None,
            upstream: None,
            server: None,
            status: 0,
            bytes_in: None,
            bytes_out: 0,
            start,
            error: None,
            body_error: None,
            backfill: None,
            permit: None,
        }
    }
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
        let m = metrics();
        m.request(self.reason, self.upstream, &self.method, self.status);
        m.duration(self.reason, ms / 1000.0);
        let route = self.reason.map_or("-", |r| r.as_str());
        let upstream = self.upstream.map_or("-", Target::as_str);
        m.bytes_in.inc_by(bytes_in);
        m.bytes_out.inc_by(self.bytes_out);
        let server = self.server.as_ref().map_or("-", Authority::as_str);
        crate::logging::access(&crate::logging::Access {
            client: self.client,
            method: self.method.as_str(),
            path: &self.path,
            route,
            upstream,
            server,
            status: self.status,
            bytes_in,
            bytes_out: self.bytes_out,
            ms,
            backfill: self.backfill.as_deref(),
            error: self.error.as_deref().or(self.body_error.as_deref()),
        });
    }
}
