//! An upstream served over HTTPS (Harbor, a Nexus behind TLS) works when its CA is given, and
//! an upstream whose certificate does not verify gives a JSON 502 that says why.

mod support;

use std::path::Path;

use dockgate::tls::{generate_ca, issue_cert, CaOptions};
use support::{Gateway, Http, Image, Location, Registry, RegistryOptions, Skopeo};

/// A CA in `dir/ca` and a certificate for 127.0.0.1 it signed in `dir/registry`.
fn mint(dir: &Path) {
    let opts = CaOptions {
        name: "upstream test CA".into(),
        days: 30,
        permit: vec![],
    };
    generate_ca(&dir.join("ca"), &opts, false).expect("generate a CA");
    issue_cert(
        &dir.join("ca"),
        &["127.0.0.1".into()],
        &dir.join("registry"),
        30,
    )
    .expect("issue the registry's certificate");
}

#[test]
fn an_https_upstream_is_verified_against_the_configured_ca() {
    let certs = tempfile::tempdir().expect("tempdir");
    mint(certs.path());
    let registry = Registry::start_with(RegistryOptions {
        tls: Some((
            certs.path().join("registry/server.crt"),
            certs.path().join("registry/server.key"),
        )),
        ..RegistryOptions::default()
    });
    assert!(registry.url().starts_with("https://"));

    let ca = certs.path().join("ca/ca.crt");
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .upstream_ca(&ca)
        .start();
    let image = Image::small("tls");
    let skopeo = Skopeo::new();
    skopeo
        .copy(&image.layout(), &gw.image("team/tls:1"))
        .expect_success();
    let pulled = tempfile::tempdir().expect("tempdir");
    skopeo
        .copy(
            &gw.image("team/tls:1"),
            &Location::oci(pulled.path(), "back"),
        )
        .expect_success();
    assert_eq!(
        Image::digest_in_layout(pulled.path()),
        image.manifest_digest()
    );

    // The same upstream without its CA: the system store does not know it.
    let untrusting = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let reply = untrusting.request(Http::One, "GET", "/v2/");
    assert_eq!(reply.status, 502, "{}", reply.text());
    let message = reply.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("get upstream") && message.to_lowercase().contains("certificate"),
        "{message}"
    );
}
