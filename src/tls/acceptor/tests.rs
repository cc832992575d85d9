//! The acceptor's unit tests: minted and user-given setups, SNI choice, renewal.

use super::*;
use crate::tls::files::{ServerCert, CA_KEY, SERVER_KEY};
use crate::tls::mint::{generate_ca, CaOptions};

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn minted(dir: &Path) -> Tls {
    Tls::Minted {
        dir: dir.to_path_buf(),
        server_days: 30,
        renew_check: Duration::from_secs(3600),
    }
}

fn serial_on_disk(dir: &Path) -> String {
    let cert = ServerCert::read(dir).unwrap();
    Leaf::parse(&cert.chain[0]).unwrap().serial
}

fn serial_served(setup: &TlsSetup) -> String {
    let renewal = setup.renewal.as_ref().unwrap();
    let key = renewal.resolver.first().unwrap();
    Leaf::parse(&key.cert[0]).unwrap().serial
}

#[test]
fn minted_setup_creates_a_ca_and_a_certificate_then_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let wanted = names(&["registry.example.com", "localhost", "127.0.0.1", "::1"]);
    let first = setup(&minted(&dir), &wanted).unwrap();
    assert!(dir.join(CA_KEY).exists() && dir.join(SERVER_KEY).exists());
    let serial = serial_on_disk(&dir);
    assert_eq!(serial_served(&first), serial);
    assert_eq!(
        first.acceptor.config().alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    let again = setup(&minted(&dir), &wanted).unwrap();
    assert_eq!(serial_served(&again), serial, "a good certificate is kept");

    let more = names(&[
        "registry.example.com",
        "localhost",
        "127.0.0.1",
        "::1",
        "10.1.2.3",
    ]);
    let widened = setup(&minted(&dir), &more).unwrap();
    assert_ne!(
        serial_served(&widened),
        serial,
        "a new name forces a new certificate"
    );
    assert_eq!(serial_on_disk(&dir), serial_served(&widened));

    std::fs::write(dir.join(SERVER_KEY), "garbage").unwrap();
    let repaired = setup(&minted(&dir), &more).unwrap();
    assert_eq!(serial_on_disk(&dir), serial_served(&repaired));
}

#[test]
fn half_a_ca_is_an_error_not_a_new_ca() {
    let tmp = tempfile::tempdir().unwrap();
    setup(&minted(tmp.path()), &names(&["localhost"])).unwrap();
    std::fs::remove_file(tmp.path().join(CA_CERT)).unwrap();
    let err = setup(&minted(tmp.path()), &names(&["localhost"]))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("ca.crt") && err.contains("missing"), "{err}");
}

#[test]
fn names_outside_the_ca_constraints_are_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = CaOptions {
        name: "constrained".into(),
        days: 10,
        permit: names(&["registry.example.com"]),
    };
    generate_ca(tmp.path(), &opts, false).unwrap();
    let wanted = names(&["registry.example.com", "localhost", "127.0.0.1"]);
    setup(&minted(tmp.path()), &wanted).unwrap();
    let leaf = Leaf::parse(&ServerCert::read(tmp.path()).unwrap().chain[0]).unwrap();
    // No IP subtree is permitted, so IPs are unconstrained (RFC 5280 section 4.2.1.10).
    assert_eq!(leaf.missing(&wanted), ["localhost"]);
}

#[test]
fn renewal_swaps_a_certificate_in_its_last_third() {
    let tmp = tempfile::tempdir().unwrap();
    let wanted = names(&["localhost"]);
    let first = setup(&minted(tmp.path()), &wanted).unwrap();
    let renewal = first.renewal.unwrap();
    renewal.renew_if_due().unwrap();
    let fresh = Leaf::parse(&renewal.resolver.first().unwrap().cert[0])
        .unwrap()
        .serial;
    assert_eq!(serial_on_disk(tmp.path()), fresh, "nothing due yet");

    let ca = Ca::load(tmp.path()).unwrap();
    let now = OffsetDateTime::now_utc();
    let old = ca
        .issue_with_validity(
            &wanted,
            now - time::Duration::days(20),
            now + time::Duration::days(5),
        )
        .unwrap();
    renewal
        .resolver
        .replace(vec![Arc::new(old.certified().unwrap())]);
    let old_serial = Leaf::parse(&old.chain[0]).unwrap().serial;
    renewal.renew_if_due().unwrap();
    let renewed = Leaf::parse(&renewal.resolver.first().unwrap().cert[0]).unwrap();
    assert_ne!(renewed.serial, old_serial);
    assert_ne!(renewed.serial, fresh);
    assert_eq!(serial_on_disk(tmp.path()), renewed.serial);
    assert!(renewed.not_after > now + time::Duration::days(29));
}

#[test]
fn files_are_checked_but_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    setup(&minted(&ca_dir), &names(&["localhost"])).unwrap();
    let ca = Ca::load(&ca_dir).unwrap();
    let write = |name: &str, cert: &ServerCert| {
        let dir = tmp.path().join(name);
        cert.write(&dir).unwrap();
        (dir.join(SERVER_CERT), dir.join(SERVER_KEY))
    };
    let (good_crt, good_key) = write("good", &ca.issue(&names(&["localhost"]), 5).unwrap());
    let (other_crt, other_key) = write("other", &ca.issue(&names(&["localhost"]), 5).unwrap());
    let now = OffsetDateTime::now_utc();
    let expired = ca
        .issue_with_validity(
            &names(&["localhost"]),
            now - time::Duration::days(9),
            now - time::Duration::days(2),
        )
        .unwrap();
    let (old_crt, old_key) = write("old", &expired);
    let files = |cert: &Path, key: &Path| Tls::Files {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    let err = |cert: &Path, key: &Path| {
        setup(&files(cert, key), &names(&["localhost"]))
            .err()
            .unwrap()
            .to_string()
    };

    let before = std::fs::read(&good_crt).unwrap();
    let ok = setup(
        &files(&good_crt, &good_key),
        &names(&["localhost", "elsewhere.example"]),
    )
    .unwrap();
    assert!(ok.renewal.is_none());
    assert_eq!(std::fs::read(&good_crt).unwrap(), before);

    let mismatch = err(&good_crt, &other_key);
    assert!(
        mismatch.contains(&other_key.display().to_string()) && mismatch.contains("does not match"),
        "{mismatch}"
    );
    let stale = err(&old_crt, &old_key);
    assert!(
        stale.starts_with(&old_crt.display().to_string()) && stale.contains("expired"),
        "{stale}"
    );
    let no_key = err(&other_crt, &other_crt);
    assert!(
        no_key.starts_with(&other_crt.display().to_string()) && no_key.contains("no private key"),
        "{no_key}"
    );
    let no_cert = err(&other_key, &other_key);
    assert!(
        no_cert.starts_with(&other_key.display().to_string()) && no_cert.contains("no certificate"),
        "{no_cert}"
    );
}

#[test]
fn the_resolver_picks_by_sni_then_falls_back_to_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    setup(&minted(tmp.path()), &names(&["localhost"])).unwrap();
    let ca = Ca::load(tmp.path()).unwrap();
    let key = |n: &[&str]| Arc::new(ca.issue(&names(n), 5).unwrap().certified().unwrap());
    let (a, b) = (
        key(&["a.example.com"]),
        key(&["*.b.example.com", "10.0.0.1"]),
    );
    let resolver = Resolver::new(vec![a.clone(), b.clone()]);
    let picked = |sni| resolver.pick(sni).unwrap();
    assert!(Arc::ptr_eq(&picked(Some("A.example.com")), &a));
    assert!(Arc::ptr_eq(&picked(Some("x.b.example.com")), &b));
    assert!(Arc::ptr_eq(&picked(Some("unknown.example.com")), &a));
    assert!(Arc::ptr_eq(&picked(None), &a));
}
