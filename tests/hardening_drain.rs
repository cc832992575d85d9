//! Answers that must not be lost and shutdowns that must not be held: an upstream's (or the
//! gateway's own) answer given before the request body was read reaches a client still
//! sending it, the drain that makes that possible is bounded, and SIGTERM waits neither for a
//! connection that never said hello nor, past the grace period, for a client that stopped
//! reading.

mod hardening_support;
mod support;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hardening_support::{
    accepted, access_lines, gateway_in_front_of, get_on, unread_bytes, wait_for, RawH2, RawTls,
};
use support::{Gateway, Http, Registry, RegistryOptions};

fn token_registry() -> Registry {
    Registry::start_with(RegistryOptions {
        token_realm: Some("http://127.0.0.1:9/token".into()),
        ..RegistryOptions::default()
    })
}

#[test]
fn an_early_401_to_a_32_mib_put_reaches_the_client_every_time() {
    // Distribution with token auth answers 401 before reading a body, as Nexus does to an
    // upload sent without credentials (the ORAS client, an expired token mid-push).
    let registry = token_registry();
    let gw = gateway_in_front_of(&registry, "");
    let body = Bytes::from(vec![5u8; 32 << 20]);
    let digest = format!("sha256:{}", "0".repeat(64));
    let ca = gw.ca_pem();
    let base = gw.url();
    let outcomes = support::on_own_runtime(move || async move {
        let mut outcomes = Vec::new();
        for (http, tries) in [(Http::One, 20), (Http::Two, 5)] {
            let client = support::https_client(&ca, http);
            for n in 0..tries {
                let url = format!("{base}/v2/early/blobs/uploads/{http:?}-{n}?digest={digest}");
                let started = Instant::now();
                let got = client
                    .put(url)
                    .header("content-type", "application/octet-stream")
                    .body(body.clone())
                    .send()
                    .await;
                let got = match got {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let challenge = resp.headers().contains_key("www-authenticate");
                        let text = resp.text().await.unwrap_or_default();
                        Ok((status, challenge, text))
                    }
                    Err(e) => Err(format!("{e:?}")),
                };
                outcomes.push((format!("{http:?} #{n}"), got, started.elapsed()));
            }
        }
        outcomes
    });
    let failed: Vec<_> = outcomes
        .iter()
        .filter(
            |(_, got, _)| !matches!(got, Ok((401, true, text)) if text.contains("UNAUTHORIZED")),
        )
        .collect();
    let slowest = outcomes.iter().map(|(_, _, t)| *t).max();
    println!("{} early 401s, slowest {slowest:?}", outcomes.len());
    assert!(
        failed.is_empty(),
        "{} of {} PUTs did not read the 401: {failed:#?}\n--- gateway\n{}",
        failed.len(),
        outcomes.len(),
        gw.log()
    );

    // The registry saw each PUT once, and answered it 401.
    let log = registry.log();
    for (http, tries) in [("One", 20), ("Two", 5)] {
        for n in 0..tries {
            let lines = access_lines(&log, &format!("/v2/early/blobs/uploads/{http}-{n}?"));
            assert_eq!(lines.len(), 1, "{http} #{n}: {lines:?}");
            assert!(lines[0].contains("\" 401 "), "{}", lines[0]);
        }
    }
    let reply = gw.get("/v2/");
    assert_eq!(
        reply.status, 401,
        "a good request gets the registry's challenge"
    );
    assert!(reply.header("www-authenticate").is_some());
}

/// `PUT` of an 8 MiB "manifest" `tries` times over HTTP/1.1; each outcome.
fn put_manifests(gw: &Gateway, tries: usize, tag: &str) -> Vec<Result<(u16, String), String>> {
    let ca = gw.ca_pem();
    let base = gw.url();
    let tag = tag.to_string();
    support::on_own_runtime(move || async move {
        let client = support::https_client(&ca, Http::One);
        let body = Bytes::from(vec![b' '; 8 << 20]);
        let mut outcomes = Vec::new();
        for n in 0..tries {
            let got = client
                .put(format!("{base}/v2/early/manifests/{tag}-{n}"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(body.clone())
                .send()
                .await;
            outcomes.push(match got {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    Ok((status, resp.text().await.unwrap_or_default()))
                }
                Err(e) => Err(format!("{e:?}")),
            });
        }
        outcomes
    })
}

#[test]
fn a_manifest_put_answered_before_its_body_is_read_gets_the_json_error_every_time() {
    let get = Registry::start();
    let (down, _refusing) = support::refusing_addr();
    // Backfill off: the body streams to put, whose refused connection is answered at once.
    let gw = Gateway::builder()
        .toml("[backfill]\nenabled = false")
        .put(&format!("http://{down}"))
        .get(&get.url())
        .start();
    let outcomes = put_manifests(&gw, 50, "down");
    let failed: Vec<_> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, got)| !matches!(got, Ok((502, text)) if text.contains("\"UNAVAILABLE\"")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 50 manifest PUTs to a stopped put did not read the JSON 502: {failed:#?}",
        failed.len()
    );

    // Backfill on: a manifest over 4 MiB is refused with 413 before its body is read.
    let gw = Gateway::builder()
        .put(&format!("http://{down}"))
        .get(&get.url())
        .start();
    let outcomes = put_manifests(&gw, 10, "large");
    let failed: Vec<_> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, got)| !matches!(got, Ok((413, text)) if text.contains("\"errors\"")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 10 oversized manifest PUTs did not read the JSON 413: {failed:#?}",
        failed.len()
    );
    assert_eq!(gw.get("/v2/").status, 200, "a good request (get is up)");
}

#[test]
fn after_an_early_answer_the_body_is_drained_for_early_response_drain_then_cut() {
    let registry = token_registry();
    let gw = gateway_in_front_of(&registry, "[timeouts]\nearly_response_drain = \"2s\"");
    let mut conn = RawTls::connect(&gw);
    // Announces 1 GiB, sends none of it before the answer.
    conn.send(
        format!(
            "PUT /v2/drain/blobs/uploads/x?digest=sha256:{} HTTP/1.1\r\nHost: {}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: 1073741824\r\n\r\n",
            "0".repeat(64),
            gw.host_port()
        )
        .as_bytes(),
    )
    .expect("send the head");
    let reply = conn.response().expect("the early 401");
    assert_eq!(reply.status, 401, "{}", reply.head);
    let answered = Instant::now();

    // The client keeps sending, slowly (4 KiB every 100 ms, never stalling): the gateway reads
    // it for about 2 s, then closes.
    let deadline = answered + Duration::from_secs(15);
    let cut = loop {
        if conn.send(&[1u8; 4096]).is_err() || conn.closed_within(Duration::from_millis(100)) {
            break answered.elapsed();
        }
        assert!(Instant::now() < deadline, "still draining after 15 s");
    };
    println!("cut {cut:?} after the early answer");
    assert!(
        cut >= Duration::from_millis(1500) && cut <= Duration::from_secs(5),
        "the connection was cut {cut:?} after the early answer; early_response_drain is 2s"
    );
    assert_eq!(gw.get("/v2/").status, 401, "a good request");
}

#[test]
fn sigterm_does_not_wait_for_a_connection_that_never_sent_a_client_hello() {
    let registry = Registry::start();
    let mut gw = gateway_in_front_of(&registry, "[timeouts]\nshutdown_grace = \"30s\"");
    let silent = TcpStream::connect(gw.addr()).expect("TCP connect");
    let from = silent.local_addr().expect("its address");
    wait_for(
        Duration::from_secs(3),
        || accepted(gw.addr(), Some(from)) == 1,
        || "the gateway never accepted the silent connection".into(),
    );
    // An idle keep-alive client, and a good request served meanwhile.
    let mut idle = RawTls::connect(&gw);
    assert_eq!(get_on(&mut idle, &gw, "/v2/").ok(), Some(200));

    let started = Instant::now();
    let status = gw.terminate(Duration::from_secs(35));
    let took = started.elapsed();
    println!("exited {status:?} {took:?} after SIGTERM");
    let status = status.unwrap_or_else(|| panic!("not exited after 35 s:\n{}", gw.log()));
    assert!(status.success(), "{status:?}\n{}", gw.log());
    assert!(
        took < Duration::from_secs(2),
        "took {took:?} with nothing in flight:\n{}",
        gw.log()
    );
    drop(silent);
}

/// Pushes `size` bytes as a blob of `name` straight to `registry`; its digest.
fn push_blob(registry: &Registry, name: &str, size: usize) -> String {
    let blob: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let digest = support::sha256(&blob);
    let base = registry.url();
    let name = name.to_string();
    let want = digest.clone();
    support::on_own_runtime(move || async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let resp = client
            .post(format!("{base}/v2/{name}/blobs/uploads/"))
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 202);
        let location = resp.headers()["location"]
            .to_str()
            .expect("Location")
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = client
            .put(format!("{location}{sep}digest={want}"))
            .body(blob)
            .send()
            .await
            .expect("PUT");
        assert_eq!(resp.status(), 201);
    });
    digest
}

#[test]
fn sigterm_with_an_http2_client_that_stopped_reading_exits_by_the_end_of_the_grace() {
    let registry = Registry::start();
    let digest = push_blob(&registry, "big", 32 << 20);
    let mut gw = gateway_in_front_of(&registry, "[timeouts]\nshutdown_grace = \"3s\"");

    // Asks for 32 MiB with all the flow-control credit it could want, then never reads.
    let mut h2 = RawH2::open(&gw, 0x7fff_ffff);
    h2.request("GET", &gw.host_port(), &format!("/v2/big/blobs/{digest}"));
    let local = h2.tls.local_addr();
    // The server fills this socket's receive queue (it does not grow while nobody reads) and
    // then has to wait, with the stream in flight.
    wait_for(
        Duration::from_secs(10),
        || unread_bytes(local) > 64 << 10,
        || format!("{} bytes unread", unread_bytes(local)),
    );
    assert_eq!(gw.get("/v2/").status, 200, "a good request meanwhile");

    let started = Instant::now();
    let status = gw.terminate(Duration::from_secs(15));
    let took = started.elapsed();
    println!("exited {status:?} {took:?} after SIGTERM (grace 3s)");
    assert!(status.is_some(), "not exited after 15 s:\n{}", gw.log());
    assert!(
        took <= Duration::from_millis(4500),
        "took {took:?}, grace is 3s:\n{}",
        gw.log()
    );
    drop(h2);
}
