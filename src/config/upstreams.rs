//! The `[upstreams]` values: one server (a URL), a pool (`{ servers = [...] }`, same content on
//! every server) or a group (`{ members = [...] }`, different content, asked in order), read
//! from TOML with every item's line kept, checked, and printed back in the same shape.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::parse::{parse_upstream, Ctx};
use super::{ConfigError, Target, UpstreamUrl};

/// One upstream as checked: an ordered list of members, each a pool of one or more servers
/// with the same content. One server is one member of one server; a pool is one member; a
/// group is several members. The request path treats all three alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub members: Vec<Vec<UpstreamUrl>>,
}

/// The shape a user wrote, for messages and `check-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Pool,
    Group,
}

impl UpstreamSpec {
    pub fn server(url: UpstreamUrl) -> UpstreamSpec {
        UpstreamSpec {
            members: vec![vec![url]],
        }
    }

    pub fn kind(&self) -> Kind {
        match self.members.as_slice() {
            [one] if one.len() == 1 => Kind::Server,
            [_] => Kind::Pool,
            _ => Kind::Group,
        }
    }

    /// Every server of every member, in order.
    pub fn servers(&self) -> impl Iterator<Item = &UpstreamUrl> {
        self.members.iter().flatten()
    }
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = |f: &mut fmt::Formatter<'_>, servers: &[UpstreamUrl]| -> fmt::Result {
            match servers {
                [one] => write!(f, "{one}"),
                many => {
                    let list: Vec<String> = many.iter().map(|s| s.to_string()).collect();
                    write!(f, "pool({})", list.join(" "))
                }
            }
        };
        match self.members.as_slice() {
            [one] => pool(f, one),
            members => {
                write!(f, "group(")?;
                for (i, m) in members.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    pool(f, m)?;
                }
                write!(f, ")")
            }
        }
    }
}

/// `check-config` prints what the user would write: a URL, `{ servers = [...] }` or
/// `{ members = [...] }`.
impl Serialize for UpstreamSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Pool<'a>(&'a [UpstreamUrl]);
        impl Serialize for Pool<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 {
                    [one] => s.collect_str(one),
                    many => {
                        let mut map = s.serialize_map(Some(1))?;
                        let list: Vec<String> = many.iter().map(|u| u.to_string()).collect();
                        map.serialize_entry("servers", &list)?;
                        map.end()
                    }
                }
            }
        }
        match self.members.as_slice() {
            [one] => Pool(one).serialize(s),
            members => {
                let mut map = s.serialize_map(Some(1))?;
                let list: Vec<Pool<'_>> = members.iter().map(|m| Pool(m)).collect();
                map.serialize_entry("members", &list)?;
                map.end()
            }
        }
    }
}

/// An upstream value as written. Read by hand rather than with `#[serde(untagged)]`, which
/// would lose the line of each item and answer "did not match any variant" to every mistake.
#[derive(Debug)]
pub(super) enum RawUpstream {
    Url(String),
    Table(RawTable),
}

#[derive(Debug, Default)]
pub(super) struct RawTable {
    servers: Option<Spanned<Vec<Spanned<String>>>>,
    members: Option<Spanned<Vec<Spanned<RawUpstream>>>>,
    /// Keys we do not know, reported by the checker with their own line.
    unknown: Vec<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawUpstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawUpstream;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a URL such as \"http://nexus:8082\", { servers = [...] } or { members = [...] }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawUpstream, E> {
                Ok(RawUpstream::Url(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawUpstream, A::Error> {
                let mut t = RawTable::default();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    match key.get_ref().as_str() {
                        "servers" => t.servers = Some(map.next_value()?),
                        "members" => t.members = Some(map.next_value()?),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                            t.unknown.push(key);
                        }
                    }
                }
                Ok(RawUpstream::Table(t))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a member may be a group itself, and what an upstream may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// `put`, `web`: one server or a pool; a group would split writes or pages across
    /// registries with different content.
    Single,
    /// `get`: anything.
    Any,
    /// Inside `members`: a URL or a pool.
    Member,
}

impl Ctx<'_> {
    /// Checks one `[upstreams]` value for `target`.
    pub(super) fn check_upstream(
        &self,
        target: Target,
        raw: &Spanned<RawUpstream>,
    ) -> Result<UpstreamSpec, ConfigError> {
        let key = format!("upstreams.{}", target.as_str());
        let level = if target == Target::Get {
            Level::Any
        } else {
            Level::Single
        };
        let spec = self.check_value(raw, &key, level)?;
        if target == Target::Token {
            for url in spec.servers() {
                let path = url.base_path.as_str();
                if path.is_empty()
                    || path == "/v2"
                    || path.starts_with("/v2/")
                    || path == "/v1"
                    || path.starts_with("/v1/")
                {
                    return Err(self.err(
                        raw,
                        &key,
                        format!(
                            "{url}: give the token service's own path, outside /v1 and /v2 \
                             (e.g. \"http://auth:5001/auth\"): requests to that path on the \
                             public host:port go to it, and its realm is rewritten to it"
                        ),
                    ));
                }
            }
        }
        Ok(spec)
    }

    fn check_value(
        &self,
        raw: &Spanned<RawUpstream>,
        key: &str,
        level: Level,
    ) -> Result<UpstreamSpec, ConfigError> {
        let table = match raw.get_ref() {
            RawUpstream::Url(s) => {
                let url = parse_upstream(s).map_err(|m| self.err(raw, key, m))?;
                return Ok(UpstreamSpec::server(url));
            }
            RawUpstream::Table(t) => t,
        };
        if let Some(k) = table.unknown.first() {
            return Err(self.err(
                k,
                &format!("{key}.{}", k.get_ref()),
                format!(
                    "unknown key `{}`, expected `servers` (a pool: the same content on every \
                     server) or `members` (a group: asked in order)",
                    k.get_ref()
                ),
            ));
        }
        match (&table.servers, &table.members) {
            (Some(_), Some(m)) => Err(self.err(
                m,
                key,
                "give `servers` (a pool) or `members` (a group), not both; a member of a group \
                 can be a pool: members = [\"http://a\", { servers = [\"http://b\", \"http://c\"] }]",
            )),
            (None, None) => Err(self.err(
                raw,
                key,
                "a table here needs `servers = [...]` (a pool) or `members = [...]` (a group)",
            )),
            (Some(servers), None) => {
                let key = format!("{key}.servers");
                if servers.get_ref().is_empty() {
                    return Err(self.err(servers, &key, "needs at least one server URL"));
                }
                let urls = servers
                    .get_ref()
                    .iter()
                    .map(|s| parse_upstream(s.get_ref()).map_err(|m| self.err(s, &key, m)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(UpstreamSpec {
                    members: vec![urls],
                })
            }
            (None, Some(members)) => {
                let key = format!("{key}.members");
                match level {
                    Level::Any => {}
                    Level::Single => {
                        return Err(self.err(
                            members,
                            &key,
                            "only get can be a group (members with different content asked in \
                             order); for several servers with the same content use \
                             `servers = [...]`",
                        ))
                    }
                    Level::Member => {
                        return Err(self.err(
                            members,
                            &key,
                            "a member of a group cannot be a group; list its members here instead",
                        ))
                    }
                }
                if members.get_ref().is_empty() {
                    return Err(self.err(members, &key, "needs at least one member"));
                }
                let mut out = Vec::with_capacity(members.get_ref().len());
                for m in members.get_ref() {
                    let spec = self.check_value(m, &key, Level::Member)?;
                    out.extend(spec.members);
                }
                Ok(UpstreamSpec { members: out })
            }
        }
    }
}

/// Adds the servers of `urls` (a repeated command-line flag) as one upstream: for `get` each
/// URL is a member of a group, asked in order; for the others, the servers of a pool.
pub fn from_flags(target: Target, urls: &[UpstreamUrl]) -> UpstreamSpec {
    if target == Target::Get {
        UpstreamSpec {
            members: urls.iter().map(|u| vec![u.clone()]).collect(),
        }
    } else {
        UpstreamSpec {
            members: vec![urls.to_vec()],
        }
    }
}

/// The `[upstreams]` table for `check-config`: each configured upstream, then `ca`.
pub(super) fn serialize_upstreams<S: Serializer>(
    u: &super::Upstreams,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(None)?;
    for (target, spec) in u.iter() {
        map.serialize_entry(target.as_str(), spec)?;
    }
    if let Some(ca) = &u.ca {
        map.serialize_entry("ca", &ca.path)?;
    }
    map.end()
}
