//! The server certificate clients will see: the names it covers, the days it has left, and the
//! CA file every docker host needs and where it goes.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use super::{Report, Verdict};
use crate::config::{Config, Tls};
use crate::tls::files::{read_chain, CA_CERT, SERVER_CERT};
use crate::tls::names::fmt_time;
use crate::tls::{Leaf, SanName};

/// Under this many days left, renewing is due.
const WARN_DAYS: i64 = 30;
const SUBJECT: &str = "tls";

pub fn check(config: &Config, report: &mut Report) {
    match &config.tls {
        Tls::Minted { dir, .. } => minted(config, dir, report),
        Tls::Files { cert, .. } => files(config, cert, report),
    }
}

/// dockgate's own CA and server certificate: what is missing is minted on start, so
/// shortcomings here are warnings.
fn minted(config: &Config, dir: &Path, report: &mut Report) {
    let server = dir.join(SERVER_CERT);
    let names = config.certificate_names();
    if !server.exists() {
        report.add(Verdict::warn(
            SUBJECT,
            "certificate",
            format!("{} does not exist yet", shown(&server)),
            format!(
                "dockgate mints it on first start, covering {}",
                names.join(", ")
            ),
        ));
    } else if let Some((leaf, _)) = read_leaf(&server, report) {
        let missing = leaf.missing(&names);
        report.add(if missing.is_empty() {
            Verdict::ok(SUBJECT, "certificate", covers(&server, &leaf))
        } else {
            Verdict::warn(
                SUBJECT,
                "certificate",
                format!("{} does not cover {}", shown(&server), missing.join(", ")),
                "dockgate issues one that does when it next starts: restart it",
            )
        });
        expiry(&server, &leaf, true, report);
    }
    let ca = dir.join(CA_CERT);
    report.add(if ca.exists() {
        Verdict::ok(SUBJECT, "ca", install(&shown(&ca), config))
    } else {
        Verdict::warn(
            SUBJECT,
            "ca",
            format!("{} does not exist yet", shown(&ca)),
            "dockgate mints it on first start (or run dockgate generate-ca, which also prints \
             how to install it)",
        )
    });
}

/// A certificate of the user's own: served as given, so what is wrong with it fails.
fn files(config: &Config, cert: &Path, report: &mut Report) {
    let Some((leaf, issuer)) = read_leaf(cert, report) else {
        return;
    };
    // Names clients connect by; the loopback names a minted certificate adds are no must here.
    let mut names = config.hostnames.clone();
    names.extend(
        config
            .listen
            .iter()
            .filter(|a| !a.ip().is_unspecified())
            .map(|a| a.ip().to_string()),
    );
    let missing = leaf.missing(&names);
    report.add(if missing.is_empty() {
        Verdict::ok(SUBJECT, "certificate", covers(cert, &leaf))
    } else {
        Verdict::fail(
            SUBJECT,
            "certificate",
            format!("{} does not cover {}", shown(cert), missing.join(", ")),
            "clients connecting by those names refuse it: issue one with them as subject \
             alternative names, or drop them from hostnames/listen",
        )
    });
    expiry(cert, &leaf, false, report);
    report.add(Verdict::ok(
        SUBJECT,
        "ca",
        install(
            &format!(
                "the CA that issued it ({issuer}; nothing to install when it is a public one)"
            ),
            config,
        ),
    ));
}

fn expiry(path: &Path, leaf: &Leaf, minted: bool, report: &mut Report) {
    let days = (leaf.not_after - OffsetDateTime::now_utc()).whole_days();
    let until = fmt_time(leaf.not_after);
    let renew = if minted {
        "dockgate renews it by itself in the last third of its validity; if it is this close, \
         check that dockgate runs and can write the directory"
    } else {
        "renew it, then restart dockgate (or reload it where supported)"
    };
    report.add(if leaf.not_after <= OffsetDateTime::now_utc() {
        let expired = format!("{} expired on {until}", shown(path));
        if minted {
            Verdict::warn(
                SUBJECT,
                "expiry",
                expired,
                "dockgate issues a new one when it next starts",
            )
        } else {
            Verdict::fail(SUBJECT, "expiry", expired, renew)
        }
    } else if days < WARN_DAYS {
        Verdict::warn(
            SUBJECT,
            "expiry",
            format!("{days} days left (until {until})"),
            renew,
        )
    } else {
        Verdict::ok(
            SUBJECT,
            "expiry",
            format!("{days} days left (until {until})"),
        )
    });
}

/// The leaf (first certificate) of a PEM file and its issuer's name, or a FAIL naming the file.
fn read_leaf(path: &Path, report: &mut Report) -> Option<(Leaf, String)> {
    let parsed = std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|pem| read_chain(path, &pem).map_err(|e| e.to_string()))
        .and_then(|chain: Vec<CertificateDer<'static>>| match chain.first() {
            Some(der) => {
                let leaf = Leaf::parse(der)?;
                let (_, x509) =
                    x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
                Ok((leaf, x509.issuer().to_string()))
            }
            None => Err("no certificate in it".into()),
        });
    match parsed {
        Ok(found) => Some(found),
        Err(e) => {
            report.add(Verdict::fail(
                SUBJECT,
                "certificate",
                format!("cannot read {}: {e}", shown(path)),
                "dockgate refuses to serve it too: replace the file (or remove it when minted)",
            ));
            None
        }
    }
}

fn covers(path: &Path, leaf: &Leaf) -> String {
    let names: Vec<String> = leaf
        .names
        .iter()
        .map(|n| match n {
            SanName::Dns(d) => d.clone(),
            SanName::Ip(ip) => ip.to_string(),
        })
        .collect();
    format!("{} covers {}", shown(path), names.join(", "))
}

/// Where clients put the CA, for each public `host:port`.
fn install(ca: &str, config: &Config) -> String {
    let places: Vec<String> = config
        .public_addresses()
        .iter()
        .map(|a| format!("/etc/docker/certs.d/{a}/ca.crt"))
        .collect();
    format!(
        "clients need {ca} at {} on every docker host (podman and skopeo read the same file \
         under /etc/containers/certs.d/)",
        places.join(", ")
    )
}

/// A path as an operator copies it: absolute.
fn shown(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| PathBuf::from(path))
        .display()
        .to_string()
}
