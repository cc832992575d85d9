//! The configuration: the checked `Config` whose fields cannot be wrong, the command-line
//! overrides, and every default in `Defaults`. Parsing and checking the TOML is in `parse`.

mod parse;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Method;
use regex::Regex;
use serde::Deserialize;

use parse::{check_file, fmt_duration};
pub use parse::{parse_duration, parse_hostname, parse_listen, parse_upstream};

/// Every default in one place, so the README, `check-config` and the code agree.
pub struct Defaults;

impl Defaults {
    pub const LISTEN: &'static str = "0.0.0.0:8443";
    pub const PUT: &'static str = "http://127.0.0.1:8082";
    pub const GET: &'static str = "http://127.0.0.1:8083";
    pub const CERTS_DIR: &'static str = "./certs";
    pub const CA_NAME: &'static str = "dockgate CA";
    pub const CA_DAYS: u32 = 3650;
    /// The CA/Browser Forum's ceiling; Apple and Chrome refuse longer-lived leaves.
    pub const SERVER_DAYS: u32 = 397;
    pub const RENEW_CHECK: Duration = Duration::from_secs(3600);
    pub const CONNECT: Duration = Duration::from_secs(5);
    pub const RESPONSE_HEADERS: Duration = Duration::from_secs(120);
    pub const BODY_STALL: Duration = Duration::from_secs(120);
    pub const CLIENT_HEADERS: Duration = Duration::from_secs(30);
    pub const TLS_HANDSHAKE: Duration = Duration::from_secs(10);
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    pub const POOL_IDLE: Duration = Duration::from_secs(90);
    pub const POOL_MAX_IDLE_PER_HOST: usize = 64;
}

/// The checked configuration. Built by `Config::load` or `Config::from_toml`, then adjusted by
/// command-line flags through `Overrides`, then `finish`ed.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, if any (for messages).
    pub source: Option<PathBuf>,
    pub listen: Vec<SocketAddr>,
    /// Public names clients use (DNS names or IP literals), without port.
    pub hostnames: Vec<String>,
    pub upstreams: Upstreams,
    pub tls: Tls,
    pub rules: Vec<Rule>,
    pub timeouts: Timeouts,
    pub headers: HeaderOptions,
}

#[derive(Debug, Clone)]
pub struct Upstreams {
    pub put: UpstreamUrl,
    pub get: UpstreamUrl,
    pub web: Option<UpstreamUrl>,
    /// The CAs that https:// upstreams must chain to; `None`: the system's trust store.
    pub ca: Option<UpstreamCa>,
}

/// A PEM bundle of CA certificates for https:// upstreams, read and checked at start.
#[derive(Debug, Clone)]
pub struct UpstreamCa {
    pub path: PathBuf,
    pub certs: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// An upstream's origin and base path, e.g. `http://nexus:8081/repository/docker-hosted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Without trailing slash; empty for the root.
    pub base_path: String,
}

#[derive(Debug, Clone)]
pub enum Tls {
    /// dockgate's own CA and server certificate in `dir`, minted when missing.
    Minted {
        dir: PathBuf,
        server_days: u32,
        renew_check: Duration,
    },
    /// User-provided PEM files, served as given and never overwritten.
    Files { cert: PathBuf, key: PathBuf },
}

/// A user routing rule; the first one that matches wins, before the built-in table.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Empty means any method.
    pub methods: Vec<Method>,
    pub path: Regex,
    pub upstream: Target,
}

/// Which configured upstream a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Put,
    Get,
    Web,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub connect: Duration,
    /// From the end of the request body to the upstream's response headers.
    pub response_headers: Duration,
    /// No byte in either direction for this long ends a body; a moving transfer never does.
    pub body_stall: Duration,
    pub client_headers: Duration,
    pub tls_handshake: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct HeaderOptions {
    /// Send `X-Forwarded-Host`/`X-Forwarded-Port`. Off by default: Nexus appends the port a
    /// second time (`host:5001:5001`) and `docker login` then fails.
    pub forwarded_host: bool,
    /// Send the upstream's own `Host` instead of the public one the client used.
    pub upstream_host: bool,
}

/// A configuration problem, located where possible: `file:line: key: what is wrong`.
#[derive(Debug)]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{}: ", file.display(), line)?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            (None, Some(line)) => write!(f, "line {line}: ")?,
            (None, None) => {}
        }
        if self.key.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Command-line flags that override the file; `None`/empty leaves the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Vec<String>,
    pub put: Option<String>,
    pub get: Option<String>,
    pub web: Option<String>,
    pub hostnames: Vec<String>,
    pub certs: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Config {
    /// Reads and checks `path`; with `None`, the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        match path {
            None => Config::from_toml("", None),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
                    file: Some(path.to_path_buf()),
                    line: None,
                    key: String::new(),
                    message: format!("cannot read the config file: {e}"),
                })?;
                Config::from_toml(&text, Some(path))
            }
        }
    }

    pub fn from_toml(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
        parse::from_toml(text, file)
    }

    /// Applies command-line flags, checking them with the same rules as the file.
    pub fn apply(&mut self, o: &Overrides) -> Result<(), ConfigError> {
        let flag = |key: &str, message: String| ConfigError {
            file: None,
            line: None,
            key: format!("--{key}"),
            message,
        };
        if !o.listen.is_empty() {
            self.listen = o
                .listen
                .iter()
                .map(|s| parse_listen(s).map_err(|m| flag("listen", m)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(u) = &o.put {
            self.upstreams.put = parse_upstream(u).map_err(|m| flag("put", m))?;
        }
        if let Some(u) = &o.get {
            self.upstreams.get = parse_upstream(u).map_err(|m| flag("get", m))?;
        }
        if let Some(u) = &o.web {
            self.upstreams.web = Some(parse_upstream(u).map_err(|m| flag("web", m))?);
        }
        if !o.hostnames.is_empty() {
            self.hostnames = o
                .hostnames
                .iter()
                .map(|h| parse_hostname(h).map_err(|m| flag("hostname", m)))
                .collect::<Result<_, _>>()?;
        }
        match (&o.cert, &o.key) {
            (Some(cert), Some(key)) => {
                check_file(cert).map_err(|m| flag("cert", m))?;
                check_file(key).map_err(|m| flag("key", m))?;
                self.tls = Tls::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                };
            }
            (Some(_), None) => return Err(flag("cert", "needs --key as well".into())),
            (None, Some(_)) => return Err(flag("key", "needs --cert as well".into())),
            (None, None) => {}
        }
        if let Some(dir) = &o.certs {
            let (server_days, renew_check) = match &self.tls {
                Tls::Minted {
                    server_days,
                    renew_check,
                    ..
                } => (*server_days, *renew_check),
                Tls::Files { .. } => (Defaults::SERVER_DAYS, Defaults::RENEW_CHECK),
            };
            self.tls = Tls::Minted {
                dir: dir.clone(),
                server_days,
                renew_check,
            };
        }
        Ok(())
    }

    /// The names a minted server certificate must cover: the public hostnames, the specific
    /// listen addresses, and the loopback names docker on the gateway's own host uses.
    pub fn certificate_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hostnames.clone();
        for addr in &self.listen {
            if !addr.ip().is_unspecified() {
                names.push(addr.ip().to_string());
            }
        }
        for n in ["localhost", "127.0.0.1", "::1"] {
            names.push(n.to_string());
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.to_ascii_lowercase()));
        names
    }

    /// `host:port` strings clients use, for the CA installation hints.
    pub fn public_addresses(&self) -> Vec<String> {
        let port = self.listen.first().map(|a| a.port()).unwrap_or(8443);
        let hosts = if self.hostnames.is_empty() {
            vec!["localhost".to_string()]
        } else {
            self.hostnames.clone()
        };
        hosts
            .iter()
            .map(|h| match h.parse::<IpAddr>() {
                Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
                _ => format!("{h}:{port}"),
            })
            .collect()
    }

    /// The effective configuration as TOML, for `check-config`.
    pub fn to_toml(&self) -> String {
        let list = |v: &[String]| {
            v.iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let listen: Vec<String> = self.listen.iter().map(|a| a.to_string()).collect();
        let mut out = String::new();
        out.push_str(&format!("listen = [{}]\n", list(&listen)));
        out.push_str(&format!("hostnames = [{}]\n\n", list(&self.hostnames)));
        out.push_str("[upstreams]\n");
        out.push_str(&format!("put = {:?}\n", self.upstreams.put.to_string()));
        out.push_str(&format!("get = {:?}\n", self.upstreams.get.to_string()));
        if let Some(web) = &self.upstreams.web {
            out.push_str(&format!("web = {:?}\n", web.to_string()));
        }
        if let Some(ca) = &self.upstreams.ca {
            out.push_str(&format!("ca = {:?}\n", ca.path.display().to_string()));
        }
        out.push_str("\n[tls]\n");
        match &self.tls {
            Tls::Minted {
                dir,
                server_days,
                renew_check,
            } => {
                out.push_str(&format!("dir = {:?}\n", dir.display().to_string()));
                out.push_str(&format!("server_days = {server_days}\n"));
                out.push_str(&format!(
                    "renew_check = \"{}\"\n",
                    fmt_duration(*renew_check)
                ));
            }
            Tls::Files { cert, key } => {
                out.push_str(&format!("cert = {:?}\n", cert.display().to_string()));
                out.push_str(&format!("key = {:?}\n", key.display().to_string()));
            }
        }
        let t = &self.timeouts;
        out.push_str("\n[timeouts]\n");
        for (k, v) in [
            ("connect", t.connect),
            ("response_headers", t.response_headers),
            ("body_stall", t.body_stall),
            ("client_headers", t.client_headers),
            ("tls_handshake", t.tls_handshake),
            ("shutdown_grace", t.shutdown_grace),
        ] {
            out.push_str(&format!("{k} = \"{}\"\n", fmt_duration(v)));
        }
        out.push_str("\n[headers]\n");
        out.push_str(&format!(
            "forwarded_host = {}\nupstream_host = {}\n",
            self.headers.forwarded_host, self.headers.upstream_host
        ));
        for rule in &self.rules {
            let methods: Vec<String> = rule.methods.iter().map(|m| m.to_string()).collect();
            out.push_str("\n[[rules]]\n");
            if !methods.is_empty() {
                out.push_str(&format!("methods = [{}]\n", list(&methods)));
            }
            out.push_str(&format!("path = {:?}\n", rule.path.as_str()));
            let target = match rule.upstream {
                Target::Put => "put",
                Target::Get => "get",
                Target::Web => "web",
            };
            out.push_str(&format!("upstream = \"{target}\"\n"));
        }
        out
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

#[cfg(test)]
mod tests;
