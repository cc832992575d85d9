//! The CA: generate it, issue server certificates from it, and decide when a served certificate
//! must be reissued. What goes on disk and how is in `files`; names and constraints in `names`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, NameConstraints, PublicKeyData, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::OffsetDateTime;

use crate::config::Defaults;
use crate::tls::files::{
    create_dir, file_error, read_text, write_atomic, ServerCert, CA_CERT, CA_KEY, SERVER_CERT,
};
use crate::tls::names::{fmt_time, parse_permit, Constraints, SanName};
use crate::tls::{crypto, TlsError};

// `Leaf` lived here before `names` was split out; tests/ca.rs still names it `tls::mint::Leaf`.
pub use crate::tls::names::Leaf;

/// What `generate-ca` puts in the CA certificate.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub name: String,
    pub days: u32,
    /// DNS names or IPs/CIDRs the CA may vouch for; empty means any name.
    pub permit: Vec<String>,
}

/// Writes `dir/ca.crt` and `dir/ca.key` (ECDSA P-256). Refuses to overwrite an existing CA
/// unless `force`.
pub fn generate_ca(dir: &Path, opts: &CaOptions, force: bool) -> Result<(), TlsError> {
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if !force {
        for path in [&key_path, &cert_path] {
            if path.symlink_metadata().is_ok() {
                return Err(file_error(
                    path,
                    "a CA already exists here; pass --force to replace it (every client must then trust the new ca.crt)",
                ));
            }
        }
    }
    let permitted = opts
        .permit
        .iter()
        .map(|p| parse_permit(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Mint)?;

    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(&opts.name);
    // pathlen 0: this CA signs server certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    if !permitted.is_empty() {
        // rcgen marks the extension critical, so a client that cannot check it refuses the CA
        // instead of trusting it for every name.
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: Vec::new(),
        });
    }
    params.serial_number = Some(random_serial()?);
    (params.not_before, params.not_after) = validity_from_now(opts.days);

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_error)?;
    let cert = params.self_signed(&key).map_err(mint_error)?;
    create_dir(dir)?;
    // The key first: a crash in between leaves a key without a certificate, which the next
    // run reports instead of silently pairing a new certificate with an old key.
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert.pem().as_bytes(), 0o644)
}

/// Signs a server certificate for `names` (DNS names or IP literals, v4/v6) with the CA in
/// `ca_dir`, and writes `out/server.crt` (leaf then CA) and `out/server.key` (0600).
pub fn issue_cert(ca_dir: &Path, names: &[String], out: &Path, days: u32) -> Result<(), TlsError> {
    let ca = Ca::load(ca_dir)?;
    let (_, refused) = ca.partition(names);
    if !refused.is_empty() {
        // Asked for explicitly, so issued as asked; but clients will refuse it.
        tracing::warn!(
            ca = %ca_dir.join(CA_CERT).display(),
            names = ?refused,
            "the CA's name constraints do not permit these names: clients will reject this certificate"
        );
    }
    ca.issue(names, days)?.write(out)
}

/// A CA loaded from its directory, ready to sign.
pub struct Ca {
    dir: PathBuf,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    constraints: Constraints,
}

impl Ca {
    /// Reads `dir/ca.crt` and `dir/ca.key` and checks that they belong together.
    pub fn load(dir: &Path) -> Result<Ca, TlsError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        let cert_pem = read_text(&cert_path)?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| file_error(&cert_path, format!("no PEM certificate: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| file_error(&cert_path, format!("not a valid certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(file_error(&cert_path, "not a CA certificate"));
        }
        let constraints = Constraints::of(&x509)
            .map_err(|e| file_error(&cert_path, format!("unreadable name constraints: {e}")))?;

        let key_text = read_text(&key_path)?;
        let key = KeyPair::from_pem(&key_text)
            .map_err(|e| file_error(&key_path, format!("not a usable private key: {e}")))?;
        if key.subject_public_key_info() != x509.public_key().raw {
            return Err(file_error(
                &key_path,
                format!("does not match the certificate in {}", cert_path.display()),
            ));
        }
        if let Ok(meta) = key_path.metadata() {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(key = %key_path.display(), "the CA key is readable by other users; chmod 600 it");
            }
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|e| file_error(&cert_path, format!("cannot sign with this CA: {e}")))?;
        Ok(Ca {
            dir: dir.to_path_buf(),
            cert_pem,
            cert_der: cert_der.into_owned(),
            issuer,
            constraints,
        })
    }

    /// Loads the CA in `dir`, generating one when neither file exists. True when generated.
    pub fn load_or_generate(dir: &Path) -> Result<(Ca, bool), TlsError> {
        let (cert, key) = (dir.join(CA_CERT), dir.join(CA_KEY));
        match (cert.exists(), key.exists()) {
            (true, true) => Ok((Ca::load(dir)?, false)),
            (false, false) => {
                let opts = CaOptions {
                    name: Defaults::CA_NAME.into(),
                    days: Defaults::CA_DAYS,
                    permit: Vec::new(),
                };
                generate_ca(dir, &opts, false)?;
                Ok((Ca::load(dir)?, true))
            }
            (false, true) => Err(file_error(
                &cert,
                "missing while ca.key exists; restore it, or remove ca.key to start a new CA",
            )),
            (true, false) => Err(file_error(
                &key,
                "missing while ca.crt exists; restore it, or remove ca.crt to start a new CA",
            )),
        }
    }

    /// A server certificate for `names`, valid for `days` from an hour ago.
    pub fn issue(&self, names: &[String], days: u32) -> Result<ServerCert, TlsError> {
        let (not_before, not_after) = validity_from_now(days);
        self.issue_with_validity(names, not_before, not_after)
    }

    /// A server certificate for `names` with the given validity.
    pub fn issue_with_validity(
        &self,
        names: &[String],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<ServerCert, TlsError> {
        let first = names
            .first()
            .ok_or_else(|| TlsError::Mint("no names to put in the certificate".into()))?;
        let mut params = CertificateParams::default();
        for name in names {
            let san = match SanName::parse(name).map_err(TlsError::Mint)? {
                SanName::Ip(ip) => SanType::IpAddress(ip),
                SanName::Dns(dns) => SanType::DnsName(dns.try_into().map_err(mint_error)?),
            };
            params.subject_alt_names.push(san);
        }
        params.distinguished_name = common_name(first);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        (params.not_before, params.not_after) = (not_before, not_after);

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(mint_error)?;
        let leaf = params.signed_by(&key, &self.issuer).map_err(mint_error)?;
        let mut chain_pem = leaf.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&self.cert_pem);
        Ok(ServerCert {
            chain: vec![leaf.der().clone(), self.cert_der.clone()],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            chain_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// The server certificate in this CA's directory; or a new one, written there, when that is
    /// missing, unreadable, expired, from another CA or short of one of `names`. A certificate
    /// in the last third of its validity is kept: renewal replaces it under live traffic.
    pub fn load_or_issue(
        &self,
        names: &[String],
        days: u32,
    ) -> Result<(ServerCert, CertifiedKey), TlsError> {
        let reason = if !self.dir.join(SERVER_CERT).exists() {
            "none exists yet".to_string()
        } else {
            match ServerCert::read(&self.dir) {
                Err(e) => e.to_string(),
                Ok(current) => match current.certified() {
                    Err(e) => e,
                    Ok(key) => match self.reissue_reason(
                        &current.chain,
                        names,
                        OffsetDateTime::now_utc(),
                        false,
                    ) {
                        None => return Ok((current, key)),
                        Some(reason) => reason,
                    },
                },
            }
        };
        let fresh = self.issue(names, days)?;
        fresh.write(&self.dir)?;
        let key = fresh.certified().map_err(TlsError::Mint)?;
        if let Some(Ok(leaf)) = fresh.chain.first().map(Leaf::parse) {
            tracing::info!(
                cert = %self.dir.join(SERVER_CERT).display(),
                serial = %leaf.serial,
                expires = %fmt_time(leaf.not_after),
                names = ?names,
                "issued a new server certificate because {reason}"
            );
        }
        Ok((fresh, key))
    }

    /// Splits `names` into those this CA's name constraints permit and those they refuse.
    pub fn partition(&self, names: &[String]) -> (Vec<String>, Vec<String>) {
        names
            .iter()
            .cloned()
            .partition(|n| match SanName::parse(n) {
                Ok(san) => self.constraints.permits(&san),
                Err(_) => true, // issuing reports the bad name
            })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Why `chain` should be replaced by a fresh certificate from this CA, if it should.
    /// `early` also asks for renewal once the leaf is in the last third of its validity.
    pub fn reissue_reason(
        &self,
        chain: &[CertificateDer<'_>],
        wanted: &[String],
        now: OffsetDateTime,
        early: bool,
    ) -> Option<String> {
        let Some(leaf_der) = chain.first() else {
            return Some("it holds no certificate".into());
        };
        let leaf = match Leaf::parse(leaf_der) {
            Ok(leaf) => leaf,
            Err(e) => return Some(format!("it cannot be parsed: {e}")),
        };
        if now < leaf.not_before {
            return Some(format!(
                "it is not valid before {}",
                fmt_time(leaf.not_before)
            ));
        }
        if now >= leaf.not_after {
            return Some(format!("it expired at {}", fmt_time(leaf.not_after)));
        }
        if let Err(e) = self.verify(leaf_der, &chain[1..], now) {
            return Some(format!(
                "it is not signed by {}: {e}",
                self.dir.join(CA_CERT).display()
            ));
        }
        let missing = leaf.missing(wanted);
        if !missing.is_empty() {
            return Some(format!("it does not cover {}", missing.join(", ")));
        }
        if early && now >= leaf.renew_at() {
            return Some(format!(
                "it is in the last third of its validity (expires {})",
                fmt_time(leaf.not_after)
            ));
        }
        None
    }

    /// Chain, signature and name constraints, checked by the same webpki code clients run.
    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .map_err(|e| e.to_string())?;
        let parsed = ParsedCertificate::try_from(leaf).map_err(|e| e.to_string())?;
        let secs = u64::try_from(now.unix_timestamp()).map_err(|_| "the clock is before 1970")?;
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
        let algs = crypto().signature_verification_algorithms.all;
        verify_server_cert_signed_by_trust_anchor(&parsed, &roots, intermediates, now, algs)
            .map_err(|e| e.to_string())
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// From an hour ago, to tolerate clients whose clocks run behind, for `days`.
fn validity_from_now(days: u32) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(i64::from(days)),
    )
}

/// 16 random bytes, positive and without leading zero (RFC 5280 section 4.1.2.2).
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    crypto()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Mint("no randomness for a serial number".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn mint_error(e: rcgen::Error) -> TlsError {
    TlsError::Mint(e.to_string())
}

#[cfg(test)]
mod tests;
