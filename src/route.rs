//! Which upstream a request goes to: path normalisation and `route()`, a pure function of
//! method, path and the user's rules. The test table at the bottom is the README's table.

use std::borrow::Cow;

use http::Method;

use crate::config::{Rule, Target};

/// The decision for one request, with the row of the table that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub target: Target,
    pub reason: Reason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The user's rule at this index (0-based) in the config.
    UserRule(usize),
    /// The token service's path (`upstreams.token`): the realm clients were sent to.
    Token,
    /// Not a registry path, and a web upstream (the Nexus UI and REST API) is configured.
    Web,
    /// `/v1/search`: only the hosted repository answers searches.
    Search,
    /// POST, PUT, PATCH, DELETE: pushes and deletes land where pushes land.
    Write,
    /// `POST /v2/<name>/blobs/uploads/`: a push starts an upload, or asks to mount a blob
    /// from another repository (`?mount=&from=`), which backfill can emulate.
    UploadStart,
    /// `PUT /v2/<name>/manifests/<ref>`: the push's last step, which backfill completes first.
    ManifestPush,
    /// `/v2/<name>/blobs/uploads/...`: an upload session lives on the put upstream, including
    /// the GET that asks for its status when resuming.
    Upload,
    /// `HEAD /v2/<name>/blobs/<digest>`: a push asks whether the layer is already where the
    /// push lands. The group would say yes for layers only its proxy has, and the manifest
    /// PUT then fails with "blob unknown".
    BlobCheck,
    /// GET/HEAD of a manifest: docker and containerd resolve tags with HEAD, so HEAD must see
    /// the group, like GET.
    Manifest,
    /// `GET /v2/<name>/tags/list`: a group answers with every member's tags.
    Tags,
    /// `GET /v2/_catalog`: a group answers with every member's repositories.
    Catalog,
    /// Any other read: blobs, `/v2/`, the token endpoint, other paths.
    Read,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::UserRule(_) => "rule",
            Reason::Token => "token",
            Reason::Web => "web",
            Reason::Search => "search",
            Reason::Write => "write",
            Reason::UploadStart => "upload-start",
            Reason::ManifestPush => "manifest-push",
            Reason::Upload => "upload",
            Reason::BlobCheck => "blob-check",
            Reason::Manifest => "manifest",
            Reason::Tags => "tags",
            Reason::Catalog => "catalog",
            Reason::Read => "read",
        }
    }
}

/// What `route` needs to know of the configured upstreams.
#[derive(Debug, Clone, Copy, Default)]
pub struct Configured<'a> {
    /// `upstreams.web` is set.
    pub web: bool,
    /// `upstreams.token`'s path (e.g. `/auth`), when set.
    pub token_path: Option<&'a str>,
}

/// Decides the upstream. `path` must already be normalised (see `normalize`).
pub fn route(method: &Method, path: &str, rules: &[Rule], configured: Configured<'_>) -> Route {
    for (i, rule) in rules.iter().enumerate() {
        if (rule.methods.is_empty() || rule.methods.contains(method)) && rule.path.is_match(path) {
            return Route {
                target: rule.upstream,
                reason: Reason::UserRule(i),
            };
        }
    }
    let v2 = under(path, "/v2");
    let v1 = under(path, "/v1");
    let is_write = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let (target, reason) = if configured.token_path.is_some_and(|t| under(path, t)) {
        (Target::Token, Reason::Token)
    } else if !v1 && !v2 && configured.web {
        (Target::Web, Reason::Web)
    } else if v1 && under(path, "/v1/search") {
        (Target::Put, Reason::Search)
    } else if is_write {
        let reason = match registry_resource(path) {
            Resource::Upload if *method == Method::POST && path.ends_with("/uploads/") => {
                Reason::UploadStart
            }
            Resource::Manifest if v2 && *method == Method::PUT => Reason::ManifestPush,
            _ => Reason::Write,
        };
        (Target::Put, reason)
    } else if !v2 {
        (Target::Get, Reason::Read)
    } else {
        match registry_resource(path) {
            Resource::Upload => (Target::Put, Reason::Upload),
            Resource::Blob if *method == Method::HEAD => (Target::Put, Reason::BlobCheck),
            Resource::Manifest if *method == Method::GET || *method == Method::HEAD => {
                (Target::Get, Reason::Manifest)
            }
            Resource::Tags => (Target::Get, Reason::Tags),
            Resource::Catalog => (Target::Get, Reason::Catalog),
            _ => (Target::Get, Reason::Read),
        }
    };
    Route { target, reason }
}

/// `path` is `prefix` or lies below it, by whole segments (`/v2x` is not under `/v2`).
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

enum Resource {
    Upload,
    Blob,
    Manifest,
    Tags,
    Catalog,
    Other,
}

/// Classifies `/v2/<name>/<kind>/...` from the end, since `<name>` has any number of
/// components (and may itself contain `blobs` or `manifests`).
fn registry_resource(path: &str) -> Resource {
    let rest = path.strip_prefix("/v2/").unwrap_or("");
    if rest == "_catalog" {
        return Resource::Catalog;
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    // `<name>/manifests/<reference>`: the name needs at least one segment.
    if n >= 3 && segs[n - 2] == "manifests" && !segs[n - 1].is_empty() {
        return Resource::Manifest;
    }
    // `<name>/blobs/uploads/` and `<name>/blobs/uploads/<uuid>`.
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Resource::Upload;
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        return Resource::Upload;
    }
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Resource::Tags;
    }
    // `<name>/blobs/<digest>`: a digest is `algorithm:hex`.
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1].contains(':') {
        return Resource::Blob;
    }
    Resource::Other
}

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadPath {
    #[error("the request target must be a path starting with '/'")]
    NotAPath,
    /// Jetty (Nexus) and Tomcat cut `;parameters` off path segments, so `/v2/..;/v1/search`
    /// would mean one upstream to dockgate and another to Nexus. Registry paths never hold
    /// one.
    #[error("a path cannot contain ';' (path parameters)")]
    Parameter,
}

/// Resolves what an upstream might resolve differently from us, so that the path we route on is
/// the path we forward: percent-encoded `/` and `.` are decoded, duplicate slashes collapsed and
/// `.`/`..` segments removed (RFC 3986 section 5.2.4; `..` above the root stays at the root).
/// A trailing slash is kept: Distribution tells `/blobs/uploads/` from `/blobs/uploads`.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAPath);
    }
    let encoded_semicolon = |p: &str| {
        p.as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'3' && w[2].eq_ignore_ascii_case(&b'b'))
    };
    if path.contains(';') || (path.contains('%') && encoded_semicolon(path)) {
        return Err(BadPath::Parameter);
    }
    let suspicious = path.contains("//") || path.contains("/.") || path.contains('%');
    if !suspicious {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_separators(path);
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = decoded.ends_with('/');
    for seg in decoded.split('/') {
        match seg {
            "" => {}
            "." => trailing = true,
            ".." => {
                out.pop();
                trailing = true;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    if decoded.ends_with('/') {
        trailing = true;
    }
    let mut normalized = String::with_capacity(decoded.len());
    for seg in &out {
        normalized.push('/');
        normalized.push_str(seg);
    }
    if trailing || normalized.is_empty() {
        normalized.push('/');
    }
    Ok(Cow::Owned(normalized))
}

/// Decodes `%2F` and `%2E` (either case), which upstreams may decode before routing. Other
/// escapes are left for the upstream to interpret.
fn decode_separators(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        match tail.get(1..3) {
            Some(h) if h.eq_ignore_ascii_case("2f") => {
                out.push('/');
                rest = &tail[3..];
            }
            Some(h) if h.eq_ignore_ascii_case("2e") => {
                out.push('.');
                rest = &tail[3..];
            }
            _ => {
                out.push('%');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    const D: &str = "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1";

    /// (method, path, web configured, expected upstream, reason) — the README's routing table.
    #[test]
    fn routing_table() {
        let blob = format!("/v2/library/alpine/blobs/{D}");
        let nested_blob = format!("/v2/team/app/blobs/{D}");
        let rows: Vec<(&str, &str, bool, Target, Reason)> = vec![
            (
                "PUT",
                "/v2/library/alpine/manifests/3.19",
                false,
                Target::Put,
                Reason::ManifestPush,
            ),
            (
                "POST",
                "/v2/library/alpine/blobs/uploads/",
                false,
                Target::Put,
                Reason::UploadStart,
            ),
            (
                "POST",
                "/v2/library/alpine/blobs/uploads",
                false,
                Target::Put,
                Reason::Write,
            ),
            (
                "PUT",
                "/v2/library/alpine/blobs/uploads/5c1e",
                false,
                Target::Put,
                Reason::Write,
            ),
            (
                "PATCH",
                "/v2/library/alpine/blobs/uploads/5c1e",
                false,
                Target::Put,
                Reason::Write,
            ),
            (
                "DELETE",
                "/v2/library/alpine/manifests/sha256:ab",
                false,
                Target::Put,
                Reason::Write,
            ),
            ("HEAD", &blob, false, Target::Put, Reason::BlobCheck),
            ("HEAD", &nested_blob, false, Target::Put, Reason::BlobCheck),
            ("GET", &blob, false, Target::Get, Reason::Read),
            (
                "GET",
                "/v2/library/alpine/blobs/uploads/5c1e",
                false,
                Target::Put,
                Reason::Upload,
            ),
            (
                "GET",
                "/v2/library/alpine/blobs/uploads/",
                false,
                Target::Put,
                Reason::Upload,
            ),
            (
                "GET",
                "/v2/library/alpine/manifests/latest",
                false,
                Target::Get,
                Reason::Manifest,
            ),
            (
                "HEAD",
                "/v2/library/alpine/manifests/latest",
                false,
                Target::Get,
                Reason::Manifest,
            ),
            (
                "HEAD",
                "/v2/a/blobs/manifests/latest",
                false,
                Target::Get,
                Reason::Manifest,
            ),
            ("GET", "/v1/search", false, Target::Put, Reason::Search),
            ("GET", "/v1/search/", false, Target::Put, Reason::Search),
            (
                "GET",
                "/v2/search-api/manifests/1",
                false,
                Target::Get,
                Reason::Manifest,
            ),
            (
                "GET",
                "/v2/search-api/tags/list",
                false,
                Target::Get,
                Reason::Tags,
            ),
            ("GET", "/v2/_catalog", false, Target::Get, Reason::Catalog),
            ("HEAD", "/v2/_catalog", false, Target::Get, Reason::Catalog),
            ("GET", "/v2/tags/list", false, Target::Get, Reason::Read),
            (
                "DELETE",
                "/v2/a/tags/list",
                false,
                Target::Put,
                Reason::Write,
            ),
            ("GET", "/v2/", false, Target::Get, Reason::Read),
            ("GET", "/v2/token", false, Target::Get, Reason::Read),
            ("GET", "/v1/_ping", false, Target::Get, Reason::Read),
            ("GET", "/", false, Target::Get, Reason::Read),
            ("GET", "/", true, Target::Web, Reason::Web),
            ("POST", "/service/extdirect", true, Target::Web, Reason::Web),
            (
                "POST",
                "/service/extdirect",
                false,
                Target::Put,
                Reason::Write,
            ),
            ("GET", "/v2x/foo", true, Target::Web, Reason::Web),
            (
                "GET",
                "/v2/library/alpine/manifests/latest",
                true,
                Target::Get,
                Reason::Manifest,
            ),
        ];
        for (method, path, web, target, reason) in rows {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            let r = route(&m, path, &[], with_web(web));
            assert_eq!(
                (r.target, r.reason),
                (target, reason),
                "{method} {path} web={web}"
            );
        }
    }

    fn with_web(web: bool) -> Configured<'static> {
        Configured {
            web,
            token_path: None,
        }
    }

    #[test]
    fn the_token_path_goes_to_the_token_service_before_web() {
        let c = Configured {
            web: true,
            token_path: Some("/auth"),
        };
        let r = route(&Method::GET, "/auth", &[], c);
        assert_eq!((r.target, r.reason), (Target::Token, Reason::Token));
        let r = route(&Method::GET, "/auth/token", &[], c);
        assert_eq!(r.target, Target::Token);
        let r = route(&Method::GET, "/authx", &[], c);
        assert_eq!((r.target, r.reason), (Target::Web, Reason::Web));
        let r = route(&Method::GET, "/v2/", &[], c);
        assert_eq!(r.target, Target::Get);
    }

    #[test]
    fn user_rules_come_first_and_first_match_wins() {
        let rules = vec![
            Rule {
                methods: vec![Method::GET, Method::HEAD],
                path: Regex::new("^(?:/v2/)").unwrap(),
                pattern: "/v2/".into(),
                upstream: Target::Get,
            },
            Rule {
                methods: vec![],
                path: Regex::new("^(?:/)").unwrap(),
                pattern: "/".into(),
                upstream: Target::Put,
            },
        ];
        let blob = format!("/v2/x/blobs/{D}");
        let r = route(&Method::HEAD, &blob, &rules, Configured::default());
        assert_eq!((r.target, r.reason), (Target::Get, Reason::UserRule(0)));
        let r = route(&Method::GET, "/other", &rules, Configured::default());
        assert_eq!((r.target, r.reason), (Target::Put, Reason::UserRule(1)));
    }

    #[test]
    fn normalisation() {
        let rows = [
            ("/v2/", "/v2/"),
            (
                "/v2/library/alpine/manifests/latest",
                "/v2/library/alpine/manifests/latest",
            ),
            (
                "//v2//library///alpine/blobs/uploads/",
                "/v2/library/alpine/blobs/uploads/",
            ),
            ("/v2/x/../../v1/search", "/v1/search"),
            ("/v2/x/./blobs/%2e%2E/manifests/1", "/v2/x/manifests/1"),
            ("/v2/a%2Fb/manifests/1", "/v2/a/b/manifests/1"),
            ("/v2/a%2fb%20c", "/v2/a/b%20c"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/v2/..", "/"),
            ("/v2/x/.", "/v2/x/"),
            ("/%", "/%"),
        ];
        for (raw, want) in rows {
            assert_eq!(normalize(raw).unwrap(), want, "{raw}");
        }
        assert_eq!(normalize("*"), Err(BadPath::NotAPath));
        assert_eq!(normalize("/v2/..;/v1/search"), Err(BadPath::Parameter));
        assert_eq!(normalize("/v2/x%3Bv/manifests/1"), Err(BadPath::Parameter));
    }

    #[test]
    fn crafted_paths_cannot_change_upstream() {
        // The seed's nginx matched `~ '/search'` as a substring; a segment match cannot be
        // steered by a repository name, and `..` cannot smuggle a search to the put side.
        let p = normalize("/v2/library/x/../../../v1/search").unwrap();
        assert_eq!(
            route(&Method::GET, &p, &[], Configured::default()).target,
            Target::Put
        );
        let p = normalize("/v2/search/manifests/latest").unwrap();
        assert_eq!(
            route(&Method::GET, &p, &[], Configured::default()).target,
            Target::Get
        );
    }
}
