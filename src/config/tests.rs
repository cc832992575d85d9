//! The config's unit tests: defaults, located errors, overrides.

use super::*;

fn err(text: &str) -> String {
    Config::from_toml(text, Some(Path::new("gw.toml")))
        .unwrap_err()
        .to_string()
}

#[test]
fn empty_config_gives_the_documented_defaults() {
    let c = Config::from_toml("", None).unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:8443".parse().unwrap()]);
    assert_eq!(c.upstreams.put.to_string(), "http://127.0.0.1:8082");
    assert_eq!(c.upstreams.get.to_string(), "http://127.0.0.1:8083");
    assert!(c.upstreams.web.is_none());
    assert!(matches!(
        c.tls,
        Tls::Minted {
            server_days: 397,
            ..
        }
    ));
    assert_eq!(c.timeouts.connect, Duration::from_secs(5));
}

#[test]
fn unknown_key_names_the_key_and_line() {
    let e =
        err("listen = \"127.0.0.1:1\"\n[upstreams]\nput = \"http://a:1\"\ngett = \"http://b:2\"\n");
    assert!(
        e.starts_with("gw.toml:4: gett: unknown field `gett`"),
        "{e}"
    );
}

#[test]
fn bad_url_names_the_key_and_line() {
    let e = err("\n[upstreams]\nget = \"nexus:8083\"\n");
    assert!(e.starts_with("gw.toml:3: upstreams.get: "), "{e}");
}

#[test]
fn base_paths_and_overrides() {
    let mut c = Config::from_toml(
        "[upstreams]\nput = \"http://nexus:8081/repository/docker-hosted/\"\n",
        None,
    )
    .unwrap();
    assert_eq!(c.upstreams.put.base_path, "/repository/docker-hosted");
    c.apply(&Overrides {
        get: Some("http://g:1".into()),
        hostnames: vec!["Registry.Example.COM".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.upstreams.get.to_string(), "http://g:1");
    assert_eq!(c.hostnames, vec!["registry.example.com"]);
    assert!(c
        .apply(&Overrides {
            put: Some("ftp://x".into()),
            ..Default::default()
        })
        .is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("5 parsecs").is_err());
}

#[test]
fn rules_are_anchored_and_web_must_exist() {
    let c = Config::from_toml(
        "[[rules]]\nmethods = [\"head\"]\npath = \"/v2/x/\"\nupstream = \"get\"\n",
        None,
    )
    .unwrap();
    assert!(c.rules[0].path.is_match("/v2/x/blobs"));
    assert!(!c.rules[0].path.is_match("/a/v2/x/"));
    let e = err("[[rules]]\npath = \"/\"\nupstream = \"web\"\n");
    assert!(e.contains("rules.upstream"), "{e}");
}

#[test]
fn certificate_names_cover_hosts_listen_and_loopback() {
    let c = Config::from_toml(
        "listen = [\"10.1.2.3:8443\"]\nhostnames = [\"registry.example.com\"]\n",
        None,
    )
    .unwrap();
    assert_eq!(
        c.certificate_names(),
        vec![
            "registry.example.com",
            "10.1.2.3",
            "localhost",
            "127.0.0.1",
            "::1"
        ]
    );
}
