//! nginx values turned into dockgate's: listen addresses, server names, times and upstream
//! server addresses. Each answer is checked with the parser `check-config` uses, so what is
//! printed is what dockgate accepts.

use std::time::Duration;

use crate::config::{fmt_duration, parse_duration, parse_hostname, parse_listen, parse_upstream};

/// `listen`'s address (`8443`, `*:8443`, `[::]:443`, `192.0.2.1:8443`, `192.0.2.1`) as a
/// dockgate listen address; `None` for what dockgate cannot bind (a name, a unix socket).
pub fn listen_address(arg: &str) -> Option<String> {
    let addr = if arg.bytes().all(|b| b.is_ascii_digit()) {
        format!("0.0.0.0:{arg}")
    } else if let Some(port) = arg.strip_prefix("*:") {
        format!("0.0.0.0:{port}")
    } else if arg.parse::<std::net::IpAddr>().is_ok() {
        // An address without a port: nginx listens on 80.
        format!("{arg}:80")
    } else if arg.starts_with('[') && arg.ends_with(']') {
        format!("{arg}:80")
    } else {
        arg.to_string()
    };
    parse_listen(&addr).ok().map(|_| addr)
}

/// What became of one `server_name` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// Certificate names for `hostnames` (`.example.com` is two).
    Kept(Vec<String>),
    /// Not a name a certificate can cover, and why.
    Dropped(&'static str),
}

pub fn server_name(arg: &str) -> Name {
    if arg.is_empty() || arg == "_" {
        return Name::Dropped("a catch-all, not a name: dockgate answers every name on its port");
    }
    if arg.starts_with('~') {
        return Name::Dropped("a regular expression: a certificate needs the names themselves");
    }
    if arg.contains('$') {
        return Name::Dropped("a variable: a certificate needs the names themselves");
    }
    if arg.ends_with(".*") {
        return Name::Dropped("a trailing wildcard: certificates cannot cover one");
    }
    // nginx's `.example.com` is `example.com` and `*.example.com`.
    let names = match arg.strip_prefix('.') {
        Some(base) => vec![base.to_string(), format!("*.{base}")],
        None => vec![arg.to_string()],
    };
    match names
        .iter()
        .map(|n| parse_hostname(n))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(names) => Name::Kept(names),
        Err(_) => Name::Dropped("not a DNS name or IP address"),
    }
}

/// An nginx time (`3600`, `900s`, `1m30s`, `500ms`, `1d`): units ms, s, m, h, d, w, M (30
/// days), y (365 days), a bare number being seconds, as `ngx_parse_time` reads them.
pub fn nginx_time(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else {
            let secs = match rest.chars().next() {
                None => 1,
                Some(' ') => 1,
                Some('s') => 1,
                Some('m') => 60,
                Some('h') => 3600,
                Some('d') => 86_400,
                Some('w') => 7 * 86_400,
                Some('M') => 30 * 86_400,
                Some('y') => 365 * 86_400,
                Some(_) => return None,
            };
            (Duration::from_secs(secs), usize::from(!rest.is_empty()))
        };
        total = total.checked_add(unit.checked_mul(u32::try_from(n).ok()?)?)?;
        rest = rest[len..].trim_start();
    }
    Some(total)
}

/// A duration in dockgate's largest exact unit (`"1h"`, `"15m"`, `"90s"`, `"250ms"`); `None`
/// for zero, which dockgate refuses for a timeout.
pub fn dockgate_duration(d: Duration) -> Option<String> {
    let text = fmt_duration(d);
    parse_duration(&text).ok().map(|_| text)
}

/// An upstream block's `server` address as a URL with `scheme` (the proxy_pass's) and
/// `path` (the proxy_pass's, after the upstream name). nginx's default port is 80 whatever the
/// scheme, so an https upstream without a port keeps that explicitly.
pub fn upstream_server(scheme: &str, address: &str, path: &str) -> Result<String, &'static str> {
    if address.starts_with("unix:") {
        return Err("a unix socket: dockgate connects over TCP only");
    }
    if address.contains('$') {
        return Err("a variable: dockgate needs the address itself");
    }
    let has_port = match address.rfind(':') {
        Some(i) => !address[i..].contains(']'),
        None => false,
    };
    let authority = if has_port || scheme == "http" {
        address.to_string()
    } else {
        format!("{address}:80")
    };
    upstream_url(&format!("{scheme}://{authority}{path}"))
}

/// A URL dockgate accepts as an upstream, or why not.
pub fn upstream_url(url: &str) -> Result<String, &'static str> {
    if url.contains('$') {
        return Err("a variable: dockgate needs the address itself");
    }
    parse_upstream(url)
        .map(|_| url.trim_end_matches('/').to_string())
        .map_err(|_| "not a URL dockgate can connect to")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let rows: &[(&str, Option<&str>)] = &[
            ("8443", Some("0.0.0.0:8443")),
            ("*:443", Some("0.0.0.0:443")),
            ("[::]:8443", Some("[::]:8443")),
            ("192.0.2.1:8443", Some("192.0.2.1:8443")),
            ("192.0.2.1", Some("192.0.2.1:80")),
            ("[::1]", Some("[::1]:80")),
            ("localhost:8443", None),
            ("unix:/run/nginx.sock", None),
        ];
        for (arg, want) in rows {
            assert_eq!(listen_address(arg).as_deref(), *want, "{arg}");
        }
    }

    #[test]
    fn server_names() {
        let kept = |v: &[&str]| Name::Kept(v.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            server_name("registry.example.com"),
            kept(&["registry.example.com"])
        );
        assert_eq!(
            server_name("Registry.Example.com."),
            kept(&["registry.example.com"])
        );
        assert_eq!(server_name("192.0.2.12"), kept(&["192.0.2.12"]));
        assert_eq!(server_name("*.example.com"), kept(&["*.example.com"]));
        assert_eq!(
            server_name(".example.com"),
            kept(&["example.com", "*.example.com"])
        );
        for dropped in [
            "_",
            "",
            "~^reg\\d+\\.example\\.com$",
            "$hostname",
            "example.*",
            "a b",
        ] {
            assert!(
                matches!(server_name(dropped), Name::Dropped(_)),
                "{dropped:?}"
            );
        }
    }

    #[test]
    fn times() {
        let rows: &[(&str, Option<u64>)] = &[
            ("3600", Some(3_600_000)),
            ("900s", Some(900_000)),
            ("60m", Some(3_600_000)),
            ("1h", Some(3_600_000)),
            ("1m30s", Some(90_000)),
            ("1h 30m", Some(5_400_000)),
            ("500ms", Some(500)),
            ("1d", Some(86_400_000)),
            ("0", Some(0)),
            ("", None),
            ("ten", None),
            ("10x", None),
        ];
        for (text, want) in rows {
            let got = nginx_time(text).map(|d| d.as_millis() as u64);
            assert_eq!(got, *want, "{text:?}");
        }
    }

    #[test]
    fn durations_in_dockgate_units() {
        let rows: &[(u64, Option<&str>)] = &[
            (3_600_000, Some("1h")),
            (900_000, Some("15m")),
            (90_000, Some("90s")),
            (250, Some("250ms")),
            (0, None),
        ];
        for (ms, want) in rows {
            let got = dockgate_duration(Duration::from_millis(*ms));
            assert_eq!(got.as_deref(), *want, "{ms} ms");
        }
    }

    #[test]
    fn upstream_servers() {
        let rows: &[(&str, &str, &str, Result<&str, ()>)] = &[
            ("http", "192.0.2.11:9897", "", Ok("http://192.0.2.11:9897")),
            ("http", "nexus", "", Ok("http://nexus")),
            ("https", "nexus", "", Ok("https://nexus:80")),
            ("https", "[2001:db8::1]", "", Ok("https://[2001:db8::1]:80")),
            (
                "https",
                "nexus:8443",
                "/repository/hosted",
                Ok("https://nexus:8443/repository/hosted"),
            ),
            ("http", "unix:/run/nexus.sock", "", Err(())),
            ("http", "$backend", "", Err(())),
        ];
        for (scheme, address, path, want) in rows {
            let got = upstream_server(scheme, address, path).map_err(|_| ());
            assert_eq!(got.as_deref(), want.as_deref(), "{scheme} {address} {path}");
        }
    }
}
