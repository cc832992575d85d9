//! Certificates and keys on disk: the server certificate and key `serve` presents, PEM reading
//! that names the file at fault, and writes that are atomic and never expose a key to others.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::tls::{crypto, TlsError};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";

/// A server certificate chain (leaf first) and its private key.
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    pub(super) chain_pem: String,
    pub(super) key_pem: String,
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

/// Creates `dir` and its parents; new ones are 0700, since a key may be written there.
pub(crate) fn create_dir(dir: &Path) -> Result<(), TlsError> {
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
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
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

/// The whole file as text; the error names the file.
pub(crate) fn read_text(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// An error about the contents of `path`.
pub(crate) fn file_error(path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::tls::mint::{generate_ca, issue_cert, Ca, CaOptions};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn new_ca() -> (tempfile::TempDir, Ca) {
        let dir = tempfile::tempdir().unwrap();
        let opts = CaOptions {
            name: "test CA".into(),
            days: 30,
            permit: Vec::new(),
        };
        generate_ca(dir.path(), &opts, false).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        (dir, ca)
    }

    fn mode(path: &Path) -> u32 {
        path.metadata().unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn key_files_are_created_0600() {
        let (dir, ca) = new_ca();
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
    fn a_written_certificate_reads_back_and_its_key_matches() {
        let (dir, ca) = new_ca();
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
        let (_dir, ca) = new_ca();
        let a = ca.issue(&names(&["localhost"]), 1).unwrap();
        let b = ca.issue(&names(&["localhost"]), 1).unwrap();
        let err = certified_key(a.chain.clone(), b.key.clone_key()).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }
}
