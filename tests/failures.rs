//! When an upstream or a client fails, docker gets a registry-style JSON error it can print,
//! the gateway keeps serving, and nothing is left hanging.

mod support;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{Gateway, Http, Registry};

/// Fault stub: accepts connections and reads requests but never answers, which a real
/// registry does not do on purpose (a hung Nexus does).
struct SilentUpstream {
    addr: SocketAddr,
    _held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentUpstream {
    fn start() -> SilentUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the silent upstream");
        let addr = listener.local_addr().expect("its address");
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = conn.try_clone().expect("clone a socket");
                std::thread::spawn(move || {
                    let mut sink = [0u8; 4096];
                    while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
                });
                keep.lock().expect("lock").push(conn);
            }
        });
        SilentUpstream { addr, _held: held }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn assert_registry_error(reply: &support::Reply, status: u16, mentions: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let json = reply.json();
    assert_eq!(json["errors"][0]["code"], "UNAVAILABLE", "{json}");
    let message = json["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "{message:?} should mention {mentions:?}"
    );
}

#[test]
fn a_stopped_upstream_gives_a_json_502_within_the_connect_timeout_then_recovers() {
    let mut registry = Registry::start();
    let gw = Gateway::builder()
        .toml("[timeouts]\nconnect = \"2s\"")
        .put(&registry.url())
        .get(&registry.url())
        .start();
    assert_eq!(gw.get("/v2/").status, 200);

    registry.stop();
    for http in [Http::One, Http::Two] {
        let started = Instant::now();
        let reply = gw.request(http, "GET", "/v2/library/alpine/manifests/latest");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
        assert_registry_error(
            &reply,
            502,
            &format!("get upstream http://{}", registry.addr()),
        );
    }
    let reply = gw.request(Http::One, "POST", "/v2/library/alpine/blobs/uploads/");
    assert_registry_error(&reply, 502, "put upstream");

    registry.restart();
    assert_eq!(gw.get("/v2/").status, 200);
    let reply = gw.request(Http::One, "POST", "/v2/library/alpine/blobs/uploads/");
    assert_eq!(reply.status, 202, "{}", reply.text());
    let log = gw.log();
    assert!(
        log.contains("status=502") && log.contains("upstream fault"),
        "{log}"
    );
}

#[test]
fn an_upstream_that_never_answers_gives_a_json_504_and_the_other_keeps_working() {
    let silent = SilentUpstream::start();
    let registry = Registry::start();
    let gw = Gateway::builder()
        .toml("[timeouts]\nresponse_headers = \"1s\"")
        .put(&registry.url())
        .get(&silent.url())
        .start();
    let started = Instant::now();
    let reply = gw.request(Http::Two, "HEAD", "/v2/library/alpine/manifests/latest");
    let took = started.elapsed();
    assert_eq!(reply.status, 504);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    let reply = gw.request(Http::One, "GET", "/v2/_catalog");
    assert_registry_error(&reply, 504, "sent no response within 1s");

    let reply = gw.request(Http::One, "POST", "/v2/library/alpine/blobs/uploads/");
    assert_eq!(
        reply.status,
        202,
        "the put side still works: {}",
        reply.text()
    );
}

/// A body that sends `chunks` pieces of 64 KiB, `every` apart, then either ends or hangs.
fn slow_body(chunks: usize, every: Duration, then_hang: bool) -> reqwest::Body {
    let stream = futures_util::stream::unfold(0usize, move |sent| async move {
        if sent == chunks {
            if then_hang {
                std::future::pending::<()>().await;
            }
            return None;
        }
        tokio::time::sleep(every).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 64 << 10])),
            sent + 1,
        ))
    });
    reqwest::Body::wrap_stream(stream)
}

async fn start_upload(client: &reqwest::Client, gw: &Gateway) -> String {
    let resp = client
        .post(format!("{}/v2/slow/blobs/uploads/", gw.url()))
        .send()
        .await
        .expect("POST an upload");
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"]
        .to_str()
        .expect("a Location")
        .to_string();
    assert!(location.starts_with(&gw.url()), "{location}");
    location
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_upload_ends_the_upstream_request_at_once() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let client = gw.client(Http::One);
    let location = start_upload(&client, &gw).await;

    let upload = client
        .patch(&location)
        .header("content-type", "application/octet-stream")
        .body(slow_body(4, Duration::from_millis(50), true))
        .send();
    // The client gives up (as a killed `docker push` does) while its body is still open.
    let gave_up = tokio::time::timeout(Duration::from_secs(1), upload).await;
    assert!(gave_up.is_err(), "the upload cannot have finished");
    drop(client);

    // The gateway sees the client go, logs it as the client's fault, and the registry sees its
    // request end (Distribution logs the broken PATCH) within moments, not at a timeout.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let gw_log = gw.log();
        let reg_log = registry.log();
        let gateway_saw = gw_log
            .lines()
            .any(|l| l.contains("method=PATCH") && l.contains("client fault"));
        let registry_saw = reg_log
            .lines()
            .any(|l| l.contains("PATCH") && l.contains("client disconnected during blob PATCH"));
        if gateway_saw && registry_saw {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 3s: gateway saw it: {gateway_saw}, registry saw it: {registry_saw}\n--- gateway\n{gw_log}\n--- registry\n{reg_log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_upload_in_flight_finish_and_refuses_new_connections() {
    let registry = Registry::start();
    let mut gw = Gateway::builder()
        .toml("[timeouts]\nshutdown_grace = \"20s\"")
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let client = gw.client(Http::One);
    let location = start_upload(&client, &gw).await;
    let upload = tokio::spawn(
        client
            .patch(&location)
            .header("content-type", "application/octet-stream")
            .body(slow_body(20, Duration::from_millis(100), false))
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    support::signal(gw.pid(), "TERM");
    // However long SIGTERM takes to reach it: wait until the gateway says it stopped accepting.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gw.log().contains("shutting down: no new connections") {
        assert!(
            Instant::now() < deadline,
            "no shutdown line 5 s after SIGTERM:\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let fresh = gw
        .client(Http::One)
        .get(format!("{}/v2/", gw.url()))
        .send()
        .await;
    assert!(
        fresh.is_err(),
        "a new connection after SIGTERM must be refused"
    );

    let resp = upload
        .await
        .expect("join")
        .expect("the upload in flight completes");
    assert_eq!(resp.status(), 202, "PATCH accepted after SIGTERM");
    assert_eq!(
        resp.headers()["range"],
        format!("0-{}", 20 * (64 << 10) - 1)
    );
    let status = gw
        .terminate(Duration::from_secs(10))
        .expect("the gateway exits by itself");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_client_that_gives_up_waiting_is_logged_as_499() {
    let silent = SilentUpstream::start();
    let gw = Gateway::builder()
        .toml("[timeouts]\nresponse_headers = \"30s\"")
        .put(&silent.url())
        .get(&silent.url())
        .start_when_listening();
    let ca = gw.ca_pem();
    let url = format!("{}/v2/library/alpine/manifests/latest", gw.url());
    let outcome = support::on_own_runtime(move || async move {
        let client = support::https_client(&ca, Http::One);
        client
            .get(url)
            .timeout(Duration::from_millis(300))
            .send()
            .await
    });
    assert!(outcome.is_err(), "the upstream never answers");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gw.log().lines().any(|l| {
        l.contains("status=499") && l.contains("closed the connection before the response")
    }) {
        assert!(Instant::now() < deadline, "no 499 line:\n{}", gw.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Fault stub: answers every request with `Content-Length: 64` and then sends the body one byte
/// every `every`, stopping for good after `bytes` bytes. A real registry does not trickle.
struct TricklingUpstream {
    addr: SocketAddr,
}

impl TricklingUpstream {
    fn start(every: Duration, bytes: usize) -> TricklingUpstream {
        use std::io::Write;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the trickling upstream");
        let addr = listener.local_addr().expect("its address");
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut head = [0u8; 4096];
                    let _ = conn.read(&mut head);
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n");
                    for _ in 0..bytes {
                        std::thread::sleep(every);
                        if conn.write_all(b"x").is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_secs(30));
                });
            }
        });
        TricklingUpstream { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn read_body(gw: &Gateway) -> (Result<usize, String>, Duration) {
    let ca = gw.ca_pem();
    let url = format!("{}/v2/library/alpine/blobs/sha256:00", gw.url());
    let started = Instant::now();
    let got = support::on_own_runtime(move || async move {
        let client = support::https_client(&ca, Http::One);
        let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
        resp.bytes()
            .await
            .map(|b| b.len())
            .map_err(|e| e.to_string())
    });
    (got, started.elapsed())
}

#[test]
fn a_slow_but_moving_body_is_never_cut_and_a_stalled_one_is() {
    // 64 bytes, one every 100 ms: 6.4 s in all, far past the 1 s stall timeout.
    let moving = TricklingUpstream::start(Duration::from_millis(100), 64);
    let gw = Gateway::builder()
        .toml("[timeouts]\nbody_stall = \"1s\"")
        .put(&moving.url())
        .get(&moving.url())
        .start_when_listening();
    let (got, took) = read_body(&gw);
    assert_eq!(got, Ok(64), "the whole body arrives");
    assert!(took >= Duration::from_secs(6), "{took:?}");

    // 10 bytes, then nothing: the transfer ends about 1 s after the last byte.
    let stalled = TricklingUpstream::start(Duration::from_millis(100), 10);
    let gw = Gateway::builder()
        .toml("[timeouts]\nbody_stall = \"1s\"")
        .put(&stalled.url())
        .get(&stalled.url())
        .start_when_listening();
    let (got, took) = read_body(&gw);
    assert!(
        got.is_err(),
        "a truncated body must be an error, got {got:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "cut by the stall timeout, not later: {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while !gw.log().contains("no data for 1s") {
        assert!(
            Instant::now() < deadline,
            "the stall is logged:\n{}",
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The response-header timeout starts when the request body has been sent, sized or chunked: an
/// upload to an upstream that then says nothing ends in a 504, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_upload_an_upstream_that_never_answers_gives_a_504() {
    let silent = SilentUpstream::start();
    let gw = Gateway::builder()
        .toml("[timeouts]\nresponse_headers = \"1s\"")
        .put(&silent.url())
        .get(&silent.url())
        .start_when_listening();
    let client = gw.client(Http::One);
    let url = format!("{}/v2/slow/blobs/uploads/some-session", gw.url());
    for (framing, body) in [
        ("sized", reqwest::Body::from(vec![1u8; 300_000])),
        ("chunked", slow_body(3, Duration::from_millis(100), false)),
    ] {
        let started = Instant::now();
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            client.patch(&url).body(body).send(),
        )
        .await
        .unwrap_or_else(|_| panic!("{framing}: still waiting after 10 s"))
        .expect("a response");
        assert_eq!(resp.status(), 504, "{framing}");
        let took = started.elapsed();
        assert!(took < Duration::from_secs(4), "{framing}: took {took:?}");
    }
}
