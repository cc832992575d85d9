//! A pool: servers with the same content (replicas, Nexus HA nodes). Reads spread round-robin
//! over the healthy ones; an upload session stays on the server that created it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::UpstreamUrl;

use super::health::Health;

/// One upstream server.
pub struct Server {
    pub url: UpstreamUrl,
    /// Stable across restarts and replicas (a hash of the URL), so an upload `Location` that
    /// names it still finds it behind another dockgate replica with the same config.
    pub id: String,
    /// Shared with the server of the same URL in the configuration a reload replaces, so its
    /// health survives the reload.
    pub health: Arc<Health>,
}

impl Server {
    pub fn new(url: UpstreamUrl, health: Arc<Health>) -> Server {
        Server {
            id: server_id(&url),
            url,
            health,
        }
    }
}

pub struct Pool {
    pub servers: Vec<Server>,
    next: AtomicUsize,
}

impl Pool {
    pub fn new(servers: Vec<Server>) -> Pool {
        Pool {
            servers,
            next: AtomicUsize::new(0),
        }
    }

    /// The healthy servers in the order this request tries them: round-robin over the pool,
    /// so each request starts one further along.
    pub fn order(&self) -> impl Iterator<Item = &Server> {
        let n = self.servers.len();
        let start = if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        };
        (0..n)
            .map(move |i| &self.servers[(start + i) % n])
            .filter(|s| s.health.is_up())
    }

    pub fn any_up(&self) -> bool {
        self.servers.iter().any(|s| s.health.is_up())
    }

    pub fn by_id(&self, id: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.id == id)
    }

    /// `http://a, http://b`, for messages.
    pub fn describe(&self) -> String {
        let urls: Vec<String> = self.servers.iter().map(|s| s.url.to_string()).collect();
        urls.join(", ")
    }
}

/// FNV-1a of the URL, as 8 hex digits: short enough for a query parameter, and only has to
/// tell apart the few servers of one pool.
fn server_id(url: &UpstreamUrl) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in url.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{h:08x}")
}
