//! `dockgate import-nginx` on the two example configs in the shape of the seed posts: the TOML it
//! prints passes `check-config` and sends each request where the nginx config sent it; a file
//! that is not nginx config is refused with `file:line:` and exit status 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use http::Method;

use dockgate::route::{route, Configured};

fn dockgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dockgate"))
        .args(args)
        .output()
        .expect("run dockgate")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/nginx")
        .join(name)
}

/// The TOML `import-nginx` prints for `file`, after `check-config` accepted it.
fn import(file: &Path) -> (String, toml::Table) {
    let out = dockgate(&["import-nginx", &file.display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "import-nginx failed: {stderr}");
    let text = String::from_utf8(out.stdout).expect("UTF-8 TOML");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("dockgate.toml");
    std::fs::write(&config, &text).expect("write the TOML");
    let check = dockgate(&["check-config", "--config", &config.display().to_string()]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "check-config refuses the import: {}\n{text}",
        String::from_utf8_lossy(&check.stderr)
    );
    let table = toml::from_str(&text).expect("TOML");
    (text, table)
}

/// The URL of the upstream dockgate's routing table picks for a request, under `config`.
fn upstream_for(config: &toml::Table, method: &str, path: &str) -> String {
    let upstreams = config["upstreams"].as_table().expect("[upstreams]");
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let configured = Configured {
        web: upstreams.contains_key("web"),
        ..Configured::default()
    };
    let target = route(&method, path, &[], configured).target;
    upstreams[target.as_str()]
        .as_str()
        .expect("one server")
        .to_string()
}

const BLOB: &str =
    "/v2/library/alpine/blobs/sha256:4f4fb700ef54461cfa02571ae0db9a0dc1e0cdb5577484a6d75e68dc38e8acc1";

#[test]
fn the_method_routed_seed_imports_and_routes_like_nginx() {
    let (text, config) = import(&fixture("seed-https.conf"));
    // The fixture's upstream blocks.
    let put = "http://192.0.2.11:9897"; // nexus_docker_put
    let get = "http://192.0.2.11:9896"; // nexus_docker_get
    let web = "http://192.0.2.11:9898"; // nexus_web, behind the plain-HTTP server

    // (method, path, where the nginx config sent it)
    let rows = [
        ("PUT", "/v2/team/app/manifests/1.0", put),
        ("POST", "/v2/team/app/blobs/uploads/", put),
        ("PATCH", "/v2/team/app/blobs/uploads/5c1e", put),
        ("PUT", "/v2/team/app/blobs/uploads/5c1e", put),
        ("DELETE", "/v2/team/app/manifests/sha256:ab", put),
        ("GET", "/v2/library/alpine/manifests/3.19", get),
        ("GET", BLOB, get),
        ("GET", "/v2/library/alpine/tags/list", get),
        ("GET", "/v2/_catalog", get),
        ("GET", "/v2/", get),
        // `if ($request_uri ~ '/search')`
        ("GET", "/v1/search", put),
        // The plain-HTTP server's `location /`, now on the TLS port.
        ("GET", "/service/rest/v1/status", web),
    ];
    for (method, path, nginx) in rows {
        assert_eq!(
            upstream_for(&config, method, path),
            nginx,
            "{method} {path}"
        );
    }
    // Where dockgate differs on purpose, and says so: nginx's `~* 'GET'` sent the HEAD with
    // which docker resolves a tag to put, so tags only the group had were "not found".
    assert_eq!(
        upstream_for(&config, "HEAD", "/v2/library/alpine/manifests/3.19"),
        get
    );
    assert!(text.contains("Here HEAD went to put"), "{text}");

    // The seed's method `if`s are reported as replaced by the routing table.
    assert!(
        text.contains(
            "# 68: if ( $request_method ~* 'GET') { set $upstream \"nexus_docker_get\"; }\n\
             #     method routing: replaced by the routing table"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "# 72: if ($request_uri ~ '/search') { set $upstream \"nexus_docker_put\"; }\n\
             #     search to put: replaced by the routing table"
        ),
        "{text}"
    );
    // The certificate files are not on this machine: left commented out, dockgate mints.
    assert!(
        text.contains("# cert = \"/opt/docker/registry/certs/domain.crt\"\n"),
        "{text}"
    );
    assert_eq!(config["listen"].as_array().expect("listen").len(), 1);
    assert_eq!(config["listen"][0].as_str(), Some("0.0.0.0:8443"));
    assert_eq!(config["timeouts"]["connect"].as_str(), Some("1h"));
    assert!(
        text.contains("proxy_buffering off;\n#     always off"),
        "{text}"
    );
}

#[test]
fn the_path_routed_seed_imports_and_routes_like_nginx() {
    let (text, config) = import(&fixture("seed-http.conf"));
    let registry = "http://192.0.2.10:5001"; // location /v2 and /v1
    let ui = "http://192.0.2.10:8081"; // location /
    let rows = [
        ("PUT", "/v2/team/app/manifests/1.0", registry),
        ("POST", "/v2/team/app/blobs/uploads/", registry),
        ("HEAD", "/v2/library/alpine/manifests/3.19", registry),
        ("GET", "/v2/library/alpine/manifests/3.19", registry),
        ("GET", BLOB, registry),
        ("GET", "/v1/search", registry),
        ("GET", "/", ui),
        ("GET", "/service/rest/v1/status", ui),
    ];
    for (method, path, nginx) in rows {
        assert_eq!(
            upstream_for(&config, method, path),
            nginx,
            "{method} {path}"
        );
    }
    assert_eq!(
        config["hostnames"][0].as_str(),
        Some("registry.example.com")
    );
    assert_eq!(config["listen"][0].as_str(), Some("0.0.0.0:443"));
    assert_eq!(config["timeouts"]["body_stall"].as_str(), Some("15m"));
    // X-Forwarded-Port: off, with the reason.
    assert_eq!(config["headers"]["forwarded_host"].as_bool(), Some(false));
    assert!(text.contains("appends the port a second time"), "{text}");
}

#[test]
fn certificate_files_that_exist_are_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).expect("mkdir");
    // check-config only needs the files to be there; serve would read them.
    std::fs::write(certs.join("domain.crt"), "dummy").expect("write");
    std::fs::write(certs.join("domain.key"), "dummy").expect("write");
    let seed = std::fs::read_to_string(fixture("seed-https.conf")).expect("fixture");

    // An absolute path, and one relative to the nginx file's directory: both written absolute.
    let absolute = seed.replace(
        "/opt/docker/registry/certs/",
        &format!("{}/", certs.display()),
    );
    let relative = seed.replace("/opt/docker/registry/certs/", "certs/");
    for (name, text) in [("absolute.conf", absolute), ("relative.conf", relative)] {
        let nginx = dir.path().join(name);
        std::fs::write(&nginx, text).expect("write");
        let (toml, config) = import(&nginx);
        let cert = certs.join("domain.crt").display().to_string();
        assert_eq!(
            config["tls"]["cert"].as_str(),
            Some(cert.as_str()),
            "{toml}"
        );
        assert!(
            toml.contains("Your certificate and key, served as given"),
            "{toml}"
        );
    }
}

#[test]
fn a_file_that_is_not_nginx_config_is_refused_with_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.conf");
    std::fs::write(&file, "server {\n    listen 8443 ssl\n}\n").expect("write");
    let file = file.display().to_string();
    let out = dockgate(&["import-nginx", &file]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("dockgate: {file}:3: unexpected \"}}\"")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let missing = dir.path().join("missing.conf").display().to_string();
    let out = dockgate(&["import-nginx", &missing]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(&format!("dockgate: {missing}: cannot read it")),
        "{stderr}"
    );
}
