//! The CA and the acceptor against real verifiers: `openssl verify`, rustls' webpki verifier and
//! a TLS client that watches the served certificate being renewed under live traffic.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use dockgate::config::Tls;
use dockgate::tls::mint::Leaf;
use dockgate::tls::{generate_ca, issue_cert, setup, Ca, CaOptions};

#[test]
fn openssl_accepts_an_issued_certificate_for_every_kind_of_name() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca, out) = (tmp.path().join("ca"), tmp.path().join("out"));
    generate_ca(&ca, &ca_options(&[]), false).unwrap();
    issue_cert(
        &ca,
        &names(&["registry.example.com", "127.0.0.1", "::1", "localhost"]),
        &out,
        30,
    )
    .unwrap();

    let leaf = leaf_pem(&out);
    let verified = openssl_verify(&ca, &out, &leaf, &[]);
    assert!(verified.0, "{}", verified.1);
    for check in [
        ["-verify_hostname", "registry.example.com"],
        ["-verify_hostname", "localhost"],
        ["-verify_ip", "127.0.0.1"],
        ["-verify_ip", "::1"],
    ] {
        let (ok, output) = openssl_verify(&ca, &out, &leaf, &check);
        assert!(ok, "{check:?}: {output}");
    }
    let (ok, _) = openssl_verify(&ca, &out, &leaf, &["-verify_hostname", "other.example.com"]);
    assert!(!ok, "a name not in the certificate must fail");

    let text = openssl(&["x509", "-noout", "-text", "-in", leaf.to_str().unwrap()]);
    for needle in [
        "DNS:registry.example.com",
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
        "CA:FALSE",
        "TLS Web Server Authentication",
        "Digital Signature",
        "X509v3 Authority Key Identifier",
        "ASN1 OID: prime256v1",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    let ca_text = openssl(&[
        "x509",
        "-noout",
        "-text",
        "-in",
        ca.join("ca.crt").to_str().unwrap(),
    ]);
    for needle in [
        "CA:TRUE, pathlen:0",
        "Certificate Sign, CRL Sign",
        "X509v3 Subject Key Identifier",
        "Subject: CN = test CA",
    ] {
        assert!(ca_text.contains(needle), "{needle} missing in\n{ca_text}");
    }
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert_eq!(mode(&out.join("server.key")), 0o600);
}

#[test]
fn a_constrained_ca_cannot_vouch_for_other_names() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    generate_ca(
        &ca,
        &ca_options(&["registry.example.com", "10.0.0.0/8"]),
        false,
    )
    .unwrap();
    let (good, evil) = (tmp.path().join("good"), tmp.path().join("evil"));
    issue_cert(
        &ca,
        &names(&["registry.example.com", "10.1.2.3"]),
        &good,
        30,
    )
    .unwrap();
    issue_cert(&ca, &names(&["evil.example.org"]), &evil, 30).unwrap();

    let (ok, output) = openssl_verify(&ca, &good, &leaf_pem(&good), &[]);
    assert!(ok, "{output}");
    let (ok, output) = openssl_verify(&ca, &evil, &leaf_pem(&evil), &[]);
    assert!(
        !ok,
        "openssl accepted a name outside the constraints: {output}"
    );
    assert!(output.contains("permitted subtree violation"), "{output}");

    let webpki = webpki_verifier(&ca);
    let verify = |out: &Path, name: &str| {
        let chain = dockgate::tls::ServerCert::read(out).unwrap().chain;
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        webpki.verify_server_cert(&chain[0], &chain[1..], &server_name, &[], UnixTime::now())
    };
    verify(&good, "registry.example.com").unwrap();
    verify(&good, "10.1.2.3").unwrap();
    let refused = verify(&evil, "evil.example.org").unwrap_err();
    assert!(
        format!("{refused:?}").contains("NameConstraintViolation"),
        "{refused:?}"
    );
}

#[test]
fn user_files_must_match_and_be_current() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    generate_ca(&ca, &ca_options(&[]), false).unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    issue_cert(&ca, &names(&["localhost"]), &a, 30).unwrap();
    issue_cert(&ca, &names(&["localhost"]), &b, 30).unwrap();
    let wanted = names(&["localhost"]);

    let err = setup(
        &files(&a.join("server.crt"), &b.join("server.key")),
        &wanted,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains(&b.join("server.key").display().to_string()),
        "{err}"
    );
    assert!(err.contains("does not match"), "{err}");

    // Expired, and self-signed with rcgen directly, as a user's own tooling might produce.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(names(&["localhost"])).unwrap();
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    let cert = params.self_signed(&key).unwrap();
    let (old_crt, old_key) = (tmp.path().join("old.crt"), tmp.path().join("old.key"));
    std::fs::write(&old_crt, cert.pem()).unwrap();
    std::fs::write(&old_key, key.serialize_pem()).unwrap();
    let err = setup(&files(&old_crt, &old_key), &wanted)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(&old_crt.display().to_string()) && err.contains("expired"),
        "{err}"
    );

    // SEC1 ("EC PRIVATE KEY") and PKCS#1 ("RSA PRIVATE KEY") keys, as openssl writes them.
    let sec1 = tmp.path().join("sec1.key");
    openssl(&[
        "pkey",
        "-traditional",
        "-in",
        a.join("server.key").to_str().unwrap(),
        "-out",
        sec1.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    setup(&files(&a.join("server.crt"), &sec1), &wanted).unwrap();

    let (rsa_crt, rsa_key) = (tmp.path().join("rsa.crt"), tmp.path().join("rsa.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-keyout",
        rsa_key.to_str().unwrap(),
        "-out",
        rsa_crt.to_str().unwrap(),
    ]);
    let pkcs1 = tmp.path().join("pkcs1.key");
    openssl(&[
        "rsa",
        "-traditional",
        "-in",
        rsa_key.to_str().unwrap(),
        "-out",
        pkcs1.to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    let served = setup(&files(&rsa_crt, &pkcs1), &wanted).unwrap();
    assert!(served.renewal.is_none());
}

#[tokio::test]
async fn renewal_swaps_the_certificate_under_live_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let wanted = names(&["localhost", "127.0.0.1", "::1"]);
    generate_ca(&dir, &ca_options(&[]), false).unwrap();
    let now = OffsetDateTime::now_utc();
    let ageing = Ca::load(&dir)
        .unwrap()
        .issue_with_validity(
            &wanted,
            now - time::Duration::days(300),
            now + time::Duration::days(10),
        )
        .unwrap();
    ageing.write(&dir).unwrap();
    let old_serial = serial(&ageing.chain[0]);

    let tls = Tls::Minted {
        dir: dir.clone(),
        server_days: 30,
        renew_check: Duration::from_secs(1),
    };
    let served = setup(&tls, &wanted).unwrap();
    let addr = serve_ok(served.acceptor).await;
    let client = TlsConnector::from(Arc::new(client_config(&dir, &[b"http/1.1"])));

    let mut kept = connect(&client, addr).await;
    assert_eq!(
        peer_serial(&kept),
        old_serial,
        "setup keeps a certificate in its last third"
    );
    assert_eq!(request(&mut kept).await, "ok");

    tokio::spawn(
        served
            .renewal
            .expect("minted certificates are renewed")
            .run(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let new_serial = loop {
        let fresh = connect(&client, addr).await;
        let serial = peer_serial(&fresh);
        if serial != old_serial {
            break serial;
        }
        assert!(
            Instant::now() < deadline,
            "the certificate was not renewed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let on_disk = dockgate::tls::ServerCert::read(&dir).unwrap();
    assert_eq!(serial(&on_disk.chain[0]), new_serial);
    let leaf = Leaf::parse(&on_disk.chain[0]).unwrap();
    assert!(leaf.not_after > now + time::Duration::days(29));

    assert_eq!(
        request(&mut kept).await,
        "ok",
        "the established connection still works"
    );
    assert_eq!(peer_serial(&kept), old_serial);

    // ALPN offers h2 first, and TLS 1.2 clients are still served.
    let h2 = TlsConnector::from(Arc::new(client_config(&dir, &[b"h2", b"http/1.1"])));
    assert_eq!(
        connect(&h2, addr).await.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..])
    );
    let tls12 =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots(&dir))
            .with_no_client_auth();
    let mut old_protocol = connect(&TlsConnector::from(Arc::new(tls12)), addr).await;
    assert_eq!(
        old_protocol.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(request(&mut old_protocol).await, "ok");
}

/// Accepts TLS on a loopback port and answers every HTTP/1.1 request with `ok`, keep-alive.
async fn serve_ok(acceptor: TlsAcceptor) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if tls.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn connect(client: &TlsConnector, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    client
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One request on the connection; the body of the reply.
async fn request(tls: &mut TlsStream<TcpStream>) -> String {
    tls.write_all(b"GET /v2/ HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 1024];
    while !reply.ends_with(b"\r\n\r\nok") {
        let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed after {:?}",
            String::from_utf8_lossy(&reply)
        );
        reply.extend_from_slice(&chunk[..n]);
    }
    "ok".into()
}

fn peer_serial(tls: &TlsStream<TcpStream>) -> String {
    let certs = tls.get_ref().1.peer_certificates().unwrap();
    serial(&certs[0])
}

fn serial(der: &CertificateDer<'_>) -> String {
    Leaf::parse(der).unwrap().serial
}

fn client_config(ca_dir: &Path, alpn: &[&[u8]]) -> ClientConfig {
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(ca_dir))
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

fn roots(ca_dir: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(Ca::load(ca_dir).unwrap().cert_der().clone())
        .unwrap();
    roots
}

fn webpki_verifier(ca_dir: &Path) -> Arc<WebPkiServerVerifier> {
    WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots(ca_dir)),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap()
}

/// `openssl verify` of `leaf` against `ca_dir/ca.crt`, with the served chain as untrusted.
fn openssl_verify(ca_dir: &Path, out: &Path, leaf: &Path, extra: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .arg("verify")
        .args(["-purpose", "sslserver", "-CAfile"])
        .arg(ca_dir.join("ca.crt"))
        .arg("-untrusted")
        .arg(out.join("server.crt"))
        .args(extra)
        .arg(leaf)
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn openssl(args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The first certificate of `out/server.crt`, alone in `out/leaf.pem`.
fn leaf_pem(out: &Path) -> PathBuf {
    let chain = std::fs::read_to_string(out.join("server.crt")).unwrap();
    let end = "-----END CERTIFICATE-----";
    let first = &chain[..chain.find(end).unwrap() + end.len()];
    let path = out.join("leaf.pem");
    std::fs::write(&path, format!("{first}\n")).unwrap();
    path
}

fn ca_options(permit: &[&str]) -> CaOptions {
    CaOptions {
        name: "test CA".into(),
        days: 365,
        permit: names(permit),
    }
}

fn files(cert: &Path, key: &Path) -> Tls {
    Tls::Files {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    }
}

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().unwrap().permissions().mode() & 0o777
}
