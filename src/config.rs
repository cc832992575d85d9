//! The configuration: raw TOML (serde, unknown keys refused) checked once into a `Config` whose
//! fields cannot be wrong. Every default lives in `Defaults` below.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Method, Uri};
use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

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

// ---- raw TOML ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<Spanned<OneOrMany>>,
    hostnames: Option<Vec<Spanned<String>>>,
    upstreams: Option<RawUpstreams>,
    tls: Option<RawTls>,
    #[serde(default)]
    rules: Vec<RawRule>,
    timeouts: Option<RawTimeouts>,
    headers: Option<RawHeaders>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstreams {
    put: Option<Spanned<String>>,
    get: Option<Spanned<String>>,
    web: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    dir: Option<Spanned<String>>,
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    server_days: Option<Spanned<u32>>,
    renew_check: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    methods: Vec<Spanned<String>>,
    path: Spanned<String>,
    upstream: Spanned<Target>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    connect: Option<Spanned<String>>,
    response_headers: Option<Spanned<String>>,
    body_stall: Option<Spanned<String>>,
    client_headers: Option<Spanned<String>>,
    tls_handshake: Option<Spanned<String>>,
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    forwarded_host: Option<bool>,
    upstream_host: Option<bool>,
}

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
        let ctx = Ctx { text, file };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.parse_error(&e))?;
        ctx.check(raw)
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

/// Where the text and file are, to turn byte spans into line numbers.
struct Ctx<'a> {
    text: &'a str,
    file: Option<&'a Path>,
}

impl Ctx<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn err<T>(&self, spanned: &Spanned<T>, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.map(Path::to_path_buf),
            line: Some(self.line_of(spanned.span().start)),
            key: key.to_string(),
            message: message.into(),
        }
    }

    fn parse_error(&self, e: &toml::de::Error) -> ConfigError {
        // toml's message is several lines with a source excerpt; keep its first line and name
        // the key it complains about when it says which.
        let message = e.message().trim().to_string();
        let key = message
            .split('`')
            .nth(1)
            .filter(|_| message.starts_with("unknown field"))
            .unwrap_or_default()
            .to_string();
        ConfigError {
            file: self.file.map(Path::to_path_buf),
            line: e.span().map(|s| self.line_of(s.start)),
            key,
            message,
        }
    }

    fn check(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = match &raw.listen {
            None => {
                vec![parse_listen(Defaults::LISTEN).expect("the default listen address parses")]
            }
            Some(spanned) => {
                let items: Vec<&String> = match spanned.get_ref() {
                    OneOrMany::One(s) => vec![s],
                    OneOrMany::Many(v) => v.iter().collect(),
                };
                if items.is_empty() {
                    return Err(self.err(spanned, "listen", "needs at least one address"));
                }
                items
                    .into_iter()
                    .map(|s| parse_listen(s).map_err(|m| self.err(spanned, "listen", m)))
                    .collect::<Result<_, _>>()?
            }
        };
        let hostnames = raw
            .hostnames
            .unwrap_or_default()
            .iter()
            .map(|h| parse_hostname(h.get_ref()).map_err(|m| self.err(h, "hostnames", m)))
            .collect::<Result<_, _>>()?;

        let ups = raw.upstreams.unwrap_or_default();
        let upstream = |v: &Option<Spanned<String>>, key: &str, default: Option<&str>| match v {
            Some(s) => parse_upstream(s.get_ref())
                .map(Some)
                .map_err(|m| self.err(s, key, m)),
            None => Ok(default.map(|d| parse_upstream(d).expect("default upstreams parse"))),
        };
        let put = upstream(&ups.put, "upstreams.put", Some(Defaults::PUT))?;
        let get = upstream(&ups.get, "upstreams.get", Some(Defaults::GET))?;
        let web = upstream(&ups.web, "upstreams.web", None)?;
        let upstreams = Upstreams {
            put: put.expect("put has a default"),
            get: get.expect("get has a default"),
            web,
        };

        let tls = self.check_tls(raw.tls.unwrap_or_default())?;

        let rules = raw
            .rules
            .into_iter()
            .map(|r| self.check_rule(r, upstreams.web.is_some()))
            .collect::<Result<_, _>>()?;

        let t = raw.timeouts.unwrap_or_default();
        let dur = |v: &Option<Spanned<String>>, key: &str, default: Duration| match v {
            Some(s) => parse_duration(s.get_ref()).map_err(|m| self.err(s, key, m)),
            None => Ok(default),
        };
        let timeouts = Timeouts {
            connect: dur(&t.connect, "timeouts.connect", Defaults::CONNECT)?,
            response_headers: dur(
                &t.response_headers,
                "timeouts.response_headers",
                Defaults::RESPONSE_HEADERS,
            )?,
            body_stall: dur(&t.body_stall, "timeouts.body_stall", Defaults::BODY_STALL)?,
            client_headers: dur(
                &t.client_headers,
                "timeouts.client_headers",
                Defaults::CLIENT_HEADERS,
            )?,
            tls_handshake: dur(
                &t.tls_handshake,
                "timeouts.tls_handshake",
                Defaults::TLS_HANDSHAKE,
            )?,
            shutdown_grace: dur(
                &t.shutdown_grace,
                "timeouts.shutdown_grace",
                Defaults::SHUTDOWN_GRACE,
            )?,
        };
        let h = raw.headers.unwrap_or_default();
        Ok(Config {
            source: self.file.map(Path::to_path_buf),
            listen,
            hostnames,
            upstreams,
            tls,
            rules,
            timeouts,
            headers: HeaderOptions {
                forwarded_host: h.forwarded_host.unwrap_or(false),
                upstream_host: h.upstream_host.unwrap_or(false),
            },
        })
    }

    fn check_tls(&self, raw: RawTls) -> Result<Tls, ConfigError> {
        match (&raw.cert, &raw.key) {
            (Some(cert), Some(key)) => {
                if let Some(dir) = &raw.dir {
                    return Err(self.err(dir, "tls.dir", "give either tls.dir (minted certificates) or tls.cert and tls.key (your own), not both"));
                }
                let cert_path = self.relative(cert.get_ref());
                let key_path = self.relative(key.get_ref());
                check_file(&cert_path).map_err(|m| self.err(cert, "tls.cert", m))?;
                check_file(&key_path).map_err(|m| self.err(key, "tls.key", m))?;
                Ok(Tls::Files {
                    cert: cert_path,
                    key: key_path,
                })
            }
            (Some(cert), None) => Err(self.err(cert, "tls.cert", "needs tls.key as well")),
            (None, Some(key)) => Err(self.err(key, "tls.key", "needs tls.cert as well")),
            (None, None) => {
                let dir = match &raw.dir {
                    Some(d) => self.relative(d.get_ref()),
                    None => PathBuf::from(Defaults::CERTS_DIR),
                };
                let server_days = match &raw.server_days {
                    Some(d) if *d.get_ref() == 0 => {
                        return Err(self.err(d, "tls.server_days", "must be at least 1"))
                    }
                    Some(d) => *d.get_ref(),
                    None => Defaults::SERVER_DAYS,
                };
                let renew_check = match &raw.renew_check {
                    Some(s) => parse_duration(s.get_ref())
                        .map_err(|m| self.err(s, "tls.renew_check", m))?,
                    None => Defaults::RENEW_CHECK,
                };
                Ok(Tls::Minted {
                    dir,
                    server_days,
                    renew_check,
                })
            }
        }
    }

    fn check_rule(&self, raw: RawRule, has_web: bool) -> Result<Rule, ConfigError> {
        let methods = raw
            .methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes()).map_err(|_| {
                    self.err(
                        m,
                        "rules.methods",
                        format!("{:?} is not an HTTP method", m.get_ref()),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        // Anchored so that `/v2/foo` cannot match `/x/v2/foo` by accident.
        let pattern = format!("^(?:{})", raw.path.get_ref());
        let path = Regex::new(&pattern).map_err(|e| {
            self.err(
                &raw.path,
                "rules.path",
                format!("not a valid regular expression: {e}"),
            )
        })?;
        if *raw.upstream.get_ref() == Target::Web && !has_web {
            return Err(self.err(
                &raw.upstream,
                "rules.upstream",
                "routes to \"web\" but upstreams.web is not set",
            ));
        }
        Ok(Rule {
            methods,
            path,
            upstream: *raw.upstream.get_ref(),
        })
    }

    /// Paths in a config file are relative to the file, as users expect of nginx includes.
    fn relative(&self, p: &str) -> PathBuf {
        let path = PathBuf::from(p);
        match self.file.and_then(Path::parent) {
            Some(dir) if path.is_relative() && !dir.as_os_str().is_empty() => dir.join(path),
            _ => path,
        }
    }
}

fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{} is not a file", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?} is not an address with a port, e.g. \"0.0.0.0:8443\" or \"[::]:8443\"")
    })
}

pub fn parse_hostname(s: &str) -> Result<String, String> {
    let h = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if h.is_empty() {
        return Err("a hostname cannot be empty".into());
    }
    if h.parse::<IpAddr>().is_ok() {
        return Ok(h);
    }
    let ok = h.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
    });
    if ok {
        Ok(h)
    } else {
        Err(format!(
            "{s:?} is not a DNS name or IP address (no port or scheme here; the port comes from listen)"
        ))
    }
}

pub fn parse_upstream(s: &str) -> Result<UpstreamUrl, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a URL ({e}); expected e.g. \"http://nexus:8082\""))?;
    let scheme = uri
        .scheme()
        .cloned()
        .ok_or_else(|| format!("{s:?} has no scheme; expected e.g. \"http://nexus:8082\""))?;
    if scheme != Scheme::HTTP {
        return Err(format!(
            "{s:?}: only http:// upstreams are supported (dockgate terminates TLS in front of them)"
        ));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| format!("{s:?} has no host; expected e.g. \"http://nexus:8082\""))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "{s:?}: credentials in upstream URLs are not supported"
        ));
    }
    if uri.query().is_some() {
        return Err(format!("{s:?}: an upstream URL cannot carry a query"));
    }
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(UpstreamUrl {
        scheme,
        authority,
        base_path,
    })
}

/// `"30s"`, `"5m"`, `"1h"`, `"250ms"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. \"30s\", \"5m\", \"250ms\""))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "{s:?} has an unknown unit; use ms, s, m or h (e.g. \"30s\")"
            ))
        }
    };
    if d.is_zero() {
        return Err(format!("{s:?}: a timeout must be longer than zero"));
    }
    Ok(d)
}

fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::from_toml(text, Some(Path::new("gw.toml")))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn empty_config_gives_the_documented_defaults() {
        let c = Config::from_toml("", None).unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:8443".parse().unwrap()]);
        assert_eq!(c.upstreams.put.to_string(), "http://127.0.0.1:8082");
        assert_eq!(c.upstreams.get.to_string(), "http://127.0.0.1:8083");
        assert!(c.upstreams.web.is_none());
        assert!(matches!(
            c.tls,
            Tls::Minted {
                server_days: 397,
                ..
            }
        ));
        assert_eq!(c.timeouts.connect, Duration::from_secs(5));
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let e = err(
            "listen = \"127.0.0.1:1\"\n[upstreams]\nput = \"http://a:1\"\ngett = \"http://b:2\"\n",
        );
        assert!(
            e.starts_with("gw.toml:4: gett: unknown field `gett`"),
            "{e}"
        );
    }

    #[test]
    fn bad_url_names_the_key_and_line() {
        let e = err("\n[upstreams]\nget = \"nexus:8083\"\n");
        assert!(e.starts_with("gw.toml:3: upstreams.get: "), "{e}");
    }

    #[test]
    fn base_paths_and_overrides() {
        let mut c = Config::from_toml(
            "[upstreams]\nput = \"http://nexus:8081/repository/docker-hosted/\"\n",
            None,
        )
        .unwrap();
        assert_eq!(c.upstreams.put.base_path, "/repository/docker-hosted");
        c.apply(&Overrides {
            get: Some("http://g:1".into()),
            hostnames: vec!["Registry.Example.COM".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.upstreams.get.to_string(), "http://g:1");
        assert_eq!(c.hostnames, vec!["registry.example.com"]);
        assert!(c
            .apply(&Overrides {
                put: Some("ftp://x".into()),
                ..Default::default()
            })
            .is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn rules_are_anchored_and_web_must_exist() {
        let c = Config::from_toml(
            "[[rules]]\nmethods = [\"head\"]\npath = \"/v2/x/\"\nupstream = \"get\"\n",
            None,
        )
        .unwrap();
        assert!(c.rules[0].path.is_match("/v2/x/blobs"));
        assert!(!c.rules[0].path.is_match("/a/v2/x/"));
        let e = err("[[rules]]\npath = \"/\"\nupstream = \"web\"\n");
        assert!(e.contains("rules.upstream"), "{e}");
    }

    #[test]
    fn certificate_names_cover_hosts_listen_and_loopback() {
        let c = Config::from_toml(
            "listen = [\"10.1.2.3:8443\"]\nhostnames = [\"registry.example.com\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(
            c.certificate_names(),
            vec![
                "registry.example.com",
                "10.1.2.3",
                "localhost",
                "127.0.0.1",
                "::1"
            ]
        );
    }
}
