//! `get = { members = [hosted, cache] }`: dockgate itself is the group a Nexus would be. Members
//! are asked in order; the first answer that is neither a 404 nor a failure wins; a member that
//! is stopped or answers 5xx is skipped; tags lists are the union of every member's, paged by
//! the gateway. Real registries on loopback, no nginx; one fault stub for the 500s a healthy
//! registry will not give.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Gateway, Image, Location, Nexus, Registry, RegistryOptions, Reply, Skopeo};

#[test]
fn an_image_only_the_hub_has_pulls_and_one_sharing_its_layers_pushes_and_reads_back() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let base = Image::small("group-base");
    skopeo
        .copy(&base.layout(), &nexus.hub.image("library/base:1"))
        .expect_success();

    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("library/base:1"),
            &Location::oci(pulled.path(), "pulled"),
        )
        .expect_success();
    assert_eq!(
        Image::digest_in_layout(pulled.path()),
        base.manifest_digest(),
        "the hub's image, through the cache, the second member"
    );

    let app = Image::builder("group-app")
        .layers_from(&base)
        .layer(100 * 1024)
        .build();
    skopeo
        .copy(&app.layout(), &gateway.image("library/base:app"))
        .expect_success();
    assert_eq!(
        skopeo.manifest_digest(&gateway.image("library/base:app")),
        app.manifest_digest(),
        "read back through the group"
    );
    assert_eq!(
        skopeo.manifest_digest(&nexus.hosted.image("library/base:app")),
        app.manifest_digest(),
        "the push landed in hosted"
    );
    assert!(
        access_lines(&gateway, "/v2/library/base/manifests/app")
            .iter()
            .any(|l| l.contains("upstream=get") && l.contains(&server(&nexus.hosted))),
        "the read of the pushed tag names hosted as the server that answered:\n{}",
        gateway.log()
    );
}

/// docker's tag listing pages with `n` and follows `Link`; a group must page over the union,
/// since no member alone knows where the merged list continues.
#[test]
fn tags_list_is_the_union_of_the_members_sorted_and_paged_by_the_gateway() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let image = Image::small("tagged");
    for tag in ["a", "c"] {
        skopeo
            .copy(
                &image.layout(),
                &nexus.hosted.image(&format!("team/mixed:{tag}")),
            )
            .expect_success();
    }
    for tag in ["b", "c"] {
        skopeo
            .copy(
                &image.layout(),
                &nexus.hub.image(&format!("team/mixed:{tag}")),
            )
            .expect_success();
    }

    let all = gateway.get("/v2/team/mixed/tags/list");
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(all.json()["name"], "team/mixed");
    assert_eq!(
        all.json()["tags"],
        serde_json::json!(["a", "b", "c"]),
        "hosted's a and c, the hub's b and c, once each and sorted"
    );
    assert!(all.header("link").is_none(), "{:?}", all.header("link"));

    assert_eq!(
        gateway.pages("/v2/team/mixed/tags/list?n=1", "tags"),
        [["a"], ["b"], ["c"]],
        "n=1 pages through the union, and the last page has no Link"
    );

    let two = gateway.get("/v2/team/mixed/tags/list?n=2");
    assert_eq!(two.json()["tags"], serde_json::json!(["a", "b"]));
    let link = two.header("link").expect("a Link to the rest");
    assert_eq!(
        gateway.link_path(link),
        "/v2/team/mixed/tags/list?n=2&last=b"
    );
}

/// A member that refuses connections (a stopped hosted registry, the first member) is skipped:
/// the hub's images still pull. What only hosted has is an error while it is down, not "not
/// found", and is back once the health probe sees hosted again.
#[test]
fn a_stopped_member_is_skipped_and_comes_back() {
    let mut nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus)
        .toml("[health]\ninterval = \"1s\"")
        .start();
    let skopeo = Skopeo::new();
    let hub_image = Image::small("from-hub");
    skopeo
        .copy(&hub_image.layout(), &nexus.hub.image("library/hubbed:1"))
        .expect_success();
    let local = Image::small("only-hosted");
    skopeo
        .copy(&local.layout(), &nexus.hosted.image("team/local:1"))
        .expect_success();

    nexus.hosted.stop();
    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("library/hubbed:1"),
            &Location::oci(pulled.path(), "pulled"),
        )
        .expect_success();
    assert_eq!(
        Image::digest_in_layout(pulled.path()),
        hub_image.manifest_digest()
    );
    assert!(
        access_lines(&gateway, "/v2/library/hubbed/manifests/1")
            .iter()
            .any(|l| l.contains("status=200") && l.contains(&server(&nexus.cache))),
        "the cache answered:\n{}",
        gateway.log()
    );

    let missing = gateway.manifest("GET", "/v2/team/local/manifests/1");
    assert!(
        missing.status == 502 || missing.status == 504,
        "a member failed and none had it: the failure, not the cache's 404; got {} {}",
        missing.status,
        missing.text()
    );
    assert_eq!(missing.json()["errors"][0]["code"], "UNAVAILABLE");

    nexus.hosted.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let back = gateway.manifest("GET", "/v2/team/local/manifests/1");
        if back.status == 200 {
            assert_eq!(
                back.header("docker-content-digest"),
                Some(local.manifest_digest())
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "hosted's image still answers {} 10 s after hosted came back: {}",
            back.status,
            back.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fault stub: answers every request `500 Internal Server Error` with a registry-style JSON body
/// and closes the connection, as a Nexus with a broken blob store does; a healthy
/// `docker-registry` never answers 500 on purpose. Records each request line it gets.
struct ServerErrorUpstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl ServerErrorUpstream {
    fn start() -> ServerErrorUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the 500 upstream");
        let addr = listener.local_addr().expect("its address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let line = text.lines().next().unwrap_or_default().to_string();
                    let is_head = line.starts_with("HEAD ");
                    seen.lock().expect("lock").push(line);
                    let body = r#"{"errors":[{"code":"UNKNOWN","message":"stub: internal server error"}]}"#;
                    let mut reply = format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    if !is_head {
                        reply.push_str(body);
                    }
                    let _ = conn.write_all(reply.as_bytes());
                });
            }
        });
        ServerErrorUpstream { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request lines (`GET /v2/... HTTP/1.1`) it answered so far.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

/// A member that answers 500 is skipped like one that is down: pulls come from the next member.
#[test]
fn a_member_answering_500_is_skipped() {
    let hub = Registry::start();
    let cache = Registry::pull_through(&hub);
    let broken = ServerErrorUpstream::start();
    // Health checks would take the stub out after its first failures; with a threshold no test
    // reaches, every request asks it first, so this is the group skipping it on each request.
    let gateway = Gateway::builder()
        .put(&hub.url())
        .get_group(&[broken.url(), cache.url()])
        .toml("[health]\nfails = 1000")
        .start();
    let skopeo = Skopeo::new();
    let image = Image::small("behind-a-500");
    skopeo
        .copy(&image.layout(), &hub.image("library/app:1"))
        .expect_success();

    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("library/app:1"),
            &Location::oci(pulled.path(), "pulled"),
        )
        .expect_success();
    assert_eq!(
        Image::digest_in_layout(pulled.path()),
        image.manifest_digest()
    );
    assert!(
        broken
            .requests()
            .iter()
            .any(|r| r.contains("/v2/library/app/manifests/")),
        "the 500 member was asked first: {:?}",
        broken.requests()
    );
}

/// When no member succeeds and one failed, the client gets the first failure, never a later
/// member's 404 (the failing member may well have had it): a refused connection as a JSON 502
/// that docker prints, a member's 5xx as that member answered it.
#[test]
fn when_no_member_succeeds_the_client_gets_the_first_failure() {
    let broken = ServerErrorUpstream::start();
    let empty = Registry::start();
    let refused = support::free_addr();
    let gateway = Gateway::builder()
        .put(&empty.url())
        .get_group(&[format!("http://{refused}"), broken.url()])
        .toml("[health]\nfails = 1000")
        .start();
    let reply = gateway.manifest("GET", "/v2/library/app/manifests/1");
    assert_registry_error(&reply, 502, &refused.to_string());

    let gateway = Gateway::builder()
        .put(&empty.url())
        .get_group(&[broken.url(), empty.url()])
        .toml("[health]\nfails = 1000")
        .start();
    let reply = gateway.manifest("GET", "/v2/library/app/manifests/1");
    assert_eq!(
        reply.status,
        500,
        "the 500 member's answer, not the empty registry's 404: {}",
        reply.text()
    );
    assert_eq!(
        reply.json()["errors"][0]["message"],
        "stub: internal server error"
    );
    assert!(
        empty.log().contains("/v2/library/app/manifests/1"),
        "the second member was asked:\n{}",
        empty.log()
    );
}

/// Every member says 404: the client gets the first member's 404, as docker needs to print
/// "manifest unknown" rather than an outage.
#[test]
fn when_every_member_says_404_the_client_gets_the_first_404() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();

    let reply = gateway.manifest("GET", "/v2/library/nothing/manifests/1");
    assert_eq!(reply.status, 404, "{}", reply.text());
    let code = reply.json()["errors"][0]["code"].clone();
    assert!(
        code.as_str().is_some_and(|c| c.ends_with("_UNKNOWN")),
        "a registry's own 404 body: {}",
        reply.text()
    );
    let head = gateway.manifest("HEAD", "/v2/library/nothing/manifests/1");
    assert_eq!(head.status, 404);
    assert!(
        nexus
            .cache
            .log()
            .contains("/v2/library/nothing/manifests/1"),
        "the second member was asked too:\n{}",
        nexus.cache.log()
    );
    assert!(
        access_lines(&gateway, "/v2/library/nothing/manifests/1")
            .iter()
            .all(|l| l.contains("status=404") && l.contains(&server(&nexus.hosted))),
        "the 404 is hosted's, the first member's:\n{}",
        gateway.log()
    );

    let tags = gateway.get("/v2/library/nothing/tags/list");
    assert_eq!(
        tags.status,
        404,
        "no member knows the name: {}",
        tags.text()
    );
}

/// URLs a member hands out are rewritten for the member that answered, not only the first: here
/// hosted says 404 and the second member, a token-protected registry, challenges with a realm
/// on its own origin, which the client must see as the gateway's.
#[test]
fn the_realm_of_the_member_that_answered_points_at_the_gateway() {
    let hosted = Registry::start();
    let addr = support::free_addr();
    let protected = Registry::start_with(RegistryOptions {
        addr: Some(addr),
        token_realm: Some(format!("http://{addr}/token")),
        ..RegistryOptions::default()
    });
    let gateway = Gateway::builder()
        .put(&hosted.url())
        .get_group(&[hosted.url(), protected.url()])
        .start();

    let reply = gateway.manifest("GET", "/v2/team/app/manifests/1");
    assert_eq!(reply.status, 401, "{}", reply.text());
    let challenge = reply.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.starts_with(&format!(
            "Bearer realm=\"https://{}/token\"",
            gateway.host_port()
        )),
        "{challenge}"
    );
    assert!(!challenge.contains(&addr.to_string()), "{challenge}");
}

/// `--get URL --get URL` on the command line is the same group as `members = [...]`.
#[test]
fn repeated_get_flags_make_a_group_in_their_order() {
    let nexus = Nexus::start();
    let gateway = Gateway::builder()
        .put(&nexus.hosted.url())
        .arg("--get")
        .arg(&nexus.hosted.url())
        .arg("--get")
        .arg(&nexus.cache.url())
        .start();
    let skopeo = Skopeo::new();
    let hub_image = Image::small("flag-hub");
    skopeo
        .copy(&hub_image.layout(), &nexus.hub.image("library/flagged:1"))
        .expect_success();
    let local = Image::small("flag-local");
    skopeo
        .copy(&local.layout(), &nexus.hosted.image("library/flagged:1"))
        .expect_success();
    skopeo
        .copy(&hub_image.layout(), &nexus.hub.image("library/flagged:2"))
        .expect_success();

    assert_eq!(
        skopeo.manifest_digest(&gateway.image("library/flagged:1")),
        local.manifest_digest(),
        "the first --get wins where both have the tag"
    );
    assert_eq!(
        skopeo.manifest_digest(&gateway.image("library/flagged:2")),
        hub_image.manifest_digest(),
        "the second --get fills in"
    );
}

/// `server=<authority>` as the access log writes it.
fn server(registry: &Registry) -> String {
    format!("server={}", registry.addr())
}

/// The gateway's access lines for exactly this path.
fn access_lines(gateway: &Gateway, path: &str) -> Vec<String> {
    let needle = format!("path={path} ");
    gateway
        .log()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

#[track_caller]
fn assert_registry_error(reply: &Reply, status: u16, mentions: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["errors"][0]["code"], "UNAVAILABLE", "{json}");
    let message = json["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "{message:?} should name the member that failed first, {mentions:?}"
    );
}
