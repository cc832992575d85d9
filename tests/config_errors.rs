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
