//! What a reload swaps: the proxy (routes, rules, upstreams, backfill, header and limit
//! settings) and the served certificate. Requests in flight finish on the proxy they started
//! with; the upstream connection pool and the health of unchanged servers carry over; the
//! listeners are never closed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, Overrides};
use crate::metrics::{metrics, ResultLabels};
use crate::proxy::Proxy;
use crate::tls::{Resolver, TlsError};
use crate::upstream::{self, Client, Upstreams};

pub struct Live {
    proxy: ArcSwap<Proxy>,
    state: Mutex<State>,
    /// Where the config came from and the flags applied on top, to read it again the same way.
    source: Option<PathBuf>,
    overrides: Overrides,
    resolver: Arc<Resolver>,
}

struct State {
    config: Config,
    client: Arc<Client>,
    upstreams: Arc<Upstreams>,
    probes: Vec<JoinHandle<()>>,
}

/// Why a reload kept the running configuration.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

impl Live {
    /// Must run inside the runtime: it starts the health probes.
    pub fn new(config: Config, overrides: Overrides, resolver: Arc<Resolver>) -> Live {
        let client = Arc::new(client_for(&config));
        let upstreams = Arc::new(Upstreams::new(
            &config,
            client.clone(),
            None,
            tracks_all(&config),
        ));
        let probes = upstream::spawn_probes(&upstreams);
        let proxy = Arc::new(Proxy::new(&config, upstreams.clone()));
        Live {
            proxy: ArcSwap::new(proxy),
            source: config.source.clone(),
            overrides,
            resolver,
            state: Mutex::new(State {
                config,
                client,
                upstreams,
                probes,
            }),
        }
    }

    /// The proxy new requests use.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.load_full()
    }

    /// Every upstream target has a healthy server (`/readyz`).
    pub fn ready(&self) -> bool {
        self.lock().upstreams.ready()
    }

    /// Reads the config file again (with the same command-line flags on top), checks it and,
    /// when it is right, swaps it in. A config that does not check, or a certificate that does
    /// not load, keeps the running one. Returns the keys that changed but need a restart.
    pub fn reload(&self) -> Result<Vec<&'static str>, ReloadError> {
        let result = self.try_reload();
        let m = metrics();
        let result_label = if result.is_ok() { "ok" } else { "failed" };
        m.reloads
            .get_or_create(&ResultLabels {
                result: result_label,
            })
            .inc();
        m.last_reload_ok.set(i64::from(result.is_ok()));
        result
    }

    fn try_reload(&self) -> Result<Vec<&'static str>, ReloadError> {
        let mut new = Config::load(self.source.as_deref())?;
        new.apply(&self.overrides)?;
        let mut state = self.lock();
        crate::tls::reload(&new.tls, &new.certificate_names(), &self.resolver)?;
        let restart = needs_restart(&state.config, &new);
        let client = if new.upstreams.ca.as_ref().map(|c| &c.path)
            == state.config.upstreams.ca.as_ref().map(|c| &c.path)
            && new.timeouts.connect == state.config.timeouts.connect
        {
            state.client.clone()
        } else {
            Arc::new(client_for(&new))
        };
        let upstreams = Arc::new(Upstreams::new(
            &new,
            client.clone(),
            Some(&state.upstreams),
            tracks_all(&new),
        ));
        for p in state.probes.drain(..) {
            p.abort();
        }
        let kept = upstreams.server_labels();
        for gone in state.upstreams.server_labels() {
            if !kept.contains(&gone) {
                metrics().server_up.remove(&gone);
            }
        }
        state.probes = upstream::spawn_probes(&upstreams);
        crate::logging::buffer_access_lines(new.log.access_buffer);
        self.proxy
            .store(Arc::new(Proxy::new(&new, upstreams.clone())));
        for (target, spec) in new.upstreams.iter() {
            tracing::info!(upstream = target.as_str(), servers = %spec, "upstream");
        }
        *state = State {
            config: new,
            client,
            upstreams,
            probes: std::mem::take(&mut state.probes),
        };
        Ok(restart)
    }

    /// Stops the health probes (on shutdown).
    pub fn stop(&self) {
        for p in self.lock().probes.drain(..) {
            p.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn client_for(config: &Config) -> Client {
    Client::new(config.upstreams.ca.as_ref(), config.timeouts.connect)
}

/// `/readyz` needs to know about lone servers too, so they are probed when it is served.
fn tracks_all(config: &Config) -> bool {
    config.admin.listen.is_some()
}

/// The keys a running process cannot change: the listeners, the connection-level settings
/// already given to hyper, and where certificates are kept.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let (o, n) = (&old.limits, &new.limits);
    let (ot, nt) = (&old.timeouts, &new.timeouts);
    let checks: [(&'static str, bool); 12] = [
        ("listen", old.listen != new.listen),
        ("admin.listen", old.admin != new.admin),
        (
            "limits.max_header_bytes",
            o.max_header_bytes != n.max_header_bytes,
        ),
        ("limits.max_headers", o.max_headers != n.max_headers),
        (
            "limits.max_connections",
            o.max_connections != n.max_connections,
        ),
        (
            "limits.max_connections_per_ip",
            o.max_connections_per_ip != n.max_connections_per_ip,
        ),
        (
            "limits.h2_max_concurrent_streams",
            o.h2_max_concurrent_streams != n.h2_max_concurrent_streams,
        ),
        (
            "limits.h2_max_requests_per_connection",
            o.h2_max_requests_per_connection != n.h2_max_requests_per_connection,
        ),
        (
            "timeouts.client_headers",
            ot.client_headers != nt.client_headers,
        ),
        (
            "timeouts.tls_handshake",
            ot.tls_handshake != nt.tls_handshake,
        ),
        (
            "timeouts.shutdown_grace",
            ot.shutdown_grace != nt.shutdown_grace,
        ),
        (
            "tls.dir, tls.cert or tls.key (the renewal loop)",
            tls_place(old) != tls_place(new),
        ),
    ];
    for (key, changed) in checks {
        if changed {
            keys.push(key);
        }
    }
    keys
}

fn tls_place(c: &Config) -> String {
    format!("{:?}", c.tls)
}
