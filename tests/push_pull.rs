//! Push and pull through one `host:port`: the gateway in front of a Nexus-like topology, `hosted`
//! (push goes there) and a group of hosted + a pull-through cache of a "hub" (pull comes from
//! there; dockgate's own group, or an nginx one where a test says so), with skopeo as the client
//! and every part real and on loopback.

mod support;

use support::{
    plain_request, sha256, sha256_file, Gateway, Image, Location, Nexus, RegistryOptions, Skopeo,
};

#[test]
fn an_image_only_the_hub_has_is_pulled_through_the_gateway() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let base = Image::small("base");
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
        base.manifest_digest()
    );
    for layer in base.layers() {
        let blob = Image::blob_in_layout(pulled.path(), &layer.digest);
        assert_eq!(sha256_file(&blob), layer.digest);
    }
}

/// The trap the gateway exists for. Routing by method alone sends `HEAD /v2/<name>/blobs/<digest>`
/// to the group, which finds a layer shared with a hub image in its cache; skopeo then skips
/// uploading it to `hosted`, and `hosted` refuses the manifest that names a blob it never got.
///
/// Distribution links blobs per repository where Nexus keeps one blob store per repository
/// (any image name finds any cached layer), so the derived image goes into the base's
/// repository here to get the answer Nexus would give for any name.
///
/// The method-routed gateway has backfill off: backfill (on by default) would copy the missing
/// layer from get into put before forwarding the manifest, and the trap would not show.
///
/// The group here is nginx composed the way a Nexus group repository answers on the wire (hosted,
/// then the cache on 404), not dockgate's own: the one test that keeps the gateway honest in
/// front of a group it does not run itself.
#[test]
fn pushing_an_image_that_shares_hub_layers_works_where_method_routing_fails() {
    let skopeo = Skopeo::new();
    let base = Image::small("base");
    let app = Image::builder("app")
        .layers_from(&base)
        .layer(300 * 1024)
        .build();

    let nexus = Nexus::start_with_nginx_group();
    skopeo
        .copy(&base.layout(), &nexus.hub.image("library/base:1"))
        .expect_success();
    let gateway = Gateway::in_front_of(&nexus).start();
    skopeo
        .copy(&app.layout(), &gateway.image("library/base:app"))
        .expect_success();
    assert_eq!(
        skopeo.manifest_digest(&nexus.hosted.image("library/base:app")),
        app.manifest_digest(),
        "the image landed in hosted"
    );

    let seeded = Nexus::start_with_nginx_group();
    skopeo
        .copy(&base.layout(), &seeded.hub.image("library/base:1"))
        .expect_success();
    let method_routed = Gateway::in_front_of(&seeded)
        .toml("[backfill]\nenabled = false")
        .rule(&["GET", "HEAD"], "/", "get")
        .start();
    let stderr = skopeo
        .copy(&app.layout(), &method_routed.image("library/base:app"))
        .expect_failure()
        .to_lowercase();
    assert!(
        stderr.contains("blob unknown") || stderr.contains("manifest invalid"),
        "skopeo failed for another reason:\n{stderr}"
    );
}

/// Distribution builds absolute upload `Location`s from `Host` by default and relative ones with
/// `http.relativeurls`; a push through the gateway works with either.
#[test]
fn a_pushed_image_reads_back_through_the_gateway_with_the_same_digest() {
    for relative_urls in [false, true] {
        let nexus = Nexus::start_with(RegistryOptions {
            relative_urls,
            ..RegistryOptions::default()
        });
        let gateway = Gateway::in_front_of(&nexus).start();
        let skopeo = Skopeo::new();
        let app = Image::small("team-app");
        skopeo
            .copy(&app.layout(), &gateway.image("team/app:1.0"))
            .expect_success();

        assert_eq!(
            skopeo.manifest_digest(&gateway.image("team/app:1.0")),
            app.manifest_digest(),
            "relative upload URLs: {relative_urls}"
        );
        let pulled = tempfile::tempdir().unwrap();
        skopeo
            .copy(
                &gateway.image("team/app:1.0"),
                &Location::oci(pulled.path(), "back"),
            )
            .expect_success();
        assert_eq!(
            Image::digest_in_layout(pulled.path()),
            app.manifest_digest()
        );
    }
}

#[test]
fn a_256_mib_layer_streams_both_ways_in_under_64_mib_of_gateway_memory() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let big = Image::builder("big").layer(256 << 20).build();
    let layer = &big.layers()[0];
    assert!(layer.size >= 256 << 20);

    skopeo
        .copy(&big.layout(), &gateway.image("big/layer:1"))
        .expect_success();
    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("big/layer:1"),
            &Location::oci(pulled.path(), "big"),
        )
        .expect_success();

    let blob = Image::blob_in_layout(pulled.path(), &layer.digest);
    assert_eq!(sha256_file(&blob), layer.digest);
    assert_eq!(
        Image::digest_in_layout(pulled.path()),
        big.manifest_digest()
    );
    let peak_kib = gateway.vm_hwm_kib();
    assert!(
        peak_kib < 64 * 1024,
        "the gateway peaked at {peak_kib} KiB for a {} byte layer",
        layer.size
    );
}

/// Catalog and tags go to get (dockgate's group of hosted and the cache), search to put. A tags
/// list for an image only the hub has can only come through the cache; the catalog is the union
/// of both members'; search reaches hosted and never the cache; and with the cache stopped, what
/// hosted has still pulls.
#[test]
fn catalog_and_tags_come_from_the_group_and_search_from_put() {
    let mut nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    skopeo
        .copy(
            &Image::small("hub-only").layout(),
            &nexus.hub.image("library/hubonly:7"),
        )
        .expect_success();
    let local = Image::small("local");
    skopeo
        .copy(&local.layout(), &nexus.hosted.image("team/local:1"))
        .expect_success();

    let tags = gateway.get("/v2/library/hubonly/tags/list");
    assert_eq!(tags.status, 200, "{}", tags.text());
    assert_eq!(tags.json()["tags"], serde_json::json!(["7"]));
    let hosted_tags = plain_request(
        "GET",
        &format!("{}/v2/library/hubonly/tags/list", nexus.hosted.url()),
    );
    assert_eq!(
        hosted_tags.status, 404,
        "hosted does not know the hub's image"
    );

    // A pull through the gateway puts the hub's image into the cache, so both members now have
    // a repository of their own to list.
    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("library/hubonly:7"),
            &Location::oci(pulled.path(), "hubonly"),
        )
        .expect_success();
    let cache_catalog = plain_request("GET", &format!("{}/v2/_catalog", nexus.cache.url()));
    assert_eq!(
        cache_catalog.json()["repositories"],
        serde_json::json!(["library/hubonly"]),
        "the cache lists what it pulled"
    );
    let catalog = gateway.get("/v2/_catalog");
    assert_eq!(catalog.status, 200, "{}", catalog.text());
    assert_eq!(
        catalog.json()["repositories"],
        serde_json::json!(["library/hubonly", "team/local"]),
        "the union of hosted's and the cache's catalogs"
    );
    assert_eq!(
        gateway.pages("/v2/_catalog?n=1", "repositories"),
        [["library/hubonly"], ["team/local"]],
        "paged by the gateway over the union"
    );

    let search = gateway.get("/v1/search?q=x");
    assert!(
        nexus.hosted.log().contains("/v1/search?q=x"),
        "hosted never saw the search; its log:\n{}",
        nexus.hosted.log()
    );
    assert!(
        !nexus.cache.log().contains("/v1/search"),
        "search reached the cache; its log:\n{}",
        nexus.cache.log()
    );

    nexus.cache.stop();
    assert_eq!(
        skopeo.manifest_digest(&gateway.image("team/local:1")),
        local.manifest_digest(),
        "hosted's image pulls with the cache stopped"
    );
    let search_again = gateway.get("/v1/search?q=x");
    assert_eq!(
        search_again.status,
        search.status,
        "{}",
        search_again.text()
    );
}

/// dockgate's group answers like a Nexus group: hosted wins where both have a tag, the hub fills
/// in through the cache where hosted has none, and a HEAD of a manifest (how docker resolves a
/// tag) keeps the member's `Content-Length` and `Docker-Content-Digest`.
#[test]
fn the_group_serves_hosted_first_then_the_hub_and_keeps_head_headers() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let hub_image = Image::small("from-hub");
    skopeo
        .copy(&hub_image.layout(), &nexus.hub.image("library/thing:1"))
        .expect_success();
    let local = Image::small("from-hosted");
    skopeo
        .copy(&local.layout(), &nexus.hosted.image("library/thing:1"))
        .expect_success();
    skopeo
        .copy(&hub_image.layout(), &nexus.hub.image("library/other:1"))
        .expect_success();

    assert_eq!(
        skopeo.manifest_digest(&gateway.image("library/thing:1")),
        local.manifest_digest(),
        "hosted wins"
    );
    assert_eq!(
        skopeo.manifest_digest(&gateway.image("library/other:1")),
        hub_image.manifest_digest(),
        "the hub fills in"
    );

    let head = gateway.manifest("HEAD", "/v2/library/other/manifests/1");
    assert_eq!(head.status, 200, "{:?}", head.headers);
    assert_eq!(
        head.header("content-length"),
        Some(hub_image.manifest().len().to_string().as_str())
    );
    assert_eq!(
        head.header("docker-content-digest"),
        Some(hub_image.manifest_digest())
    );
    let layer = &hub_image.layers()[1];
    let blob = gateway.get(&format!("/v2/library/other/blobs/{}", layer.digest));
    assert_eq!(blob.status, 200);
    assert_eq!(sha256(&blob.body), layer.digest, "a layer only the hub has");

    // The harness itself: the cache is a pull-through cache, which refuses pushes.
    let push = skopeo.copy(&local.layout(), &nexus.cache.image("library/refused:1"));
    push.expect_failure();
}
