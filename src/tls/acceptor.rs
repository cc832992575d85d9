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
                    resolver,
                }),
            })
        }
        Tls::Files { cert, key } => {
            let certified = load_files(cert, key, names)?;
            let resolver = Arc::new(Resolver::new(vec![Arc::new(certified)]));
            Ok(TlsSetup {
                acceptor: acceptor(resolver)?,
                renewal: None,
            })
        }
    }
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
struct Resolver {
    served: ArcSwap<Vec<Served>>,
}

#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    names: Vec<SanName>,
}

impl Resolver {
    fn new(keys: Vec<Arc<CertifiedKey>>) -> Resolver {
        Resolver {
            served: ArcSwap::from_pointee(Served::all(keys)),
        }
    }

    fn replace(&self, keys: Vec<Arc<CertifiedKey>>) {
        self.served.store(Arc::new(Served::all(keys)));
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
mod tests {
    use super::*;
    use crate::tls::files::{ServerCert, CA_KEY, SERVER_KEY};
    use crate::tls::mint::{generate_ca, CaOptions};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn minted(dir: &Path) -> Tls {
        Tls::Minted {
            dir: dir.to_path_buf(),
            server_days: 30,
            renew_check: Duration::from_secs(3600),
        }
    }

    fn serial_on_disk(dir: &Path) -> String {
        let cert = ServerCert::read(dir).unwrap();
        Leaf::parse(&cert.chain[0]).unwrap().serial
    }

    fn serial_served(setup: &TlsSetup) -> String {
        let renewal = setup.renewal.as_ref().unwrap();
        let key = renewal.resolver.first().unwrap();
        Leaf::parse(&key.cert[0]).unwrap().serial
    }

    #[test]
    fn minted_setup_creates_a_ca_and_a_certificate_then_reuses_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let wanted = names(&["registry.example.com", "localhost", "127.0.0.1", "::1"]);
        let first = setup(&minted(&dir), &wanted).unwrap();
        assert!(dir.join(CA_KEY).exists() && dir.join(SERVER_KEY).exists());
        let serial = serial_on_disk(&dir);
        assert_eq!(serial_served(&first), serial);
        assert_eq!(
            first.acceptor.config().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );

        let again = setup(&minted(&dir), &wanted).unwrap();
        assert_eq!(serial_served(&again), serial, "a good certificate is kept");

        let more = names(&[
            "registry.example.com",
            "localhost",
            "127.0.0.1",
            "::1",
            "10.1.2.3",
        ]);
        let widened = setup(&minted(&dir), &more).unwrap();
        assert_ne!(
            serial_served(&widened),
            serial,
            "a new name forces a new certificate"
        );
        assert_eq!(serial_on_disk(&dir), serial_served(&widened));

        std::fs::write(dir.join(SERVER_KEY), "garbage").unwrap();
        let repaired = setup(&minted(&dir), &more).unwrap();
        assert_eq!(serial_on_disk(&dir), serial_served(&repaired));
    }

    #[test]
    fn half_a_ca_is_an_error_not_a_new_ca() {
        let tmp = tempfile::tempdir().unwrap();
        setup(&minted(tmp.path()), &names(&["localhost"])).unwrap();
        std::fs::remove_file(tmp.path().join(CA_CERT)).unwrap();
        let err = setup(&minted(tmp.path()), &names(&["localhost"]))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ca.crt") && err.contains("missing"), "{err}");
    }

    #[test]
    fn names_outside_the_ca_constraints_are_left_out() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = CaOptions {
            name: "constrained".into(),
            days: 10,
            permit: names(&["registry.example.com"]),
        };
        generate_ca(tmp.path(), &opts, false).unwrap();
        let wanted = names(&["registry.example.com", "localhost", "127.0.0.1"]);
        setup(&minted(tmp.path()), &wanted).unwrap();
        let leaf = Leaf::parse(&ServerCert::read(tmp.path()).unwrap().chain[0]).unwrap();
        // No IP subtree is permitted, so IPs are unconstrained (RFC 5280 section 4.2.1.10).
        assert_eq!(leaf.missing(&wanted), ["localhost"]);
    }

    #[test]
    fn renewal_swaps_a_certificate_in_its_last_third() {
        let tmp = tempfile::tempdir().unwrap();
        let wanted = names(&["localhost"]);
        let first = setup(&minted(tmp.path()), &wanted).unwrap();
        let renewal = first.renewal.unwrap();
        renewal.renew_if_due().unwrap();
        let fresh = Leaf::parse(&renewal.resolver.first().unwrap().cert[0])
            .unwrap()
            .serial;
        assert_eq!(serial_on_disk(tmp.path()), fresh, "nothing due yet");

        let ca = Ca::load(tmp.path()).unwrap();
        let now = OffsetDateTime::now_utc();
        let old = ca
            .issue_with_validity(
                &wanted,
                now - time::Duration::days(20),
                now + time::Duration::days(5),
            )
            .unwrap();
        renewal
            .resolver
            .replace(vec![Arc::new(old.certified().unwrap())]);
        let old_serial = Leaf::parse(&old.chain[0]).unwrap().serial;
        renewal.renew_if_due().unwrap();
        let renewed = Leaf::parse(&renewal.resolver.first().unwrap().cert[0]).unwrap();
        assert_ne!(renewed.serial, old_serial);
        assert_ne!(renewed.serial, fresh);
        assert_eq!(serial_on_disk(tmp.path()), renewed.serial);
        assert!(renewed.not_after > now + time::Duration::days(29));
    }

    #[test]
    fn files_are_checked_but_never_written() {
        let tmp = tempfile::tempdir().unwrap();
        let ca_dir = tmp.path().join("ca");
        setup(&minted(&ca_dir), &names(&["localhost"])).unwrap();
        let ca = Ca::load(&ca_dir).unwrap();
        let write = |name: &str, cert: &ServerCert| {
            let dir = tmp.path().join(name);
            cert.write(&dir).unwrap();
            (dir.join(SERVER_CERT), dir.join(SERVER_KEY))
        };
        let (good_crt, good_key) = write("good", &ca.issue(&names(&["localhost"]), 5).unwrap());
        let (other_crt, other_key) = write("other", &ca.issue(&names(&["localhost"]), 5).unwrap());
        let now = OffsetDateTime::now_utc();
        let expired = ca
            .issue_with_validity(
                &names(&["localhost"]),
                now - time::Duration::days(9),
                now - time::Duration::days(2),
            )
            .unwrap();
        let (old_crt, old_key) = write("old", &expired);
        let files = |cert: &Path, key: &Path| Tls::Files {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let err = |cert: &Path, key: &Path| {
            setup(&files(cert, key), &names(&["localhost"]))
                .err()
                .unwrap()
                .to_string()
        };

        let before = std::fs::read(&good_crt).unwrap();
        let ok = setup(
            &files(&good_crt, &good_key),
            &names(&["localhost", "elsewhere.example"]),
        )
        .unwrap();
        assert!(ok.renewal.is_none());
        assert_eq!(std::fs::read(&good_crt).unwrap(), before);

        let mismatch = err(&good_crt, &other_key);
        assert!(
            mismatch.contains(&other_key.display().to_string())
                && mismatch.contains("does not match"),
            "{mismatch}"
        );
        let stale = err(&old_crt, &old_key);
        assert!(
            stale.starts_with(&old_crt.display().to_string()) && stale.contains("expired"),
            "{stale}"
        );
        let no_key = err(&other_crt, &other_crt);
        assert!(
            no_key.starts_with(&other_crt.display().to_string())
                && no_key.contains("no private key"),
            "{no_key}"
        );
        let no_cert = err(&other_key, &other_key);
        assert!(
            no_cert.starts_with(&other_key.display().to_string())
                && no_cert.contains("no certificate"),
            "{no_cert}"
        );
    }

    #[test]
    fn the_resolver_picks_by_sni_then_falls_back_to_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        setup(&minted(tmp.path()), &names(&["localhost"])).unwrap();
        let ca = Ca::load(tmp.path()).unwrap();
        let key = |n: &[&str]| Arc::new(ca.issue(&names(n), 5).unwrap().certified().unwrap());
        let (a, b) = (
            key(&["a.example.com"]),
            key(&["*.b.example.com", "10.0.0.1"]),
        );
        let resolver = Resolver::new(vec![a.clone(), b.clone()]);
        let picked = |sni| resolver.pick(sni).unwrap();
        assert!(Arc::ptr_eq(&picked(Some("A.example.com")), &a));
        assert!(Arc::ptr_eq(&picked(Some("x.b.example.com")), &b));
        assert!(Arc::ptr_eq(&picked(Some("unknown.example.com")), &a));
        assert!(Arc::ptr_eq(&picked(None), &a));
    }
}
