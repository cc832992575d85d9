//! The admin listener (`[admin] listen`, plain HTTP): `/metrics` is valid OpenMetrics text whose
//! counters move by exactly the requests sent, the bytes moved and the handshakes made;
//! `/readyz` follows the health of the upstreams (unready while the only get server is down,
//! ready again once it is back) while `/healthz` says the process serves, whatever the
//! upstreams do.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use support::{https_client, on_own_runtime, sha256, Gateway, Http, Registry, Reply};

/// How long the counters may take to settle after the last reply was read (the access line and
/// the counters are written when the response body is dropped, just after the client has it).
const SETTLE: Duration = Duration::from_secs(5);

#[test]
fn counters_move_by_exactly_the_requests_sent() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .admin()
        .start();
    // The start's own readiness probe has closed its connection, so its request is counted.
    wait_for(&gw, "no connection open", |m| {
        m.value("dockgate_open_connections", &[]) == Some(0.0)
    });
    let before = Metrics::read(&gw);

    // On one kept-alive connection: five reads of /v2/, three manifest HEADs that find nothing,
    // and a monolithic upload of 10 000 bytes.
    let ca = gw.ca_pem();
    let url = gw.url();
    let blob = vec![7u8; 10_000];
    let digest = sha256(&blob);
    let replies: Vec<Reply> = on_own_runtime(move || async move {
        let client = https_client(&ca, Http::One);
        let mut replies = Vec::new();
        for _ in 0..5 {
            let sent = client.get(format!("{url}/v2/")).send().await;
            replies.push(Reply::read(sent.expect("GET /v2/")).await);
        }
        for _ in 0..3 {
            let sent = client
                .head(format!("{url}/v2/team/app/manifests/missing"))
                .send()
                .await;
            replies.push(Reply::read(sent.expect("HEAD a manifest")).await);
        }
        let sent = client
            .post(format!("{url}/v2/team/app/blobs/uploads/"))
            .send()
            .await;
        let started = Reply::read(sent.expect("POST an upload")).await;
        let location = match started.header("location").expect("a Location") {
            relative if relative.starts_with('/') => format!("{url}{relative}"),
            absolute => absolute.to_string(),
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let sent = client
            .put(format!("{location}{separator}digest={digest}"))
            .body(blob)
            .send()
            .await;
        replies.push(started);
        replies.push(Reply::read(sent.expect("PUT the blob")).await);
        replies
    });
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 404, 404, 404, 202, 201]);
    let body_bytes: usize = replies.iter().map(|r| r.body.len()).sum();

    let after = wait_for(&gw, "ten more requests counted", |m| {
        m.sum("dockgate_requests_total") - before.sum("dockgate_requests_total") >= 10.0
    });
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels).unwrap_or(0.0) - before.value(name, labels).unwrap_or(0.0)
    };
    let requests = |route, upstream, method, status| {
        moved(
            "dockgate_requests_total",
            &[
                ("route", route),
                ("upstream", upstream),
                ("method", method),
                ("status", status),
            ],
        )
    };
    // The routing table's rows: the upload's closing PUT is a `write` like any other PUT.
    for (route, upstream, method, status, n) in [
        ("read", "get", "GET", "2xx", 5.0),
        ("manifest", "get", "HEAD", "4xx", 3.0),
        ("upload-start", "put", "POST", "2xx", 1.0),
        ("write", "put", "PUT", "2xx", 1.0),
    ] {
        assert_eq!(
            requests(route, upstream, method, status),
            n,
            "{route} {upstream} {method} {status}; before:\n{}\nafter:\n{}",
            before.text,
            after.text
        );
    }
    assert_eq!(
        after.sum("dockgate_requests_total") - before.sum("dockgate_requests_total"),
        10.0,
        "nothing else was counted"
    );
    for (route, n) in [
        ("read", 5.0),
        ("manifest", 3.0),
        ("upload-start", 1.0),
        ("write", 1.0),
    ] {
        for histogram in [
            "dockgate_request_duration_seconds_count",
            "dockgate_time_to_first_byte_seconds_count",
        ] {
            assert_eq!(
                moved(histogram, &[("route", route)]),
                n,
                "{histogram} of {route}"
            );
        }
    }
    assert_eq!(moved("dockgate_received_bytes_total", &[]), 10_000.0);
    assert_eq!(
        moved("dockgate_sent_bytes_total", &[]),
        body_bytes as f64,
        "the response bodies the client read"
    );
    assert_eq!(
        moved("dockgate_tls_handshakes_total", &[("result", "ok")]),
        1.0,
        "one connection, kept alive"
    );

    // A client that is not speaking TLS is one failed handshake, and nothing else.
    let mut plain = std::net::TcpStream::connect(gw.addr()).expect("connect");
    plain
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write plain HTTP to the TLS port");
    drop(plain);
    let failed = wait_for(&gw, "a failed handshake counted", |m| {
        m.value("dockgate_tls_handshakes_total", &[("result", "failed")])
            .unwrap_or(0.0)
            > before
                .value("dockgate_tls_handshakes_total", &[("result", "failed")])
                .unwrap_or(0.0)
    });
    assert_eq!(
        failed
            .value("dockgate_tls_handshakes_total", &[("result", "failed")])
            .unwrap_or(0.0)
            - before
                .value("dockgate_tls_handshakes_total", &[("result", "failed")])
                .unwrap_or(0.0),
        1.0
    );
    assert_eq!(
        failed.sum("dockgate_requests_total"),
        after.sum("dockgate_requests_total")
    );
    wait_for(&gw, "every connection closed", |m| {
        m.value("dockgate_open_connections", &[]) == Some(0.0)
    });
}

#[test]
fn metrics_are_valid_openmetrics_with_every_documented_family() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .admin()
        .start();
    assert_eq!(gw.get("/v2/").status, 200);

    let reply = gw.admin_get("/metrics");
    assert_eq!(reply.status, 200);
    let content_type = reply.header("content-type").unwrap_or_default().to_string();
    let metrics = Metrics::parse(&reply.text());
    if content_type.starts_with("text/plain") {
        // The classic format (0.0.4) names a counter's family with its samples' `_total`.
        for (family, kind) in &metrics.types {
            if kind == "counter" {
                assert!(
                    family.ends_with("_total"),
                    "served as {content_type:?} but counter {family} is typed without its \
                     _total, as OpenMetrics does: Prometheus' classic parser sees \
                     {family}_total as untyped"
                );
            }
        }
    } else {
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
    }
    for (family, kind) in [
        ("dockgate_requests", "counter"),
        ("dockgate_request_duration_seconds", "histogram"),
        ("dockgate_time_to_first_byte_seconds", "histogram"),
        ("dockgate_received_bytes", "counter"),
        ("dockgate_sent_bytes", "counter"),
        ("dockgate_open_connections", "gauge"),
        ("dockgate_tls_handshakes", "counter"),
        ("dockgate_upstream_server_up", "gauge"),
        ("dockgate_backfill_copies", "counter"),
        ("dockgate_backfill_bytes", "counter"),
        ("dockgate_certificate_not_after_seconds", "gauge"),
        ("dockgate_config_reloads", "counter"),
        ("dockgate_config_last_reload_successful", "gauge"),
    ] {
        assert_eq!(
            metrics.types.get(family).map(String::as_str),
            Some(kind),
            "# TYPE {family} {kind}"
        );
    }
    // The served certificate's expiry, about 397 days out for a minted one.
    let not_after = metrics
        .value("dockgate_certificate_not_after_seconds", &[])
        .expect("the certificate's expiry");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let days = (not_after - now) / 86_400.0;
    assert!((390.0..=398.0).contains(&days), "{days} days left");
}

#[test]
fn readyz_follows_the_only_get_server_and_healthz_does_not() {
    let hosted = Registry::start();
    let mut cache = Registry::start();
    let gw = Gateway::builder()
        .toml("[health]\ninterval = \"1s\"\nfails = 2")
        .put(&hosted.url())
        .get(&cache.url())
        .admin()
        .start();
    // Both upstreams serve, once their first probes have answered (they go out at start, but
    // nothing waits for them before the first request is served).
    wait_for_status(&gw, "/readyz", 200);
    assert_eq!(gw.admin_get("/healthz").status, 200);
    let cache_url = cache.url();
    let get_up = |m: &Metrics| {
        m.value(
            "dockgate_upstream_server_up",
            &[("upstream", "get"), ("server", &cache_url)],
        )
    };
    wait_for(&gw, "the get server counted up", |m| get_up(m) == Some(1.0));

    // Timed from before the stop: a probe in flight when the cache dies fails at once, and the
    // second failure still comes a full interval after that one.
    let started = Instant::now();
    cache.stop();
    wait_for_status(&gw, "/readyz", 503);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "two failed probes, not one: {took:?}"
    );
    assert_eq!(
        gw.admin_get("/readyz").text(),
        "not ready: an upstream has no healthy server\n"
    );
    assert_eq!(
        gw.admin_get("/healthz").status,
        200,
        "the process still serves"
    );
    assert_eq!(get_up(&Metrics::read(&gw)), Some(0.0));
    // The put side is still there: a push starts.
    assert_eq!(
        gw.request(Http::One, "POST", "/v2/team/app/blobs/uploads/")
            .status,
        202
    );

    cache.restart();
    wait_for_status(&gw, "/readyz", 200);
    assert_eq!(get_up(&Metrics::read(&gw)), Some(1.0));
    assert_eq!(gw.admin_get("/healthz").status, 200);
    assert!(
        gw.log().contains("upstream server is healthy again"),
        "{}",
        gw.log()
    );
}

/// A pod must not be ready before its upstreams were ever reached: Kubernetes would send it
/// pushes that can only fail. An upstream nobody listens on is not ready at the first ask.
#[test]
fn readyz_is_not_ready_before_an_upstream_was_ever_reached() {
    let registry = Registry::start();
    let nobody = support::free_addr();
    let gw = Gateway::builder()
        .toml("[health]\ninterval = \"1s\"\nfails = 2")
        .put(&registry.url())
        .get(&format!("http://{nobody}"))
        .admin()
        .start();
    let first = gw.admin_get("/readyz");
    assert_eq!(
        first.status,
        503,
        "get ({nobody}) was never reached: {}",
        first.text()
    );
    wait_for_status(&gw, "/readyz", 503);
}

/// A server a reload took out of the config is no longer reported: a stale `up` series would
/// keep an alert on a server nobody uses, or hide that its replacement is down.
#[test]
fn after_a_reload_upstream_server_up_lists_only_the_configured_servers() {
    let first = Registry::start();
    let second = Registry::start();
    let gw = Gateway::builder()
        .put(&first.url())
        .get(&first.url())
        .admin()
        .start();
    // Each server reads 0 until its first probe answers: wait for those before the reload, so
    // that put's series is 1 after it and no first answer of the old get lands during it.
    let first_url = first.url();
    wait_for(&gw, "the first probes answered", |m| {
        ["put", "get"].into_iter().all(|upstream| {
            m.value(
                "dockgate_upstream_server_up",
                &[("upstream", upstream), ("server", &first_url)],
            ) == Some(1.0)
        })
    });
    let config = gw.config_path();
    let text = std::fs::read_to_string(&config).expect("read the config");
    let edited = text.replace(
        &format!("get = {:?}", first.url()),
        &format!("get = {:?}", second.url()),
    );
    assert_ne!(edited, text, "the get line:\n{text}");
    std::fs::write(&config, edited).expect("write the config");
    support::signal(gw.pid(), "HUP");
    // A new server reads 0 until its first probe answers, so wait for that probe too.
    let second_url = second.url();
    let reloaded = wait_for(
        &gw,
        "the reload counted and the new get server probed",
        |m| {
            m.value("dockgate_config_reloads_total", &[("result", "ok")]) == Some(1.0)
                && m.value(
                    "dockgate_upstream_server_up",
                    &[("upstream", "get"), ("server", &second_url)],
                ) == Some(1.0)
        },
    );

    let mut up: Vec<(String, String, f64)> = reloaded
        .samples
        .iter()
        .filter(|s| s.name == "dockgate_upstream_server_up")
        .map(|s| {
            (
                s.labels["upstream"].clone(),
                s.labels["server"].clone(),
                s.value,
            )
        })
        .collect();
    up.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    assert_eq!(
        up,
        [
            ("get".to_string(), second.url(), 1.0),
            ("put".to_string(), first.url(), 1.0),
        ],
        "/metrics:\n{}",
        reloaded.text
    );
}

#[test]
fn the_admin_listener_answers_only_its_three_paths() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .admin()
        .start();
    assert_eq!(gw.admin_get("/v2/").status, 404, "never a proxy");
    let post = support::plain_request("POST", &format!("http://{}/metrics", gw.admin_addr()));
    assert_eq!(post.status, 405);
    // And the TLS port does not serve them: /metrics there goes to the registry.
    assert_eq!(gw.get("/metrics").status, 404);
}

/// Polls `/metrics` until `settled` holds, panicking with the text after `SETTLE`.
fn wait_for(gw: &Gateway, what: &str, settled: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + SETTLE;
    loop {
        let metrics = Metrics::read(gw);
        if settled(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {SETTLE:?}; /metrics:\n{}",
            metrics.text
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls an admin path until it answers `status`, for up to 10 s (probes run every second and
/// two failures take a server out).
fn wait_for_status(gw: &Gateway, path: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = gw.admin_get(path);
        if reply.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} still {} after 10 s: {}\n{}",
            reply.status,
            reply.text(),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `/metrics` exposition, checked against the OpenMetrics text format as it is parsed:
/// every sample belongs to the family whose `# TYPE` line comes right before it, with a suffix
/// its type allows (`_total` for a counter, `_bucket`/`_sum`/`_count` for a histogram, none for a
/// gauge), labels are well formed, histogram buckets are cumulative and end at `+Inf` equal to
/// `_count`, and `# EOF` ends it.
struct Metrics {
    text: String,
    /// Family name -> its `# TYPE`.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Metrics {
    fn read(gw: &Gateway) -> Metrics {
        let reply = gw.admin_get("/metrics");
        assert_eq!(reply.status, 200, "{}", reply.text());
        Metrics::parse(&reply.text())
    }

    fn parse(text: &str) -> Metrics {
        let fail = |line: &str, why: &str| -> ! { panic!("{why}: {line:?} in\n{text}") };
        let mut types = BTreeMap::new();
        let mut samples: Vec<Sample> = Vec::new();
        let mut family: Option<(String, String)> = None;
        let mut lines = text.lines().peekable();
        let mut ended = false;
        while let Some(line) = lines.next() {
            if line == "# EOF" {
                assert!(
                    lines.peek().is_none(),
                    "# EOF is not the last line:\n{text}"
                );
                ended = true;
                break;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (keyword, name) = (parts.next(), parts.next());
                let Some(name) = name.filter(|n| is_metric_name(n)) else {
                    fail(line, "a comment line without a metric name");
                };
                match keyword {
                    Some("TYPE") => {
                        let kind = parts.next().unwrap_or_default();
                        let known = [
                            "counter",
                            "gauge",
                            "histogram",
                            "summary",
                            "info",
                            "stateset",
                            "gaugehistogram",
                            "unknown",
                        ];
                        if !known.contains(&kind) {
                            fail(line, "an unknown type");
                        }
                        if types.insert(name.to_string(), kind.to_string()).is_some() {
                            fail(line, "a second TYPE for one family");
                        }
                        family = Some((name.to_string(), kind.to_string()));
                    }
                    Some("HELP") | Some("UNIT") => {}
                    _ => fail(line, "an unknown # line"),
                }
                continue;
            }
            let sample = parse_sample(line).unwrap_or_else(|why| fail(line, &why));
            let Some((name, kind)) = &family else {
                fail(line, "a sample before any # TYPE");
            };
            let suffix = sample
                .name
                .strip_prefix(name.as_str())
                .unwrap_or_else(|| fail(line, &format!("a sample outside its family {name}")));
            let allowed: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "gauge" | "unknown" => &[""],
                "histogram" => &["_bucket", "_sum", "_count", "_created"],
                _ => &[""],
            };
            if !allowed.contains(&suffix) {
                fail(line, &format!("{suffix:?} is not a suffix a {kind} has"));
            }
            if kind == "counter" && sample.value < 0.0 {
                fail(line, "a negative counter");
            }
            if suffix == "_bucket" && !sample.labels.contains_key("le") {
                fail(line, "a bucket without le");
            }
            samples.push(sample);
        }
        assert!(ended, "no # EOF at the end:\n{text}");
        let metrics = Metrics {
            text: text.to_string(),
            types,
            samples,
        };
        metrics.check_histograms();
        metrics
    }

    /// Each histogram series: buckets in increasing `le`, cumulative, the last `+Inf` and equal
    /// to `_count`.
    fn check_histograms(&self) {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self
                .samples
                .iter()
                .filter(|s| s.name == format!("{family}_bucket"))
            {
                let mut labels = s.labels.clone();
                let le = labels.remove("le").unwrap_or_default();
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse()
                        .unwrap_or_else(|_| panic!("le={le:?} in {family}"))
                };
                series
                    .entry(format!("{labels:?}"))
                    .or_default()
                    .push((le, s.value));
            }
            for (labels, buckets) in series {
                assert!(
                    buckets
                        .windows(2)
                        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "{family}{labels}: buckets not cumulative in increasing le: {buckets:?}"
                );
                let (last_le, last) = *buckets.last().expect("one bucket at least");
                assert_eq!(last_le, f64::INFINITY, "{family}{labels} ends at +Inf");
                let count = self
                    .samples
                    .iter()
                    .find(|s| {
                        s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                    })
                    .unwrap_or_else(|| panic!("{family}_count{labels}"));
                assert_eq!(count.value, last, "{family}{labels}: +Inf bucket = _count");
            }
        }
    }

    /// The value of the sample `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .map(|s| s.value)
    }

    /// The sum of every sample named `name`, whatever its labels.
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }
}

/// `name{label="value",...} value`, or `name value`.
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("{name:?} is not a metric name"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let Some((i, c)) = chars.next() else {
                return Err("an unclosed label set".into());
            };
            match c {
                '}' if key.is_empty() => {
                    rest = &inner[i + 1..];
                    break;
                }
                '=' => {
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return Err("a label value without quotes".into());
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('"') => break,
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(c @ ('\\' | '"')) => value.push(c),
                                _ => return Err("a bad escape in a label value".into()),
                            },
                            Some(c) => value.push(c),
                            None => return Err("an unclosed label value".into()),
                        }
                    }
                    if !is_label_name(&key) || labels.insert(key.clone(), value).is_some() {
                        return Err(format!("label {key:?} is not a name, or is repeated"));
                    }
                    key.clear();
                    match chars.next() {
                        Some((_, ',')) => {}
                        Some((i, '}')) => {
                            rest = &inner[i + 1..];
                            break;
                        }
                        _ => return Err("labels not separated by commas".into()),
                    }
                }
                c => key.push(c),
            }
        }
    }
    let mut fields = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ');
    let value = fields.next().ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("{v:?} is not a number"))?,
    };
    if fields.count() > 1 {
        return Err("more than a value and a timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
