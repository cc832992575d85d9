//! The CA: generate it, issue server certificates from it, decide when a served certificate must
//! be reissued, and write key material so that it is never readable by others, even for a moment.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::config::Defaults;
use crate::tls::{crypto, TlsError};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";

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

/// Shell commands that install `ca_crt` on a client host for each `host:port` in `addresses`.
pub fn ca_install_hints(ca_crt: &Path, addresses: &[String]) -> String {
    let ca = std::path::absolute(ca_crt).unwrap_or_else(|_| ca_crt.to_path_buf());
    let ca = shell_quote(&ca.display().to_string());
    let mut out = String::new();
    for addr in addresses {
        let per_host = [
            ("Docker", "/etc/docker/certs.d"),
            ("Podman, Skopeo, Buildah, CRI-O", "/etc/containers/certs.d"),
            // containerd reads a docker-style ca.crt from its hosts directory; the CRI plugin
            // only looks there when `config_path = "/etc/containerd/certs.d"` is set.
            (
                "containerd (nerdctl, ctr --hosts-dir)",
                "/etc/containerd/certs.d",
            ),
        ];
        for (clients, base) in per_host {
            let dir = shell_quote(&format!("{base}/{addr}"));
            let dest = shell_quote(&format!("{base}/{addr}/ca.crt"));
            out.push_str(&format!(
                "# {clients}, for {addr}\nsudo mkdir -p {dir}\nsudo cp {ca} {dest}\n"
            ));
        }
    }
    out.push_str(&format!(
        "# The system trust store on Debian and Ubuntu (curl, Go programs, ...)\n\
         sudo cp {ca} /usr/local/share/ca-certificates/dockgate.crt\n\
         sudo update-ca-certificates\n"
    ));
    out
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

/// A server certificate chain (leaf first) and its private key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    chain_pem: String,
    key_pem: String,
}

impl ServerCert {
    /// Reads `dir/server.crt` and `dir/server.key`.
    pub fn read(dir: &Path) -> Result<ServerCert, TlsError> {
        let (cert_path, key_path) = (dir.join(SERVER_CERT), dir.join(SERVER_KEY));
        let chain_pem = read_text(&cert_path)?;
        let key_pem = read_text(&key_path)?;
        let chain = read_chain(&cert_path, &chain_pem)?;
        let key = read_key(&key_path, &key_pem)?;
        Ok(ServerCert {
            chain,
            key,
            chain_pem,
            key_pem,
        })
    }

    /// Writes `dir/server.crt` and `dir/server.key` (0600), each replaced atomically.
    pub fn write(&self, dir: &Path) -> Result<(), TlsError> {
        create_dir(dir)?;
        write_atomic(&dir.join(SERVER_KEY), self.key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(SERVER_CERT), self.chain_pem.as_bytes(), 0o644)
    }

    /// The rustls form; fails when the key cannot be loaded or does not match the leaf.
    pub fn certified(&self) -> Result<CertifiedKey, String> {
        certified_key(self.chain.clone(), self.key.clone_key())
    }
}

/// Loads `key` with the ring provider and checks it against the leaf of `chain`.
pub(crate) fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, String> {
    let key = crypto()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(chain, key);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("the private key does not match the certificate".into())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Every certificate in a PEM text, in order.
pub(crate) fn read_chain(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("unreadable PEM: {e}")))?;
    if chain.is_empty() {
        return Err(file_error(
            path,
            "no certificate (no \"BEGIN CERTIFICATE\" block) in this file",
        ));
    }
    Ok(chain)
}

/// The first private key in a PEM text: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
pub(crate) fn read_key(path: &Path, pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => file_error(
            path,
            "no private key (PKCS#8, EC or RSA \"PRIVATE KEY\" block) in this file",
        ),
        e => file_error(path, format!("unreadable PEM: {e}")),
    })
}

/// What `serve` needs to know about a leaf certificate.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Colon-separated hex, as `openssl x509 -serial` prints it (modulo colons).
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub names: Vec<SanName>,
}

impl Leaf {
    pub fn parse(der: &CertificateDer<'_>) -> Result<Leaf, String> {
        let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let sans = x509.subject_alternative_name().map_err(|e| e.to_string())?;
        let names = sans
            .map(|ext| {
                ext.value
                    .general_names
                    .iter()
                    .filter_map(SanName::from_general)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Leaf {
            serial: x509.raw_serial_as_string(),
            not_before: x509.validity().not_before.to_datetime(),
            not_after: x509.validity().not_after.to_datetime(),
            names,
        })
    }

    /// The start of the last third of the validity period.
    pub fn renew_at(&self) -> OffsetDateTime {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }

    /// Those of `wanted` that no SAN of this certificate covers.
    pub fn missing(&self, wanted: &[String]) -> Vec<String> {
        wanted
            .iter()
            .filter(|w| match SanName::parse(w) {
                Ok(w) => !self.names.iter().any(|n| n.covers(&w)),
                Err(_) => true,
            })
            .cloned()
            .collect()
    }
}

/// A subject alternative name: DNS names are lowercase without trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SanName {
    Dns(String),
    Ip(IpAddr),
}

impl SanName {
    /// A DNS name or an IP literal (IPv6 with or without brackets); never a port.
    pub fn parse(name: &str) -> Result<SanName, String> {
        let trimmed = name.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(SanName::Ip(ip));
        }
        let dns = trimmed.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |(i, l): (usize, &str)| {
            (i == 0 && l == "*")
                || (!l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        };
        if dns.is_empty() || dns.len() > 253 || !dns.split('.').enumerate().all(label_ok) {
            return Err(format!(
                "{name:?} is not a DNS name or IP address (no port or scheme here)"
            ));
        }
        Ok(SanName::Dns(dns))
    }

    fn from_general(name: &GeneralName<'_>) -> Option<SanName> {
        match name {
            GeneralName::DNSName(dns) => {
                Some(SanName::Dns(dns.trim_end_matches('.').to_ascii_lowercase()))
            }
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(SanName::Ip),
            _ => None,
        }
    }

    /// Whether this SAN matches `wanted`: IPs by value, DNS case-insensitively, `*.` standing
    /// for exactly one leftmost label (RFC 6125 section 6.4.3).
    pub fn covers(&self, wanted: &SanName) -> bool {
        match (self, wanted) {
            (SanName::Ip(a), SanName::Ip(b)) => a == b,
            (SanName::Dns(pattern), SanName::Dns(name)) => match pattern.strip_prefix("*.") {
                Some(parent) => name
                    .split_once('.')
                    .is_some_and(|(label, rest)| label != "*" && rest == parent),
                None => pattern == name,
            },
            _ => false,
        }
    }
}

/// The DNS and IP subtrees of a CA's name constraints (RFC 5280 section 4.2.1.10). A name
/// type with no permitted subtree is unconstrained.
#[derive(Debug, Default)]
struct Constraints {
    permitted_dns: Vec<String>,
    permitted_ip: Vec<(Vec<u8>, Vec<u8>)>,
    excluded_dns: Vec<String>,
    excluded_ip: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Constraints {
    fn of(x509: &x509_parser::certificate::X509Certificate<'_>) -> Result<Constraints, String> {
        let mut c = Constraints::default();
        let Some(ext) = x509.name_constraints().map_err(|e| e.to_string())? else {
            return Ok(c);
        };
        let sort = |subtrees: &Option<Vec<x509_parser::extensions::GeneralSubtree<'_>>>,
                    dns: &mut Vec<String>,
                    ip: &mut Vec<(Vec<u8>, Vec<u8>)>| {
            for subtree in subtrees.iter().flatten() {
                match &subtree.base {
                    GeneralName::DNSName(d) => {
                        dns.push(d.trim_start_matches('.').to_ascii_lowercase())
                    }
                    GeneralName::IPAddress(b) if b.len() == 8 || b.len() == 32 => {
                        let (addr, mask) = b.split_at(b.len() / 2);
                        ip.push((addr.to_vec(), mask.to_vec()));
                    }
                    _ => {}
                }
            }
        };
        sort(
            &ext.value.permitted_subtrees,
            &mut c.permitted_dns,
            &mut c.permitted_ip,
        );
        sort(
            &ext.value.excluded_subtrees,
            &mut c.excluded_dns,
            &mut c.excluded_ip,
        );
        Ok(c)
    }

    fn permits(&self, name: &SanName) -> bool {
        let dns_in = |base: &String, d: &str| {
            base.is_empty() || d == base || d.ends_with(&format!(".{base}"))
        };
        let ip_in = |(addr, mask): &(Vec<u8>, Vec<u8>), ip: &[u8]| {
            ip.len() == addr.len()
                && ip
                    .iter()
                    .zip(addr)
                    .zip(mask)
                    .all(|((i, a), m)| i & m == a & m)
        };
        match name {
            SanName::Dns(d) => {
                (self.permitted_dns.is_empty() || self.permitted_dns.iter().any(|b| dns_in(b, d)))
                    && !self.excluded_dns.iter().any(|b| dns_in(b, d))
            }
            SanName::Ip(ip) => {
                let octets = ip_octets(ip);
                (self.permitted_ip.is_empty()
                    || self.permitted_ip.iter().any(|s| ip_in(s, &octets)))
                    && !self.excluded_ip.iter().any(|s| ip_in(s, &octets))
            }
        }
    }
}

/// `registry.example.com`, `10.0.0.0/8`, `::1/128` or a bare IP (a single address).
fn parse_permit(entry: &str) -> Result<GeneralSubtree, String> {
    let entry = entry.trim();
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    if let Ok(ip) = addr.parse::<IpAddr>() {
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| {
                format!("{entry:?}: the prefix length must be a number from 0 to {max}")
            })?,
        };
        // Host bits are cleared so that `10.1.2.3/8` means the network `10.0.0.0/8`.
        return Ok(GeneralSubtree::IpAddress(
            match CidrSubnet::from_addr_prefix(ip, prefix) {
                CidrSubnet::V4(a, m) => CidrSubnet::V4(std::array::from_fn(|i| a[i] & m[i]), m),
                CidrSubnet::V6(a, m) => CidrSubnet::V6(std::array::from_fn(|i| a[i] & m[i]), m),
            },
        ));
    }
    match (prefix, SanName::parse(entry)) {
        (None, Ok(SanName::Dns(dns))) if !dns.contains('*') => Ok(GeneralSubtree::DnsName(dns)),
        _ => Err(format!(
            "{entry:?} is neither a DNS name (registry.example.com) nor an IP or CIDR (10.0.0.0/8)"
        )),
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

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn ip_octets(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes a temporary file in the same directory, created with `mode` (so a key is never
/// readable by others, not even before a chmod), then renames it over `path`.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let io = |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover from a crash; create_new below refuses to follow anything planted there.
    let _ = fs::remove_file(&tmp);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(e));
    }
    // The rename is durable once the directory is synced; failing that is not worth an error.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn mint_error(e: rcgen::Error) -> TlsError {
    TlsError::Mint(e.to_string())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certificate::X509Certificate;
    use x509_parser::extensions::ParsedExtension;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn opts(permit: &[&str]) -> CaOptions {
        CaOptions {
            name: "test CA".into(),
            days: 30,
            permit: names(permit),
        }
    }

    fn new_ca(permit: &[&str]) -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().unwrap();
        generate_ca(dir.path(), &opts(permit), false).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        (dir, ca)
    }

    fn with_x509<T>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
        let (_, x509) = x509_parser::parse_x509_certificate(der).unwrap();
        f(&x509)
    }

    fn mode(path: &Path) -> u32 {
        path.metadata().unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn key_files_are_created_0600() {
        let (dir, ca) = new_ca(&[]);
        assert_eq!(mode(&dir.path().join(CA_KEY)), 0o600);
        let out = dir.path().join("out");
        issue_cert(dir.path(), &names(&["localhost"]), &out, 10).unwrap();
        assert_eq!(mode(&out.join(SERVER_KEY)), 0o600);
        ca.issue(&names(&["localhost"]), 10)
            .unwrap()
            .write(dir.path())
            .unwrap();
        assert_eq!(mode(&dir.path().join(SERVER_KEY)), 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn an_existing_ca_is_not_overwritten_without_force() {
        let (dir, _) = new_ca(&[]);
        let before = fs::read(dir.path().join(CA_KEY)).unwrap();
        let err = generate_ca(dir.path(), &opts(&[]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.key") && err.contains("--force"), "{err}");
        assert_eq!(fs::read(dir.path().join(CA_KEY)).unwrap(), before);

        fs::remove_file(dir.path().join(CA_KEY)).unwrap();
        let err = generate_ca(dir.path(), &opts(&[]), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.crt") && err.contains("--force"), "{err}");

        generate_ca(dir.path(), &opts(&[]), true).unwrap();
        assert_ne!(fs::read(dir.path().join(CA_KEY)).unwrap(), before);
        Ca::load(dir.path()).unwrap();
    }

    #[test]
    fn the_ca_may_sign_leaves_only() {
        let (_dir, ca) = new_ca(&[]);
        with_x509(ca.cert_der(), |x| {
            let bc = x.basic_constraints().unwrap().unwrap();
            assert!(bc.critical && bc.value.ca);
            assert_eq!(bc.value.path_len_constraint, Some(0));
            let ku = x.key_usage().unwrap().unwrap().value;
            assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
            assert!(x.iter_extensions().any(|e| matches!(
                e.parsed_extension(),
                ParsedExtension::SubjectKeyIdentifier(_)
            )));
            assert_eq!(x.subject().to_string(), "CN=test CA");
            assert!(x.name_constraints().unwrap().is_none());
            let days = (x.validity().not_after.to_datetime()
                - x.validity().not_before.to_datetime())
            .whole_hours();
            assert_eq!(days, 30 * 24 + 1);
        });
    }

    #[test]
    fn permit_entries_become_critical_name_constraints() {
        let (_dir, ca) = new_ca(&["Registry.Example.com.", "10.1.2.3/8", "::1", "192.168.0.7"]);
        with_x509(ca.cert_der(), |x| {
            let nc = x.name_constraints().unwrap().unwrap();
            assert!(nc.critical);
            let permitted: Vec<String> = nc
                .value
                .permitted_subtrees
                .iter()
                .flatten()
                .map(|s| match &s.base {
                    GeneralName::DNSName(d) => d.to_string(),
                    GeneralName::IPAddress(b) => format!("{b:?}"),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(
                permitted,
                [
                    "registry.example.com".to_string(),
                    format!("{:?}", [10u8, 0, 0, 0, 255, 0, 0, 0]),
                    format!("{:?}", [[0u8; 15].as_slice(), &[1], &[255u8; 16]].concat()),
                    format!("{:?}", [192u8, 168, 0, 7, 255, 255, 255, 255]),
                ]
            );
            assert!(nc.value.excluded_subtrees.is_none());
        });
        let (ok, refused) = ca.partition(&names(&[
            "registry.example.com",
            "a.registry.example.com",
            "evil.example.org",
            "10.9.9.9",
            "11.0.0.1",
            "::1",
            "::2",
            "localhost",
        ]));
        assert_eq!(
            ok,
            names(&[
                "registry.example.com",
                "a.registry.example.com",
                "10.9.9.9",
                "::1"
            ])
        );
        assert_eq!(
            refused,
            names(&["evil.example.org", "11.0.0.1", "::2", "localhost"])
        );
    }

    #[test]
    fn bad_permit_entries_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "*.example.com",
            "host:5000",
            "10.0.0.0/x",
            "exa mple.com",
        ] {
            let err = generate_ca(dir.path(), &opts(&[bad]), false).unwrap_err();
            assert!(matches!(err, TlsError::Mint(_)), "{bad}: {err}");
        }
        assert!(!dir.path().join(CA_KEY).exists());
    }

    #[test]
    fn server_certificates_carry_each_name_as_its_own_kind() {
        let (_dir, ca) = new_ca(&[]);
        let cert = ca
            .issue(
                &names(&[
                    "Registry.Example.com",
                    "127.0.0.1",
                    "::1",
                    "[fe80::2]",
                    "localhost",
                ]),
                397,
            )
            .unwrap();
        assert_eq!(cert.chain.len(), 2);
        assert_eq!(&cert.chain[1], ca.cert_der());
        assert!(matches!(cert.key, PrivateKeyDer::Pkcs8(_)));
        with_x509(&cert.chain[0], |x| {
            let sans = &x
                .subject_alternative_name()
                .unwrap()
                .unwrap()
                .value
                .general_names;
            let kinds: Vec<String> = sans
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(d) => format!("dns {d}"),
                    GeneralName::IPAddress(b) => format!("ip {}", ip_from_bytes(b).unwrap()),
                    other => format!("{other:?}"),
                })
                .collect();
            assert_eq!(
                kinds,
                [
                    "dns registry.example.com",
                    "ip 127.0.0.1",
                    "ip ::1",
                    "ip fe80::2",
                    "dns localhost"
                ]
            );
            assert_eq!(x.subject().to_string(), "CN=Registry.Example.com");
            assert!(x.extended_key_usage().unwrap().unwrap().value.server_auth);
            let ku = x.key_usage().unwrap().unwrap().value;
            assert!(ku.digital_signature() && !ku.key_cert_sign());
            assert!(!x.is_ca());
            let aki = x
                .iter_extensions()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::AuthorityKeyIdentifier(a) => {
                        a.key_identifier.as_ref().map(|k| k.0.to_vec())
                    }
                    _ => None,
                });
            let ski = with_x509(ca.cert_der(), |ca| {
                ca.iter_extensions()
                    .find_map(|e| match e.parsed_extension() {
                        ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                        _ => None,
                    })
            });
            assert!(aki.is_some());
            assert_eq!(aki, ski);
        });
        let other = ca.issue(&names(&["localhost"]), 1).unwrap();
        let serial = |c: &ServerCert| Leaf::parse(&c.chain[0]).unwrap().serial;
        assert_ne!(serial(&cert), serial(&other));
        assert!(ca.issue(&names(&["host:5000"]), 1).is_err());
        assert!(ca.issue(&[], 1).is_err());
    }

    #[test]
    fn a_written_certificate_reads_back_and_its_key_matches() {
        let (dir, ca) = new_ca(&[]);
        ca.issue(&names(&["localhost"]), 1)
            .unwrap()
            .write(dir.path())
            .unwrap();
        let read = ServerCert::read(dir.path()).unwrap();
        assert_eq!(read.chain.len(), 2);
        read.certified().unwrap();
    }

    #[test]
    fn a_key_from_another_certificate_is_a_mismatch() {
        let (_dir, ca) = new_ca(&[]);
        let a = ca.issue(&names(&["localhost"]), 1).unwrap();
        let b = ca.issue(&names(&["localhost"]), 1).unwrap();
        let err = certified_key(a.chain.clone(), b.key.clone_key()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn reissue_reasons() {
        let (_dir, ca) = new_ca(&[]);
        let (_other_dir, other) = new_ca(&[]);
        let wanted = names(&["localhost", "127.0.0.1"]);
        let now = OffsetDateTime::now_utc();
        let days = |d: i64| time::Duration::days(d);
        let reason = |cert: &ServerCert, early| ca.reissue_reason(&cert.chain, &wanted, now, early);

        let fresh = ca.issue(&wanted, 90).unwrap();
        assert_eq!(reason(&fresh, true), None);

        let expired = ca
            .issue_with_validity(&wanted, now - days(30), now - days(1))
            .unwrap();
        assert!(reason(&expired, false).unwrap().contains("expired"));

        let future = ca
            .issue_with_validity(&wanted, now + days(1), now + days(30))
            .unwrap();
        assert!(reason(&future, false).unwrap().contains("not valid before"));

        let foreign = other.issue(&wanted, 90).unwrap();
        assert!(reason(&foreign, false).unwrap().contains("not signed by"));

        let narrow = ca.issue(&names(&["localhost"]), 90).unwrap();
        assert_eq!(
            reason(&narrow, false).unwrap(),
            "it does not cover 127.0.0.1"
        );

        let old = ca
            .issue_with_validity(&wanted, now - days(300), now + days(10))
            .unwrap();
        assert_eq!(reason(&old, false), None, "kept at startup");
        assert!(reason(&old, true).unwrap().contains("last third"));
    }

    #[test]
    fn san_coverage() {
        let leaf = Leaf {
            serial: String::new(),
            not_before: OffsetDateTime::UNIX_EPOCH,
            not_after: OffsetDateTime::UNIX_EPOCH + time::Duration::days(3),
            names: [
                "Registry.example.com",
                "*.apps.example.com",
                "::1",
                "10.0.0.1",
            ]
            .iter()
            .map(|n| SanName::parse(n).unwrap())
            .collect(),
        };
        let wanted = names(&[
            "REGISTRY.example.com.",
            "x.apps.example.com",
            "0:0:0:0:0:0:0:1",
            "[::1]",
            "10.0.0.1",
            "apps.example.com",
            "a.b.apps.example.com",
            "10.0.0.2",
            "::ffff:10.0.0.1",
            "registry",
        ]);
        assert_eq!(
            leaf.missing(&wanted),
            names(&[
                "apps.example.com",
                "a.b.apps.example.com",
                "10.0.0.2",
                "::ffff:10.0.0.1",
                "registry"
            ])
        );
        assert_eq!(
            leaf.renew_at(),
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(2)
        );
    }

    #[test]
    fn install_hints_name_every_client_and_address() {
        let hints = ca_install_hints(
            Path::new("/srv/certs/ca.crt"),
            &names(&["registry.example.com:8443", "[::1]:8443"]),
        );
        for line in [
            "sudo cp '/srv/certs/ca.crt' '/etc/docker/certs.d/registry.example.com:8443/ca.crt'",
            "sudo mkdir -p '/etc/containers/certs.d/registry.example.com:8443'",
            "sudo cp '/srv/certs/ca.crt' '/etc/containers/certs.d/[::1]:8443/ca.crt'",
            "sudo cp '/srv/certs/ca.crt' '/etc/containerd/certs.d/[::1]:8443/ca.crt'",
            "sudo cp '/srv/certs/ca.crt' /usr/local/share/ca-certificates/dockgate.crt",
            "sudo update-ca-certificates",
        ] {
            assert!(
                hints.lines().any(|l| l == line),
                "missing {line:?} in\n{hints}"
            );
        }
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
