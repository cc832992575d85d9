//! Backfill (issue 8): a push into hosted that needs blobs only the group has (a hub image's,
//! through the pull-through cache) gets them copied into hosted by dockgate, by mount emulation,
//! by completing a manifest before it is forwarded, or (opt-in) at the push's blob check. Real
//! registries, skopeo and reqwest on loopback; one fault stub for a get side that breaks
//! mid-copy, which a healthy registry does not do.
//!
//! Distribution links blobs per repository: the hub and the cache answer 404 for a hub blob asked
//! for under any other name, where Nexus finds a cached layer under every name. So a manifest
//! that names hub blobs is pushed here into the hub image's repository, which hosted has never
//! seen; a truly new name gets its blobs through a mount's `from=` (the containerd test).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use support::{
    free_addr, http_status, https_client, on_own_runtime, sha256, Gateway, Http, Image, Location,
    Nexus, Proc, Registry, Reply, Skopeo, MANIFEST_TYPES,
};
use tempfile::TempDir;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const DOCKER_FOREIGN_LAYER: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// What `docker push` of a re-tagged hub image sends when the layers are already "there": the
/// manifest alone. dockgate copies its config and layers from the group into hosted first.
#[test]
fn a_manifest_of_blobs_only_the_group_has_is_completed_into_hosted_and_accepted() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-base");
    skopeo
        .copy(&base.layout(), &nexus.hub.image("library/base:1"))
        .expect_success();
    // A `docker pull` of the base through the gateway: the cache now has it, hosted does not.
    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("library/base:1"),
            &Location::oci(pulled.path(), "base"),
        )
        .expect_success();

    let manifest = manifest_at(&nexus.hub.url(), "library/base", "1", None);
    assert_eq!(
        manifest,
        base.manifest(),
        "the hub serves the bytes skopeo put"
    );
    let blobs = referenced_blobs(&manifest);
    for (digest, _) in &blobs {
        assert_eq!(
            blob_status(&nexus.hosted.url(), "library/base", digest, None),
            404,
            "hosted starts without {digest}"
        );
    }

    let reply = put_manifest(
        &gateway,
        "library/base",
        "copied",
        OCI_MANIFEST,
        &manifest,
        None,
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(base.manifest_digest())
    );
    for (digest, _) in &blobs {
        assert_eq!(
            blob_status(&nexus.hosted.url(), "library/base", digest, None),
            200,
            "hosted holds {digest}"
        );
    }
    assert_eq!(
        manifest_at(
            &nexus.hosted.url(),
            "library/base",
            base.manifest_digest(),
            None
        ),
        manifest,
        "hosted holds the manifest byte for byte"
    );

    let back = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("library/base:copied"),
            &Location::oci(back.path(), "copied"),
        )
        .expect_success();
    assert_eq!(Image::digest_in_layout(back.path()), base.manifest_digest());

    let bytes: u64 = blobs.iter().map(|(_, size)| size).sum();
    let line = access_line(&gateway, "PUT", "/v2/library/base/manifests/copied");
    assert!(
        line.contains(&format!(
            "backfill=\"copied={} bytes={bytes}\"",
            blobs.len()
        )),
        "the manifest PUT's access line counts the copies:\n{line}"
    );
    for (digest, _) in &blobs {
        let copies = copies(&gateway, digest);
        assert_eq!(copies.len(), 1, "one copy of {digest}:\n{}", gateway.log());
        assert!(
            copies[0].contains("route=backfill ")
                && copies[0].contains(&format!("digest={digest}")),
            "a copy's access line reads route=backfill and names the digest:\n{}",
            copies[0]
        );
        assert_eq!(
            completed_uploads(&nexus.hosted.log(), "library/base", digest),
            1,
            "hosted received {digest} once"
        );
    }
}

#[test]
fn an_index_whose_child_only_the_group_has_brings_the_child_and_its_blobs_into_hosted() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-index-child");
    skopeo
        .copy(&base.layout(), &nexus.hub.image("library/base:1"))
        .expect_success();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{
            "mediaType": OCI_MANIFEST,
            "digest": base.manifest_digest(),
            "size": base.manifest().len(),
            "platform": { "architecture": "amd64", "os": "linux" },
        }],
    }))
    .unwrap();
    let child = base.manifest_digest();
    let missing = direct(
        "GET",
        &format!("{}/v2/library/base/manifests/{child}", nexus.hosted.url()),
        &[("accept", MANIFEST_TYPES)],
        None,
    );
    assert_eq!(missing.status, 404, "hosted starts without the child");

    let reply = put_manifest(&gateway, "library/base", "multi", OCI_INDEX, &index, None);
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        reply.header("docker-content-digest"),
        Some(sha256(&index).as_str())
    );
    assert_eq!(
        manifest_at(&nexus.hosted.url(), "library/base", child, None),
        base.manifest(),
        "hosted holds the child manifest byte for byte"
    );
    for (digest, _) in referenced_blobs(base.manifest()) {
        assert_eq!(
            blob_status(&nexus.hosted.url(), "library/base", &digest, None),
            200,
            "hosted holds the child's {digest}"
        );
    }
    assert_eq!(
        manifest_at(&nexus.hosted.url(), "library/base", "multi", None),
        index,
        "hosted holds the index as it was sent"
    );
}

/// containerd pushes a layer it knows from another repository of the same registry by asking
/// for a cross-repository mount. hosted cannot mount what only the group has; dockgate copies it
/// and answers as a mount would, so containerd skips the upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_mounts_hub_blobs_into_a_new_repository_and_uploads_a_blob_nobody_has() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-mount");
    skopeo
        .copy(&base.layout(), &nexus.hub.image("library/base:1"))
        .expect_success();
    let client = gateway.client(Http::One);
    let blobs = referenced_blobs(base.manifest());

    for (digest, _) in &blobs {
        let head = client
            .head(format!("{}/v2/team/app/blobs/{digest}", gateway.url()))
            .send()
            .await
            .expect("HEAD a blob");
        assert_eq!(head.status(), 404, "hosted has no {digest} in team/app");
        let mount = client
            .post(format!(
                "{}/v2/team/app/blobs/uploads/?mount={digest}&from=library/base",
                gateway.url()
            ))
            .send()
            .await
            .expect("POST a mount");
        let mount = Reply::read(mount).await;
        assert_eq!(mount.status, 201, "{digest}: {}", mount.text());
        let path = format!("/v2/team/app/blobs/{digest}");
        let location = mount.header("location").unwrap_or_default();
        assert!(
            location == path || location == format!("{}{path}", gateway.url()),
            "Location {location:?} names {path}"
        );
        assert_eq!(mount.header("docker-content-digest"), Some(digest.as_str()));
        assert_eq!(
            blob_status(&nexus.hosted.url(), "team/app", digest, None),
            200,
            "hosted holds {digest} under team/app"
        );
    }

    let manifest = client
        .put(format!("{}/v2/team/app/manifests/1", gateway.url()))
        .header("content-type", OCI_MANIFEST)
        .body(base.manifest().to_vec())
        .send()
        .await
        .expect("PUT the manifest");
    let manifest = Reply::read(manifest).await;
    assert_eq!(manifest.status, 201, "{}", manifest.text());
    assert_eq!(
        manifest_at(&nexus.hosted.url(), "team/app", "1", None),
        base.manifest()
    );

    // A blob nobody has: the mount falls back to an upload session, and the upload works.
    let lonely = b"a layer only this client has".to_vec();
    let digest = sha256(&lonely);
    let mount = client
        .post(format!(
            "{}/v2/team/app/blobs/uploads/?mount={digest}&from=library/base",
            gateway.url()
        ))
        .send()
        .await
        .expect("POST a mount of an unknown blob");
    let mount = Reply::read(mount).await;
    assert_eq!(mount.status, 202, "{}", mount.text());
    let location = mount.header("location").expect("an upload Location");
    let upload = client
        .put(with_digest(&gateway.url(), location, &digest))
        .header("content-type", "application/octet-stream")
        .body(lonely)
        .send()
        .await
        .expect("PUT the upload");
    assert_eq!(upload.status(), 201);
    assert_eq!(
        blob_status(&nexus.hosted.url(), "team/app", &digest, None),
        200
    );

    // A mount hosted can do itself (the blob is in its team/app now) is passed on as it is.
    let (layer, _) = &blobs[1];
    let own = client
        .post(format!(
            "{}/v2/team/other/blobs/uploads/?mount={layer}&from=team/app",
            gateway.url()
        ))
        .send()
        .await
        .expect("POST a mount hosted can do");
    assert_eq!(own.status(), 201);
    assert_eq!(
        copies(&gateway, layer).len(),
        1,
        "hosted mounted it without a copy:\n{}",
        gateway.log()
    );
    let line = access_line(&gateway, "POST", "/v2/team/other/blobs/uploads/");
    assert!(
        !line.contains("backfill="),
        "the access line of a mount hosted did itself claims no backfill:\n{line}"
    );
}

/// The single-flight key is (repository, digest): eight tags of one repository at once need one
/// 64 MiB hub layer, and hosted receives it once.
#[test]
fn eight_pushes_at_once_sharing_a_64_mib_hub_layer_copy_it_into_hosted_once() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let big = Image::builder("backfill-big").layer(64 << 20).build();
    let layer = &big.layers()[0];
    skopeo
        .copy(&big.layout(), &nexus.hub.image("library/big:1"))
        .expect_success();

    let start = Barrier::new(8);
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let pushes: Vec<_> = (0..8)
            .map(|i| {
                let (gateway, start, big) = (&gateway, &start, &big);
                scope.spawn(move || {
                    start.wait();
                    let tag = format!("t{i}");
                    put_manifest(
                        gateway,
                        "library/big",
                        &tag,
                        OCI_MANIFEST,
                        big.manifest(),
                        None,
                    )
                })
            })
            .collect();
        pushes.into_iter().map(|p| p.join().unwrap()).collect()
    });
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 201, "t{i}: {}", reply.text());
        assert_eq!(
            reply.header("docker-content-digest"),
            Some(big.manifest_digest())
        );
    }

    assert_eq!(
        completed_uploads(&nexus.hosted.log(), "library/big", &layer.digest),
        1,
        "hosted's log:\n{}",
        uploads_in(&nexus.hosted.log())
    );
    assert_eq!(
        copies(&gateway, &layer.digest).len(),
        1,
        "{}",
        gateway.log()
    );
    let blob = direct(
        "GET",
        &format!(
            "{}/v2/library/big/blobs/{}",
            nexus.hosted.url(),
            layer.digest
        ),
        &[],
        None,
    );
    assert_eq!(blob.status, 200);
    assert_eq!(sha256(&blob.body), layer.digest, "hosted's copy is whole");
}

/// The get side answers the blob with its full length, then stalls, closes early, or sends other
/// bytes. The copy fails: a mount falls back to an upload session that works, a manifest PUT gets
/// a registry error naming the digest, and hosted holds nothing of the blob.
#[test]
fn a_get_side_that_stalls_cuts_or_corrupts_a_copy_leaves_no_blob_in_hosted() {
    let hosted = Registry::start();
    for (n, fault) in [Fault::Stall, Fault::Cut, Fault::WrongBytes]
        .into_iter()
        .enumerate()
    {
        let name = fault.name();
        let blob = pseudo_random(1 << 20, n as u64 + 1);
        let digest = sha256(&blob);
        let get = FaultyBlobServer::start(&blob, fault);
        let gateway = Gateway::builder()
            .toml("[timeouts]\nbody_stall = \"2s\"")
            .put(&hosted.url())
            .get(&get.url())
            .start();

        let config = serde_json::to_vec(&json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
            "config": { "Labels": { "fault": name } },
        }))
        .unwrap();
        let repo = format!("{name}/app");
        let config_digest = upload_blob(&hosted.url(), &repo, &config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
            "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": digest, "size": blob.len() }],
        }))
        .unwrap();
        let started = Instant::now();
        let reply = put_manifest(&gateway, &repo, "1", OCI_MANIFEST, &manifest, None);
        let took = started.elapsed();
        assert_eq!(reply.status, 502, "{name}: {}", reply.text());
        let code = reply.json()["errors"][0]["code"].clone();
        assert!(
            code == "BLOB_UNKNOWN" || code == "UNAVAILABLE",
            "{name}: {}",
            reply.text()
        );
        assert!(
            reply.text().contains(&digest),
            "{name}: the error names {digest}: {}",
            reply.text()
        );
        assert!(took < Duration::from_secs(15), "{name}: took {took:?}");
        if let Fault::Stall = fault {
            assert!(
                took >= Duration::from_secs(2),
                "cut by body_stall: {took:?}"
            );
        }
        assert!(
            get.was_asked_for(&digest),
            "{name}: the copy reached the get side: {:?}",
            get.requests()
        );
        assert_eq!(
            blob_status(&hosted.url(), &repo, &digest, None),
            404,
            "{name}: no partial blob in hosted"
        );
        assert_eq!(completed_uploads(&hosted.log(), &repo, &digest), 0);

        let repo = format!("{name}/mount");
        let mount = through(
            &gateway,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from=library/base"),
            &[],
            None,
        );
        assert_eq!(mount.status, 202, "{name}: {}", mount.text());
        assert_eq!(
            blob_status(&hosted.url(), &repo, &digest, None),
            404,
            "{name}: no partial blob in hosted after the mount"
        );
        let location = mount.header("location").expect("an upload Location");
        let upload = through_url(
            &gateway,
            "PUT",
            &with_digest(&gateway.url(), location, &digest),
            &[("content-type", "application/octet-stream")],
            Some(blob),
        );
        assert_eq!(upload.status, 201, "{name}: {}", upload.text());
        assert_eq!(blob_status(&hosted.url(), &repo, &digest, None), 200);
    }
}

/// Windows images name base layers that registries must not redistribute: a foreign layer
/// carries `urls`, and clients fetch it from there. Nobody has it, so dockgate must not ask for it;
/// the image's other blobs are still copied.
#[test]
fn a_foreign_layer_is_forwarded_without_a_copy() {
    let hub = Registry::start();
    let cache = Registry::pull_through(&hub);
    let hosted = ConfiguredRegistry::allowing_foreign_layers();
    let gateway = Gateway::builder()
        .put(&hosted.url())
        .get_group(&[hosted.url(), cache.url()])
        .start();
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-foreign");
    skopeo
        .copy(&base.layout(), &hub.image("library/base:1"))
        .expect_success();
    let blobs = referenced_blobs(base.manifest());
    let (config, config_size) = &blobs[0];
    let (layer, layer_size) = &blobs[1];
    let foreign = sha256(b"a Windows base layer nobody mirrors");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "size": config_size, "digest": config },
        "layers": [
            {
                "mediaType": DOCKER_FOREIGN_LAYER, "size": 1234, "digest": foreign,
                "urls": ["https://mcr.example.invalid/windows/base.tar.gz"],
            },
            { "mediaType": DOCKER_LAYER, "size": layer_size, "digest": layer },
        ],
    }))
    .unwrap();

    let reply = put_manifest(
        &gateway,
        "library/base",
        "foreign",
        DOCKER_MANIFEST,
        &manifest,
        None,
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(
        manifest_at(&hosted.url(), "library/base", "foreign", None),
        manifest
    );
    for digest in [config, layer] {
        assert_eq!(
            blob_status(&hosted.url(), "library/base", digest, None),
            200
        );
        assert_eq!(copies(&gateway, digest).len(), 1);
    }
    let line = access_line(&gateway, "PUT", "/v2/library/base/manifests/foreign");
    assert!(
        line.contains(&format!(
            "backfill=\"copied=2 bytes={}\"",
            config_size + layer_size
        )),
        "{line}"
    );
    assert!(
        backfill_lines(&gateway, &foreign).is_empty(),
        "{}",
        gateway.log()
    );
    let hex = hex(&foreign);
    assert!(
        !cache.log().contains(hex) && !hub.log().contains(hex),
        "the get side was never asked for the foreign layer"
    );
}

#[test]
fn with_backfill_disabled_a_manifest_of_hub_blobs_is_refused_as_before() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus)
        .toml("[backfill]\nenabled = false")
        .start();
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-disabled");
    skopeo
        .copy(&base.layout(), &nexus.hub.image("library/base:1"))
        .expect_success();
    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("library/base:1"),
            &Location::oci(pulled.path(), "base"),
        )
        .expect_success();

    let reply = put_manifest(
        &gateway,
        "library/base",
        "copied",
        OCI_MANIFEST,
        base.manifest(),
        None,
    );
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(
        reply.json()["errors"][0]["code"],
        "MANIFEST_BLOB_UNKNOWN",
        "{}",
        reply.text()
    );
    for (digest, _) in referenced_blobs(base.manifest()) {
        assert_eq!(
            blob_status(&nexus.hosted.url(), "library/base", &digest, None),
            404
        );
        assert!(
            backfill_lines(&gateway, &digest).is_empty(),
            "no copy of {digest}:\n{}",
            gateway.log()
        );
    }
}

/// `on_blob_check = true`: skopeo asks `HEAD` for each layer before uploading it; dockgate copies
/// what only the group has and answers 200, so skopeo uploads only the layer that is new.
#[test]
fn with_on_blob_check_skopeo_skips_uploading_the_layers_it_shares_with_a_hub_image() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus)
        .toml("[backfill]\non_blob_check = true")
        .start();
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-check-base");
    let app = Image::builder("backfill-check-app")
        .layers_from(&base)
        .layer(100 * 1024)
        .build();
    skopeo
        .copy(&base.layout(), &nexus.hub.image("library/base:1"))
        .expect_success();

    skopeo
        .copy(&app.layout(), &gateway.image("library/base:app"))
        .expect_success();
    assert_eq!(
        skopeo.manifest_digest(&nexus.hosted.image("library/base:app")),
        app.manifest_digest()
    );
    let hosted_log = nexus.hosted.log();
    for shared in base.layer_digests() {
        assert_eq!(
            completed_uploads(&hosted_log, "library/base", &shared),
            1,
            "one upload of {shared}, dockgate's:\n{}",
            uploads_in(&hosted_log)
        );
        assert_eq!(copies(&gateway, &shared).len(), 1, "{}", gateway.log());
    }
    let own = &app.layers()[2].digest;
    assert_eq!(completed_uploads(&hosted_log, "library/base", own), 1);
    assert!(
        copies(&gateway, own).is_empty(),
        "skopeo uploaded its own layer"
    );
}

/// Basic auth on hosted and on the group's members: a copy reads and writes with the client's
/// `Authorization`, and a wrong password copies nothing.
#[test]
fn copies_carry_the_clients_credentials_and_a_wrong_password_copies_nothing() {
    let hub = Registry::start();
    let cache = ConfiguredRegistry::with_basic_auth(Some(&hub), &[DEV]);
    let hosted = ConfiguredRegistry::with_basic_auth(None, &[DEV]);
    let gateway = Gateway::builder()
        .put(&hosted.url())
        .get_group(&[hosted.url(), cache.url()])
        .start();
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-auth-base");
    let other = Image::small("backfill-auth-other");
    skopeo
        .copy(&base.layout(), &hub.image("library/base:1"))
        .expect_success();
    skopeo
        .copy(&other.layout(), &hub.image("library/other:1"))
        .expect_success();
    let dev = DEV.authorization();
    let (layer, _) = &referenced_blobs(base.manifest())[1];
    assert_eq!(
        blob_status(&cache.url(), "library/base", layer, None),
        401,
        "the cache asks for credentials"
    );

    let reply = put_manifest(
        &gateway,
        "library/base",
        "1",
        OCI_MANIFEST,
        base.manifest(),
        Some(&dev),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    for (digest, _) in referenced_blobs(base.manifest()) {
        assert_eq!(
            blob_status(&hosted.url(), "library/base", &digest, None),
            401,
            "hosted asks for credentials"
        );
        assert_eq!(
            blob_status(&hosted.url(), "library/base", &digest, Some(&dev)),
            200,
            "hosted holds {digest}"
        );
    }

    let wrong = basic(DEV.user, "not-the-password");
    let reply = put_manifest(
        &gateway,
        "library/other",
        "1",
        OCI_MANIFEST,
        other.manifest(),
        Some(&wrong),
    );
    assert_eq!(reply.status, 401, "{}", reply.text());
    for (digest, _) in referenced_blobs(other.manifest()) {
        assert_eq!(
            blob_status(&hosted.url(), "library/other", &digest, Some(&dev)),
            404,
            "nothing copied: {digest}"
        );
        assert!(copies(&gateway, &digest).is_empty());
        assert_eq!(
            completed_uploads(&hosted.log(), "library/other", &digest),
            0
        );
    }
}

/// `[backfill] username` and `password_file`: a service account for the copies, used when the
/// client's own credentials are refused. The cache lets only `mirror` read; `dev`, the client,
/// may push to hosted but not read the cache.
#[test]
fn configured_credentials_copy_what_the_clients_own_may_not_read() {
    let hub = Registry::start();
    let cache = ConfiguredRegistry::with_basic_auth(Some(&hub), &[MIRROR]);
    let hosted = ConfiguredRegistry::with_basic_auth(None, &[DEV, MIRROR]);
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-service-account");
    skopeo
        .copy(&base.layout(), &hub.image("library/base:1"))
        .expect_success();
    let dev = DEV.authorization();
    let blobs = referenced_blobs(base.manifest());
    assert_eq!(
        blob_status(&cache.url(), "library/base", &blobs[1].0, Some(&dev)),
        401,
        "the cache refuses dev"
    );

    let without = Gateway::builder()
        .put(&hosted.url())
        .get_group(&[hosted.url(), cache.url()])
        .start();
    let reply = put_manifest(
        &without,
        "library/base",
        "1",
        OCI_MANIFEST,
        base.manifest(),
        Some(&dev),
    );
    assert_ne!(reply.status, 201, "{}", reply.text());
    for (digest, _) in &blobs {
        assert_eq!(
            blob_status(&hosted.url(), "library/base", digest, Some(&dev)),
            404,
            "dev's credentials alone copy nothing: {digest}"
        );
    }

    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("mirror-password");
    std::fs::write(&password_file, format!("{}\n", MIRROR.password)).unwrap();
    let with = Gateway::builder()
        .toml(&format!(
            "[backfill]\nusername = {:?}\npassword_file = {:?}",
            MIRROR.user,
            password_file.display().to_string()
        ))
        .put(&hosted.url())
        .get_group(&[hosted.url(), cache.url()])
        .start();
    let reply = put_manifest(
        &with,
        "library/base",
        "1",
        OCI_MANIFEST,
        base.manifest(),
        Some(&dev),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
    for (digest, _) in &blobs {
        assert_eq!(
            blob_status(&hosted.url(), "library/base", digest, Some(&dev)),
            200,
            "hosted holds {digest}"
        );
        assert_eq!(copies(&with, digest).len(), 1, "{}", with.log());
    }
    assert!(
        !with.log().contains(MIRROR.password),
        "the password never reaches the log"
    );
}

/// dockgate reads a pushed manifest whole to complete it, so it bounds it: one over 4 MiB is
/// refused with a registry error, before hosted sees it; a body it cannot parse goes to hosted as
/// is, for hosted to judge. The oversized body is 8 MiB with its `Content-Length`, as docker
/// sends a manifest, over HTTP/2 and over HTTP/1.1, there in 64 KiB pieces 5 ms apart so that
/// the client reads the answer while it writes (the one-go case is the next test).
#[test]
fn a_manifest_over_4_mib_is_refused_and_one_that_does_not_parse_is_forwarded_as_is() {
    let hosted = Registry::start();
    let gateway = Gateway::builder()
        .put(&hosted.url())
        .get(&hosted.url())
        .start();

    let odd = b"{ this is not JSON".to_vec();
    let reply = put_manifest(&gateway, "odd/app", "1", OCI_MANIFEST, &odd, None);
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(
        reply.json()["errors"][0]["code"],
        "MANIFEST_INVALID",
        "hosted's own answer: {}",
        reply.text()
    );
    assert!(
        hosted.log().contains("\"PUT /v2/odd/app/manifests/1 "),
        "hosted got the PUT"
    );

    let ca = gateway.ca_pem();
    let url = format!("{}/v2/huge/app/manifests/1", gateway.url());
    let replies = on_own_runtime(move || async move {
        let h2 = https_client(&ca, Http::Two)
            .put(&url)
            .header("content-type", OCI_MANIFEST)
            .body(vec![b' '; 8 << 20])
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("an answer over HTTP/2");
        let pieces = futures_util::stream::unfold(0, |sent| async move {
            if sent == 128 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            let piece = bytes::Bytes::from(vec![b' '; 64 << 10]);
            Some((Ok::<_, std::io::Error>(piece), sent + 1))
        });
        let h1 = https_client(&ca, Http::One)
            .put(&url)
            .header("content-type", OCI_MANIFEST)
            .header("content-length", (8u64 << 20).to_string())
            .body(reqwest::Body::wrap_stream(pieces))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .expect("an answer over HTTP/1.1");
        [Reply::read(h2).await, Reply::read(h1).await]
    });
    for (reply, http) in replies.iter().zip(["HTTP/2", "HTTP/1.1"]) {
        assert_eq!(reply.status, 413, "{http}: {}", reply.text());
        assert!(
            reply.json()["errors"][0]["code"].is_string(),
            "{http}: {}",
            reply.text()
        );
    }
    assert!(
        !hosted.log().contains("/v2/huge/app/manifests/"),
        "hosted never saw it"
    );
}

/// An HTTP/1.1 client that writes a whole oversized manifest before it reads (reqwest does, for a
/// body it has in memory) is still writing when the 413 comes. RFC 9112 section 9.6: a server
/// that closes at once, with the request's bytes still arriving, makes its TCP stack send a
/// reset that "might erase the client's unacknowledged input buffers" (the 413 among them);
/// servers close in stages (nginx's `lingering_close`), so the client reads the answer.
#[test]
fn an_http1_client_that_sends_an_oversized_manifest_in_one_go_reads_the_413() {
    let hosted = Registry::start();
    let gateway = Gateway::builder()
        .put(&hosted.url())
        .get(&hosted.url())
        .start();
    let ca = gateway.ca_pem();
    let reply = try_send(
        move || https_client(&ca, Http::One),
        "PUT",
        &format!("{}/v2/huge/app/manifests/1", gateway.url()),
        &[("content-type", OCI_MANIFEST)],
        Some(vec![b' '; 32 << 20]),
    )
    .unwrap_or_else(|e| panic!("the client got no answer to read: {e}"));
    assert_eq!(reply.status, 413, "{}", reply.text());
}

#[test]
fn skopeo_pushes_and_pulls_an_image_derived_from_a_hub_image_with_backfill_on() {
    let nexus = Nexus::start();
    let gateway = Gateway::in_front_of(&nexus).start();
    let skopeo = Skopeo::new();
    let base = Image::small("backfill-e2e-base");
    let app = Image::builder("backfill-e2e-app")
        .layers_from(&base)
        .layer(300 * 1024)
        .build();
    skopeo
        .copy(&base.layout(), &nexus.hub.image("library/base:1"))
        .expect_success();
    let pulled = tempfile::tempdir().unwrap();
    skopeo
        .copy(
            &gateway.image("library/base:1"),
            &Location::oci(pulled.path(), "base"),
        )
        .expect_success();

    for (repo, tag) in [("team/app", "1"), ("library/base", "app")] {
        let reference = format!("{repo}:{tag}");
        skopeo
            .copy(&app.layout(), &gateway.image(&reference))
            .expect_success();
        assert_eq!(
            skopeo.manifest_digest(&nexus.hosted.image(&reference)),
            app.manifest_digest(),
            "{reference} landed in hosted"
        );
        let back = tempfile::tempdir().unwrap();
        skopeo
            .copy(
                &gateway.image(&reference),
                &Location::oci(back.path(), "back"),
            )
            .expect_success();
        assert_eq!(Image::digest_in_layout(back.path()), app.manifest_digest());
        for layer in app.layers() {
            let blob = Image::blob_in_layout(back.path(), &layer.digest);
            assert_eq!(support::sha256_file(&blob), layer.digest);
        }
        let line = access_line(&gateway, "PUT", &format!("/v2/{repo}/manifests/{tag}"));
        assert!(
            line.contains("backfill=\"copied=0 bytes=0\""),
            "skopeo uploaded every blob itself:\n{line}"
        );
    }
}

// ---- requests ----

/// `METHOD path` through the gateway over HTTP/1.1, with headers and an optional body.
fn through(
    gateway: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    through_url(
        gateway,
        method,
        &format!("{}{path}", gateway.url()),
        headers,
        body,
    )
}

fn through_url(
    gateway: &Gateway,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let ca = gateway.ca_pem();
    send(
        move || https_client(&ca, Http::One),
        method,
        url,
        headers,
        body,
    )
}

/// `METHOD url` over plain HTTP, to a registry behind the gateway.
fn direct(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
    let client = || {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("build an HTTP client")
    };
    send(client, method, url, headers, body)
}

/// Sends one request on a client made by `client` (on its own runtime, so this works from sync
/// and async tests alike) and reads the reply whole, within a minute.
fn send(
    client: impl FnOnce() -> reqwest::Client + Send + 'static,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    try_send(client, method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// `send`, with a failure to get any response as an error to assert on.
fn try_send(
    client: impl FnOnce() -> reqwest::Client + Send + 'static,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Reply, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let url = url.to_string();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    on_own_runtime(move || async move {
        let mut request = client()
            .request(method, &url)
            .timeout(Duration::from_secs(60));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        match request.send().await {
            Ok(response) => Ok(Reply::read(response).await),
            Err(e) => Err(format!("{e:?}")),
        }
    })
}

/// `PUT /v2/<repo>/manifests/<reference>` through the gateway, as docker sends it.
fn put_manifest(
    gateway: &Gateway,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
    authorization: Option<&str>,
) -> Reply {
    let mut headers = vec![("content-type", media_type)];
    headers.extend(authorization.map(|a| ("authorization", a)));
    through(
        gateway,
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &headers,
        Some(manifest.to_vec()),
    )
}

/// The manifest a registry serves for `repo` and `reference`, asked directly.
fn manifest_at(
    registry: &str,
    repo: &str,
    reference: &str,
    authorization: Option<&str>,
) -> Vec<u8> {
    let mut headers = vec![("accept", MANIFEST_TYPES)];
    headers.extend(authorization.map(|a| ("authorization", a)));
    let url = format!("{registry}/v2/{repo}/manifests/{reference}");
    let reply = direct("GET", &url, &headers, None);
    assert_eq!(reply.status, 200, "GET {url}: {}", reply.text());
    reply.body
}

/// `HEAD /v2/<repo>/blobs/<digest>` asked of a registry directly.
fn blob_status(registry: &str, repo: &str, digest: &str, authorization: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    let url = format!("{registry}/v2/{repo}/blobs/{digest}");
    direct("HEAD", &url, &headers, None).status
}

/// A blob pushed straight into a registry (POST, then PUT with the digest); its digest.
fn upload_blob(registry: &str, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let start = direct(
        "POST",
        &format!("{registry}/v2/{repo}/blobs/uploads/"),
        &[],
        None,
    );
    assert_eq!(start.status, 202, "{}", start.text());
    let location = start.header("location").expect("an upload Location");
    let done = direct(
        "PUT",
        &with_digest(registry, location, &digest),
        &[("content-type", "application/octet-stream")],
        Some(bytes.to_vec()),
    );
    assert_eq!(done.status, 201, "{}", done.text());
    digest
}

/// An upload `Location` (absolute, or relative to `base`) with `digest=` added to its query.
fn with_digest(base: &str, location: &str, digest: &str) -> String {
    let url = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_string()
    };
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}digest={digest}")
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

// ---- manifests and logs ----

/// The config's and every non-foreign layer's digest and size, config first.
fn referenced_blobs(manifest: &[u8]) -> Vec<(String, u64)> {
    let json: serde_json::Value = serde_json::from_slice(manifest).expect("a JSON manifest");
    let layers = json["layers"].as_array().cloned().unwrap_or_default();
    std::iter::once(json["config"].clone())
        .chain(layers.into_iter().filter(|l| l.get("urls").is_none()))
        .map(|d| {
            let digest = d["digest"].as_str().expect("a digest").to_string();
            (digest, d["size"].as_u64().expect("a size"))
        })
        .collect()
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The gateway's access lines for its own copies that name `digest`, whether the copy worked or
/// not. The contract's form is `route=backfill`; a quoted `route="backfill"` is matched too, so
/// that no copy goes uncounted for its quoting (the form itself is checked once, in
/// `a_manifest_of_blobs_only_the_group_has_is_completed_into_hosted_and_accepted`).
fn backfill_lines(gateway: &Gateway, digest: &str) -> Vec<String> {
    let log = gateway.log();
    log.lines()
        .filter(|l| l.contains("route=backfill ") || l.contains("route=\"backfill\" "))
        .filter(|l| l.contains(hex(digest)))
        .map(str::to_string)
        .collect()
}

/// The copies of `digest` the gateway logged as done (a failed one's line carries `error=`).
fn copies(gateway: &Gateway, digest: &str) -> Vec<String> {
    let lines = backfill_lines(gateway, digest);
    lines
        .into_iter()
        .filter(|l| !l.contains("error="))
        .collect()
}

/// The gateway's access line for `METHOD path`, waiting up to 5 s for it: a line is written when
/// the response body ends, which may be just after the client has read it.
fn access_line(gateway: &Gateway, method: &str, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = gateway.log();
        let line = log.lines().find(|l| {
            l.contains(&format!("method={method} ")) && l.contains(&format!("path={path} "))
        });
        if let Some(line) = line {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no access line for {method} {path}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many uploads of `digest` into `repo` a registry completed, whoever sent them. Distribution
/// logs each request twice, a `msg="response completed"` line and a combined-format access line;
/// the access line of the closing `PUT /v2/<repo>/blobs/uploads/<uuid>?...digest=sha256%3A<hex>`
/// answered 201 is one finished upload.
fn completed_uploads(log: &str, repo: &str, digest: &str) -> usize {
    let request = format!("\"PUT /v2/{repo}/blobs/uploads/");
    log.lines()
        .filter(|l| {
            l.contains(&request)
                && l.contains("digest=")
                && l.contains(hex(digest))
                && l.contains("\" 201 ")
        })
        .count()
}

/// The upload requests in a registry's access log, for failure messages.
fn uploads_in(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("/blobs/uploads/") && !l.starts_with("time="))
        .collect();
    lines.join("\n")
}

/// Deterministic bytes that no two seeds share.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

// ---- registries configured beyond `RegistryOptions` ----

/// A user of registries with basic auth. The bcrypt hashes (cost 5) were made once with Python's
/// `crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))`, as this machine has no
/// `htpasswd`; Distribution's `auth.htpasswd` reads only bcrypt.
#[derive(Clone, Copy)]
struct Account {
    user: &'static str,
    password: &'static str,
    bcrypt: &'static str,
}

/// A developer who pushes.
const DEV: Account = Account {
    user: "dev",
    password: "s3cret-pass",
    bcrypt: "$2b$05$dp4ZIeOaVt0iBrSoDZrZt.n4HsHB5GIGv55DuTbPv2wLXeVqe.T0C",
};

/// A service account for dockgate's copies.
const MIRROR: Account = Account {
    user: "mirror",
    password: "mirror-pass",
    bcrypt: "$2b$05$9//ctpLVv8u656GYESKW/O/cIus6EPZzASH5gxt1U9tIJBz37Gyc6",
};

impl Account {
    /// `Authorization: Basic ...` for this account.
    fn authorization(self) -> String {
        basic(self.user, self.password)
    }
}

/// Debian's `docker-registry` with configuration `RegistryOptions` does not offer: basic auth, or
/// foreign layer URLs allowed. Storage in its own tempdir, killed by PID on drop.
struct ConfiguredRegistry {
    dir: TempDir,
    addr: SocketAddr,
    _proc: Proc,
}

impl ConfiguredRegistry {
    /// `auth.htpasswd` letting in `accounts`; with `remote`, a pull-through cache of it.
    fn with_basic_auth(remote: Option<&Registry>, accounts: &[Account]) -> ConfiguredRegistry {
        ConfiguredRegistry::start(|dir| {
            let htpasswd = dir.join("htpasswd");
            let lines: Vec<String> = accounts
                .iter()
                .map(|a| format!("{}:{}\n", a.user, a.bcrypt))
                .collect();
            std::fs::write(&htpasswd, lines.concat()).expect("write htpasswd");
            let mut yml = format!(
                "auth:\n  htpasswd:\n    realm: dockgate-test\n    path: {}\n",
                htpasswd.display()
            );
            if let Some(remote) = remote {
                yml.push_str(&format!("proxy:\n  remoteurl: {}\n", remote.url()));
            }
            yml
        })
    }

    /// A hosted registry that accepts foreign layers: Distribution 2.8 refuses every `urls` entry
    /// (500, `MANIFEST_BLOB_UNKNOWN`) unless `validation.manifests.urls.allow` matches it.
    fn allowing_foreign_layers() -> ConfiguredRegistry {
        ConfiguredRegistry::start(|_| {
            "validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n".into()
        })
    }

    /// A plain registry's config plus the YAML `extra` writes for its directory.
    fn start(extra: impl FnOnce(&std::path::Path) -> String) -> ConfiguredRegistry {
        let dir = tempfile::Builder::new()
            .prefix("registry-configured-")
            .tempdir()
            .expect("tempdir for a registry");
        let addr = free_addr();
        let yml = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n\
             http:\n  addr: {addr}\n  secret: dockgate-tests\n{extra}",
            storage = dir.path().join("storage").display(),
            extra = extra(dir.path()),
        );
        let config = dir.path().join("config.yml");
        std::fs::write(&config, yml).expect("write registry config");
        let mut cmd = Command::new("docker-registry");
        cmd.arg("serve").arg(&config);
        let log = dir.path().join("registry.log");
        let mut proc = Proc::spawn("docker-registry", cmd, &log);
        proc.wait_until(&format!("GET http://{addr}/v2/ answers"), || {
            http_status(addr, "/v2/").is_some()
        });
        ConfiguredRegistry {
            dir,
            addr,
            _proc: proc,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Everything the registry has logged (its access log included).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

// ---- fault stub ----

/// How `FaultyBlobServer` spoils the blob body after announcing its full length.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Sends the first KiB, then nothing (a hung upstream).
    Stall,
    /// Sends half, then closes the connection (an upstream that restarts mid-transfer).
    Cut,
    /// Sends the full length of other bytes (a corrupted store).
    WrongBytes,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Stall => "stall",
            Fault::Cut => "cut",
            Fault::WrongBytes => "corrupt",
        }
    }
}

/// Fault stub for a get side that breaks mid-copy, which a healthy registry does not do. It
/// answers `GET /v2/` with 200; `HEAD` of `/v2/<any name>/blobs/<digest>` with 200 and the
/// blob's length; `GET` of it with 200 and that length, then the `Fault`; anything else 404.
/// It records every request line.
struct FaultyBlobServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FaultyBlobServer {
    fn start(blob: &[u8], fault: Fault) -> FaultyBlobServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the faulty blob server");
        let addr = listener.local_addr().expect("its address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let blob = Arc::new(blob.to_vec());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seen, blob) = (seen.clone(), blob.clone());
                std::thread::spawn(move || serve_faulty(conn, &blob, fault, &seen));
            }
        });
        FaultyBlobServer { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }

    fn was_asked_for(&self, digest: &str) -> bool {
        let path = format!("/blobs/{digest}");
        self.requests()
            .iter()
            .any(|r| r.starts_with("GET ") && r.ends_with(&path))
    }
}

/// One keep-alive connection of the stub: request heads in, answers out, until the fault or the
/// client ends it.
fn serve_faulty(mut conn: TcpStream, blob: &[u8], fault: Fault, seen: &Mutex<Vec<String>>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let blob_path = format!("/blobs/{}", sha256(blob));
    let mut buffered = Vec::new();
    loop {
        let head = loop {
            if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = buffered.drain(..end + 4).collect();
                break String::from_utf8_lossy(&head).into_owned();
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buffered.extend_from_slice(&chunk[..n]),
            }
        };
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        seen.lock().expect("lock").push(format!("{method} {path}"));
        let is_blob = path.starts_with("/v2/") && path.ends_with(&blob_path);
        let length = blob.len();
        let answered = match (method, is_blob) {
            (_, false) if path == "/v2/" => conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
            ),
            ("HEAD", true) => conn.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n").as_bytes(),
            ),
            ("GET", true) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                     Content-Length: {length}\r\n\r\n"
                );
                let _ = conn.write_all(head.as_bytes());
                match fault {
                    Fault::Stall => {
                        let _ = conn.write_all(&blob[..1024]);
                        std::thread::sleep(Duration::from_secs(30));
                        return;
                    }
                    Fault::Cut => {
                        let _ = conn.write_all(&blob[..length / 2]);
                        return;
                    }
                    Fault::WrongBytes => {
                        let mut other = blob.to_vec();
                        other[length / 2] ^= 0xff;
                        conn.write_all(&other)
                    }
                }
            }
            _ => {
                let body =
                    r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#;
                let head = format!(
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                );
                let body = if method == "HEAD" { "" } else { body };
                conn.write_all(format!("{head}{body}").as_bytes())
            }
        };
        if answered.is_err() {
            return;
        }
    }
}
