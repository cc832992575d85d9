//! Where a Bearer token realm sends clients, judged as `headers::rewrite_response` treats it:
//! a realm on an upstream's origin becomes dockgate's public origin, any other is passed on
//! as is and must be reachable from every docker host.

use std::net::IpAddr;

use crate::config::UpstreamUrl;

/// Where a realm points, as far as a docker host is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Realm {
    /// `/v2/token`: the same origin, which clients reach through dockgate.
    Relative,
    /// On this upstream's origin: dockgate rewrites it.
    Upstream(String),
    /// Another origin with a public-looking name: clients go there themselves.
    Public(String),
    /// Another origin that looks internal (private address, a name without a domain), and why.
    Internal(String, &'static str),
    /// Another origin on loopback: only this host reaches it.
    Loopback(String),
    Invalid,
}

/// Judges `realm` against the configured upstream servers.
pub fn judge(realm: &str, origins: &[&UpstreamUrl]) -> Realm {
    if realm.starts_with('/') && !realm.starts_with("//") {
        return Realm::Relative;
    }
    let Some((scheme, rest)) = realm.split_once("://") else {
        return Realm::Invalid;
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Realm::Invalid;
    }
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if let Some(up) = origins
        .iter()
        .find(|u| u.authority.as_str().eq_ignore_ascii_case(authority))
    {
        return Realm::Upstream(up.to_string());
    }
    let host = host_of(authority).to_ascii_lowercase();
    if host.is_empty() {
        return Realm::Invalid;
    }
    let owned = authority.to_string();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return match ip {
            ip if ip.is_loopback() || ip.is_unspecified() => Realm::Loopback(owned),
            IpAddr::V4(v4) if v4.is_private() || v4.is_link_local() => {
                Realm::Internal(owned, "a private address")
            }
            IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => {
                Realm::Internal(owned, "a private address")
            }
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => {
                Realm::Internal(owned, "a link-local address")
            }
            _ => Realm::Public(owned),
        };
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Realm::Loopback(owned);
    }
    let internal_suffixes = [
        ".local",
        ".internal",
        ".lan",
        ".svc",
        ".cluster.local",
        ".home.arpa",
    ];
    if !host.contains('.') || internal_suffixes.iter().any(|s| host.ends_with(s)) {
        return Realm::Internal(owned, "an internal name");
    }
    Realm::Public(owned)
}

/// The `realm="..."` parameter of a challenge.
pub fn param(challenge: &str) -> Option<&str> {
    let lower = challenge.to_ascii_lowercase();
    let start = lower.find("realm=\"")? + "realm=\"".len();
    let len = challenge[start..].find('"')?;
    Some(&challenge[start..start + len])
}

/// The host of an authority, without user info, port or IPv6 brackets.
fn host_of(authority: &str) -> &str {
    let after_user = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(inner) = after_user.strip_prefix('[') {
        return inner.split_once(']').map_or(inner, |(h, _)| h);
    }
    after_user.split_once(':').map_or(after_user, |(h, _)| h)
}
