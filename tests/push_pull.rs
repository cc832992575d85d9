//! Push and pull through one `host:port`: the gateway in front of a Nexus-like pair, `hosted`
//! (push goes there) and `group` (hosted + a pull-through cache of a "hub"; pull comes from
//! there), with skopeo as the client and every part real and on loopback.

mod support;

use support::{
    plain_request, sha256_file, Gateway, Image, Location, Nexus, RegistryOptions, Skopeo,
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
#[test]
fn pushing_an_image_that_shares_hub_layers_works_where_method_routing_fails() {
    let skopeo = Skopeo::new();
    let base = Image::small("base");
    let app = Image::builder("app")
        .layers_from(&base)
        .layer(300 * 1024)
        .build();

    let nexus = Nexus::start();
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

    let seeded = Nexus::start();
    skopeo
        .copy(&base.layout(), &seeded.hub.image("library/base:1"))
        .expect_success();
    let method_routed = Gateway::in_front_of(&seeded)
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

/// Catalog and tags go to get, search to put. The group marks its answers `X-Served-By: group`;
/// a tags list for an image only the hub has can only come from the group; and with the group
/// stopped, catalog fails while search still gets hosted's own answer.
#[test]
fn catalog_and_tags_come_from_get_and_search_from_put() {
    let mut nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    skopeo
        .copy(
            &Image::small("hub-only").layout(),
            &nexus.hub.image("library/hubonly:7"),
        )
        .expect_success();
    skopeo
        .copy(
            &Image::small("local").layout(),
            &nexus.hosted.image("team/local:1"),
        )
        .expect_success();

    let catalog = gateway.get("/v2/_catalog");
    assert_eq!(catalog.status, 200, "{}", catalog.text());
    assert_eq!(catalog.header("x-served-by"), Some("group"));
    assert_eq!(catalog.json()["repositories"][0], "team/local");

    let tags = gateway.get("/v2/library/hubonly/tags/list");
    assert_eq!(tags.status, 200, "{}", tags.text());
    assert_eq!(tags.header("x-served-by"), Some("group"));
    assert_eq!(tags.json()["tags"][0], "7");
    let hosted_tags = plain_request(
        "GET",
        &format!("{}/v2/library/hubonly/tags/list", nexus.hosted.url()),
    );
    assert_eq!(
        hosted_tags.status, 404,
        "hosted does not know the hub's image"
    );

    let search = gateway.get("/v1/search?q=x");
    assert_eq!(
        search.header("x-served-by"),
        None,
        "search reached the group"
    );
    assert!(
        nexus.hosted.log().contains("/v1/search?q=x"),
        "hosted never saw the search; its log:\n{}",
        nexus.hosted.log()
    );

    nexus.group.stop();
    let catalog = gateway.get("/v2/_catalog");
    assert!(
        catalog.status >= 500,
        "catalog answered {} with the group stopped",
        catalog.status
    );
    let search_again = gateway.get("/v1/search?q=x");
    assert_eq!(
        search_again.status,
        search.status,
        "{}",
        search_again.text()
    );
}

/// The harness itself: the group answers like a Nexus group, so the tests above test the gateway.
#[test]
fn the_group_serves_hosted_first_then_the_hub_and_keeps_head_headers() {
    let nexus = Nexus::start();
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
        skopeo.manifest_digest(&nexus.group.image("library/thing:1")),
        local.manifest_digest(),
        "hosted wins"
    );
    assert_eq!(
        skopeo.manifest_digest(&nexus.group.image("library/other:1")),
        hub_image.manifest_digest(),
        "the hub fills in"
    );
    let layer = &hub_image.layers()[1];
    let head = plain_request(
        "HEAD",
        &format!(
            "{}/v2/library/other/blobs/{}",
            nexus.group.url(),
            layer.digest
        ),
    );
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(layer.size.to_string().as_str())
    );
    assert_eq!(
        head.header("docker-content-digest"),
        Some(layer.digest.as_str())
    );
    let push = skopeo.copy(&local.layout(), &nexus.cache.image("library/refused:1"));
    push.expect_failure();
}
