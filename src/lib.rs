//! dockgate: one TLS `host:port` in front of a registry's push (put) and pull (get) upstreams.
//!
//! The request's journey: `server` (accept, TLS, HTTP) -> `proxy` (route, forward, log) ->
//! `route` (which upstream) -> `upstream` (pooled client, timeouts) -> `body` (streaming back).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod error;
pub mod headers;
pub mod policy;
pub mod proxy;
pub mod registry;
pub mod route;
pub mod server;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::proxy::Proxy;
use crate::tls::TlsError;
use crate::upstream::Upstreams;

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Serves `config` until `shutdown` resolves, then drains. Certificates are loaded (or minted)
/// and every port bound before the first connection is accepted; each bound address is logged
/// (`listening`), so port 0 works too.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let tls = tls::setup(&config.tls, &config.certificate_names())?;
    let listeners = server::bind(&config.listen).map_err(|source| ServeError::Bind {
        addr: config
            .listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        source,
    })?;
    let renewal = tls.renewal.map(|r| tokio::spawn(r.run()));
    let upstreams = Arc::new(Upstreams::new(&config));
    let probes = upstream::spawn_probes(&upstreams);
    let proxy = Arc::new(Proxy::new(&config, upstreams));
    for (target, spec) in config.upstreams.iter() {
        tracing::info!(upstream = target.as_str(), servers = %spec, "upstream");
    }

    let (tx, rx) = watch::channel(false);
    let server = tokio::spawn(server::run(
        listeners,
        tls.acceptor,
        proxy,
        config.timeouts.clone(),
        config.limits.clone(),
        rx,
    ));
    shutdown.await;
    let _ = tx.send(true);
    let _ = server.await;
    if let Some(r) = renewal {
        r.abort();
    }
    for p in probes {
        p.abort();
    }
    Ok(())
}
