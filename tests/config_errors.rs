//! A wrong config is refused before any port is bound, with `file:line: key: what is wrong`
//! and exit status 2; a right one is printed back by `check-config`.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn dockgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockgate"))
        .args(args)
        .output()
        .expect("run dockgate")
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("dockgate.toml");
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// Runs `check-config` and `serve` on the same file; both must refuse it the same way.
fn refused(text: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(dir.path(), text);
    let check = dockgate(&["check-config", "--config", &file]);
    assert_eq!(check.status.code(), Some(2), "check-config exit status");
    let serve = dockgate(&["serve", "--config", &file]);
    assert_eq!(serve.status.code(), Some(2), "serve exit status");
    let check_err = String::from_utf8_lossy(&check.stderr).into_owned();
    let serve_err = String::from_utf8_lossy(&serve.stderr).into_owned();
    assert_eq!(check_err, serve_err, "serve and check-config disagree");
    // The message names the file as given.
    check_err.replace(&file, "FILE")
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err = refused(
        "listen = \"127.0.0.1:0\"\n\
         \n\
         [upstreams]\n\
         put = \"http://127.0.0.1:8082\"\n\
         gett = \"http://127.0.0.1:8083\"\n",
    );
    assert!(
        err.starts_with("dockgate: FILE:5: gett: unknown field `gett`"),
        "{err}"
    );
    assert!(
        err.contains("expected one of"),
        "lists the valid keys: {err}"
    );
}

#[test]
fn a_bad_upstream_url_is_named_with_its_line() {
    let err = refused("[upstreams]\nput = \"http://127.0.0.1:8082\"\nget = \"nexus:8083\"\n");
    assert!(
        err.starts_with("dockgate: FILE:3: upstreams.get: "),
        "{err}"
    );
    assert!(err.contains("nexus:8083"), "quotes the value: {err}");
}

#[test]
fn a_missing_certificate_file_is_named_with_its_line() {
    let err = refused(
        "[tls]\n\
         cert = \"/nonexistent/registry.crt\"\n\
         key = \"/nonexistent/registry.key\"\n",
    );
    assert!(err.starts_with("dockgate: FILE:2: tls.cert: "), "{err}");
    assert!(err.contains("/nonexistent/registry.crt"), "{err}");
}

#[test]
fn a_missing_upstream_ca_bundle_is_named_with_its_line() {
    let err = refused("[upstreams]\nput = \"https://harbor:443\"\nca = \"/nonexistent/ca.pem\"\n");
    assert!(err.starts_with("dockgate: FILE:3: upstreams.ca: "), "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn a_bad_timeout_and_a_bad_rule_are_named_too() {
    let err = refused("[timeouts]\nconnect = \"5 parsecs\"\n");
    assert!(
        err.starts_with("dockgate: FILE:2: timeouts.connect: "),
        "{err}"
    );
    // A value of the wrong type is named by its table and key too.
    let err = refused("[timeouts]\nconnect = 5\n");
    assert!(
        err.starts_with("dockgate: FILE:2: timeouts.connect: invalid type"),
        "{err}"
    );
    let err = refused("[timeouts]  # durations\nconnect = 5\n");
    assert!(
        err.starts_with("dockgate: FILE:2: timeouts.connect: invalid type"),
        "{err}"
    );
    let err = refused("[log]\naccess_buffer = -1\n");
    assert!(
        err.starts_with("dockgate: FILE:2: log.access_buffer: "),
        "{err}"
    );
    let err = refused("[[rules]]\npath = \"/v2/(\"\nupstream = \"put\"\n");
    assert!(err.starts_with("dockgate: FILE:2: rules.path: "), "{err}");
    let err = refused("[[rules]]\npath = \"/\"\nupstream = \"nexus\"\n");
    assert!(err.starts_with("dockgate: FILE:3: "), "{err}");
}

#[test]
fn a_bad_flag_is_named_and_exits_2() {
    let out = dockgate(&["check-config", "--config", "/nonexistent/dockgate.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/dockgate.toml"), "{err}");

    let out = dockgate(&["serve", "--put", "ftp://nexus:21"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("dockgate: --put: "), "{err}");
}

#[test]
fn check_config_prints_the_effective_config_with_defaults_filled_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(
        dir.path(),
        "hostnames = [\"Registry.Example.com\"]\n[upstreams]\nput = \"http://nexus:8081/repository/docker-hosted/\"\n",
    );
    let out = dockgate(&["check-config", "--config", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "listen = [\"0.0.0.0:8443\"]",
        "hostnames = [\"registry.example.com\"]",
        "put = \"http://nexus:8081/repository/docker-hosted\"",
        "get = \"http://127.0.0.1:8083\"",
        "connect = \"5s\"",
        "forwarded_host = false",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    // What it prints is itself a valid config.
    let again = write_config(dir.path(), &text);
    let out = dockgate(&["check-config", "--config", &again]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unknown_key_in_a_members_or_servers_table_is_named_with_its_line() {
    let err = refused(
        "[upstreams]\n\
         put = \"http://127.0.0.1:8082\"\n\
         get = { memberz = [\"http://hosted:5000\", \"http://cache:5001\"] }\n",
    );
    assert!(err.starts_with("dockgate: FILE:3: "), "{err}");
    assert!(err.contains("memberz"), "names the unknown key: {err}");

    let err = refused(
        "[upstreams]\n\
         \n\
         web = { servers = [\"http://nexus-a:8081\"], extra = 1 }\n",
    );
    assert!(err.starts_with("dockgate: FILE:3: "), "{err}");
    assert!(err.contains("extra"), "names the unknown key: {err}");
}

#[test]
fn an_empty_member_or_server_list_is_refused() {
    let err = refused("[upstreams]\nget = { members = [] }\n");
    assert!(
        err.starts_with("dockgate: FILE:2: upstreams.get.members: "),
        "{err}"
    );
    let err = refused("[upstreams]\nput = \"http://hosted:5000\"\nweb = { servers = [] }\n");
    assert!(
        err.starts_with("dockgate: FILE:3: upstreams.web.servers: "),
        "{err}"
    );
    // A pool inside a group must have servers too.
    let err =
        refused("[upstreams]\nget = { members = [\"http://hosted:5000\", { servers = [] }] }\n");
    assert!(
        err.starts_with("dockgate: FILE:2: upstreams.get.members"),
        "{err}"
    );
}

#[test]
fn a_bad_url_inside_a_list_is_named_with_its_line() {
    let err = refused(
        "[upstreams]\n\
         put = \"http://hosted:5000\"\n\
         web = { servers = [\"http://nexus-a:8081\", \"nexus-b:8081\"] }\n",
    );
    assert!(
        err.starts_with("dockgate: FILE:3: upstreams.web.servers: "),
        "{err}"
    );
    assert!(err.contains("nexus-b:8081"), "quotes the value: {err}");

    let err = refused(
        "[upstreams]\n\
         get = { members = [\"http://hosted:5000\", \"ftp://cache:21\"] }\n",
    );
    assert!(
        err.starts_with("dockgate: FILE:2: upstreams.get.members: "),
        "{err}"
    );
    assert!(err.contains("ftp://cache:21"), "quotes the value: {err}");
}

#[test]
fn members_are_for_get_only() {
    for key in ["put", "web"] {
        let err = refused(&format!(
            "[upstreams]\n\
             get = \"http://127.0.0.1:8083\"\n\
             {key} = {{ members = [\"http://a:5000\", \"http://b:5000\"] }}\n"
        ));
        assert!(
            err.starts_with(&format!("dockgate: FILE:3: upstreams.{key}")),
            "{err}"
        );
        assert!(err.contains("members"), "{err}");
    }
}

#[test]
fn bad_health_settings_are_named_with_their_line() {
    let err = refused("[health]\ninterval = \"soon\"\n");
    assert!(
        err.starts_with("dockgate: FILE:2: health.interval: "),
        "{err}"
    );
    let err = refused("[health]\nfails = 1\nretries = 3\n");
    assert!(err.starts_with("dockgate: FILE:3: "), "{err}");
    assert!(err.contains("retries"), "{err}");
}

/// A group of a server and a pool, a pool for put and health settings are printed back in the
/// shape they were written in, and the printed file is a valid config that prints the same.
#[test]
fn check_config_prints_groups_and_pools_back_in_their_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(
        dir.path(),
        "[upstreams]\n\
         put = { servers = [\"http://hosted-a:5000\", \"http://hosted-b:5000\"] }\n\
         get = { members = [\"http://hosted-a:5000\", { servers = [\"http://cache-a:5001\", \"http://cache-b:5001\"] }] }\n\
         web = \"http://nexus:8081\"\n\
         [health]\n\
         interval = \"1s\"\n\
         fails = 1\n\
         [tls]\n\
         dir = \"/var/lib/dockgate/certs\"\n",
    );
    let printed = check_config(&file);
    let config = parse(&printed);
    assert_eq!(
        at(&config, "upstreams.put"),
        Some(&parse(
            r#"servers = ["http://hosted-a:5000", "http://hosted-b:5000"]"#
        )),
        "{printed}"
    );
    assert_eq!(
        at(&config, "upstreams.get"),
        Some(&parse(
            r#"members = ["http://hosted-a:5000", { servers = ["http://cache-a:5001", "http://cache-b:5001"] }]"#
        )),
        "{printed}"
    );
    assert_eq!(
        at(&config, "upstreams.web").and_then(toml::Value::as_str),
        Some("http://nexus:8081"),
        "{printed}"
    );
    assert_eq!(
        at(&config, "health.interval").and_then(toml::Value::as_str),
        Some("1s"),
        "{printed}"
    );
    assert_eq!(
        at(&config, "health.fails").and_then(toml::Value::as_integer),
        Some(1),
        "{printed}"
    );

    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).expect("write the printed config");
    assert_eq!(
        without_comments(&check_config(&again.display().to_string())),
        without_comments(&printed),
        "the printed config prints the same"
    );
    // The shape the README and `examples/dockgate.toml` show, line for line.
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("get = { members = [")),
        "a group prints as `get = {{ members = [...] }}`:\n{printed}"
    );
}

#[test]
fn check_config_prints_the_health_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_config(dir.path(), "[upstreams]\nget = \"http://127.0.0.1:8083\"\n");
    let printed = check_config(&file);
    let config = parse(&printed);
    assert_eq!(
        at(&config, "upstreams.get").and_then(toml::Value::as_str),
        Some("http://127.0.0.1:8083"),
        "{printed}"
    );
    assert_eq!(
        at(&config, "health.interval").and_then(toml::Value::as_str),
        Some("2s"),
        "{printed}"
    );
    assert_eq!(
        at(&config, "health.fails").and_then(toml::Value::as_integer),
        Some(2),
        "{printed}"
    );
}

/// `check-config --config FILE`'s stdout; panics with stderr unless it exits 0.
fn check_config(file: &str) -> String {
    let out = dockgate(&["check-config", "--config", file]);
    assert!(
        out.status.success(),
        "check-config {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// TOML text as a value; panics with the text when it is not TOML.
fn parse(text: &str) -> toml::Value {
    toml::from_str(text).unwrap_or_else(|e| panic!("not valid TOML ({e}):\n{text}"))
}

/// The value at a dotted key (`"upstreams.get"`), if there is one.
fn at<'a>(value: &'a toml::Value, dotted: &str) -> Option<&'a toml::Value> {
    dotted.split('.').try_fold(value, |v, key| v.get(key))
}

/// The text less its `#` comment lines (check-config's first line names the file it read).
fn without_comments(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}
