//! dockgate: one TLS `host:port` in front of a registry's push (put) and pull (get) upstreams.
//!
//! The request's journey: `server` (accept, TLS, HTTP) -> `proxy` (route, forward, log) ->
//! `route` (which upstream) -> `upstream` (pooled client, timeouts) -> `body` (streaming back).
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod body;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod error;
pub mod headers;
pub mod keepalive;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod nginx;
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

use crate::config::{Config, Overrides};
use crate::live::Live;
use crate::tls::TlsError;

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
/// (`listening`), so port 0 works too. SIGHUP reloads the config file (with `overrides`, the
/// command-line flags, applied again) and the certificates.
pub async fn serve(
    config: Config,
    overrides: Overrides,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    logging::buffer_access_lines(config.log.access_buffer);
    let names = config.certificate_names();
    if config.names_unknown() && matches!(config.tls, config::Tls::Minted { .. }) {
        tracing::warn!(
            names = ?names,
            "no hostnames configured: the certificate covers this machine's name and addresses; \
             add the name clients use with --hostname NAME (or hostnames = [...])"
        );
    }
    let tls = tls::setup(&config.tls, &names)?;
    let bind_error = |addrs: String| {
        move |source| ServeError::Bind {
            addr: addrs,
            source,
        }
    };
    let listeners = server::bind(&config.listen).map_err(bind_error(
        config
            .listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    ))?;
    let admin = match config.admin.listen {
        Some(addr) => Some(admin::bind(addr).map_err(bind_error(addr.to_string()))?),
        None => None,
    };
    let renewal = tls.renewal.map(|r| tokio::spawn(r.run()));
    for (target, spec) in config.upstreams.iter() {
        tracing::info!(upstream = target.as_str(), servers = %spec, "upstream");
    }
    let timeouts = config.timeouts.clone();
    let limits = config.limits.clone();
    let live = Arc::new(Live::new(config, overrides, tls.resolver));

    let (tx, rx) = watch::channel(false);
    if let Some(listener) = admin {
        let local = listener.local_addr().ok();
        tracing::info!(local = ?local, "admin listening: /metrics /healthz /readyz");
        tokio::spawn(admin::run(listener, live.clone(), rx.clone()));
    }
    let reloads = tokio::spawn(reload_on_sighup(live.clone()));
    let server = tokio::spawn(server::run(
        listeners,
        tls.acceptor,
        live.clone(),
        timeouts,
        limits,
        rx,
    ));
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    shutdown.await;
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    let _ = tx.send(true);
    reloads.abort();
    let _ = server.await;
    if let Some(r) = renewal {
        r.abort();
    }
    live.stop();
    Ok(())
}

/// Reloads on each SIGHUP, as `nginx -s reload` does; a bad config is logged and the running
/// one kept.
async fn reload_on_sighup(live: Arc<Live>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload needs a restart");
            return;
        }
    };
    while hup.recv().await.is_some() {
        // systemd's notify-reload wants the time the reload started beside RELOADING=1.
        match sd_notify::NotifyState::monotonic_usec_now() {
            Ok(now) => notify_systemd(&[sd_notify::NotifyState::Reloading, now]),
            Err(_) => notify_systemd(&[sd_notify::NotifyState::Reloading]),
        }
        match live.reload() {
            Ok(restart) => {
                tracing::info!("configuration reloaded");
                if !restart.is_empty() {
                    tracing::warn!(keys = ?restart, "these changes need a restart; the running values stay");
                }
            }
            Err(e) => tracing::error!("reload refused, the running configuration stays: {e}"),
        }
        notify_systemd(&[sd_notify::NotifyState::Ready]);
    }
}

/// Tells systemd (`Type=notify`) where we are; nothing without `NOTIFY_SOCKET`.
fn notify_systemd(state: &[sd_notify::NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        if let Err(e) = sd_notify::notify(false, state) {
            tracing::debug!(error = %e, "sd_notify");
        }
    }
}
