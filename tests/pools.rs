//! `{ servers = [a, b] }`: replicas with the same content (here two `docker-registry` processes
//! sharing one storage directory). Reads go round-robin and a bodyless request whose server fails
//! is retried on the other; a server that was taken out comes back once the health probe sees it;
//! an upload session stays on the server that created it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::{
    https_client, on_own_runtime, sha256, Gateway, Http, Image, Registry, Reply, Skopeo,
};

/// Two replicas of one registry: the storage directory and the processes sharing it.
struct Replicas {
    a: Registry,
    b: Registry,
    _storage: tempfile::TempDir,
}

impl Replicas {
    fn start() -> Replicas {
        let storage = tempfile::Builder::new()
            .prefix("shared-storage-")
            .tempdir()
            .expect("tempdir for shared storage");
        let a = Registry::sharing(storage.path());
        let b = Registry::sharing(storage.path());
        Replicas {
            a,
            b,
            _storage: storage,
        }
    }

    fn urls(&self) -> Vec<String> {
        vec![self.a.url(), self.b.url()]
    }
}

#[test]
fn reads_survive_a_server_stopping_and_it_comes_back_after_its_probe() {
    let mut pool = Replicas::start();
    let gateway = Gateway::builder()
        .toml("[health]\ninterval = \"1s\"\nfails = 1")
        .pool("put", &pool.urls())
        .pool("get", &pool.urls())
        .start();
    let image = Image::small("pooled");
    Skopeo::new()
        .copy(&image.layout(), &pool.a.image("team/app:1"))
        .expect_success();
    let manifest = "/v2/team/app/manifests/1";

    for i in 0..100 {
        if i == 30 {
            let counts = (served(&pool.a, manifest), served(&pool.b, manifest));
            assert!(
                counts.0 > 0 && counts.1 > 0,
                "30 reads went round-robin over both servers: {counts:?}"
            );
            pool.b.stop();
        }
        let method = if i % 2 == 0 { "GET" } else { "HEAD" };
        let reply = gateway.manifest(method, manifest);
        assert_eq!(
            reply.status,
            200,
            "read {i} ({method}) with b {}: {}",
            if i < 30 { "up" } else { "stopped" },
            reply.text()
        );
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(image.manifest_digest()),
            "read {i}"
        );
    }
    let b_before = served(&pool.b, manifest);
    let log = gateway.log();
    for registry in [&pool.a, &pool.b] {
        assert!(
            log.contains(&format!("server={}", registry.addr())),
            "the access log names {} as a server that answered:\n{log}",
            registry.addr()
        );
    }

    pool.b.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served(&pool.b, manifest) == b_before {
        assert!(
            Instant::now() < deadline,
            "b got no read in the 10 s after it came back; the gateway's log ends:\n{}",
            last_lines(&gateway.log(), 20)
        );
        let reply = gateway.manifest("GET", manifest);
        assert_eq!(reply.status, 200, "{}", reply.text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// With every server of a pool down, the client gets a JSON 502 it can print, naming a server
/// that failed, within the connect timeout.
#[test]
fn when_every_server_is_down_the_client_gets_a_json_502() {
    let mut pool = Replicas::start();
    let gateway = Gateway::builder()
        .toml("[timeouts]\nconnect = \"2s\"")
        .pool("put", &pool.urls())
        .pool("get", &pool.urls())
        .start();
    pool.a.stop();
    pool.b.stop();
    let started = Instant::now();
    let reply = gateway.manifest("GET", "/v2/team/app/manifests/1");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(reply.status, 502, "{}", reply.text());
    let message = reply.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(reply.json()["errors"][0]["code"], "UNAVAILABLE");
    assert!(
        [&pool.a, &pool.b]
            .iter()
            .any(|r| message.contains(&r.addr().to_string())),
        "names a server that failed: {message}"
    );
}

/// Driven by hand, so each step's server is known: POST through the gateway, see which replica
/// logged it, then PATCH and PUT the `Location` the gateway returned and find the session's UUID
/// in that replica's log only. Both replicas would accept the session (shared storage, same
/// secret), so only the logs tell whether it stayed.
#[test]
fn an_upload_session_stays_on_the_server_that_created_it() {
    let pool = Replicas::start();
    let gateway = Gateway::builder()
        .pool("put", &pool.urls())
        .pool("get", &pool.urls())
        .start();

    let mut owners = BTreeMap::new();
    for n in 0..6u8 {
        let before = (posts(&pool.a), posts(&pool.b));
        let started = send(
            &gateway,
            "POST",
            &format!("{}/v2/team/up/blobs/uploads/", gateway.url()),
            Vec::new(),
        );
        assert_eq!(started.status, 202, "{}", started.text());
        let owner = wait_for(
            || match (posts(&pool.a) - before.0, posts(&pool.b) - before.1) {
                (1, 0) => Some("a"),
                (0, 1) => Some("b"),
                (0, 0) => None,
                other => panic!("one POST, logged as {other:?}"),
            },
        );
        let uuid = started
            .header("docker-upload-uuid")
            .expect("Docker-Upload-UUID")
            .to_string();
        let location = upload_location(&gateway, &started);

        let bytes = vec![n; 10_000];
        let patched = send(&gateway, "PATCH", &location, bytes.clone());
        assert_eq!(patched.status, 202, "{}", patched.text());
        let location = upload_location(&gateway, &patched);
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = format!("{location}{separator}digest={}", sha256(&bytes));
        let done = send(&gateway, "PUT", &put, Vec::new());
        assert_eq!(done.status, 201, "{}", done.text());
        owners.insert(uuid, owner);
    }

    for (uuid, owner) in &owners {
        let (mine, other) = match *owner {
            "a" => (&pool.a, &pool.b),
            _ => (&pool.b, &pool.a),
        };
        let mine_log = mine.log();
        for method in ["PATCH", "PUT"] {
            assert!(
                mine_log
                    .lines()
                    .any(|l| l.contains(&format!("\"{method} /v2/team/up/blobs/uploads/{uuid}"))),
                "{method} of {uuid} reached {owner}, which created it; its log:\n{mine_log}"
            );
        }
        assert!(
            !other.log().contains(uuid.as_str()),
            "{uuid} was created on {owner} but the other replica saw it:\n{}",
            other.log()
        );
    }
    for registry in [&pool.a, &pool.b] {
        assert!(
            !registry.log().contains("_dockgate_server"),
            "the gateway's own parameter reached {}:\n{}",
            registry.addr(),
            registry.log()
        );
    }
    // Sessions on both replicas, or staying put would prove nothing.
    let on_a = owners.values().filter(|o| **o == "a").count();
    assert!(
        0 < on_a && on_a < owners.len(),
        "every session was created on one replica: {owners:?}"
    );
}

/// skopeo pushes through a put pool of two replicas: every blob upload (POST, PATCH, PUT) is in
/// one replica's log, the image reads back, and reads are spread over both replicas.
#[test]
fn a_push_through_a_put_pool_keeps_each_upload_on_one_server() {
    let pool = Replicas::start();
    let gateway = Gateway::builder()
        .pool("put", &pool.urls())
        .pool("get", &pool.urls())
        .start();
    let skopeo = Skopeo::new();
    let images = [Image::small("pool-one"), Image::small("pool-two")];
    for (n, image) in images.iter().enumerate() {
        skopeo
            .copy(&image.layout(), &gateway.image(&format!("team/pushed:{n}")))
            .expect_success();
    }

    let a_uploads = upload_uuids(&pool.a.log());
    let b_uploads = upload_uuids(&pool.b.log());
    assert_eq!(
        a_uploads.len() + b_uploads.len(),
        images.len() * 3,
        "a config and two layers per image"
    );
    let shared: Vec<_> = a_uploads.intersection(&b_uploads).collect();
    assert!(
        shared.is_empty(),
        "upload sessions split across replicas: {shared:?}"
    );
    assert_eq!(
        (posts(&pool.a), posts(&pool.b)),
        (a_uploads.len(), b_uploads.len()),
        "each replica finished exactly the uploads it started"
    );

    for (n, image) in images.iter().enumerate() {
        let path = format!("/v2/team/pushed/manifests/{n}");
        for _ in 0..6 {
            let reply = gateway.manifest("GET", &path);
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(sha256(&reply.body), image.manifest_digest());
        }
        for registry in [&pool.a, &pool.b] {
            assert!(
                served(registry, &path) > 0,
                "{} served none of the reads of {path}",
                registry.addr()
            );
        }
    }
}

/// Access lines (`"GET /v2/... HTTP/1.1" 200`) for this path, GET or HEAD, in a registry's log.
fn served(registry: &Registry, path: &str) -> usize {
    let tail = format!("{path} HTTP/1.1\"");
    registry
        .log()
        .lines()
        .filter(|l| l.contains(&format!("\"GET {tail}")) || l.contains(&format!("\"HEAD {tail}")))
        .count()
}

/// Upload sessions a registry started (`POST .../blobs/uploads/` answered 202).
fn posts(registry: &Registry) -> usize {
    registry
        .log()
        .lines()
        .filter(|l| {
            l.contains("\"POST /v2/") && l.contains("/blobs/uploads/") && l.contains("\" 202 ")
        })
        .count()
}

/// UUIDs of the upload sessions that a registry's log shows a PATCH or PUT for.
fn upload_uuids(log: &str) -> BTreeSet<String> {
    log.lines()
        .filter(|l| l.contains("\"PATCH /v2/") || l.contains("\"PUT /v2/"))
        .filter_map(|l| l.split_once("/blobs/uploads/"))
        .map(|(_, rest)| {
            rest.split(['?', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .filter(|uuid| !uuid.is_empty())
        .collect()
}

/// The upload `Location` the gateway returned, as an absolute URL; it must lead back to the
/// gateway and carry the gateway's server parameter.
fn upload_location(gateway: &Gateway, reply: &Reply) -> String {
    let location = reply.header("location").expect("an upload Location");
    assert!(
        location.contains("_dockgate_server="),
        "the Location names the server holding the session: {location}"
    );
    if location.starts_with('/') {
        format!("{}{location}", gateway.url())
    } else {
        assert!(location.starts_with(&gateway.url()), "{location}");
        location.to_string()
    }
}

/// `METHOD url` with `body` through the gateway over HTTP/1.1, read whole.
fn send(gateway: &Gateway, method: &str, url: &str, body: Vec<u8>) -> Reply {
    let ca = gateway.ca_pem();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let url = url.to_string();
    on_own_runtime(move || async move {
        let response = https_client(&ca, Http::One)
            .request(method.clone(), &url)
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
        Reply::read(response).await
    })
}

/// Polls `check` until it gives an answer (a registry writes its access line just after it
/// answers), for up to 3 s.
fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "nothing logged within 3 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `n` lines of a log, for a panic message.
fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
