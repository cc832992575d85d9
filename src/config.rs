//! The configuration: the checked `Config` whose fields cannot be wrong, the command-line
//! overrides, and every default in `Defaults`. Parsing and checking the TOML is in `parse`.

mod parse;
mod upstreams;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::Method;
use regex::Regex;
use serde::{Deserialize, Serialize, Serializer};

use parse::check_file;
pub use parse::{fmt_duration, parse_duration, parse_hostname, parse_listen, parse_upstream};
pub use upstreams::{Kind, UpstreamSpec};

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
    /// Idle upstream connections kept per server. HTTP/2 clients fan their streams out into
    /// HTTP/1.1 upstream requests (32 connections x 10 streams = 320 at once in the bench):
    /// keeping fewer made ~30% of those requests open a new TCP connection.
    pub const POOL_MAX_IDLE_PER_HOST: usize = 1024;
    /// hyper's HTTP/1.1 buffer ceiling toward upstreams (its default is ~400 KB).
    pub const UPSTREAM_MAX_BUF: usize = 64 * 1024;
    /// How often servers that have an alternative (in a pool, or a member of a group) are
    /// probed with `GET /v2/`.
    pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
    /// Consecutive failures (connect error, timeout, 5xx) that take such a server out until a
    /// probe finds it healthy again.
    pub const HEALTH_FAILS: u32 = 2;
    pub const BACKFILL_MAX_CONCURRENT: usize = 4;
    /// nginx answers 400 past 4 x 8 KiB; Caddy and Envoy sit between 16 and 60 KiB.
    pub const MAX_HEADER_BYTES: usize = 32 * 1024;
    /// hyper's default of 100 refuses requests nginx accepts.
    pub const MAX_HEADERS: usize = 128;
    pub const MAX_URI_BYTES: usize = 8 * 1024;
    pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
    /// Requests per HTTP/2 connection before GOAWAY. nginx's `keepalive_requests` is 1,000, and
    /// in bench/ that reconnect halved HTTP/2 throughput (h2load waits out the old connection);
    /// 10,000 bounds what one connection can pin at a tenth of that cost.
    pub const H2_MAX_REQUESTS_PER_CONNECTION: u64 = 10_000;
    /// nginx's `lingering_time`.
    pub const EARLY_RESPONSE_DRAIN: Duration = Duration::from_secs(30);
    /// nginx's `access_log ... buffer=64k`: one write for many lines under load.
    pub const ACCESS_BUFFER: usize = 64 * 1024;
}

/// The checked configuration. Built by `Config::load` or `Config::from_toml`, then adjusted by
/// command-line flags through `Overrides`, then `finish`ed.
/// `check-config` prints it through `Serialize`, so a new key is printed once it is a field.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file this came from, if any (for messages).
    #[serde(skip)]
    pub source: Option<PathBuf>,
    pub listen: Vec<SocketAddr>,
    /// Public names clients use (DNS names or IP literals), without port.
    pub hostnames: Vec<String>,
    #[serde(serialize_with = "upstreams::serialize_upstreams")]
    pub upstreams: Upstreams,
    pub tls: Tls,
    pub timeouts: Timeouts,
    pub headers: HeaderOptions,
    pub health: Health,
    pub backfill: Backfill,
    pub limits: Limits,
    pub admin: Admin,
    pub log: Log,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// The configured upstreams, one per `Target`; put and get always exist (they have defaults).
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// Indexed by `Target::index`.
    specs: [Option<UpstreamSpec>; Target::ALL.len()],
    /// The CAs that https:// upstreams must chain to; `None`: the system's trust store.
    pub ca: Option<UpstreamCa>,
}

impl Upstreams {
    pub fn spec(&self, target: Target) -> Option<&UpstreamSpec> {
        self.specs[target.index()].as_ref()
    }

    pub fn set(&mut self, target: Target, spec: UpstreamSpec) {
        self.specs[target.index()] = Some(spec);
    }

    /// The configured upstreams in `Target::ALL` order.
    pub fn iter(&self) -> impl Iterator<Item = (Target, &UpstreamSpec)> {
        Target::ALL
            .iter()
            .filter_map(|&t| self.spec(t).map(|s| (t, s)))
    }
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

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Tls {
    /// dockgate's own CA and server certificate in `dir`, minted when missing.
    Minted {
        dir: PathBuf,
        server_days: u32,
        #[serde(serialize_with = "duration")]
        renew_check: Duration,
    },
    /// User-provided PEM files, served as given and never overwritten.
    Files { cert: PathBuf, key: PathBuf },
}

/// A user routing rule; the first one that matches wins, before the built-in table.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    /// Empty means any method.
    #[serde(serialize_with = "methods", skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    /// Anchored at the start; `pattern` is what the user wrote.
    #[serde(skip)]
    pub path: Regex,
    #[serde(rename = "path")]
    pub pattern: String,
    pub upstream: Target,
}

/// Which configured upstream a request goes to: the roles of the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Put,
    Get,
    Web,
    /// A token service on its own origin (GitLab, docker_auth, a Harbor behind another name):
    /// its path is served on the public host:port, so clients need only that one.
    Token,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Put, Target::Get, Target::Web, Target::Token];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Put => "put",
            Target::Get => "get",
            Target::Web => "web",
            Target::Token => "token",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeouts {
    #[serde(serialize_with = "duration")]
    pub connect: Duration,
    /// From the end of the request body to the upstream's response headers.
    #[serde(serialize_with = "duration")]
    pub response_headers: Duration,
    /// No byte in either direction for this long ends a body; a moving transfer never does.
    #[serde(serialize_with = "duration")]
    pub body_stall: Duration,
    #[serde(serialize_with = "duration")]
    pub client_headers: Duration,
    #[serde(serialize_with = "duration")]
    pub tls_handshake: Duration,
    #[serde(serialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// After answering before the request body was read (a 401 to an upload without
    /// credentials), keep reading the body this long so the client reads the answer.
    #[serde(serialize_with = "duration")]
    pub early_response_drain: Duration,
}

/// The plain-HTTP admin listener (`/metrics`, `/healthz`, `/readyz`); off when unset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Admin {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

/// stderr logging (the format and level are command-line and `RUST_LOG` settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Log {
    /// Bytes of access lines gathered before a write; they also go out whenever the gateway
    /// has nothing else to do, and at least once a second. 0: one write per line.
    pub access_buffer: usize,
}

/// Bounds on what one client can cost. 0 means "off" (or "from the open-file limit").
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_uri_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_requests_in_flight: usize,
    pub h2_max_concurrent_streams: u32,
    pub h2_max_requests_per_connection: u64,
    /// With `hostnames` set, refuse any other `Host` (421).
    pub strict_host: bool,
    /// Forward header names that contain `_` (nginx drops them by default).
    pub underscore_headers: bool,
}

/// Health of servers that have an alternative: a server in a pool of several, or the servers
/// of a member of a group. A lone server is always tried (there is nothing to fail over to).
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// Active probe (`GET /v2/`; 200 or 401 is healthy) interval.
    #[serde(serialize_with = "duration")]
    pub interval: Duration,
    /// Consecutive failures that take a server out until a probe succeeds.
    pub fails: u32,
}

/// Copying what a push needs from the get side into put (see `registry::backfill`).
#[derive(Debug, Clone, Serialize)]
pub struct Backfill {
    pub enabled: bool,
    /// Copies running at once; the rest wait.
    pub max_concurrent: usize,
    /// Answer a push's `HEAD` of a blob that only get has by copying it first.
    pub on_blob_check: bool,
    /// Used when the client's own credentials are refused for a copy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Never printed; `password_file` is printed when that is where it came from.
    #[serde(skip)]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize)]
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
    /// Repeated flags per upstream: `--get` = members of a group in order, `--put`/`--web` =
    /// servers of a pool.
    pub upstreams: Vec<(Target, Vec<String>)>,
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
        for (target, urls) in &o.upstreams {
            if urls.is_empty() {
                continue;
            }
            let urls = urls
                .iter()
                .map(|u| parse_upstream(u).map_err(|m| flag(target.as_str(), m)))
                .collect::<Result<Vec<_>, _>>()?;
            self.upstreams
                .set(*target, upstreams::from_flags(*target, &urls));
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

    /// True when clients reach the gateway by names the config does not give: a wildcard
    /// listen address and no `hostnames`.
    pub fn names_unknown(&self) -> bool {
        self.hostnames.is_empty() && self.listen.iter().any(|a| a.ip().is_unspecified())
    }

    /// The names a minted server certificate must cover: the public hostnames, the specific
    /// listen addresses, the loopback names docker on the gateway's own host uses, and, when
    /// no hostname is given for a wildcard listener, the machine's own name and addresses.
    pub fn certificate_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.hostnames.clone();
        if self.names_unknown() {
            names.extend(crate::tls::machine::names());
        }
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
        // Every field serializes to a TOML string, integer, bool, array or table.
        let text = match toml::to_string(self) {
            Ok(t) => t,
            Err(e) => return format!("# cannot print the configuration: {e}\n"),
        };
        // A pool or group prints as the one line a user writes (`get = { members = [...] }`)
        // rather than as a sub-table.
        let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
            return text;
        };
        if let Some(ups) = doc.get_mut("upstreams").and_then(|u| u.as_table_mut()) {
            for (mut key, item) in ups.iter_mut() {
                if let Some(table) = item.as_table() {
                    let mut inline = table.clone().into_inline_table();
                    inline.fmt();
                    *item = toml_edit::Item::Value(toml_edit::Value::InlineTable(inline));
                    key.leaf_decor_mut().set_suffix(" ");
                }
            }
        }
        doc.to_string()
    }
}

fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt_duration(*d))
}

fn methods<S: Serializer>(m: &[Method], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.iter().map(Method::as_str))
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

#[cfg(test)]
mod tests;
