//! The config's unit tests: defaults, located errors, overrides.

use super::*;

fn err(text: &str) -> String {
    Config::from_toml(text, Some(Path::new("gw.toml")))
        .unwrap_err()
        .to_string()
}

fn spec(c: &Config, t: Target) -> String {
    c.upstreams.spec(t).unwrap().to_string()
}

#[test]
fn empty_config_gives_the_documented_defaults() {
    let c = Config::from_toml("", None).unwrap();
    assert_eq!(c.listen, vec!["0.0.0.0:8443".parse().unwrap()]);
    assert_eq!(spec(&c, Target::Put), "http://127.0.0.1:8082");
    assert_eq!(spec(&c, Target::Get), "http://127.0.0.1:8083");
    assert!(c.upstreams.spec(Target::Web).is_none());
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
    let put = c.upstreams.spec(Target::Put).unwrap();
    assert_eq!(put.members[0][0].base_path, "/repository/docker-hosted");
    c.apply(&Overrides {
        upstreams: vec![(Target::Get, vec!["http://g:1".into()])],
        hostnames: vec!["Registry.Example.COM".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(spec(&c, Target::Get), "http://g:1");
    assert_eq!(c.hostnames, vec!["registry.example.com"]);
    assert!(c
        .apply(&Overrides {
            upstreams: vec![(Target::Put, vec!["ftp://x".into()])],
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

#[test]
fn groups_and_pools_are_read_and_printed_back_in_the_same_shape() {
    let text = "[upstreams]\n\
                put = { servers = [\"http://a:1\", \"http://b:1\"] }\n\
                get = { members = [\"http://a:1\", { servers = [\"http://c:1\", \"http://d:1\"] }] }\n\
                web = \"http://w:1/ui\"\n";
    let c = Config::from_toml(text, None).unwrap();
    assert_eq!(c.upstreams.spec(Target::Put).unwrap().kind(), Kind::Pool);
    let get = c.upstreams.spec(Target::Get).unwrap();
    assert_eq!(get.kind(), Kind::Group);
    assert_eq!(get.members.len(), 2);
    assert_eq!(get.members[1].len(), 2);
    assert_eq!(c.upstreams.spec(Target::Web).unwrap().kind(), Kind::Server);

    let printed = c.to_toml();
    assert!(
        printed.contains("put = { servers = [\"http://a:1\", \"http://b:1\"] }"),
        "{printed}"
    );
    assert!(printed.contains("web = \"http://w:1/ui\""), "{printed}");
    let again = Config::from_toml(&printed, None).unwrap();
    assert_eq!(again.upstreams.spec(Target::Get), Some(get));
    assert_eq!(again.timeouts.body_stall, c.timeouts.body_stall);
    assert_eq!(again.health.fails, c.health.fails);
}

#[test]
fn repeated_get_flags_are_members_and_repeated_put_flags_a_pool() {
    let mut c = Config::from_toml("", None).unwrap();
    c.apply(&Overrides {
        upstreams: vec![
            (Target::Get, vec!["http://h:1".into(), "http://c:1".into()]),
            (Target::Put, vec!["http://p:1".into(), "http://q:1".into()]),
        ],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(c.upstreams.spec(Target::Get).unwrap().kind(), Kind::Group);
    assert_eq!(c.upstreams.spec(Target::Put).unwrap().kind(), Kind::Pool);
}

#[test]
fn upstream_tables_are_checked_with_lines_and_keys() {
    let e = err("[upstreams]\nget = { members = [\n  \"http://a:1\",\n  \"nexus:1\",\n] }\n");
    assert!(e.starts_with("gw.toml:4: upstreams.get.members: "), "{e}");
    let e = err("[upstreams]\nget = { members = [] }\n");
    assert!(
        e.starts_with("gw.toml:2: upstreams.get.members: needs at least one"),
        "{e}"
    );
    let e = err("[upstreams]\n\n[upstreams.get]\nservers = [\"http://a:1\"]\nextra = 1\n");
    assert!(
        e.starts_with("gw.toml:5: upstreams.get.extra: unknown key"),
        "{e}"
    );
    let e = err("[upstreams]\nput = { members = [\"http://a:1\"] }\n");
    assert!(
        e.starts_with("gw.toml:2: upstreams.put.members: only get"),
        "{e}"
    );
    let e = err("[upstreams]\nget = { members = [{ members = [\"http://a:1\"] }] }\n");
    assert!(e.contains("cannot be a group"), "{e}");
    let e = err("[upstreams]\nweb = { servers = [] }\n");
    assert!(e.starts_with("gw.toml:2: upstreams.web.servers: "), "{e}");
    let e = err("[upstreams]\nget = 5\n");
    assert!(e.starts_with("gw.toml:2: "), "{e}");
    let e = err("[health]\nfails = 0\n");
    assert!(e.starts_with("gw.toml:2: health.fails: "), "{e}");
}
