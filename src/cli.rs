//! The command line: subcommands, and the flags that override the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Overrides, Target};

#[derive(Debug, Parser)]
#[command(
    name = "dockgate",
    version,
    about = "One TLS host:port for docker login, push and pull in front of a registry's \
             hosted (put) and group (get) upstreams.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `dockgate` with no subcommand serves.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log format on stderr; the level comes from RUST_LOG (default: info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: terminate TLS and route each request to the put or get upstream (the default).
    Serve(ServeArgs),
    /// Create a certificate authority (ca.crt, ca.key) and print how to make docker trust it.
    GenerateCa(GenerateCaArgs),
    /// Issue a server certificate (server.crt with chain, server.key) signed by a CA.
    IssueCert(IssueCertArgs),
    /// Check a config file and print the effective configuration; exit 2 if it is wrong.
    CheckConfig(CheckConfigArgs),
    /// Talk to each upstream from here and say what is wrong with the setup and how to fix it.
    Doctor(DoctorArgs),
    /// Read an nginx config of the kind put in front of Nexus and print the dockgate TOML.
    ImportNginx(ImportNginxArgs),
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Config file (without one, the built-in defaults and the flags below).
    #[arg(long, short = 'c', env = "DOCKGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Also check that get serves this image's tag, e.g. library/alpine:3.19.
    #[arg(long, value_name = "NAME:TAG")]
    pub image: Option<String>,
    /// The upstream flags `serve` takes, so `doctor` checks exactly what would be served.
    #[command(flatten)]
    pub upstreams: UpstreamFlags,
}

#[derive(Debug, Args)]
pub struct ImportNginxArgs {
    /// The nginx config file (a site file or a whole nginx.conf).
    pub file: PathBuf,
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Without one, the built-in defaults serve (see check-config).
    #[arg(long, short = 'c', env = "DOCKGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8443 or [::]:8443 (repeatable).
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    #[command(flatten)]
    pub upstreams: UpstreamFlags,
    /// Directory of minted certificates (ca.crt, ca.key, server.crt, server.key).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["cert", "key"])]
    pub certs: Option<PathBuf>,
    /// Your own certificate chain (PEM); served as given, never overwritten.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key for --cert (PEM: PKCS#8, SEC1 or PKCS#1).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            certs: self.certs.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            ..self.upstreams.overrides()
        }
    }
}

/// The upstream and hostname flags, shared by `serve` and `doctor`.
#[derive(Debug, Default, Args)]
pub struct UpstreamFlags {
    /// Upstream for writes (push, uploads, deletes, search): the Nexus hosted repository.
    /// Repeated: the servers of a pool (replicas with the same content).
    #[arg(long, value_name = "URL")]
    pub put: Vec<String>,
    /// Upstream for reads (pull): the Nexus group repository. Repeated: the members of a
    /// group, asked in order (e.g. a hosted registry, then a pull-through cache).
    #[arg(long, value_name = "URL")]
    pub get: Vec<String>,
    /// Upstream for every non-registry path (the Nexus UI and REST API). Repeated: a pool.
    #[arg(long, value_name = "URL")]
    pub web: Vec<String>,
    /// Public name clients use; the minted certificate covers it (repeatable).
    #[arg(long, value_name = "NAME")]
    pub hostname: Vec<String>,
}

impl UpstreamFlags {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            upstreams: vec![
                (Target::Put, self.put.clone()),
                (Target::Get, self.get.clone()),
                (Target::Web, self.web.clone()),
            ],
            hostnames: self.hostname.clone(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerateCaArgs {
    /// Where to write ca.crt and ca.key (default: the config's tls.dir, else ./certs).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The CA's common name.
    #[arg(long, value_name = "CN", default_value = crate::config::Defaults::CA_NAME)]
    pub name: String,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = crate::config::Defaults::CA_DAYS)]
    pub days: u32,
    /// Limit the CA to these DNS names or IP ranges (X.509 name constraints), so that trusting
    /// it cannot be used to impersonate other sites (repeatable).
    #[arg(long, value_name = "NAME|CIDR")]
    pub permit: Vec<String>,
    /// Replace an existing CA (every certificate it signed stops being trusted).
    #[arg(long)]
    pub force: bool,
    /// Config file, for the host:port names in the printed install commands.
    #[arg(long, short = 'c', env = "DOCKGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Public name clients use, for the printed install commands (repeatable).
    #[arg(long, value_name = "NAME")]
    pub hostname: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IssueCertArgs {
    /// Directory holding ca.crt and ca.key.
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// DNS name or IP address the certificate is for (repeatable; each becomes a SAN).
    #[arg(long, value_name = "NAME", required = true)]
    pub hostname: Vec<String>,
    /// Where to write server.crt (leaf then CA) and server.key (default: the CA directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Validity in days.
    #[arg(long, value_name = "N", default_value_t = crate::config::Defaults::SERVER_DAYS)]
    pub days: u32,
}

#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// Config file to check (without one, the built-in defaults are shown).
    #[arg(long, short = 'c', env = "DOCKGATE_CONFIG")]
    pub config: Option<PathBuf>,
}
