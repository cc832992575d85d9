//! How an nginx server split requests between upstreams (`set $upstream` and `if
//! ($request_method ...)`, `location /v2`, `proxy_pass`), read back as dockgate's put, get and
//! web: the rewrite directives are run (`rewrite`) for a push and a pull, and the upstream each
//! ends at takes that role. Every directive read here gets a note.

use std::collections::BTreeMap;

use super::notes::{Note, Slot};
use super::rewrite::{self, PULL, PUSH};
use super::tokenizer::{Directive, Word};
use super::values::{upstream_server, upstream_url};

/// The upstream blocks of the file, by name.
pub type Upstreams<'a> = BTreeMap<&'a str, &'a Directive>;

/// Which requests a `location` takes, as far as routing a registry goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// `location /`: everything no other location takes.
    Root,
    /// `location /v2` (or `/v2/`, `^~ /v2/`, `~ ^/v2`): the registry API.
    V2,
    /// `location /v1`: the old API, of which docker still uses `/v1/search`.
    V1,
    Other,
}

/// What a `location [modifier] path` takes.
pub fn location(args: &[Word]) -> Location {
    let (modifier, path) = match args {
        [path] => ("", path.text.as_str()),
        [m, path] => (m.text.as_str(), path.text.as_str()),
        _ => return Location::Other,
    };
    let prefix = match modifier {
        "" | "^~" => path,
        "~" | "~*" => match path.strip_prefix('^') {
            Some(p) => p,
            None => return Location::Other,
        },
        _ => return Location::Other,
    };
    let api = |v: &str| prefix == v || prefix.starts_with(&format!("{v}/"));
    if prefix == "/" && modifier != "~" && modifier != "~*" {
        Location::Root
    } else if api("/v2") {
        Location::V2
    } else if api("/v1") {
        Location::V1
    } else {
        Location::Other
    }
}

/// One location of the imported server: its `proxy_pass` and its own `set`s and `if`s.
#[derive(Debug)]
pub struct Pass<'a> {
    pub location: Location,
    pub proxy_pass: Option<&'a Directive>,
    pub rewrites: Vec<&'a Directive>,
}

/// What the routing of the imported server became.
#[derive(Debug, Default)]
pub struct Routes<'a> {
    pub put: Option<Target<'a>>,
    pub get: Option<Target<'a>>,
    pub web: Option<Target<'a>>,
}

/// Where a `proxy_pass` leads: its URLs, and the upstream block that listed them, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Target<'a> {
    pub urls: Vec<String>,
    pub block: Option<&'a Directive>,
}

/// Reads put, get and web from a server's server-level `set`s and `if`s and its locations,
/// noting each of those directives.
pub fn resolve<'a>(
    server_rewrites: &[&'a Directive],
    passes: &[Pass<'a>],
    upstreams: &Upstreams<'a>,
    notes: &mut Vec<Note>,
) -> Routes<'a> {
    let mut reading = Reading {
        upstreams,
        notes,
        noted: Vec::new(),
        routes: Routes::default(),
    };
    if let Some(pass) = passes
        .iter()
        .find(|p| p.proxy_pass.and_then(variable).is_some())
    {
        reading.by_variable(server_rewrites, pass);
    }
    reading.direct(passes);
    let all = passes
        .iter()
        .flat_map(|p| p.proxy_pass.iter().chain(&p.rewrites))
        .chain(server_rewrites);
    for d in all {
        reading.unused(d);
    }
    reading.routes
}

/// The reading in progress: the routes found so far, and the directives already noted.
struct Reading<'a, 'r> {
    upstreams: &'r Upstreams<'a>,
    notes: &'r mut Vec<Note>,
    noted: Vec<&'a Directive>,
    routes: Routes<'a>,
}

impl<'a> Reading<'a, '_> {
    fn note(&mut self, slot: Slot, d: &'a Directive, says: impl Into<String>) {
        self.notes.push(Note::new(slot, d, says));
        self.noted.push(d);
    }

    /// `proxy_pass http://$var`: the `set`s and `if`s, server's then location's as nginx runs
    /// them, decide where a push and a pull end.
    fn by_variable(&mut self, server_rewrites: &[&'a Directive], pass: &Pass<'a>) {
        let Some(pp) = pass.proxy_pass else { return };
        let Some((scheme, var)) = variable(pp) else {
            return;
        };
        let rewrites: Vec<&'a Directive> = server_rewrites
            .iter()
            .chain(&pass.rewrites)
            .copied()
            .collect();
        let put = rewrite::run(&rewrites, var, &PUSH);
        let get = rewrite::run(&rewrites, var, &PULL);
        let resolved = |name: &Option<String>| {
            name.as_deref()
                .and_then(|n| target(scheme, n, Location::Root, self.upstreams).ok())
        };
        self.routes.put = resolved(&put);
        self.routes.get = resolved(&get);
        if self.routes.put.is_none() || self.routes.get.is_none() {
            self.note(
                Slot::Unknown,
                pp,
                format!(
                    "could not tell which upstream ${var} names for a push and which for a \
                     pull; set upstreams.put and upstreams.get by hand"
                ),
            );
            for d in rewrites {
                self.note(
                    Slot::Unknown,
                    d,
                    "part of the routing above, which was not understood",
                );
            }
            return;
        }
        self.note(
            Slot::Routing,
            pp,
            format!(
                "proxy_pass to ${var}, which the set and if directives point at a push or a \
                 pull upstream: put and get below, chosen per request by the routing table"
            ),
        );
        for d in &rewrites {
            let note = rewrite::note(d, var, put.as_deref(), get.as_deref(), &rewrites);
            self.notes.push(note);
            self.noted.push(d);
        }
    }

    /// `proxy_pass URL` by location: `/v2` gives put and get, `/v1` should agree, and `/`
    /// gives web, or put and get when nothing else did.
    fn direct(&mut self, passes: &[Pass<'a>]) {
        let direct = |kind: Location| {
            passes
                .iter()
                .filter(move |p| p.location == kind)
                .filter_map(|p| p.proxy_pass)
                .filter(|pp| split_url(pp).is_some() && variable(pp).is_none())
        };
        if let (Some(pp), None) = (direct(Location::V2).next(), &self.routes.put) {
            match pass_target(pp, Location::V2, self.upstreams) {
                Ok(t) => {
                    self.note(
                        Slot::Put,
                        pp,
                        "location /v2: nginx sent every registry request here; dockgate splits \
                         them by the routing table, and both put and get are this upstream. A \
                         Nexus group repository's connector as get would also pull what its \
                         proxies hold",
                    );
                    self.routes.get = Some(t.clone());
                    self.routes.put = Some(t);
                }
                Err(why) => self.note(Slot::Unknown, pp, why),
            }
        }
        for pp in direct(Location::V1) {
            let same = pass_target(pp, Location::V1, self.upstreams)
                .ok()
                .is_some_and(|t| Some(&t) == self.routes.put.as_ref());
            if same {
                let says = "location /v1: the put upstream too; dockgate sends /v1/search there";
                self.note(Slot::Put, pp, says);
            } else {
                let says = "location /v1 to an upstream other than put: dockgate sends \
                            /v1/search to put, other /v1 paths to get";
                self.note(Slot::Unknown, pp, says);
            }
        }
        for pp in direct(Location::Root) {
            let target = pass_target(pp, Location::Root, self.upstreams);
            match (target, self.routes.put.is_some()) {
                (Ok(t), true) if self.routes.web.is_none() => {
                    self.note(
                        Slot::Web,
                        pp,
                        "location /: every path outside /v1 and /v2 (the Nexus UI and REST \
                         API) goes to web",
                    );
                    self.routes.web = Some(t);
                }
                (Ok(t), false) => {
                    self.note(
                        Slot::Put,
                        pp,
                        "location /: nginx sent every request here; dockgate splits them by \
                         the routing table, and both put and get are this upstream",
                    );
                    self.routes.get = Some(t.clone());
                    self.routes.put = Some(t);
                }
                (Ok(_), true) => self.note(Slot::Unknown, pp, "a second location /: not imported"),
                (Err(why), _) => self.note(Slot::Unknown, pp, why),
            }
        }
    }

    /// A `proxy_pass`, `set` or `if` that took no part in the routing read above.
    fn unused(&mut self, d: &'a Directive) {
        if self.noted.iter().any(|n| std::ptr::eq(*n, d)) {
            return;
        }
        let says = if d.name == "if" {
            "not imported: dockgate has no conditions of its own; its routing table decides \
             where a request goes, and a [[rules]] entry can route by method and path"
        } else {
            "not imported: dockgate's routing table decides where a request goes; a [[rules]] \
             entry can change that"
        };
        self.note(Slot::Unknown, d, says);
    }
}

/// `proxy_pass http://$var` (or `${var}`): the scheme and the variable's name.
fn variable(pp: &Directive) -> Option<(&str, &str)> {
    let (scheme, rest) = split_url(pp)?;
    let var = rest.strip_prefix('$')?;
    Some((scheme, var.trim_start_matches('{').trim_end_matches('}')))
}

/// Where a direct `proxy_pass URL` leads.
pub fn pass_target<'a>(
    pp: &Directive,
    location: Location,
    upstreams: &Upstreams<'a>,
) -> Result<Target<'a>, String> {
    let (scheme, rest) =
        split_url(pp).ok_or("proxy_pass needs an http:// or https:// URL".to_string())?;
    target(scheme, rest, location, upstreams)
}

fn split_url(pp: &Directive) -> Option<(&str, &str)> {
    let url = pp.args.first()?.text.as_str();
    url.strip_prefix("http://")
        .map(|r| ("http", r))
        .or_else(|| url.strip_prefix("https://").map(|r| ("https", r)))
}

/// `rest` (what follows `scheme://`) as an upstream block's servers, or as an address.
fn target<'a>(
    scheme: &str,
    rest: &str,
    location: Location,
    upstreams: &Upstreams<'a>,
) -> Result<Target<'a>, String> {
    let (host, uri) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = base_path(uri, location).ok_or_else(|| {
        format!(
            "proxy_pass with the path {uri} replaces the location's; dockgate forwards the \
             whole request path (after an upstream's base path), so this does not carry over"
        )
    })?;
    let path = path.as_str();
    let Some(block) = upstreams.get(host) else {
        let url = upstream_url(&format!("{scheme}://{host}{path}"))
            .map_err(|why| format!("{rest}: {why}"))?;
        return Ok(Target {
            urls: vec![url],
            block: None,
        });
    };
    let mut urls = Vec::new();
    for server in block.block.iter().flatten().filter(|d| d.name == "server") {
        let Some(address) = server.args.first() else {
            continue;
        };
        if server.args.iter().any(|a| a.text == "down") {
            continue;
        }
        let url = upstream_server(scheme, &address.text, path)
            .map_err(|why| format!("upstream {host}: {}: {why}", address.text))?;
        urls.push(url);
    }
    if urls.is_empty() {
        return Err(format!("upstream {host} has no server dockgate can use"));
    }
    Ok(Target {
        urls,
        block: Some(block),
    })
}

/// dockgate's base path for a `proxy_pass` URI in `location`. nginx replaces the location's
/// prefix with the URI (`location /v2/ { proxy_pass http://n/v2/; }` keeps the path as it is);
/// dockgate puts a base path before the whole path. The two agree when the URI ends with the
/// prefix, and what comes before it is the base path.
fn base_path(uri: &str, location: Location) -> Option<String> {
    if uri.is_empty() {
        return Some(String::new());
    }
    let prefix = match location {
        Location::Root | Location::Other => "",
        Location::V2 => "/v2",
        Location::V1 => "/v1",
    };
    uri.trim_end_matches('/')
        .strip_suffix(prefix)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nginx::tokenizer::parse;

    /// (location, proxy_pass URI, dockgate's base path)
    #[test]
    fn base_paths() {
        let rows: &[(Location, &str, Option<&str>)] = &[
            (Location::Root, "", Some("")),
            (Location::Root, "/", Some("")),
            (
                Location::Root,
                "/repository/docker/",
                Some("/repository/docker"),
            ),
            (Location::V2, "", Some("")),
            (Location::V2, "/v2/", Some("")),
            (
                Location::V2,
                "/repository/docker/v2",
                Some("/repository/docker"),
            ),
            (Location::V2, "/", None),
            (Location::V1, "/v2/", None),
        ];
        for (location, uri, want) in rows {
            assert_eq!(
                base_path(uri, *location).as_deref(),
                *want,
                "{location:?} {uri}"
            );
        }
    }

    #[test]
    fn locations() {
        let rows: &[(&str, Location)] = &[
            ("location / {}", Location::Root),
            ("location ^~ / {}", Location::Root),
            ("location = / {}", Location::Other),
            ("location /v2 {}", Location::V2),
            ("location /v2/ {}", Location::V2),
            ("location ^~ /v2/ {}", Location::V2),
            ("location ~ ^/v2/ {}", Location::V2),
            ("location /v1 {}", Location::V1),
            ("location /v20 {}", Location::Other),
            ("location ~ /v2 {}", Location::Other),
            ("location /static {}", Location::Other),
        ];
        for (text, want) in rows {
            let d = parse(text).expect("parses");
            assert_eq!(location(&d[0].args), *want, "{text}");
        }
    }
}
