//! What a hostile or sloppy request (or upstream answer) cannot make the gateway do: pass on a
//! framing the other side reads differently, forward an oversized target, a method a registry
//! never serves, a `Host` nobody configured, a header name nginx drops, or a path an upstream
//! reads as another route. Each test asserts what the client gets, what the upstream saw
//! (its own log, or a recording stub's view of the bytes), and that a good request still works.

mod hardening_support;
mod support;

use std::time::Duration;

use hardening_support::{
    access_lines, conflicting_body, h2_request, wait_for, ConflictingFramingUpstream, RawTls,
    RecordingUpstream,
};
use support::{Gateway, Http, Registry};

/// Asserts a registry-style JSON error body: `{"errors":[{"code":"...","message":...}]}`.
fn assert_registry_json(json: &serde_json::Value, what: &str) {
    let code = json["errors"][0]["code"].as_str();
    assert!(
        code.is_some_and(|c| !c.is_empty()),
        "{what}: not a registry error: {json}"
    );
}

/// `GET /v2/` through the gateway on a fresh HTTP/1.1 connection answers 200.
fn still_serves(gw: &Gateway) {
    let reply = gw.get("/v2/");
    assert_eq!(reply.status, 200, "a good request: {}", reply.text());
}

#[test]
fn an_upstream_answer_with_both_content_length_and_chunked_is_never_truncated() {
    let stub = ConflictingFramingUpstream::start();
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&stub.url())
        .start_when_listening();
    let whole = conflicting_body();

    // An HTTP/1.1 client, read byte for byte: either a 502, or the whole body framed one way.
    let mut conn = RawTls::connect(&gw);
    let host = gw.host_port();
    conn.send(
        format!("GET /v2/framing/blobs/sha256:00 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
    )
    .expect("send");
    let reply = conn.response().expect("an answer");
    let answered_whole = reply.status != 502;
    if reply.status == 502 {
        assert_registry_json(&reply.json(), "the 502");
    } else {
        assert_eq!(reply.status, 200, "{}", reply.head);
        assert!(
            !(reply.is_chunked() && reply.header("content-length").is_some()),
            "Content-Length alongside chunked reached the client:\n{}",
            reply.head
        );
        assert_eq!(
            reply.body.len(),
            whole.len(),
            "the body was cut to {} of {} bytes; head:\n{}",
            reply.body.len(),
            whole.len(),
            reply.head
        );
        assert_eq!(reply.body, whole);
        // The connection is still in step: the next answer starts where this one ended.
        conn.send(
            format!("GET /v2/framing/blobs/sha256:01 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        )
        .expect("send a second request");
        let next = conn
            .response()
            .expect("a second answer on the same connection");
        assert_eq!(next.status, 200, "{}", next.head);
        assert_eq!(next.body, whole);
    }

    // reqwest over both protocols agrees: a complete body or a 502, never a short body read as
    // a success.
    for http in [Http::One, Http::Two] {
        let ca = gw.ca_pem();
        let url = format!("{}/v2/framing/blobs/sha256:02", gw.url());
        let got = support::on_own_runtime(move || async move {
            let resp = support::https_client(&ca, http)
                .get(url)
                .send()
                .await
                .map_err(|e| format!("{e:?}"))?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await.map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>((status, body.to_vec()))
        });
        match got {
            Ok((502, _)) => {}
            Ok((200, body)) => assert_eq!(body.len(), whole.len(), "{http:?}: short body"),
            other => panic!("{http:?}: neither a complete body nor a 502: {other:?}"),
        }
    }

    // The stub saw exactly the requests sent (one each, well framed), and nothing else.
    for n in ["00", "01", "02"] {
        let seen = stub.0.requests_to(&format!("/v2/framing/blobs/sha256:{n}"));
        // Asked once each (one gateway request per client request, none retried); 02 twice.
        let want = match n {
            "01" if !answered_whole => 0,
            "02" => 2,
            _ => 1,
        };
        assert_eq!(seen.len(), want, "{n}: {:?}", stub.0.targets());
        assert!(
            seen.iter().all(|r| r.framing_fault.is_none()),
            "{n}: {seen:?}"
        );
    }
    assert!(stub.0.garbage().is_empty(), "{:?}", stub.0.garbage());
    still_serves_put(&gw);
}

/// A request the put registry answers, for gateways whose get side is a stub.
fn still_serves_put(gw: &Gateway) {
    let reply = gw.request(Http::One, "POST", "/v2/still/blobs/uploads/");
    assert_eq!(reply.status, 202, "a good request: {}", reply.text());
}

#[test]
fn a_request_with_both_content_length_and_chunked_reaches_the_upstream_well_framed_or_not_at_all() {
    let stub = RecordingUpstream::start();
    let gw = Gateway::builder().put(&stub.url()).get(&stub.url()).start();
    let mut conn = RawTls::connect(&gw);
    let host = gw.host_port();
    // Content-Length says 4 bytes, the chunked body carries 11; RFC 9112 §6.3: chunked wins,
    // and a proxy forwarding it must not keep the Content-Length.
    conn.send(
        format!(
            "PATCH /v2/smuggle/blobs/uploads/one HTTP/1.1\r\nHost: {host}\r\n\
             Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
             b\r\nhello world\r\n0\r\n\r\n"
        )
        .as_bytes(),
    )
    .expect("send");
    let reply = conn.response().expect("an answer");
    let seen = stub.requests_to("/v2/smuggle/");
    match reply.status {
        400 => assert!(seen.is_empty(), "refused, yet forwarded: {seen:?}"),
        200 => {
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert_eq!(seen[0].framing_fault, None, "{:?}", seen[0]);
            assert_eq!(seen[0].body, b"hello world", "{:?}", seen[0]);
        }
        other => panic!("neither 400 nor forwarded: {other}\n{}", reply.head),
    }
    assert!(stub.garbage().is_empty(), "{:?}", stub.garbage());
    assert!(
        stub.requests_to("/v2/smuggle").len() <= 1,
        "{:?}",
        stub.targets()
    );
    still_serves(&gw);
}

#[test]
fn a_16_kib_path_gets_a_json_414_and_never_reaches_the_upstream() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let long = format!("/v2/long/{}/manifests/latest", "a".repeat(16 << 10));
    for http in [Http::One, Http::Two] {
        let reply = gw.request(http, "GET", &long);
        assert_eq!(reply.status, 414, "{http:?}: {}", reply.text());
        assert_registry_json(&reply.json(), "414");
    }
    // Under the 8 KiB default, a long target is the registry's to judge.
    let fits = format!("/v2/?fits={}", "b".repeat(8000));
    let reply = gw.request(Http::One, "GET", &fits);
    assert_eq!(reply.status, 200, "an 8,010-byte target");
    wait_for(
        Duration::from_secs(3),
        || !access_lines(&registry.log(), "/v2/?fits=bbbb").is_empty(),
        || "the 8,010-byte target never reached the registry".into(),
    );

    let log = registry.log();
    assert!(
        access_lines(&log, "/v2/long/").is_empty(),
        "the 16 KiB path reached the registry:\n{log}"
    );
    still_serves(&gw);
}

#[test]
fn connect_and_trace_get_405_and_lowercase_methods_get_400_and_reach_no_upstream() {
    let put = Registry::start();
    let get = Registry::start();
    let gw = Gateway::builder().put(&put.url()).get(&get.url()).start();
    let host = gw.host_port();
    let cases = [
        (
            format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            405,
        ),
        (
            format!("TRACE /v2/methods/tags/list HTTP/1.1\r\nHost: {host}\r\n\r\n"),
            405,
        ),
        (
            format!(
                "put /v2/methods/manifests/latest HTTP/1.1\r\nHost: {host}\r\n\
                 Content-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                 Content-Length: 2\r\n\r\n{{}}"
            ),
            400,
        ),
        (
            format!(
                "Delete /v2/methods/manifests/sha256:{} HTTP/1.1\r\nHost: {host}\r\n\r\n",
                "0".repeat(64)
            ),
            400,
        ),
    ];
    for (request, want) in &cases {
        let mut conn = RawTls::connect(&gw);
        conn.send(request.as_bytes()).expect("send");
        let reply = conn.response().expect("an answer");
        let line = request.lines().next().unwrap_or_default();
        assert_eq!(reply.status, *want, "{line}\n{}", reply.head);
    }
    // TRACE over HTTP/2 too.
    let reply = gw.request(Http::Two, "TRACE", "/v2/methods/tags/list");
    assert_eq!(reply.status, 405, "HTTP/2 TRACE: {}", reply.text());

    still_serves(&gw);
    for (name, registry) in [("put", &put), ("get", &get)] {
        let log = registry.log();
        for method in ["CONNECT", "TRACE", "put", "Delete"] {
            assert!(
                access_lines(&log, &format!("\"{method} ")).is_empty(),
                "{method} reached {name}:\n{log}"
            );
        }
        assert!(
            access_lines(&log, "/v2/methods/").is_empty(),
            "{name} saw a request:\n{log}"
        );
    }
}

#[test]
fn with_strict_host_an_unknown_host_gets_421_and_never_reaches_the_upstream() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .toml("hostnames = [\"registry.test\"]\n[limits]\nstrict_host = true")
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let public = format!("registry.test:{}", gw.addr().port());

    // The configured name works.
    let mut conn = RawTls::open(&gw, "registry.test", b"http/1.1", None).expect("TLS");
    conn.send(format!("GET /v2/?strict=known HTTP/1.1\r\nHost: {public}\r\n\r\n").as_bytes())
        .expect("send");
    let reply = conn.response().expect("an answer");
    assert_eq!(reply.status, 200, "{}", reply.head);

    // Any other name is refused before an upstream is asked, and never used in an answer.
    let mut conn = RawTls::open(&gw, "registry.test", b"http/1.1", None).expect("TLS");
    conn.send(b"GET /v2/strict/unknown/tags/list HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .expect("send");
    let reply = conn.response().expect("an answer");
    assert_eq!(reply.status, 421, "{}\n{}", reply.head, reply.text());
    // The unknown name is never used to build a URL the client would follow.
    for name in ["location", "link", "www-authenticate"] {
        let value = reply.header(name).unwrap_or_default();
        assert!(!value.contains("evil.example"), "{name}: {value}");
    }

    // The same over HTTP/2, by :authority.
    let port = gw.addr().port();
    let known = h2_request(
        &gw,
        "GET",
        &format!("https://registry.test:{port}/v2/strict/h2-registry.test/tags/list"),
        &[],
    );
    assert_eq!(known, Ok(404), "HTTP/2 to the configured name");
    let unknown = h2_request(
        &gw,
        "GET",
        &format!("https://evil.example:{port}/v2/strict/h2-evil.example/tags/list"),
        &[],
    );
    assert_eq!(unknown, Ok(421), "HTTP/2 to an unknown :authority");

    wait_for(
        Duration::from_secs(3),
        || !access_lines(&registry.log(), "/v2/strict/h2-registry.test/").is_empty(),
        || registry.log(),
    );
    let log = registry.log();
    assert!(
        access_lines(&log, "/v2/strict/unknown/").is_empty()
            && access_lines(&log, "/v2/strict/h2-evil.example/").is_empty(),
        "a request for an unknown host reached the registry:\n{log}"
    );
}

#[test]
fn http1_without_host_or_with_two_and_http2_with_a_conflicting_host_get_400() {
    let stub = RecordingUpstream::start();
    let gw = Gateway::builder().put(&stub.url()).get(&stub.url()).start();
    let host = gw.host_port();
    for (what, request) in [
        (
            "HTTP/1.1 without Host",
            "GET /v2/host/missing/tags/list HTTP/1.1\r\n\r\n".to_string(),
        ),
        (
            "two Host headers",
            format!(
                "GET /v2/host/twice/tags/list HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\n\r\n"
            ),
        ),
    ] {
        let mut conn = RawTls::connect(&gw);
        conn.send(request.as_bytes()).expect("send");
        let reply = conn.response().expect("an answer");
        assert_eq!(reply.status, 400, "{what}: {}", reply.head);
    }

    // HTTP/2: a `host` header that names another authority than `:authority`.
    let addr = gw.addr();
    let same = h2_request(
        &gw,
        "GET",
        &format!("https://{addr}/v2/host/h2-same/tags/list"),
        &[("host", &addr.to_string())],
    );
    assert_eq!(same, Ok(200), "host equal to :authority");
    let other = h2_request(
        &gw,
        "GET",
        &format!("https://{addr}/v2/host/h2-other/tags/list"),
        &[("host", "evil.example")],
    );
    assert_eq!(other, Ok(400), ":authority differs from host");

    assert!(
        stub.requests_to("/v2/host/missing").is_empty()
            && stub.requests_to("/v2/host/twice").is_empty()
            && stub.requests_to("/v2/host/h2-other").is_empty(),
        "a refused request reached the upstream: {:?}",
        stub.targets()
    );
    assert_eq!(
        stub.requests_to("/v2/host/h2-same").len(),
        1,
        "{:?}",
        stub.targets()
    );
    still_serves(&gw);
}

#[test]
fn header_names_with_underscores_are_dropped_unless_underscore_headers_is_set() {
    let stub = RecordingUpstream::start();
    let strict = Gateway::builder().put(&stub.url()).get(&stub.url()).start();
    let lenient = Gateway::builder()
        .toml("[limits]\nunderscore_headers = true")
        .put(&stub.url())
        .get(&stub.url())
        .start();
    let headers = [
        ("x_forwarded_for", "6.6.6.6"),
        ("x_api_key", "k"),
        ("x-plain", "p"),
    ];
    for (gw, path) in [
        (&strict, "/v2/underscore/default"),
        (&lenient, "/v2/underscore/allowed"),
    ] {
        for http in [Http::One, Http::Two] {
            let reply = gw.request_with(http, "GET", &format!("{path}/{http:?}"), &headers);
            assert_eq!(reply.status, 200, "{http:?}: {}", reply.text());
        }
    }

    let dropped = stub.requests_to("/v2/underscore/default/");
    assert_eq!(dropped.len(), 2, "{:?}", stub.targets());
    for r in &dropped {
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.iter().all(|n| !n.contains('_')),
            "{}: a header name with '_' was forwarded: {names:?}",
            r.target
        );
        assert_eq!(r.header("x-plain"), Some("p"), "{}: {names:?}", r.target);
        let xff = r.header("x-forwarded-for").unwrap_or_default();
        assert!(
            !xff.contains("6.6.6.6"),
            "{}: X-Forwarded-For {xff:?}",
            r.target
        );
    }
    let kept = stub.requests_to("/v2/underscore/allowed/");
    assert_eq!(kept.len(), 2, "{:?}", stub.targets());
    for r in &kept {
        assert_eq!(
            r.header("x_api_key"),
            Some("k"),
            "{}: {:?}",
            r.target,
            r.headers
        );
    }
}

#[test]
fn a_semicolon_path_parameter_cannot_route_one_way_for_dockgate_and_another_for_jetty() {
    // Jetty (Nexus) drops `;params` from each segment before resolving `..`, so it reads
    // `/v2/..;/v1/search` as `/v1/search`; whatever dockgate does, the upstream it picks must be
    // the one the path the upstream reads names.
    let put = Registry::start();
    let get = Registry::start();
    let gw = Gateway::builder().put(&put.url()).get(&get.url()).start();
    for (n, crafted) in [
        (1, "/v2/..;/v1/search?q=semi1"),
        (2, "/v2/team/..;/..;/v1/search?q=semi2"),
        (3, "/v2/..;x=y/v1/search?q=semi3"),
    ] {
        let reply = gw.request(Http::One, "GET", crafted);
        let needle = format!("q=semi{n}");
        if reply.status == 400 {
            assert_registry_json(&reply.json(), crafted);
            for (name, registry) in [("put", &put), ("get", &get)] {
                assert!(
                    access_lines(&registry.log(), &needle).is_empty(),
                    "{crafted}: refused, yet {name} saw it:\n{}",
                    registry.log()
                );
            }
            continue;
        }
        // Forwarded: then as a search, to put, with no `;` left for Jetty to reinterpret.
        wait_for(
            Duration::from_secs(3),
            || !access_lines(&put.log(), &needle).is_empty(),
            || {
                format!(
                    "{crafted} answered {} and did not reach put as a search\n--- get\n{}",
                    reply.status,
                    get.log()
                )
            },
        );
        let lines = access_lines(&put.log(), &needle);
        assert_eq!(lines.len(), 1, "{crafted}: {lines:?}");
        assert!(
            lines[0].contains(&format!("\"GET /v1/search?q=semi{n} ")),
            "{crafted} reached put as: {}",
            lines[0]
        );
        assert!(
            access_lines(&get.log(), &needle).is_empty(),
            "{crafted} reached get:\n{}",
            get.log()
        );
    }
    // An ordinary path parameter-free read still goes to get.
    let reply = gw.request(Http::One, "GET", "/v2/team/app/tags/list");
    assert_eq!(reply.status, 404, "{}", reply.text());
    still_serves(&gw);
}
