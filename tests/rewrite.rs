//! URLs an upstream hands out never lead a client to an internal port: upload `Location`s,
//! paging `Link`s and the token realm come back as the public `https://host:port`.

mod support;

use support::{Gateway, Http, Registry, RegistryOptions};

#[test]
fn upload_locations_name_the_public_host_whichever_host_the_registry_was_told() {
    let registry = Registry::start();
    // Default: the registry sees the public Host and X-Forwarded-Proto and builds the URL.
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    for http in [Http::One, Http::Two] {
        let reply = gw.request(http, "POST", "/v2/team/app/blobs/uploads/");
        assert_eq!(reply.status, 202);
        let location = reply.header("location").expect("a Location");
        assert!(
            location.starts_with(&format!(
                "https://{}/v2/team/app/blobs/uploads/",
                gw.host_port()
            )),
            "{http:?}: {location}"
        );
    }

    // With `upstream_host`, the registry builds its Location from its own address; the
    // gateway rewrites it.
    let gw = Gateway::builder()
        .toml("[headers]\nupstream_host = true")
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let reply = gw.request(Http::One, "POST", "/v2/team/app/blobs/uploads/");
    let location = reply.header("location").expect("a Location");
    assert!(
        location.starts_with(&format!(
            "https://{}/v2/team/app/blobs/uploads/",
            gw.host_port()
        )),
        "{location}"
    );
    assert!(
        !location.contains(&registry.addr().to_string()),
        "{location}"
    );
    // The rewritten URL works: the upload's status is reachable through the gateway.
    let path = &location[format!("https://{}", gw.host_port()).len()..];
    assert_eq!(gw.request(Http::One, "GET", path).status, 204);
}

#[test]
fn relative_upload_locations_stay_relative() {
    let registry = Registry::start_with(RegistryOptions {
        relative_urls: true,
        ..RegistryOptions::default()
    });
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let reply = gw.request(Http::Two, "POST", "/v2/team/app/blobs/uploads/");
    assert_eq!(reply.status, 202);
    let location = reply.header("location").expect("a Location");
    assert!(
        location.starts_with("/v2/team/app/blobs/uploads/"),
        "{location}"
    );
    assert_eq!(gw.request(Http::Two, "GET", location).status, 204);
}

#[test]
fn the_token_realm_of_a_bearer_challenge_points_at_the_gateway() {
    // The realm names the other upstream's origin, as a Nexus group's challenge names Nexus.
    let put = Registry::start();
    let realm = format!("{}/v2/token", put.url());
    let get = Registry::start_with(RegistryOptions {
        token_realm: Some(realm.clone()),
        ..RegistryOptions::default()
    });
    let direct = support::plain_request("GET", &format!("{}/v2/", get.url()));
    assert_eq!(direct.status, 401);
    let challenge = direct.header("www-authenticate").expect("a challenge");
    assert!(
        challenge.contains(&format!("realm=\"{realm}\"")),
        "{challenge}"
    );

    let gw = Gateway::builder().put(&put.url()).get(&get.url()).start();
    for http in [Http::One, Http::Two] {
        let reply = gw.request(http, "GET", "/v2/");
        assert_eq!(reply.status, 401);
        let challenge = reply.header("www-authenticate").expect("a challenge");
        assert!(
            challenge.starts_with(&format!(
                "Bearer realm=\"https://{}/v2/token\"",
                gw.host_port()
            )),
            "{http:?}: {challenge}"
        );
        assert!(
            challenge.contains("service=\"dockgate-test\""),
            "{challenge}"
        );
    }
}

#[test]
fn paging_links_and_query_strings_pass_through() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    for name in ["a/one", "b/two", "c/three"] {
        push_blob(&gw, name, b"x");
    }
    let reply = gw.request(Http::One, "GET", "/v2/_catalog?n=1");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["repositories"], serde_json::json!(["a/one"]));
    let link = reply.header("link").expect("a Link to the next page");
    assert!(
        link.contains("last=a%2Fone") && link.contains("n=1"),
        "{link}"
    );
    assert!(!link.contains(&registry.addr().to_string()), "{link}");
}

/// POST an upload session, then PUT the whole blob with its digest, through the gateway.
fn push_blob(gw: &Gateway, name: &str, blob: &'static [u8]) {
    let ca = gw.ca_pem();
    let post = format!("{}/v2/{name}/blobs/uploads/", gw.url());
    support::on_own_runtime(move || async move {
        let client = support::https_client(&ca, Http::One);
        let resp = client.post(post).send().await.expect("POST");
        assert_eq!(resp.status(), 202);
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let resp = client
            .put(format!("{location}&digest={}", support::sha256(blob)))
            .header("content-type", "application/octet-stream")
            .body(blob)
            .send()
            .await
            .expect("PUT");
        assert_eq!(resp.status(), 201, "PUT");
    });
}
