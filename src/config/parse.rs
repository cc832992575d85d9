//! Raw TOML (serde, unknown keys refused) checked into a `Config`, with byte spans turned into
//! line numbers so that every error reads `file:line: key: what is wrong`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::uri::Scheme;
use http::{Method, Uri};
use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::upstreams::RawUpstream;
use super::{
    Admin, Backfill, Config, ConfigError, Defaults, HeaderOptions, Health, Limits, Log, Rule,
    Target, Timeouts, Tls, UpstreamCa, UpstreamSpec, UpstreamUrl, Upstreams,
};

/// Parses and checks a whole file's text.
pub(super) fn from_toml(text: &str, file: Option<&Path>) -> Result<Config, ConfigError> {
    let ctx = Ctx { text, file };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.parse_error(&e))?;
    ctx.check(raw)
}

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
    health: Option<RawHealth>,
    backfill: Option<RawBackfill>,
    limits: Option<RawLimits>,
    admin: Option<RawAdmin>,
    log: Option<RawLog>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    access_buffer: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<Spanned<String>>,
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
    put: Option<Spanned<RawUpstream>>,
    get: Option<Spanned<RawUpstream>>,
    web: Option<Spanned<RawUpstream>>,
    token: Option<Spanned<RawUpstream>>,
    ca: Option<Spanned<String>>,
}

impl RawUpstreams {
    fn get(&self, target: Target) -> Option<&Spanned<RawUpstream>> {
        match target {
            Target::Put => self.put.as_ref(),
            Target::Get => self.get.as_ref(),
            Target::Web => self.web.as_ref(),
            Target::Token => self.token.as_ref(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_header_bytes: Option<Spanned<usize>>,
    max_headers: Option<Spanned<usize>>,
    max_uri_bytes: Option<Spanned<usize>>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_requests_in_flight: Option<usize>,
    h2_max_concurrent_streams: Option<Spanned<u32>>,
    h2_max_requests_per_connection: Option<Spanned<u64>>,
    strict_host: Option<bool>,
    underscore_headers: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackfill {
    enabled: Option<bool>,
    max_concurrent: Option<Spanned<usize>>,
    on_blob_check: Option<bool>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    interval: Option<Spanned<String>>,
    fails: Option<Spanned<u32>>,
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
    early_response_drain: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    forwarded_host: Option<bool>,
    upstream_host: Option<bool>,
}

/// Where the text and file are, to turn byte spans into line numbers.
pub(super) struct Ctx<'a> {
    text: &'a str,
    file: Option<&'a Path>,
}

impl Ctx<'_> {
    /// The dotted key whose value starts at `offset` (`limits.max_connections`), read from the
    /// text: the name before the `=` on that line and the `[table]` above it.
    fn key_at(&self, offset: usize) -> Option<String> {
        let before = self.text.get(..offset)?;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let (name, _) = before[line_start..].split_once('=')?;
        let name = name.trim();
        // Inside an inline table or a list, or a quoted key: the line alone cannot say.
        if name.is_empty() || name.contains(['[', '{', ',', '"', '\'']) {
            return None;
        }
        let table = before[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['))
            .and_then(|l| l.trim_start_matches('[').split(']').next())
            .map(str::trim);
        Some(match table {
            Some(t) if !t.is_empty() => format!("{t}.{name}"),
            _ => name.to_string(),
        })
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn err<T>(
        &self,
        spanned: &Spanned<T>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
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
        let message = e.message().trim().replace('\n', ": ");
        let key = match message.split('`').nth(1) {
            Some(field) if message.starts_with("unknown field") => field.to_string(),
            _ => e
                .span()
                .and_then(|s| self.key_at(s.start))
                .unwrap_or_default(),
        };
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
        let mut upstreams = Upstreams {
            specs: Default::default(),
            ca: None,
        };
        for target in Target::ALL {
            let default = match target {
                Target::Put => Some(Defaults::PUT),
                Target::Get => Some(Defaults::GET),
                Target::Web | Target::Token => None,
            };
            let spec = match ups.get(target) {
                Some(raw) => Some(self.check_upstream(target, raw)?),
                None => default.map(|d| {
                    UpstreamSpec::server(parse_upstream(d).expect("default upstreams parse"))
                }),
            };
            if let Some(spec) = spec {
                upstreams.set(target, spec);
            }
        }
        if let Some(path) = &ups.ca {
            let file = self.relative(path.get_ref());
            let certs = read_ca_bundle(&file).map_err(|m| self.err(path, "upstreams.ca", m))?;
            upstreams.ca = Some(UpstreamCa { path: file, certs });
        }

        let tls = self.check_tls(raw.tls.unwrap_or_default())?;

        let rules = raw
            .rules
            .into_iter()
            .map(|r| self.check_rule(r, upstreams.spec(Target::Web).is_some()))
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
            early_response_drain: dur(
                &t.early_response_drain,
                "timeouts.early_response_drain",
                Defaults::EARLY_RESPONSE_DRAIN,
            )?,
        };
        let h = raw.headers.unwrap_or_default();
        let health = raw.health.unwrap_or_default();
        let health = Health {
            interval: dur(
                &health.interval,
                "health.interval",
                Defaults::HEALTH_INTERVAL,
            )?,
            fails: match &health.fails {
                Some(f) if *f.get_ref() == 0 => {
                    return Err(self.err(f, "health.fails", "must be at least 1"))
                }
                Some(f) => *f.get_ref(),
                None => Defaults::HEALTH_FAILS,
            },
        };
        let backfill = self.check_backfill(raw.backfill.unwrap_or_default())?;
        let limits = self.check_limits(raw.limits.unwrap_or_default())?;
        let admin = match raw.admin.and_then(|a| a.listen) {
            Some(l) => Admin {
                listen: Some(
                    parse_listen(l.get_ref()).map_err(|m| self.err(&l, "admin.listen", m))?,
                ),
            },
            None => Admin::default(),
        };
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
            health,
            backfill,
            limits,
            admin,
            log: Log {
                access_buffer: raw
                    .log
                    .and_then(|l| l.access_buffer)
                    .unwrap_or(Defaults::ACCESS_BUFFER),
            },
        })
    }

    fn check_limits(&self, raw: RawLimits) -> Result<Limits, ConfigError> {
        let at_least = |v: &Option<Spanned<usize>>, key: &str, min: usize, default: usize| match v {
            Some(n) if *n.get_ref() < min => {
                Err(self.err(n, key, format!("must be at least {min}")))
            }
            Some(n) => Ok(*n.get_ref()),
            None => Ok(default),
        };
        let streams = match &raw.h2_max_concurrent_streams {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.err(n, "limits.h2_max_concurrent_streams", "must be at least 1"))
            }
            Some(n) => *n.get_ref(),
            None => Defaults::H2_MAX_CONCURRENT_STREAMS,
        };
        let requests = match &raw.h2_max_requests_per_connection {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.err(
                    n,
                    "limits.h2_max_requests_per_connection",
                    "must be at least 1",
                ))
            }
            Some(n) => *n.get_ref(),
            None => Defaults::H2_MAX_REQUESTS_PER_CONNECTION,
        };
        Ok(Limits {
            // hyper's read buffer cannot be smaller than 8 KiB, and the head must fit in it.
            max_header_bytes: at_least(
                &raw.max_header_bytes,
                "limits.max_header_bytes",
                8192,
                Defaults::MAX_HEADER_BYTES,
            )?,
            max_headers: at_least(
                &raw.max_headers,
                "limits.max_headers",
                1,
                Defaults::MAX_HEADERS,
            )?,
            max_uri_bytes: at_least(
                &raw.max_uri_bytes,
                "limits.max_uri_bytes",
                64,
                Defaults::MAX_URI_BYTES,
            )?,
            max_connections: raw.max_connections.unwrap_or(0),
            max_connections_per_ip: raw.max_connections_per_ip.unwrap_or(0),
            max_requests_in_flight: raw.max_requests_in_flight.unwrap_or(0),
            h2_max_concurrent_streams: streams,
            h2_max_requests_per_connection: requests,
            strict_host: raw.strict_host.unwrap_or(false),
            underscore_headers: raw.underscore_headers.unwrap_or(false),
        })
    }

    fn check_backfill(&self, raw: RawBackfill) -> Result<Backfill, ConfigError> {
        let max_concurrent = match &raw.max_concurrent {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.err(n, "backfill.max_concurrent", "must be at least 1"))
            }
            Some(n) => *n.get_ref(),
            None => Defaults::BACKFILL_MAX_CONCURRENT,
        };
        let (password, password_file) = match (&raw.password, &raw.password_file) {
            (Some(p), Some(_)) => {
                return Err(self.err(
                    p,
                    "backfill.password",
                    "give password or password_file, not both",
                ))
            }
            (Some(p), None) => (Some(p.get_ref().clone()), None),
            (None, Some(f)) => {
                let path = self.relative(f.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        f,
                        "backfill.password_file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                // A trailing newline from `echo secret > file` is not part of the password.
                let password = text.trim_end_matches(['\r', '\n']).to_string();
                (Some(password), Some(path))
            }
            (None, None) => (None, None),
        };
        match (&raw.username, &password) {
            (Some(_), None) => {
                let u = raw.username.as_ref().expect("matched Some");
                return Err(self.err(
                    u,
                    "backfill.username",
                    "needs backfill.password or backfill.password_file as well",
                ));
            }
            (None, Some(_)) => {
                let at = raw.password.as_ref().or(raw.password_file.as_ref());
                if let Some(at) = at {
                    return Err(self.err(
                        at,
                        "backfill.password",
                        "needs backfill.username as well",
                    ));
                }
            }
            _ => {}
        }
        Ok(Backfill {
            enabled: raw.enabled.unwrap_or(true),
            max_concurrent,
            on_blob_check: raw.on_blob_check.unwrap_or(false),
            username: raw.username.map(|u| u.into_inner()),
            password,
            password_file,
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
        if *raw.upstream.get_ref() == Target::Token {
            return Err(self.err(
                &raw.upstream,
                "rules.upstream",
                "the token service gets its own path (upstreams.token); rules name put, get or web",
            ));
        }
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
            pattern: raw.path.get_ref().clone(),
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

pub(super) fn check_file(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(format!("{} is not a file", path.display())),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The certificates of a PEM bundle; at least one, or the file is not what the user meant.
fn read_ca_bundle(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read CA certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
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
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(format!(
            "{s:?}: an upstream URL starts with http:// or https://"
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

/// A duration in its largest exact unit (`"1h"`, `"15m"`, `"90s"`, `"250ms"`), as
/// `parse_duration` reads it.
pub fn fmt_duration(d: Duration) -> String {
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
