//! One access line per request, readable by people and machines, and never a credential.

mod support;

use std::time::{Duration, Instant};

use support::{Gateway, Registry};

#[test]
fn each_request_gets_one_json_access_line_without_credentials_or_query() {
    let registry = Registry::start();
    let gw = Gateway::builder()
        .put(&registry.url())
        .get(&registry.url())
        .arg("--log-format")
        .arg("json")
        .start();
    let ca = gw.ca_pem();
    let url = format!("{}/v2/team/app/tags/list?n=5&last=secret-cursor", gw.url());
    // The body is read whole: the access line is written when the response body ends.
    let reply = support::on_own_runtime(move || async move {
        let client = support::https_client(&ca, support::Http::One);
        let sent = client
            .get(url)
            .header("authorization", "Bearer sekrit-token-123")
            .basic_auth("alice", Some("hunter2"))
            .send()
            .await
            .expect("GET tags");
        support::Reply::read(sent).await
    });
    assert_eq!(reply.status, 404);

    // That may be just after the client has read it: wait for the line.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = gw.log();
        if log.lines().any(|l| l.contains("/v2/team/app/tags/list")) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no access line within 5 s:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        !log.contains("sekrit-token-123"),
        "a token reached the log:\n{log}"
    );
    assert!(
        !log.contains("hunter2") && !log.contains("YWxpY2U6aHVudGVyMg"),
        "{log}"
    );
    assert!(
        !log.contains("secret-cursor"),
        "the query reached the log:\n{log}"
    );

    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| l.contains("/v2/team/app/tags/list"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "exactly one access line:\n{log}");
    let line = &lines[0];
    assert_eq!(line["target"], "access");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/v2/team/app/tags/list");
    assert_eq!(line["route"], "tags");
    assert_eq!(line["upstream"], "get");
    assert_eq!(
        line["server"],
        registry.addr().to_string(),
        "the server that answered"
    );
    assert_eq!(line["status"], 404);
    assert_eq!(line["bytes_in"], 0);
    assert!(line["bytes_out"].as_u64().unwrap_or(0) > 0, "{line}");
    assert!(
        line["client"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{line}"
    );
    assert!(
        line["ms"].as_str().is_some() || line["ms"].is_number(),
        "{line}"
    );
}
