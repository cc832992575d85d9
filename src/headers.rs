//! Pure header functions: hop-by-hop removal, the headers an upstream sees about the client,
//! and rewriting of upstream URLs in `Location`, `Link` and the `WWW-Authenticate` realm to
//! the public `https://host:port`.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::UpstreamUrl;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes the headers that describe one connection rather than the message (RFC 9110 section
/// 7.6.1), including any the `Connection` header names. Framing is re-done by hyper on each
/// side: `Content-Length` is kept, so a client's sized body stays sized upstream.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the few names a message has finds which are present (most have none, or
    // only `Connection`); a hashed removal of each possible name cost a tenth of a small GET's
    // header work (callgrind).
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let has = |name: &HeaderName| present[HOP_BY_HOP.iter().position(|h| *h == name).unwrap_or(0)];
    // A message with both is framed by Transfer-Encoding (RFC 9112 section 6.3); its
    // Content-Length is wrong, and passed on it would truncate the body on the other side.
    if has(&header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    if has(&header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            // A client must not be able to strip what the upstream needs to see framing right.
            if name != header::CONTENT_LENGTH {
                headers.remove(name);
            }
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(*name);
        }
    }
}

const HOP_BY_HOP: [&HeaderName; 9] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::TE,
    &header::TRAILER,
    &header::TRANSFER_ENCODING,
    &header::UPGRADE,
];

/// What the upstream is told about the request's origin.
pub struct Forwarded<'a> {
    pub client_ip: IpAddr,
    /// The `host[:port]` the client used.
    pub public: &'a str,
    pub public_port: u16,
    /// `Some(upstream authority)` when the config asks for the upstream's own Host.
    pub upstream_host: Option<&'a str>,
    pub forwarded_host: bool,
}

/// Sets `Host`, `X-Forwarded-Proto`, `X-Forwarded-For`, `X-Real-IP` and, when configured,
/// `X-Forwarded-Host`/`X-Forwarded-Port`. Client-sent `X-Forwarded-Host`/`-Port` are dropped
/// otherwise: registries build URLs from them.
pub fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded<'_>) {
    let host = f.upstream_host.unwrap_or(f.public);
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("https"));
    let ip = f.client_ip.to_string();
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {ip}"),
        _ => ip.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&ip) {
        headers.insert(X_REAL_IP.clone(), v);
    }
    headers.remove(&X_FORWARDED_HOST);
    headers.remove(&X_FORWARDED_PORT);
    if f.forwarded_host {
        let bare = host_without_port(f.public);
        if let Ok(v) = HeaderValue::from_str(bare) {
            headers.insert(X_FORWARDED_HOST.clone(), v);
        }
        headers.insert(X_FORWARDED_PORT.clone(), HeaderValue::from(f.public_port));
    }
}

fn host_without_port(authority: &str) -> &str {
    if let Some(end) = authority.strip_prefix('[').and_then(|r| r.find(']')) {
        return &authority[..end + 2];
    }
    match authority.rfind(':') {
        Some(i) if authority[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &authority[..i],
        _ => authority,
    }
}

/// Rewrites URLs in an upstream's response that point at any upstream's origin (and base
/// path) to the public origin. containerd follows a foreign upload host and drops its
/// credentials on the way, and an internal port is unreachable from clients anyway.
pub fn rewrite_response(
    headers: &mut HeaderMap,
    upstreams: &[UpstreamUrl],
    served_by: &UpstreamUrl,
    public: &str,
) {
    let rw = Rewriter {
        upstreams,
        served_by,
        public,
    };
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(new) = headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| rw.url(v))
        {
            if let Ok(v) = HeaderValue::from_str(&new) {
                headers.insert(name, v);
            }
        }
    }
    rewrite_all(headers, header::LINK, |v| rw.link(v));
    rewrite_all(headers, header::WWW_AUTHENTICATE, |v| rw.realm(v));
}

fn rewrite_all(headers: &mut HeaderMap, name: HeaderName, f: impl Fn(&str) -> Option<String>) {
    if !headers.contains_key(&name) {
        return;
    }
    let values: Vec<HeaderValue> = headers.get_all(&name).iter().cloned().collect();
    let mut changed = false;
    let new: Vec<HeaderValue> = values
        .into_iter()
        .map(|v| {
            match v
                .to_str()
                .ok()
                .and_then(&f)
                .and_then(|s| HeaderValue::from_str(&s).ok())
            {
                Some(nv) => {
                    changed = true;
                    nv
                }
                None => v,
            }
        })
        .collect();
    if changed {
        headers.remove(&name);
        for v in new {
            headers.append(name.clone(), v);
        }
    }
}

struct Rewriter<'a> {
    upstreams: &'a [UpstreamUrl],
    served_by: &'a UpstreamUrl,
    public: &'a str,
}

impl Rewriter<'_> {
    /// `Some(new)` when `url` points at an upstream (or at the public host over plain http).
    fn url(&self, url: &str) -> Option<String> {
        if url.starts_with('/') && !url.starts_with("//") {
            // Relative: only the serving upstream's base path needs to come off.
            let rest = strip_base(url, &self.served_by.base_path)?;
            return Some(rest.to_string());
        }
        let (scheme, after) = url.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let auth_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, rest) = after.split_at(auth_end);
        for up in self.upstreams {
            if authority.eq_ignore_ascii_case(up.authority.as_str()) {
                let rest = strip_base(rest, &up.base_path).unwrap_or(rest);
                return Some(format!("https://{}{}", self.public, rest));
            }
        }
        if scheme.eq_ignore_ascii_case("http") && authority.eq_ignore_ascii_case(self.public) {
            return Some(format!("https://{}{}", self.public, rest));
        }
        None
    }

    /// `<url>; rel="next"` (possibly several, comma-separated).
    fn link(&self, value: &str) -> Option<String> {
        let mut out = String::with_capacity(value.len() + 16);
        let mut rest = value;
        let mut changed = false;
        while let Some(open) = rest.find('<') {
            let Some(close) = rest[open..].find('>') else {
                break;
            };
            let target = &rest[open + 1..open + close];
            out.push_str(&rest[..=open]);
            match self.url(target) {
                Some(new) => {
                    changed = true;
                    out.push_str(&new);
                }
                None => out.push_str(target),
            }
            out.push('>');
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        changed.then_some(out)
    }

    /// `Bearer realm="http://nexus:8083/v2/token",service="..."`.
    fn realm(&self, value: &str) -> Option<String> {
        let lower = value.to_ascii_lowercase();
        let start = lower.find("realm=\"")? + "realm=\"".len();
        let len = value[start..].find('"')?;
        let new = self.url(&value[start..start + len])?;
        Some(format!(
            "{}{}{}",
            &value[..start],
            new,
            &value[start + len..]
        ))
    }
}

/// `path` without the leading `base` when it starts with it by whole segments.
fn strip_base<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    if base.is_empty() {
        return None;
    }
    let rest = path.strip_prefix(base)?;
    match rest.as_bytes().first() {
        None => Some("/"),
        Some(b'/') => Some(rest),
        Some(b'?') | Some(b'#') => None,
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_upstream;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_go_and_the_rest_stays() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret, content-length"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("content-length", "10"),
            ("docker-content-digest", "sha256:ab"),
            ("docker-upload-uuid", "u"),
            ("range", "0-9"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        // With Transfer-Encoding beside it, Content-Length is wrong (RFC 9112 section 6.3).
        assert_eq!(
            left,
            ["docker-content-digest", "docker-upload-uuid", "range"]
        );
        let mut sized = map(&[("connection", "content-length"), ("content-length", "10")]);
        strip_hop_by_hop(&mut sized);
        assert_eq!(
            sized[header::CONTENT_LENGTH],
            "10",
            "a sized body stays sized"
        );
        // Each kind alone is found by the first pass, and a message without any is untouched.
        for name in [
            "proxy-authorization",
            "proxy-connection",
            "trailer",
            "te",
            "proxy-authenticate",
        ] {
            let mut one = map(&[(name, "x"), ("range", "0-9")]);
            strip_hop_by_hop(&mut one);
            assert!(!one.contains_key(name), "{name}");
            assert!(one.contains_key("range"));
        }
        let mut none = map(&[("range", "0-9"), ("content-length", "3")]);
        strip_hop_by_hop(&mut none);
        assert_eq!(none.len(), 2);
    }

    #[test]
    fn forwarded_headers() {
        let mut h = map(&[
            ("host", "evil"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-host", "spoofed"),
        ]);
        let f = Forwarded {
            client_ip: "192.0.2.7".parse().unwrap(),
            public: "registry.example.com:8443",
            public_port: 8443,
            upstream_host: None,
            forwarded_host: false,
        };
        set_forwarded(&mut h, &f);
        assert_eq!(h["host"], "registry.example.com:8443");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert!(!h.contains_key("x-forwarded-host"));
        assert!(!h.contains_key("x-forwarded-port"));

        let mut h = HeaderMap::new();
        set_forwarded(
            &mut h,
            &Forwarded {
                upstream_host: Some("nexus:8082"),
                forwarded_host: true,
                public: "[::1]:8443",
                ..f
            },
        );
        assert_eq!(h["host"], "nexus:8082");
        assert_eq!(h["x-forwarded-host"], "[::1]");
        assert_eq!(h["x-forwarded-port"], "8443");
    }

    #[test]
    fn upstream_urls_become_public() {
        let put = parse_upstream("http://nexus:8081/repository/docker-hosted").unwrap();
        let get = parse_upstream("http://nexus:8083").unwrap();
        let ups = [put.clone(), get.clone()];
        let public = "registry.example.com:8443";
        let mut h = map(&[
            (
                "location",
                "http://nexus:8081/repository/docker-hosted/v2/a/blobs/uploads/u?_state=x",
            ),
            (
                "link",
                "<http://NEXUS:8083/v2/_catalog?last=a&n=1>; rel=\"next\"",
            ),
            (
                "www-authenticate",
                "Bearer realm=\"http://nexus:8083/v2/token\",service=\"nexus\"",
            ),
        ]);
        rewrite_response(&mut h, &ups, &put, public);
        assert_eq!(
            h["location"],
            "https://registry.example.com:8443/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(
            h["link"],
            "<https://registry.example.com:8443/v2/_catalog?last=a&n=1>; rel=\"next\""
        );
        assert_eq!(
            h["www-authenticate"],
            "Bearer realm=\"https://registry.example.com:8443/v2/token\",service=\"nexus\""
        );

        // Relative, with the serving upstream's base path; the public host over plain http;
        // and a foreign URL that must stay as it is.
        let mut h = map(&[("location", "/repository/docker-hosted/v2/a/blobs/uploads/u")]);
        rewrite_response(&mut h, &ups, &put, public);
        assert_eq!(h["location"], "/v2/a/blobs/uploads/u");
        let mut h = map(&[("location", "http://registry.example.com:8443/v2/x")]);
        rewrite_response(&mut h, &ups, &get, public);
        assert_eq!(h["location"], "https://registry.example.com:8443/v2/x");
        let mut h = map(&[("location", "https://s3.example.org/bucket/blob?sig=1")]);
        rewrite_response(&mut h, &ups, &get, public);
        assert_eq!(h["location"], "https://s3.example.org/bucket/blob?sig=1");
        let mut h = map(&[("location", "/v2/a/blobs/uploads/u")]);
        rewrite_response(&mut h, &ups, &get, public);
        assert_eq!(h["location"], "/v2/a/blobs/uploads/u");
    }
}
