//! Pure decisions on what a request may be before it goes anywhere: its method, the size of
//! its target, its `Host`, and the headers an upstream must not see. An edge proxy refuses
//! these as nginx does, with a registry-style error, before any upstream is contacted.

use http::header::{self, HeaderMap, HeaderName};
use http::{Method, StatusCode, Version};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the {0} method is not allowed here")]
    Method(String),
    #[error("{0:?} is not a method: methods are upper case (GET, PUT, ...)")]
    LowercaseMethod(String),
    #[error("the request target is {len} bytes, over the limit of {max}")]
    UriTooLong { len: usize, max: usize },
    #[error("an HTTP/1.1 request needs a Host header")]
    NoHost,
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error("the :authority ({authority}) and Host ({host}) of the request differ")]
    AuthorityMismatch { authority: String, host: String },
    #[error("{0} is not a name this registry answers to")]
    UnknownHost(String),
    #[error("too many requests in flight; try again")]
    Busy,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::LowercaseMethod(_) => StatusCode::BAD_REQUEST,
            Refusal::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Refusal::NoHost | Refusal::DuplicateHost | Refusal::AuthorityMismatch { .. } => {
                StatusCode::BAD_REQUEST
            }
            Refusal::UnknownHost(_) => StatusCode::MISDIRECTED_REQUEST,
            Refusal::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The distribution-spec code docker prints beside the message.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Method(_) | Refusal::LowercaseMethod(_) => "UNSUPPORTED",
            Refusal::UriTooLong { .. } => "NAME_INVALID",
            Refusal::NoHost
            | Refusal::DuplicateHost
            | Refusal::AuthorityMismatch { .. }
            | Refusal::UnknownHost(_) => "DENIED",
            Refusal::Busy => "TOOMANYREQUESTS",
        }
    }
}

/// What `check` needs from the config.
pub struct Policy {
    pub max_uri_bytes: usize,
    /// Names (lower case, no port) a `Host` may carry; empty: any.
    pub allowed_hosts: Vec<String>,
}

/// Checks a request's method, target and host.
pub fn check(
    policy: &Policy,
    method: &Method,
    uri: &http::Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    match *method {
        Method::GET
        | Method::HEAD
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::OPTIONS => {}
        // CONNECT would tunnel, TRACE would echo credentials back (RFC 9110 section 9.3.8).
        _ if method.as_str().bytes().any(|b| b.is_ascii_lowercase()) => {
            return Err(Refusal::LowercaseMethod(method.to_string()))
        }
        _ => return Err(Refusal::Method(method.to_string())),
    }
    let len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if len > policy.max_uri_bytes {
        return Err(Refusal::UriTooLong {
            len,
            max: policy.max_uri_bytes,
        });
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::DuplicateHost);
    }
    let authority = match (uri.authority(), host) {
        (Some(a), Some(h)) => {
            if !a.as_str().as_bytes().eq_ignore_ascii_case(h.as_bytes()) {
                return Err(Refusal::AuthorityMismatch {
                    authority: a.to_string(),
                    host: String::from_utf8_lossy(h.as_bytes()).into_owned(),
                });
            }
            a.as_str().to_string()
        }
        (Some(a), None) => a.as_str().to_string(),
        (None, Some(h)) => String::from_utf8_lossy(h.as_bytes()).into_owned(),
        (None, None) if version == Version::HTTP_11 => return Err(Refusal::NoHost),
        // HTTP/1.0 may omit Host; the first configured hostname stands in.
        (None, None) => return Ok(()),
    };
    if !policy.allowed_hosts.is_empty() {
        let name = host_name(&authority).to_ascii_lowercase();
        if !policy.allowed_hosts.iter().any(|h| *h == name) {
            return Err(Refusal::UnknownHost(name));
        }
    }
    Ok(())
}

/// `host` of `host[:port]` or `[v6]:port`, without brackets.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// Drops header names that contain `_`: nginx ignores them by default, and a `X_Forwarded_For`
/// that some upstreams read as `X-Forwarded-For` would let a client forge what we set.
pub fn drop_underscored(headers: &mut HeaderMap) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, version: Version, hosts: &[&str]) -> Result<(), Refusal> {
        let policy = Policy {
            max_uri_bytes: 64,
            allowed_hosts: vec![],
        };
        strict(&policy, method, uri, version, hosts)
    }

    fn strict(
        policy: &Policy,
        method: &str,
        uri: &str,
        version: Version,
        hosts: &[&str],
    ) -> Result<(), Refusal> {
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(header::HOST, h.parse().unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        check(policy, &method, &uri.parse().unwrap(), version, &headers)
    }

    #[test]
    fn methods_targets_and_hosts() {
        let h11 = Version::HTTP_11;
        assert_eq!(req("GET", "/v2/", h11, &["r:1"]), Ok(()));
        assert!(matches!(
            req("TRACE", "/", h11, &["r"]),
            Err(Refusal::Method(_))
        ));
        assert!(matches!(
            req("CONNECT", "/", h11, &["r"]),
            Err(Refusal::Method(_))
        ));
        assert!(matches!(
            req("put", "/", h11, &["r"]),
            Err(Refusal::LowercaseMethod(_))
        ));
        assert!(matches!(
            req("Delete", "/", h11, &["r"]),
            Err(Refusal::LowercaseMethod(_))
        ));
        let long = format!("/v2/{}", "a".repeat(100));
        assert!(matches!(
            req("GET", &long, h11, &["r"]),
            Err(Refusal::UriTooLong { .. })
        ));
        assert_eq!(req("GET", "/", h11, &[]), Err(Refusal::NoHost));
        assert_eq!(req("GET", "/", Version::HTTP_10, &[]), Ok(()));
        assert_eq!(
            req("GET", "/", h11, &["a", "b"]),
            Err(Refusal::DuplicateHost)
        );
        assert!(matches!(
            req("GET", "https://a:1/v2/", Version::HTTP_2, &["b:1"]),
            Err(Refusal::AuthorityMismatch { .. })
        ));
        assert_eq!(
            req("GET", "https://a:1/v2/", Version::HTTP_2, &["A:1"]),
            Ok(())
        );
    }

    #[test]
    fn strict_hosts_allow_only_the_configured_names() {
        let policy = Policy {
            max_uri_bytes: 8192,
            allowed_hosts: vec!["registry.test".into(), "::1".into()],
        };
        let h11 = Version::HTTP_11;
        assert_eq!(
            strict(&policy, "GET", "/", h11, &["Registry.Test:8443"]),
            Ok(())
        );
        assert_eq!(strict(&policy, "GET", "/", h11, &["[::1]:8443"]), Ok(()));
        assert_eq!(
            strict(&policy, "GET", "/", h11, &["evil.example"]),
            Err(Refusal::UnknownHost("evil.example".into()))
        );
    }

    #[test]
    fn underscored_names_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x_forwarded_for", "1.2.3.4".parse().unwrap());
        h.insert("x-real-ip", "5.6.7.8".parse().unwrap());
        drop_underscored(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-real-ip"));
    }
}
