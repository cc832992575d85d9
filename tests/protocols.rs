//! HTTP/1.1 and HTTP/2 (chosen by ALPN) over TLS 1.2 and 1.3 all work, and what registry
//! clients need from a response survives the trip: `Content-Length` and `Docker-Content-Digest`
//! on HEAD, sized and chunked uploads.

mod hardening_support;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hardening_support::RawTls;
use support::{sha256, Gateway, Http, Registry};

/// How an upload's body is framed on the wire.
#[derive(Clone, Copy)]
enum Framing {
    /// PATCH with a body of unknown length (chunked over HTTP/1.1), as docker sends layers,
    /// then an empty PUT with the digest.
    Chunked,
    /// One PUT with `Content-Length`, as containerd sends it.
    Sized,
}

/// Uploads `blob` to `name` through the gateway and returns its digest.
async fn upload(
    client: &reqwest::Client,
    gw: &Gateway,
    name: &str,
    blob: &[u8],
    framing: Framing,
) -> String {
    let digest = sha256(blob);
    let resp = client
        .post(format!("{}/v2/{name}/blobs/uploads/", gw.url()))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 202);
    let mut location = resp.headers()["location"].to_str().unwrap().to_string();
    let mut body = reqwest::Body::from(blob.to_vec());
    if let Framing::Chunked = framing {
        let chunks: Vec<Result<Bytes, std::io::Error>> = blob
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let resp = client
            .patch(&location)
            .header("content-type", "application/octet-stream")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .expect("PATCH");
        assert_eq!(resp.status(), 202, "PATCH");
        location = resp.headers()["location"].to_str().unwrap().to_string();
        body = reqwest::Body::from(Vec::new());
    }
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = client
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .expect("PUT");
    let status = resp.status();
    assert_eq!(status, 201, "PUT {}", resp.text().await.unwrap_or_default());
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_clients_both_push_and_read_blobs() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let blob: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();

    for http in [Http::One, Http::Two] {
        let client = gw.client(http);
        let want = match http {
            Http::One => reqwest::Version::HTTP_11,
            Http::Two => reqwest::Version::HTTP_2,
        };
        let name = format!("proto/{http:?}").to_lowercase();
        let chunked = upload(&client, &gw, &name, &blob[..700_000], Framing::Chunked).await;
        let sized = upload(&client, &gw, &name, &blob, Framing::Sized).await;

        for (digest, len) in [(&chunked, 700_000), (&sized, blob.len())] {
            let url = format!("{}/v2/{name}/blobs/{digest}", gw.url());
            let head = client.head(&url).send().await.expect("HEAD");
            assert_eq!(head.version(), want);
            assert_eq!(head.status(), 200);
            // skopeo and containerd take the size and digest from the HEAD.
            assert_eq!(
                head.headers()["content-length"],
                len.to_string(),
                "{http:?}"
            );
            assert_eq!(head.headers()["docker-content-digest"], digest.as_str());

            let get = client.get(&url).send().await.expect("GET");
            assert_eq!(get.version(), want);
            let body = get.bytes().await.expect("blob body");
            assert_eq!(sha256(&body), *digest, "{http:?}");
        }

        // Range reads pass through untouched.
        let part = client
            .get(format!("{}/v2/{name}/blobs/{sized}", gw.url()))
            .header("range", "bytes=10-19")
            .send()
            .await
            .expect("ranged GET");
        assert_eq!(part.status(), 206);
        assert_eq!(part.bytes().await.unwrap().as_ref(), &blob[10..20]);
    }
}

#[test]
fn alpn_picks_http2_when_the_client_offers_both() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let ca = gw.ca_pem();
    let url = format!("{}/v2/", gw.url());
    let version = support::on_own_runtime(move || async move {
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .no_proxy()
            .build()
            .unwrap();
        client.get(url).send().await.expect("GET /v2/").version()
    });
    assert_eq!(version, reqwest::Version::HTTP_2);
}

#[test]
fn tls_1_2_and_1_3_handshakes_are_accepted_and_1_1_is_not() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let ca = gw.ca_cert_dir().join("ca.crt");
    let handshake = |flag: &str| {
        let out = Command::new("openssl")
            .args(["s_client", flag, "-connect", &gw.host_port(), "-CAfile"])
            .arg(&ca)
            .args(["-verify_return_error", "-brief"])
            .stdin(Stdio::null())
            .output()
            .expect("run openssl s_client");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, text) = handshake("-tls1_3");
    assert!(ok && text.contains("TLSv1.3"), "{text}");
    let (ok, text) = handshake("-tls1_2");
    assert!(ok && text.contains("TLSv1.2"), "{text}");
    let (ok, text) = handshake("-tls1_1");
    assert!(!ok, "TLS 1.1 must be refused: {text}");
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_client_headers() {
    let (_registry, _gw, mut tls) = served_once("1s");

    // Idle: the gateway closes the connection after client_headers, not before.
    let idle = Instant::now();
    assert!(
        tls.closed_within(Duration::from_secs(5)),
        "closed within 5 s"
    );
    let waited = idle.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed too early: {waited:?}"
    );
}

/// A keep-alive connection idle for longer than half a second gives its HTTP buffers back and
/// keeps only its TLS session (src/keepalive.rs); the client must not notice: the next request
/// on it is served, and so is a request whose head was already half sent behind the previous
/// one when the pause began.
#[test]
fn a_keep_alive_connection_serves_on_after_a_pause() {
    let (_registry, _gw, mut tls) = served_once("5s");
    let pause = Duration::from_millis(1500);
    for round in 0..3 {
        std::thread::sleep(pause);
        tls.send(GET_V2).expect("send a request");
        let reply = tls.response().expect("the response");
        assert_eq!(reply.status, 200, "round {round}: {}", reply.head);
    }

    // A request followed, in the same write, by the first half of the next one.
    let (first_half, second_half) = GET_V2.split_at(12);
    tls.send(&[GET_V2, first_half].concat())
        .expect("send a request and a half");
    let reply = tls.response().expect("the response");
    assert_eq!(reply.status, 200, "{}", reply.head);
    std::thread::sleep(pause);
    tls.send(second_half).expect("send the rest");
    let reply = tls.response().expect("the split request's response");
    assert_eq!(reply.status, 200, "the split request: {}", reply.head);
}

/// A client that trickles a request head, a byte at a time with pauses longer than the one
/// that frees a connection's buffers, is still cut off at `client_headers` (slowloris).
#[test]
fn a_trickled_request_head_is_cut_off_at_client_headers() {
    let (_registry, _gw, mut tls) = served_once("2s");

    let started = Instant::now();
    let head = b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".repeat(4);
    let mut closed = false;
    for byte in head.iter() {
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
        if tls.send(&[*byte]).is_err() || tls.closed_within(Duration::from_millis(700)) {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "a head trickled for {took:?} was never cut off");
    assert!(
        took < Duration::from_secs(6),
        "cut off only after {took:?} (client_headers is 2 s)"
    );
}

const GET_V2: &[u8] = b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// A gateway with this `timeouts.client_headers`, and a raw connection to it that has been
/// served one request (and so is a keep-alive connection between requests).
fn served_once(client_headers: &str) -> (Registry, Gateway, RawTls) {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .toml(&format!(
            "[timeouts]\nclient_headers = \"{client_headers}\""
        ))
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let mut tls = RawTls::connect(&gw);
    tls.send(GET_V2).expect("send a request");
    let reply = tls.response().expect("the response");
    assert_eq!(reply.status, 200, "{}", reply.head);
    (registry, gw, tls)
}

#[test]
fn plain_http_to_the_tls_port_gets_a_readable_400() {
    use std::io::{Read, Write};
    let hosted = Registry::start();
    let gateway = Gateway::builder()
        .put(&hosted.url())
        .get(&hosted.url())
        .start();
    let mut conn = std::net::TcpStream::connect(gateway.addr()).expect("connect");
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let request = format!(
        "GET /v2/ HTTP/1.1\r\nHost: {}\r\nUser-Agent: containerd\r\n\r\n",
        gateway.addr()
    );
    conn.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer:?}");
    assert!(answer.contains("use https://"), "{answer:?}");
    let ok = gateway.get("/v2/");
    assert_eq!(ok.status, 200, "TLS clients are still served");
}
