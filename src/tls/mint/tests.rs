//! The CA's unit tests: what generate-ca writes, what issued certificates carry, and when a
//! served certificate is reissued.

use std::fs;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;
use crate::tls::names::ip_from_bytes;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn opts(permit: &[&str]) -> CaOptions {
    CaOptions {
        name: "test CA".into(),
        days: 30,
        permit: names(permit),
    }
}

fn new_ca(permit: &[&str]) -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    generate_ca(dir.path(), &opts(permit), false).unwrap();
    let ca = Ca::load(dir.path()).unwrap();
    (dir, ca)
}

fn with_x509<T>(der: &[u8], f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (_, x509) = x509_parser::parse_x509_certificate(der).unwrap();
    f(&x509)
}

#[test]
fn an_existing_ca_is_not_overwritten_without_force() {
    let (dir, _) = new_ca(&[]);
    let before = fs::read(dir.path().join(CA_KEY)).unwrap();
    let err = generate_ca(dir.path(), &opts(&[]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ca.key") && err.contains("--force"), "{err}");
    assert_eq!(fs::read(dir.path().join(CA_KEY)).unwrap(), before);

    fs::remove_file(dir.path().join(CA_KEY)).unwrap();
    let err = generate_ca(dir.path(), &opts(&[]), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ca.crt") && err.contains("--force"), "{err}");

    generate_ca(dir.path(), &opts(&[]), true).unwrap();
    assert_ne!(fs::read(dir.path().join(CA_KEY)).unwrap(), before);
    Ca::load(dir.path()).unwrap();
}

#[test]
fn the_ca_may_sign_leaves_only() {
    let (_dir, ca) = new_ca(&[]);
    with_x509(ca.cert_der(), |x| {
        let bc = x.basic_constraints().unwrap().unwrap();
        assert!(bc.critical && bc.value.ca);
        assert_eq!(bc.value.path_len_constraint, Some(0));
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
        assert!(x.iter_extensions().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::SubjectKeyIdentifier(_)
        )));
        assert_eq!(x.subject().to_string(), "CN=test CA");
        assert!(x.name_constraints().unwrap().is_none());
        let days = (x.validity().not_after.to_datetime() - x.validity().not_before.to_datetime())
            .whole_hours();
        assert_eq!(days, 30 * 24 + 1);
    });
}

#[test]
fn permit_entries_become_critical_name_constraints() {
    let (_dir, ca) = new_ca(&["Registry.Example.com.", "10.1.2.3/8", "::1", "192.168.0.7"]);
    with_x509(ca.cert_der(), |x| {
        let nc = x.name_constraints().unwrap().unwrap();
        assert!(nc.critical);
        let permitted: Vec<String> = nc
            .value
            .permitted_subtrees
            .iter()
            .flatten()
            .map(|s| match &s.base {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) => format!("{b:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            permitted,
            [
                "registry.example.com".to_string(),
                format!("{:?}", [10u8, 0, 0, 0, 255, 0, 0, 0]),
                format!("{:?}", [[0u8; 15].as_slice(), &[1], &[255u8; 16]].concat()),
                format!("{:?}", [192u8, 168, 0, 7, 255, 255, 255, 255]),
            ]
        );
        assert!(nc.value.excluded_subtrees.is_none());
    });
    let (ok, refused) = ca.partition(&names(&[
        "registry.example.com",
        "a.registry.example.com",
        "evil.example.org",
        "10.9.9.9",
        "11.0.0.1",
        "::1",
        "::2",
        "localhost",
    ]));
    assert_eq!(
        ok,
        names(&[
            "registry.example.com",
            "a.registry.example.com",
            "10.9.9.9",
            "::1"
        ])
    );
    assert_eq!(
        refused,
        names(&["evil.example.org", "11.0.0.1", "::2", "localhost"])
    );
}

#[test]
fn bad_permit_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [
        "10.0.0.0/33",
        "::/129",
        "*.example.com",
        "host:5000",
        "10.0.0.0/x",
        "exa mple.com",
    ] {
        let err = generate_ca(dir.path(), &opts(&[bad]), false).unwrap_err();
        assert!(matches!(err, TlsError::Mint(_)), "{bad}: {err}");
    }
    assert!(!dir.path().join(CA_KEY).exists());
}

#[test]
fn server_certificates_carry_each_name_as_its_own_kind() {
    let (_dir, ca) = new_ca(&[]);
    let cert = ca
        .issue(
            &names(&[
                "Registry.Example.com",
                "127.0.0.1",
                "::1",
                "[fe80::2]",
                "localhost",
            ]),
            397,
        )
        .unwrap();
    assert_eq!(cert.chain.len(), 2);
    assert_eq!(&cert.chain[1], ca.cert_der());
    assert!(matches!(cert.key, PrivateKeyDer::Pkcs8(_)));
    with_x509(&cert.chain[0], |x| {
        let sans = &x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names;
        let kinds: Vec<String> = sans
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => format!("dns {d}"),
                GeneralName::IPAddress(b) => format!("ip {}", ip_from_bytes(b).unwrap()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "dns registry.example.com",
                "ip 127.0.0.1",
                "ip ::1",
                "ip fe80::2",
                "dns localhost"
            ]
        );
        assert_eq!(x.subject().to_string(), "CN=Registry.Example.com");
        assert!(x.extended_key_usage().unwrap().unwrap().value.server_auth);
        let ku = x.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign());
        assert!(!x.is_ca());
        let aki = x
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        let ski = with_x509(ca.cert_der(), |ca| {
            ca.iter_extensions()
                .find_map(|e| match e.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                    _ => None,
                })
        });
        assert!(aki.is_some());
        assert_eq!(aki, ski);
    });
    let other = ca.issue(&names(&["localhost"]), 1).unwrap();
    let serial = |c: &ServerCert| Leaf::parse(&c.chain[0]).unwrap().serial;
    assert_ne!(serial(&cert), serial(&other));
    assert!(ca.issue(&names(&["host:5000"]), 1).is_err());
    assert!(ca.issue(&[], 1).is_err());
}

#[test]
fn reissue_reasons() {
    let (_dir, ca) = new_ca(&[]);
    let (_other_dir, other) = new_ca(&[]);
    let wanted = names(&["localhost", "127.0.0.1"]);
    let now = OffsetDateTime::now_utc();
    let days = |d: i64| time::Duration::days(d);
    let reason = |cert: &ServerCert, early| ca.reissue_reason(&cert.chain, &wanted, now, early);

    let fresh = ca.issue(&wanted, 90).unwrap();
    assert_eq!(reason(&fresh, true), None);

    let expired = ca
        .issue_with_validity(&wanted, now - days(30), now - days(1))
        .unwrap();
    assert!(reason(&expired, false).unwrap().contains("expired"));

    let future = ca
        .issue_with_validity(&wanted, now + days(1), now + days(30))
        .unwrap();
    assert!(reason(&future, false).unwrap().contains("not valid before"));

    let foreign = other.issue(&wanted, 90).unwrap();
    assert!(reason(&foreign, false).unwrap().contains("not signed by"));

    let narrow = ca.issue(&names(&["localhost"]), 90).unwrap();
    assert_eq!(
        reason(&narrow, false).unwrap(),
        "it does not cover 127.0.0.1"
    );

    let old = ca
        .issue_with_validity(&wanted, now - days(300), now + days(10))
        .unwrap();
    assert_eq!(reason(&old, false), None, "kept at startup");
    assert!(reason(&old, true).unwrap().contains("last third"));
}
