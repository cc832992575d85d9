//! A group: members with different content (a hosted registry, then a pull-through cache),
//! asked in order, as Nexus's group repository does: "the first match in the group ordering"
//! answers, and tag lists and the catalog are the union of every member's.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::GatewayError;
use crate::route::Reason;

use super::{Outgoing, Pool, Reply, ReplyBody, Upstream, Upstreams};

/// A 404 or 5xx body kept while the next member is asked; registries send a few hundred bytes.
const KEPT_BODY_LIMIT: usize = 64 * 1024;
/// One member's page of tags or repositories.
const PAGE_LIMIT: usize = 16 * 1024 * 1024;
/// A member whose `Link` pages never end is not followed forever.
const MAX_PAGES: usize = 1000;

/// Sends `out` to the members of `up` in order.
pub(super) async fn send<'a>(
    ups: &'a Upstreams,
    up: &'a Upstream,
    out: Outgoing,
) -> Result<Reply<'a>, GatewayError> {
    if out.method == Method::GET && matches!(out.reason, Reason::Tags | Reason::Catalog) {
        return union(ups, up, out).await;
    }
    if out.has_body() {
        // Only a user's rule sends a body to get; it goes to the first member that is up.
        let member = up
            .members
            .iter()
            .find(|m| m.any_up())
            .unwrap_or(&up.members[0]);
        return ups.send_pool(up, member, out, None).await;
    }
    let mut misses = Misses::default();
    for member in &up.members {
        if !member.any_up() {
            misses.failed(Err(super::no_healthy_server(up, member)));
            continue;
        }
        match ups.send_pool(up, member, out.replay(), None).await {
            Ok(reply) if reply.response.status() == StatusCode::NOT_FOUND => {
                misses.not_found(keep(reply).await);
            }
            Ok(reply) if reply.response.status().is_server_error() => {
                misses.failed(Ok(keep(reply).await));
            }
            Ok(reply) => return Ok(reply),
            Err(e) if e.is_upstream() => misses.failed(Err(e)),
            Err(e) => return Err(e),
        }
    }
    misses.verdict(up)
}

/// What the members that did not answer said, for when none did.
struct Misses<'a> {
    not_found: Option<Reply<'a>>,
    failure: Option<Result<Reply<'a>, GatewayError>>,
}

impl Default for Misses<'_> {
    fn default() -> Self {
        Misses {
            not_found: None,
            failure: None,
        }
    }
}

impl<'a> Misses<'a> {
    fn not_found(&mut self, reply: Reply<'a>) {
        self.not_found.get_or_insert(reply);
    }

    fn failed(&mut self, failure: Result<Reply<'a>, GatewayError>) {
        self.failure.get_or_insert(failure);
    }

    /// The first failure, else the first 404. A member that failed might have had it: "not
    /// found" would be a lie, so a failure wins.
    fn verdict(self, up: &Upstream) -> Result<Reply<'a>, GatewayError> {
        match (self.failure, self.not_found) {
            (Some(failure), _) => failure,
            (None, Some(not_found)) => Ok(not_found),
            (None, None) => Err(super::no_healthy_server(up, &up.members[0])),
        }
    }
}

/// Reads a small reply whole, so its connection goes back to the pool while the next member
/// is asked; a body over the limit is dropped (its headers still say what happened).
async fn keep(reply: Reply<'_>) -> Reply<'_> {
    let (parts, body) = reply.response.into_parts();
    let bytes = match body {
        ReplyBody::Full(b) => b,
        ReplyBody::Streamed(incoming) => Limited::new(incoming, KEPT_BODY_LIMIT)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default(),
    };
    let mut parts = parts;
    parts.headers.remove(header::TRANSFER_ENCODING);
    if parts.headers.contains_key(header::CONTENT_LENGTH) && !bytes.is_empty() {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, bytes.len().into());
    }
    Reply {
        response: Response::from_parts(parts, ReplyBody::Full(bytes)),
        server: reply.server,
    }
}

/// What a listing collects: tags of one repository, or the catalog's repositories.
struct Listing {
    /// The JSON key of the list.
    key: &'static str,
    /// `Some(name)` for tags: the response names the repository.
    name: Option<String>,
}

/// `GET /v2/<name>/tags/list` and `GET /v2/_catalog`: every member's list (all its `Link`
/// pages), merged, sorted lexically and paged by dockgate with the client's `n` and `last`,
/// with a `Link` of its own when more remain, as the distribution spec requires.
async fn union<'a>(
    ups: &'a Upstreams,
    up: &'a Upstream,
    out: Outgoing,
) -> Result<Reply<'a>, GatewayError> {
    let listing = match out.reason {
        Reason::Tags => Listing {
            key: "tags",
            name: out
                .path
                .strip_prefix("/v2/")
                .and_then(|p| p.strip_suffix("/tags/list"))
                .map(str::to_string),
        },
        _ => Listing {
            key: "repositories",
            name: None,
        },
    };
    let (n, last) = paging(out.query.as_deref());
    let mut all = BTreeSet::new();
    let mut answered = false;
    let mut misses = Misses::default();
    for member in &up.members {
        if !member.any_up() {
            misses.failed(Err(super::no_healthy_server(up, member)));
            continue;
        }
        match list_member(ups, up, member, &out, listing.key, &mut all).await {
            Ok(Listed::Done) => answered = true,
            Ok(Listed::NotFound(reply)) => misses.not_found(reply),
            // Credentials first: the client retries with a token and gets the union then.
            Ok(Listed::Refused(reply)) => return Ok(reply),
            Ok(Listed::Failed(reply)) => misses.failed(Ok(reply)),
            Err(e) if e.is_upstream() => misses.failed(Err(e)),
            Err(e) => return Err(e),
        }
    }
    if !answered {
        return misses.verdict(up);
    }
    if let Some(Err(e)) = &misses.failure {
        // Nexus's group lists what its reachable members have; so do we, and say so.
        tracing::warn!(upstream = up.name, error = %e, "a member failed; listing the others");
    }
    Ok(page(all, n, last.as_deref(), &listing, &out.path))
}

enum Listed<'a> {
    Done,
    NotFound(Reply<'a>),
    Refused(Reply<'a>),
    Failed(Reply<'a>),
}

/// Adds every page of one member's list to `all`.
async fn list_member<'a>(
    ups: &'a Upstreams,
    up: &'a Upstream,
    member: &'a Pool,
    out: &Outgoing,
    key: &str,
    all: &mut BTreeSet<String>,
) -> Result<Listed<'a>, GatewayError> {
    let mut query: Option<String> = None;
    let mut path = out.path.clone();
    for _ in 0..MAX_PAGES {
        let mut req = out.replay();
        req.path = path.clone();
        req.query = query.take();
        // A plain JSON body to read; the client's own encoding preferences do not apply.
        req.headers.remove(header::ACCEPT_ENCODING);
        let reply = ups.send_pool(up, member, req, None).await?;
        let status = reply.response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(Listed::NotFound(keep(reply).await));
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Ok(Listed::Refused(reply));
        }
        if !status.is_success() {
            return Ok(Listed::Failed(keep(reply).await));
        }
        let base = reply
            .server
            .map(|s| s.url.base_path.clone())
            .unwrap_or_default();
        let next = next_link(reply.response.headers(), &base);
        let body = match reply.response.into_body() {
            ReplyBody::Full(b) => b,
            ReplyBody::Streamed(incoming) => Limited::new(incoming, PAGE_LIMIT)
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default(),
        };
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if let Some(items) = json.get(key).and_then(|v| v.as_array()) {
            all.extend(items.iter().filter_map(|v| v.as_str()).map(str::to_string));
        }
        match next {
            Some((p, q)) => {
                path = p;
                query = q;
            }
            None => return Ok(Listed::Done),
        }
    }
    tracing::warn!(
        upstream = up.name,
        member = %member.describe(),
        "stopped following the list's Link pages after {MAX_PAGES}"
    );
    Ok(Listed::Done)
}

/// The path and query of a `Link: <url>; rel="next"`, with the member's base path taken off.
fn next_link(headers: &http::HeaderMap, base: &str) -> Option<(String, Option<String>)> {
    for value in headers.get_all(header::LINK) {
        let value = value.to_str().ok()?;
        for link in value.split(',') {
            let (url, params) = link.split_once(';')?;
            if !params.replace(' ', "").contains("rel=\"next\"") {
                continue;
            }
            let url = url.trim().trim_start_matches('<').trim_end_matches('>');
            let path_and_query = match url.split_once("://") {
                Some((_, after)) => &after[after.find('/')?..],
                None => url,
            };
            let path_and_query = path_and_query
                .strip_prefix(base)
                .filter(|_| !base.is_empty())
                .unwrap_or(path_and_query);
            return Some(match path_and_query.split_once('?') {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (path_and_query.to_string(), None),
            });
        }
    }
    None
}

/// `n` and `last` from the client's query.
fn paging(query: Option<&str>) -> (Option<usize>, Option<String>) {
    let mut n = None;
    let mut last = None;
    for pair in query.unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => n = v.parse().ok(),
            Some(("last", v)) => {
                last = Some(percent_decode_str(v).decode_utf8_lossy().into_owned())
            }
            _ => {}
        }
    }
    (n, last)
}

/// Characters of a tag or repository name that go into our `Link` as they are.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'/');

/// One page of the merged list: entries after `last`, at most `n`, with a `Link` to the next.
fn page<'a>(
    all: BTreeSet<String>,
    n: Option<usize>,
    last: Option<&str>,
    listing: &Listing,
    path: &str,
) -> Reply<'a> {
    let after: Vec<String> = match last {
        Some(last) => all.into_iter().filter(|t| t.as_str() > last).collect(),
        None => all.into_iter().collect(),
    };
    let (items, more) = match n {
        Some(n) if n < after.len() => (after[..n].to_vec(), true),
        _ => (after, false),
    };
    let mut json = serde_json::Map::new();
    if let Some(name) = &listing.name {
        json.insert("name".into(), name.clone().into());
    }
    json.insert(listing.key.into(), items.clone().into());
    let body = Bytes::from(serde_json::Value::Object(json).to_string());
    let mut resp = Response::new(ReplyBody::Full(body.clone()));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    h.insert(header::CONTENT_LENGTH, body.len().into());
    h.insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    if let (true, Some(n), Some(last)) = (more, n, items.last()) {
        let link = format!(
            "<{path}?n={n}&last={}>; rel=\"next\"",
            utf8_percent_encode(last, QUERY_VALUE)
        );
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.insert(header::LINK, v);
        }
    }
    Reply {
        response: resp,
        server: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(reply: Reply<'_>) -> (serde_json::Value, Option<String>) {
        let link = reply
            .response
            .headers()
            .get(header::LINK)
            .map(|v| v.to_str().unwrap().to_string());
        let ReplyBody::Full(b) = reply.response.into_body() else {
            panic!("a union is read whole")
        };
        (serde_json::from_slice(&b).unwrap(), link)
    }

    #[test]
    fn a_union_is_sorted_and_paged_with_a_link_of_its_own() {
        let all: BTreeSet<String> = ["b", "a", "10", "9", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let listing = Listing {
            key: "tags",
            name: Some("team/app".into()),
        };
        let path = "/v2/team/app/tags/list";
        let (json, link) = tags(page(all.clone(), None, None, &listing, path));
        assert_eq!(json["name"], "team/app");
        assert_eq!(json["tags"], serde_json::json!(["10", "9", "a", "b"]));
        assert_eq!(link, None);

        let (json, link) = tags(page(all.clone(), Some(2), None, &listing, path));
        assert_eq!(json["tags"], serde_json::json!(["10", "9"]));
        assert_eq!(
            link.as_deref(),
            Some("</v2/team/app/tags/list?n=2&last=9>; rel=\"next\"")
        );
        let (json, link) = tags(page(all, Some(2), Some("9"), &listing, path));
        assert_eq!(json["tags"], serde_json::json!(["a", "b"]));
        assert_eq!(link, None, "the last page has no Link");
    }

    #[test]
    fn member_links_lose_origin_and_base_path() {
        let mut h = http::HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static(
                "<http://nexus:8081/repository/g/v2/_catalog?last=b&n=100>; rel=\"next\"",
            ),
        );
        assert_eq!(
            next_link(&h, "/repository/g"),
            Some(("/v2/_catalog".into(), Some("last=b&n=100".into())))
        );
        let mut h = http::HeaderMap::new();
        h.insert(
            header::LINK,
            HeaderValue::from_static("</v2/_catalog?last=a%2Fb&n=1>; rel=\"next\""),
        );
        assert_eq!(
            next_link(&h, ""),
            Some(("/v2/_catalog".into(), Some("last=a%2Fb&n=1".into())))
        );
        assert_eq!(
            paging(Some("n=1&last=a%2Fb")),
            (Some(1), Some("a/b".into()))
        );
    }
}
