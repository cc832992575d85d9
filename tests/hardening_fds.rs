//! A few HTTP/2 connections whose streams never send their request bodies cannot take the
//! gateway's file descriptors from everyone else. Its own binary: the test lowers the open-file
//! limit of this process to 1,024 (what the issue measured against), and the gateway and the
//! registry it starts inherit it.

mod hardening_support;
mod support;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hardening_support::{h2_connect, open_fds, tls_config, RawTls};
use http_body::Frame;
use http_body_util::StreamBody;
use support::{Gateway, Http, Registry};

/// A request body that never sends a byte and never ends.
type NeverBody = StreamBody<futures_util::stream::Pending<Result<Frame<Bytes>, Infallible>>>;

const FD_LIMIT: u64 = 1024;
const CONNECTIONS: usize = 8;
const STREAMS: usize = 128;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_http2_connections_holding_unsent_bodies_leave_files_for_other_clients() {
    rlimit::setrlimit(rlimit::Resource::NOFILE, FD_LIMIT, FD_LIMIT).expect("lower RLIMIT_NOFILE");
    let registry = Registry::start();
    let gw = Gateway::builder()
        .toml("[timeouts]\nbody_stall = \"5s\"")
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let pid = gw.pid();

    // A real upload session: Distribution reads a PATCH body until it ends.
    let reply = gw.request(Http::One, "POST", "/v2/held/blobs/uploads/");
    assert_eq!(reply.status, 202, "{}", reply.text());
    let location = reply.header("location").expect("a Location").to_string();
    let mut established = RawTls::connect(&gw);
    let host = gw.host_port();
    let get = |conn: &mut RawTls| -> std::io::Result<u16> {
        conn.send(format!("GET /v2/ HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
        Ok(conn.response()?.status)
    };
    assert_eq!(get(&mut established).ok(), Some(200));
    let baseline = open_fds(pid);

    // 8 connections x 128 streams, each a PATCH whose body never comes.
    let opened = Instant::now();
    let tls = tls_config(&gw, &[b"h2"]);
    let mut conns = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..CONNECTIONS {
        let (send, conn) = h2_connect::<NeverBody>(gw.addr(), tls.clone()).await;
        conns.push(conn);
        for _ in 0..STREAMS {
            let mut send = send.clone();
            let req = http::Request::patch(location.as_str())
                .header("content-type", "application/octet-stream")
                .body(StreamBody::new(futures_util::stream::pending()))
                .expect("a request");
            streams.push(tokio::spawn(async move {
                let outcome = match send.send_request(req).await {
                    Ok(resp) => Ok(resp.status().as_u16()),
                    Err(e) => Err(format!("{e}")),
                };
                (outcome, opened.elapsed())
            }));
        }
    }

    // While they are held (the stall timeout is 5 s): other clients are served, new and
    // established, and the gateway stays clear of its limit.
    let mut timeline = Vec::new();
    let mut served = Vec::new();
    while opened.elapsed() < Duration::from_secs(4) {
        timeline.push((opened.elapsed().as_millis() / 100 * 100, open_fds(pid)));
        if opened.elapsed() > Duration::from_millis(1500) && served.is_empty() {
            let asked = Instant::now();
            served.push(("new client", gw.get("/v2/").status, asked.elapsed()));
            let asked = Instant::now();
            let status =
                get(&mut established).unwrap_or_else(|e| panic!("established client: {e}"));
            served.push(("established client", status, asked.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = timeline.iter().map(|(_, fds)| *fds).max().unwrap_or(0);
    println!("gateway fds: {baseline} before; held, by ms since opening: {timeline:?}");
    println!("while held: {served:?}");

    // The streams whose bodies never started end at the stall timeout, and their files with
    // them.
    let mut ended = Vec::new();
    for stream in streams {
        let outcome = tokio::time::timeout(Duration::from_secs(15), stream)
            .await
            .expect("every held stream ends within 15 s")
            .expect("join");
        ended.push(outcome);
    }
    let latest = ended.iter().map(|(_, t)| *t).max().unwrap_or_default();
    let mut kinds = std::collections::BTreeMap::new();
    for (outcome, _) in &ended {
        *kinds.entry(format!("{outcome:?}")).or_insert(0) += 1;
    }
    println!("held streams ended by {latest:?}: {kinds:?}");
    let released = Instant::now() + Duration::from_secs(5);
    while open_fds(pid) > baseline + CONNECTIONS + 8 && Instant::now() < released {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = open_fds(pid);
    for conn in conns {
        conn.abort();
    }
    let emfile = out_of_files(&gw);
    println!("{} gateway log lines name EMFILE", emfile.len());

    for (who, status, _) in &served {
        assert_eq!(
            *status,
            200,
            "{who} while the streams were held: {served:?}; the gateway logged:\n{}",
            lines_for(&gw, "path=/v2/ ")
        );
    }
    assert!(
        peak + 32 <= FD_LIMIT as usize && emfile.is_empty(),
        "the gateway's open files reached {peak} of its limit of {FD_LIMIT} with \
         {CONNECTIONS} client connections; {} log lines say it ran out, the first:\n{}",
        emfile.len(),
        emfile
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        latest < Duration::from_secs(12),
        "the last held stream ended {latest:?} after it opened (body_stall 5s): {kinds:?}"
    );
    assert!(
        after <= baseline + CONNECTIONS + 8,
        "the gateway still holds {after} fds (baseline {baseline})"
    );
    assert_eq!(gw.get("/v2/").status, 200, "a good request afterwards");
}

/// Gateway log lines that say a file could not be opened (EMFILE).
fn out_of_files(gw: &Gateway) -> Vec<String> {
    gw.log()
        .lines()
        .filter(|l| l.contains("Too many open files") || l.contains("os error 24"))
        .map(str::to_string)
        .collect()
}

/// The gateway's log lines containing `needle`, for failure messages.
fn lines_for(gw: &Gateway, needle: &str) -> String {
    let log = gw.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    lines.join("\n")
}
