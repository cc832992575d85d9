//! TLS: the certificate authority that mints what `serve` needs (`mint`), the names a
//! certificate covers (`names`), certificate and key files (`files`), how clients come to trust
//! the CA (`install`), and the rustls acceptor whose certificate can be swapped under live
//! traffic (`acceptor`).

pub mod acceptor;
pub mod files;
pub mod install;
pub mod machine;
pub mod mint;
pub mod names;

pub use acceptor::{reload, setup, Renewal, Resolver, TlsSetup};
pub use files::ServerCert;
pub use install::ca_install_hints;
pub use mint::{generate_ca, issue_cert, Ca, CaOptions};
pub use names::{Leaf, SanName};

use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// What can go wrong with certificates and keys; each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Mint(String),
}

/// ring, chosen explicitly: rustls 0.23 refuses to guess when several providers are compiled in.
pub(crate) fn crypto() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
