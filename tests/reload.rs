//! SIGHUP reloads the config file and the certificates under live traffic, as `nginx -s reload`
//! does: a request in flight finishes on the upstream it started with while the next one goes
//! where the new config says; a config that does not check, or a key that does not match its
//! certificate, keeps the running one and says why at ERROR; a replaced certificate is served to
//! the next handshake while an established connection keeps its own; and systemd hears
//! READY=1, RELOADING=1, READY=1 and STOPPING=1 on `NOTIFY_SOCKET`.

mod support;

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use support::{free_addr, plain_request, signal, Gateway, Http, Image, Registry, Skopeo};

/// How long a reload may take to be logged after SIGHUP.
const RELOAD_DEADLINE: Duration = Duration::from_secs(10);

/// The upload that spans the reload: 256 pieces of 1 MiB.
const PIECE: usize = 1 << 20;
const PIECES: usize = 256;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_in_flight_finishes_on_the_old_put_while_the_next_push_lands_on_the_new_one() {
    let old = Registry::start();
    let new = Registry::start();
    let gw = Gateway::builder().put(&old.url()).get(&old.url()).start();
    let client = gw.client(Http::One);
    let digest = digest_of_pieces();

    // A monolithic upload: POST, then one PUT ?digest= whose body the test feeds by hand.
    let location = start_upload(&client, &gw, "team/big").await;
    let (feed, body) = fed_body();
    let put = client
        .put(with_digest(&location, &digest))
        .header("content-type", "application/octet-stream")
        .header("content-length", (PIECE * PIECES).to_string())
        .body(body)
        .send();
    let upload = tokio::spawn(put);
    // A quarter of it: with one piece of room in the channel, the client has taken all but the
    // last, so the gateway is streaming it to old by now.
    for n in 0..PIECES / 4 {
        feed.send(piece(n))
            .await
            .expect("the upload is still reading");
    }

    edit_config(&gw, |text| {
        replace_line(text, "put = ", &format!("put = {:?}", new.url()))
    });
    let reloaded = sighup_and_wait(&gw, "configuration reloaded");
    assert!(
        !upload.is_finished(),
        "the upload must span the reload: {reloaded}"
    );

    // The next push, while the big upload is still open, goes to new.
    let skopeo = Skopeo::new();
    let next = Image::small("next");
    let pushed =
        tokio::task::block_in_place(|| skopeo.copy(&next.layout(), &gw.image("team/next:1")));
    pushed.expect_success();
    assert!(!upload.is_finished(), "the upload is still open");

    for n in PIECES / 4..PIECES {
        feed.send(piece(n))
            .await
            .expect("the upload is still reading");
    }
    drop(feed);
    let done = tokio::time::timeout(Duration::from_secs(120), upload)
        .await
        .expect("the upload ends within 120 s")
        .expect("the upload task")
        .expect("the upload's response");
    let status = done.status().as_u16();
    let answered = done.headers().get("docker-content-digest").cloned();
    let text = done.text().await.unwrap_or_default();
    assert_eq!(status, 201, "the PUT that spanned the reload: {text}");
    assert_eq!(
        answered.as_ref().and_then(|v| v.to_str().ok()),
        Some(digest.as_str())
    );

    let blob = format!("/v2/team/big/blobs/{digest}");
    let on_old = plain_request("HEAD", &format!("{}{blob}", old.url()));
    assert_eq!(
        on_old.status, 200,
        "the big blob is on old, the put it started on"
    );
    assert_eq!(
        on_old.header("content-length"),
        Some((PIECE * PIECES).to_string().as_str())
    );
    assert_eq!(
        plain_request("HEAD", &format!("{}{blob}", new.url())).status,
        404,
        "and not on new"
    );

    assert_eq!(
        tokio::task::block_in_place(|| skopeo.manifest_digest(&new.image("team/next:1"))),
        next.manifest_digest(),
        "the push after the reload is on new"
    );
    tokio::task::block_in_place(|| skopeo.inspect_raw(&old.image("team/next:1"))).expect_failure();
}

#[test]
fn a_config_that_does_not_check_keeps_the_running_one_and_names_file_line_and_key() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .admin()
        .start();

    // The typo an operator makes: a URL without its scheme.
    let mut line = 0;
    edit_config(&gw, |text| {
        let edited = replace_line(text, "put = ", "put = \"registry:5000\"");
        line = 1 + edited
            .lines()
            .position(|l| l.starts_with("put = "))
            .expect("the put line");
        edited
    });
    let refused = sighup_and_wait(&gw, "reload refused");
    let expected = format!(
        "reload refused, the running configuration stays: {}:{line}: upstreams.put: ",
        gw.config_path().display()
    );
    assert!(
        refused.contains(" ERROR ") && refused.contains(&expected),
        "expected an ERROR line containing {expected:?}, got:\n{refused}"
    );
    assert!(
        refused.contains("registry:5000"),
        "quotes the value: {refused}"
    );

    // The running configuration serves on: a push still starts on registry.
    let started = gw.request(Http::One, "POST", "/v2/team/app/blobs/uploads/");
    assert_eq!(started.status, 202, "{}", started.text());
    assert_eq!(
        metric(&gw, "dockgate_config_reloads_total{result=\"failed\"}"),
        1.0
    );
    assert_eq!(metric(&gw, "dockgate_config_last_reload_successful"), 0.0);

    // Fixed, it reloads, and the metrics say so.
    edit_config(&gw, |text| {
        replace_line(text, "put = ", &format!("put = {:?}", registry.url()))
    });
    sighup_and_wait(&gw, "configuration reloaded");
    assert_eq!(
        metric(&gw, "dockgate_config_reloads_total{result=\"ok\"}"),
        1.0
    );
    assert_eq!(metric(&gw, "dockgate_config_last_reload_successful"), 1.0);
    assert_eq!(gw.get("/v2/").status, 200);
}

#[test]
fn keys_that_cannot_change_live_are_named_at_warn_and_the_rest_applies() {
    let old = Registry::start();
    let new = Registry::start();
    let gw = Gateway::builder().put(&old.url()).get(&old.url()).start();
    let other = free_addr();

    edit_config(&gw, |text| {
        let text = replace_line(
            text,
            "listen = ",
            &format!("listen = [\"{}\", \"{other}\"]", gw.addr()),
        );
        let text = replace_line(&text, "get = ", &format!("get = {:?}", new.url()));
        format!("{text}\n[timeouts]\nshutdown_grace = \"5s\"\n")
    });
    sighup_and_wait(&gw, "configuration reloaded");
    let warned = wait_for_log(&gw, "these changes need a restart");
    assert!(
        warned.contains(" WARN ")
            && warned.contains("\"listen\"")
            && warned.contains("\"timeouts.shutdown_grace\""),
        "{warned}"
    );
    assert!(
        std::net::TcpStream::connect_timeout(&other, Duration::from_millis(500)).is_err(),
        "a new listen address needs a restart, so nothing listens on {other}"
    );
    // What can change did: get is new now.
    new_has_answered(&new, &gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_to_the_next_handshake_and_a_mismatched_key_is_refused() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = tmp.path().join("ca");
    run_dockgate(&["generate-ca", "--out", &ca.display().to_string()]);
    let first = issue(&ca, &tmp.path().join("first"));
    let second = issue(&ca, &tmp.path().join("second"));
    let third = issue(&ca, &tmp.path().join("third"));
    let live = tmp.path().join("live");
    std::fs::create_dir_all(&live).expect("create live/");
    install(&first, &live);

    let gw = Gateway::builder()
        .toml(&format!(
            "[tls]\ncert = {:?}\nkey = {:?}",
            live.join("server.crt").display().to_string(),
            live.join("server.key").display().to_string()
        ))
        .trusting(&ca.join("ca.crt"))
        .put(&registry.url())
        .get(&registry.url())
        .start();
    let tls = connector(&ca.join("ca.crt"));

    let mut kept = handshake(&tls, gw.addr()).await;
    assert_eq!(peer_serial(&kept), serial_of(&first));
    assert_eq!(get_v2(&mut kept).await, 200);

    // An ACME client's renew hook: new files in place, then SIGHUP.
    install(&second, &live);
    sighup_and_wait(&gw, "configuration reloaded");
    let fresh = handshake(&tls, gw.addr()).await;
    assert_eq!(
        peer_serial(&fresh),
        serial_of(&second),
        "the next handshake gets the new certificate"
    );
    assert_eq!(
        get_v2(&mut kept).await,
        200,
        "the kept-alive connection still works"
    );
    assert_eq!(
        peer_serial(&kept),
        serial_of(&first),
        "on the certificate it started with"
    );

    // A certificate with someone else's key: refused, and the pair in use stays.
    std::fs::copy(third.join("server.crt"), live.join("server.crt")).expect("copy a certificate");
    let refused = sighup_and_wait(&gw, "reload refused");
    assert!(
        refused.contains(" ERROR ")
            && refused.contains(&live.join("server.key").display().to_string()),
        "names the key file at ERROR: {refused}"
    );
    let after = handshake(&tls, gw.addr()).await;
    assert_eq!(
        peer_serial(&after),
        serial_of(&second),
        "a mismatched key keeps the old pair"
    );
    let mut after = after;
    assert_eq!(get_v2(&mut after).await, 200);
    assert_eq!(get_v2(&mut kept).await, 200);
}

#[test]
fn systemd_hears_ready_reloading_ready_and_stopping() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().expect("tempdir");
    let socket_path = tmp.path().join("notify.sock");
    let systemd = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    systemd
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a read timeout");
    let mut gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .env("NOTIFY_SOCKET", &socket_path.display().to_string())
        .start();

    assert_eq!(next_state(&systemd), "READY=1", "once the ports are bound");
    signal(gw.pid(), "HUP");
    let reloading = next_state(&systemd);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "RELOADING=1 with the reload's start time (systemd's notify-reload needs it): {reloading:?}"
    );
    assert_eq!(next_state(&systemd), "READY=1", "after the reload");
    wait_for_log(&gw, "configuration reloaded");

    let exited = gw.terminate(Duration::from_secs(10));
    assert_eq!(next_state(&systemd), "STOPPING=1");
    assert!(
        exited.is_some_and(|s| s.success()),
        "a clean exit on SIGTERM: {exited:?}"
    );
}

// --- the upload -------------------------------------------------------------------------------

/// Piece `n` of the big upload: 1 MiB of one byte value, its first 8 bytes its number.
fn piece(n: usize) -> Bytes {
    let mut bytes = vec![(n % 251) as u8; PIECE];
    bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
    Bytes::from(bytes)
}

fn digest_of_pieces() -> String {
    let mut hash = Sha256::new();
    for n in 0..PIECES {
        hash.update(piece(n));
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A request body that sends what the test feeds it, one piece of room at a time, and ends when
/// the feed is dropped.
fn fed_body() -> (mpsc::Sender<Bytes>, reqwest::Body) {
    let (feed, pieces) = mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(pieces, |mut pieces| async move {
        let piece = pieces.recv().await?;
        Some((Ok::<_, std::io::Error>(piece), pieces))
    });
    (feed, reqwest::Body::wrap_stream(stream))
}

async fn start_upload(client: &reqwest::Client, gw: &Gateway, name: &str) -> String {
    let resp = client
        .post(format!("{}/v2/{name}/blobs/uploads/", gw.url()))
        .send()
        .await
        .expect("POST an upload");
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"]
        .to_str()
        .expect("a Location")
        .to_string();
    if location.starts_with('/') {
        format!("{}{location}", gw.url())
    } else {
        location
    }
}

fn with_digest(location: &str, digest: &str) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

// --- config and signals -----------------------------------------------------------------------

/// Rewrites the gateway's config file in place.
fn edit_config(gw: &Gateway, edit: impl FnOnce(&str) -> String) {
    let path = gw.config_path();
    let text = std::fs::read_to_string(&path).expect("read the config");
    std::fs::write(&path, edit(&text)).expect("write the config");
}

/// `text` with its one line starting with `prefix` replaced by `line`.
fn replace_line(text: &str, prefix: &str, line: &str) -> String {
    let matching = text.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(matching, 1, "one line starts with {prefix:?} in:\n{text}");
    let lines: Vec<&str> = text
        .lines()
        .map(|l| if l.starts_with(prefix) { line } else { l })
        .collect();
    lines.join("\n") + "\n"
}

/// Sends SIGHUP and waits for a new log line containing `what`; returns that line.
fn sighup_and_wait(gw: &Gateway, what: &str) -> String {
    let seen = gw.log().lines().filter(|l| l.contains(what)).count();
    signal(gw.pid(), "HUP");
    wait_for_nth_log(gw, what, seen + 1)
}

/// The first log line containing `what`, waiting for it.
fn wait_for_log(gw: &Gateway, what: &str) -> String {
    wait_for_nth_log(gw, what, 1)
}

fn wait_for_nth_log(gw: &Gateway, what: &str, nth: usize) -> String {
    let deadline = Instant::now() + RELOAD_DEADLINE;
    loop {
        let log = gw.log();
        if let Some(line) = log.lines().filter(|l| l.contains(what)).nth(nth - 1) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line #{nth} with {what:?} within {RELOAD_DEADLINE:?}; the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of one sample line of `/metrics`, named with its labels as the text shows them.
fn metric(gw: &Gateway, series: &str) -> f64 {
    let text = gw.admin_get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// A read the gateway sends to get reaches `new`, by its own access log.
fn new_has_answered(new: &Registry, gw: &Gateway) {
    let tags = gw.get("/v2/team/reloaded/tags/list");
    assert_eq!(tags.status, 404, "{}", tags.text());
    assert!(
        new.log().contains("/v2/team/reloaded/tags/list"),
        "the read went to the new get:\n{}",
        new.log()
    );
}

/// One `NOTIFY_SOCKET` datagram.
fn next_state(systemd: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = systemd.recv(&mut buf).expect("a notification within 10 s");
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

// --- certificates -----------------------------------------------------------------------------

fn run_dockgate(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_dockgate"))
        .args(args)
        .output()
        .expect("run dockgate");
    assert!(
        out.status.success(),
        "dockgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `dockgate issue-cert` for 127.0.0.1 into `out`: server.crt (leaf, then CA) and server.key.
fn issue(ca: &Path, out: &Path) -> PathBuf {
    run_dockgate(&[
        "issue-cert",
        "--ca",
        &ca.display().to_string(),
        "--hostname",
        "127.0.0.1",
        "--out",
        &out.display().to_string(),
    ]);
    out.to_path_buf()
}

/// Puts the pair from `from` in `live`, key first, as a renew hook does.
fn install(from: &Path, live: &Path) {
    for file in ["server.key", "server.crt"] {
        std::fs::copy(from.join(file), live.join(file)).expect("copy a certificate file");
    }
}

fn serial_of(dir: &Path) -> String {
    let leaf = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .expect("read server.crt")
        .next()
        .expect("a certificate in server.crt")
        .expect("a PEM certificate");
    serial(&leaf)
}

fn serial(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).expect("an X.509 certificate");
    cert.raw_serial_as_string()
}

fn connector(ca_crt: &Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_crt).expect("read ca.crt") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a CA certificate");
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // A resumed session shows the certificate of the session it resumes: each handshake here
    // is a full one, as a new client's is.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

async fn handshake(tls: &TlsConnector, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to the gateway");
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp))
        .await
        .expect("a handshake within 10 s")
        .expect("a verified handshake")
}

fn peer_serial(tls: &TlsStream<TcpStream>) -> String {
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("a peer certificate");
    serial(&certs[0])
}

/// `GET /v2/` on an open HTTP/1.1 connection, kept alive; the status code.
async fn get_v2(tls: &mut TlsStream<TcpStream>) -> u16 {
    tls.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write a request");
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&reply[..end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a sized reply");
            if reply.len() >= end + 4 + length {
                let status = head.split_whitespace().nth(1).expect("a status line");
                return status.parse().expect("a status code");
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("a reply within 10 s")
            .expect("read the reply");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&chunk[..n]);
    }
}
