//! The rustls acceptor `serve` hands each connection to, with a certificate resolver whose
//! certificates can be swapped under live traffic, and the renewal loop that swaps them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::version::{TLS12, TLS13};
use rustls::ServerConfig;
use time::OffsetDateTime;
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;
use crate::tls::files::{self, CA_CERT, SERVER_CERT};
use crate::tls::mint::Ca;
use crate::tls::names::{fmt_time, Leaf, SanName};
use crate::tls::{crypto, TlsError};

/// The acceptor, and for minted certificates the loop that renews them.
pub struct TlsSetup {
    pub acceptor: TlsAcceptor,
    pub renewal: Option<Renewal>,
    /// What `reload` swaps certificates into.
    pub resolver: Arc<Resolver>,
}

/// Builds the acceptor from `tls`; `names` are the names clients use to reach the gateway
/// (`Config::certificate_names`).
pub fn setup(tls: &Tls, names: &[String]) -> Result<TlsSetup, TlsError> {
    match tls {
        Tls::Minted {
            dir,
            server_days,
            renew_check,
        } => {
            let (ca, generated) = Ca::load_or_generate(dir)?;
            let ca_crt = dir.join(CA_CERT);
            if generated {
                // `setup` knows the names but not the ports clients use, so it says where the
                // file goes rather than printing `ca_install_hints` for guessed addresses.
                let ca = std::path::absolute(&ca_crt).unwrap_or_else(|_| ca_crt.clone());
                tracing::info!(
                    ca = %ca.display(),
                    "generated a new CA; every client must trust it: copy this ca.crt to \
                     /etc/docker/certs.d/<host:port>/ca.crt (docker) or \
                     /etc/containers/certs.d/<host:port>/ca.crt (podman, skopeo) on each client host"
                );
            }
            let (names, refused) = ca.partition(names);
            if !refused.is_empty() {
                tracing::warn!(
                    ca = %ca_crt.display(),
                    names = ?refused,
                    "the CA's name constraints do not permit these names; the server certificate leaves them out"
                );
            }
            if names.is_empty() {
                return Err(TlsError::File {
                    path: ca_crt,
                    message: "its name constraints permit none of the gateway's names".into(),
                });
            }
            let (_, key) = ca.load_or_issue(&names, *server_days)?;
            let resolver = Arc::new(Resolver::new(vec![Arc::new(key)]));
            Ok(TlsSetup {
                acceptor: acceptor(resolver.clone())?,
                renewal: Some(Renewal {
                    dir: dir.clone(),
                    names,
                    days: *server_days,
                    every: *renew_check,
                    resolver: resolver.clone(),
                }),
                resolver,
            })
        }
        Tls::Files { cert, key } => {
            let certified = load_files(cert, key, names)?;
            let resolver = Arc::new(Resolver::new(vec![Arc::new(certified)]));
            Ok(TlsSetup {
                acceptor: acceptor(resolver.clone())?,
                renewal: None,
                resolver,
            })
        }
    }
}

/// Reads the certificate again on a reload (an ACME client's renew hook sends SIGHUP after it
/// wrote new files) and swaps it in for the next handshakes; on any error the old one stays.
/// Minted: the server certificate on disk if it still covers `names`, else a fresh one.
pub fn reload(tls: &Tls, names: &[String], resolver: &Resolver) -> Result<(), TlsError> {
    let key = match tls {
        Tls::Minted {
            dir, server_days, ..
        } => {
            let ca = Ca::load(dir)?;
            let (names, _) = ca.partition(names);
            ca.load_or_issue(&names, *server_days)?.1
        }
        Tls::Files { cert, key } => load_files(cert, key, names)?,
    };
    resolver.replace(vec![Arc::new(key)]);
    Ok(())
}

/// Reissues the minted server certificate when it nears expiry, writes it and swaps it in.
pub struct Renewal {
    dir: PathBuf,
    names: Vec<String>,
    days: u32,
    every: Duration,
    resolver: Arc<Resolver>,
}

impl Renewal {
    /// Checks every `renew_check`, forever. Handshakes after a swap get the new certificate;
    /// established connections keep theirs, since rustls consults the resolver only then.
    pub async fn run(self) {
        let mut ticks = tokio::time::interval(self.every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate, and setup has just checked.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            // Signing and two small file writes: milliseconds, once per renew_check.
            if let Err(e) = self.renew_if_due() {
                tracing::error!(dir = %self.dir.display(), "certificate renewal failed, will retry: {e}");
            }
        }
    }

    fn renew_if_due(&self) -> Result<(), TlsError> {
        // Loaded afresh each time, so that a CA replaced with `generate-ca --force` is used.
        let ca = Ca::load(&self.dir)?;
        let (names, _) = ca.partition(&self.names);
        let Some(current) = self.resolver.first() else {
            return Ok(());
        };
        let now = OffsetDateTime::now_utc();
        let Some(reason) = ca.reissue_reason(&current.cert, &names, now, true) else {
            return Ok(());
        };
        let fresh = ca.issue(&names, self.days)?;
        fresh.write(&self.dir)?;
        let key = fresh.certified().map_err(TlsError::Mint)?;
        let describe = |key: &CertifiedKey| match key.cert.first().map(Leaf::parse) {
            Some(Ok(leaf)) => (leaf.serial, fmt_time(leaf.not_after)),
            _ => ("unknown".into(), "unknown".into()),
        };
        let (old_serial, old_expiry) = describe(&current);
        let (new_serial, new_expiry) = describe(&key);
        self.resolver.replace(vec![Arc::new(key)]);
        tracing::info!(
            cert = %self.dir.join(SERVER_CERT).display(),
            %old_serial, %old_expiry, %new_serial, %new_expiry,
            "renewed the server certificate because {reason}"
        );
        Ok(())
    }
}

/// TLS 1.2 and 1.3 with the ring provider, ALPN h2 then http/1.1, default session resumption.
fn acceptor(resolver: Arc<Resolver>) -> Result<TlsAcceptor, TlsError> {
    let mut config = ServerConfig::builder_with_provider(crypto())
        .with_protocol_versions(&[&TLS12, &TLS13])
        .map_err(|e| TlsError::Mint(format!("TLS configuration: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// User-provided PEM files: served as given, but refused when they cannot work at all.
fn load_files(cert: &Path, key: &Path, names: &[String]) -> Result<CertifiedKey, TlsError> {
    let file_error = |path: &Path, message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| TlsError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let chain = files::read_chain(cert, &read(cert)?)?;
    let private = files::read_key(key, &read(key)?)?;
    let certified = files::certified_key(chain, private)
        .map_err(|e| file_error(key, format!("{e} in {}", cert.display())))?;
    let Some(leaf_der) = certified.cert.first() else {
        return Err(file_error(cert, "no certificate in this file".into()));
    };
    let leaf = Leaf::parse(leaf_der)
        .map_err(|e| file_error(cert, format!("not a valid certificate: {e}")))?;
    let now = OffsetDateTime::now_utc();
    if now >= leaf.not_after {
        return Err(file_error(
            cert,
            format!("the certificate expired at {}", fmt_time(leaf.not_after)),
        ));
    }
    if now < leaf.not_before {
        return Err(file_error(
            cert,
            format!(
                "the certificate is not valid before {}",
                fmt_time(leaf.not_before)
            ),
        ));
    }
    let missing = leaf.missing(names);
    if !missing.is_empty() {
        // Not an error: the user may reach the gateway by names we do not know about, and
        // their certificate is theirs to choose. But clients using these names will fail.
        tracing::warn!(
            cert = %cert.display(),
            missing = ?missing,
            "THE CERTIFICATE DOES NOT COVER THESE NAMES: clients using them will fail the TLS handshake"
        );
    }
    Ok(certified)
}

/// Holds the certificates being served; `resolve` picks the one covering the client's SNI name.
#[derive(Debug)]
pub struct Resolver {
    served: ArcSwap<Vec<Served>>,
}

#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    names: Vec<SanName>,
}

impl Resolver {
    fn new(keys: Vec<Arc<CertifiedKey>>) -> Resolver {
        let resolver = Resolver {
            served: ArcSwap::from_pointee(Vec::new()),
        };
        resolver.replace(keys);
        resolver
    }

    fn replace(&self, keys: Vec<Arc<CertifiedKey>>) {
        let served = Served::all(keys);
        // What /metrics reports: when the certificate handshakes now get expires.
        let not_after = served
            .first()
            .and_then(|s| s.key.cert.first())
            .and_then(|der| Leaf::parse(der).ok())
            .map(|leaf| leaf.not_after.unix_timestamp());
        if let Some(t) = not_after {
            crate::metrics::metrics().certificate_not_after.set(t);
        }
        self.served.store(Arc::new(served));
    }

    fn first(&self) -> Option<Arc<CertifiedKey>> {
        self.served.load().first().map(|s| s.key.clone())
    }
}

impl Served {
    fn all(keys: Vec<Arc<CertifiedKey>>) -> Vec<Served> {
        keys.into_iter()
            .map(|key| {
                let names = key
                    .cert
                    .first()
                    .and_then(|der| Leaf::parse(der).ok())
                    .map(|leaf| leaf.names)
                    .unwrap_or_default();
                Served { key, names }
            })
            .collect()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

impl Resolver {
    /// The certificate covering `sni`, else the first. Clients connecting by IP send no SNI
    /// (RFC 6066 section 3), so they always get the first.
    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        let by_name = sni.and_then(|sni| {
            let wanted = SanName::Dns(sni.to_ascii_lowercase());
            served
                .iter()
                .find(|s| s.names.iter().any(|n| n.covers(&wanted)))
        });
        by_name.or(served.first()).map(|s| s.key.clone())
    }
}

#[cfg(test)]
mod tests;
