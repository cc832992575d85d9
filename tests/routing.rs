//! Each request reaches the upstream the README's routing table names, as seen by the
//! upstreams themselves (their access logs), including paths crafted to escape their route.

mod support;

use std::time::{Duration, Instant};

use support::{Gateway, Http, Registry};

/// Waits until `registry`'s access log has a line with `needle`, or panics naming `what`.
fn saw(registry: &Registry, needle: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !registry.log().lines().any(|l| l.contains(needle)) {
        assert!(
            Instant::now() < deadline,
            "{what}: no {needle:?} in:\n{}",
            registry.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn never_saw(registry: &Registry, needle: &str, what: &str) {
    assert!(
        !registry.log().lines().any(|l| l.contains(needle)),
        "{what}: {needle:?} should not be in:\n{}",
        registry.log()
    );
}

#[test]
fn requests_reach_the_upstream_the_table_names() {
    let put = Registry::start();
    let get = Registry::start();
    let web = Registry::start();
    let gw = Gateway::builder()
        .put(&put.url())
        .get(&get.url())
        .web(&web.url())
        .start();

    // Not a registry path: the Nexus UI and REST API, whatever the method.
    gw.request(Http::One, "GET", "/service/rest/v1/status");
    gw.request(Http::Two, "POST", "/service/extdirect");
    saw(&web, "\"GET /service/rest/v1/status", "UI read");
    saw(&web, "\"POST /service/extdirect", "UI write");

    // Pull side.
    gw.request(Http::One, "HEAD", "/v2/team/app/manifests/1.0");
    gw.request(Http::One, "GET", "/v2/team/app/tags/list");
    saw(&get, "\"HEAD /v2/team/app/manifests/1.0", "manifest HEAD");
    saw(&get, "\"GET /v2/team/app/tags/list", "tags");

    // Push side, including the blob check and the search a repository name cannot steer.
    let blob = "sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1";
    gw.request(Http::Two, "HEAD", &format!("/v2/team/app/blobs/{blob}"));
    gw.request(Http::One, "GET", "/v1/search?q=app");
    saw(
        &put,
        &format!("\"HEAD /v2/team/app/blobs/{blob}"),
        "blob check",
    );
    saw(&put, "\"GET /v1/search?q=app", "search");
    never_saw(&get, "/v1/search", "search");

    // A crafted path is forwarded as it was routed: normalised, to the upstream its final form
    // names, and nowhere else.
    gw.request(
        Http::One,
        "GET",
        "/v2/team/app/..%2F..%2F..%2Fv1/search?q=crafted",
    );
    saw(&put, "\"GET /v1/search?q=crafted", "crafted search");
    never_saw(&get, "crafted", "crafted search");
    never_saw(&web, "crafted", "crafted search");
    gw.request(Http::One, "GET", "//v2//search-api//tags/list");
    saw(
        &get,
        "\"GET /v2/search-api/tags/list",
        "a repository named search-api",
    );
    never_saw(&put, "search-api", "a repository named search-api");
}
