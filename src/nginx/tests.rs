//! The mapping table: nginx in, dockgate keys and comments out. Every output must be TOML that
//! `check-config` accepts.

use crate::config::Config;

use super::import;

/// One row: an nginx config, the keys it must give (`-` for absent; values as TOML prints
/// them) and words its comments must hold.
struct Row {
    nginx: &'static str,
    keys: &'static [(&'static str, &'static str)],
    says: &'static [&'static str],
}

fn rows() -> Vec<Row> {
    vec![
        // The seed: method routing between two upstream blocks.
        Row {
            nginx: "upstream hosted { server 192.0.2.1:8082; }
                    upstream group { server 192.0.2.1:8083; }
                    server { listen 8443 ssl;
                      set $upstream hosted;
                      if ($request_method ~* GET) { set $upstream group; }
                      if ($request_uri ~ '/search') { set $upstream hosted; }
                      location / { proxy_pass http://$upstream; } }",
            keys: &[
                ("listen", r#"["0.0.0.0:8443"]"#),
                ("upstreams.put", r#""http://192.0.2.1:8082""#),
                ("upstreams.get", r#""http://192.0.2.1:8083""#),
                ("upstreams.web", "-"),
                ("hostnames", "-"),
            ],
            says: &[
                "5: if ($request_method ~* GET) { set $upstream group; }\n#     method routing: replaced by the routing table",
                "Here HEAD went to put",
                "6: if ($request_uri ~ '/search')",
                "sends /v1/search to put by path segment",
                "upstream hosted: put",
                "upstream group: get",
                "has no server_name",
            ],
        },
        // Writes chosen by a negated method test; a pool of two servers.
        Row {
            nginx: "upstream w { server 192.0.2.1:8082 max_fails=3; server 192.0.2.2:8082; }
                    server { listen 443 ssl; set $u r;
                      if ($request_method !~ ^(GET|HEAD)$) { set $u w; }
                      location / { proxy_pass http://$u; } }",
            keys: &[
                ("upstreams.put", r#"{ servers = ["http://192.0.2.1:8082", "http://192.0.2.2:8082"] }"#),
                ("upstreams.get", r#""http://r""#),
            ],
            says: &["several servers: a pool", "max_fails=3: [health] fails"],
        },
        // A site file: /v2 to one connector, the rest to the UI.
        Row {
            nginx: "server { listen 443 ssl; server_name registry.example.com;
                      location /v2 { proxy_pass http://192.0.2.1:5001; }
                      location /v1 { proxy_pass http://192.0.2.1:5001; }
                      location / { proxy_pass http://192.0.2.1:8081; } }",
            keys: &[
                ("hostnames", r#"["registry.example.com"]"#),
                ("upstreams.put", r#""http://192.0.2.1:5001""#),
                ("upstreams.get", r#""http://192.0.2.1:5001""#),
                ("upstreams.web", r#""http://192.0.2.1:8081""#),
            ],
            says: &["location /v2: nginx sent every registry request here", "location /v1: the put upstream too"],
        },
        // One location / for everything: put and get, no web.
        Row {
            nginx: "server { listen 443 ssl; location / { proxy_pass https://nexus.example.com:8443/repository/docker/; } }",
            keys: &[
                ("upstreams.put", r#""https://nexus.example.com:8443/repository/docker""#),
                ("upstreams.get", r#""https://nexus.example.com:8443/repository/docker""#),
                ("upstreams.web", "-"),
            ],
            says: &["location /: nginx sent every request here"],
        },
        // A proxy_pass URI that repeats the location's path is a base path; one that replaces
        // it does not carry over.
        Row {
            nginx: "server { listen 443 ssl;
                      location /v2/ { proxy_pass http://registry:5000/v2/; }
                      location / { proxy_pass http://ui:8081/; } }",
            keys: &[
                ("upstreams.put", r#""http://registry:5000""#),
                ("upstreams.web", r#""http://ui:8081""#),
            ],
            says: &[],
        },
        Row {
            nginx: "server { listen 443 ssl; location /v2 { proxy_pass http://registry:5000/; } }",
            keys: &[("upstreams.put", "-")],
            says: &["replaces the location's", "put and get could not be read"],
        },
        // Listen: TLS addresses kept, a plain one beside them dropped, parameters explained.
        Row {
            nginx: "server { listen 80; listen 443 ssl http2; listen [::]:443 ssl default_server; }",
            keys: &[("listen", r#"["0.0.0.0:443", "[::]:443"]"#)],
            says: &["plain HTTP beside TLS", "http2: HTTP/2 is always offered", "default_server: dockgate answers every name"],
        },
        // `ssl on;` (before nginx 1.15) made a bare listen TLS.
        Row {
            nginx: "server { listen 443; ssl on; ssl_certificate a.crt; ssl_certificate_key a.key; }",
            keys: &[("listen", r#"["0.0.0.0:443"]"#), ("tls.cert", "-")],
            says: &["listen: TLS on this address", "every dockgate listen address is TLS"],
        },
        // A plain-HTTP registry server becomes TLS on the same port.
        Row {
            nginx: "server { listen 5000; location /v2 { proxy_pass http://127.0.0.1:5001; } }",
            keys: &[("listen", r#"["0.0.0.0:5000"]"#), ("upstreams.put", r#""http://127.0.0.1:5001""#)],
            says: &["instead of listing it in insecure-registries"],
        },
        // Names: a catch-all and a regex are left out; `.example.com` is two names.
        Row {
            nginx: "server { listen 443 ssl; server_name _ .example.com ~^reg\\d+$; }",
            keys: &[("hostnames", r#"["example.com", "*.example.com"]"#)],
            says: &[r#""_" is left out: a catch-all"#, "is left out: a regular expression"],
        },
        Row {
            nginx: "server { listen 443 ssl; server_name _; }",
            keys: &[("hostnames", "-")],
            says: &["a catch-all"],
        },
        // Timeouts: nginx times in dockgate units; the largest of several values is kept.
        Row {
            nginx: "server { listen 443 ssl; proxy_connect_timeout 30;
                      location /v2 { proxy_read_timeout 900s; proxy_send_timeout 2h; proxy_pass http://n:1; }
                      location /v1 { proxy_read_timeout 1m30s; proxy_pass http://n:1; } }",
            keys: &[
                ("timeouts.connect", r#""30s""#),
                ("timeouts.response_headers", r#""15m""#),
                ("timeouts.body_stall", r#""2h""#),
            ],
            says: &["timeouts.body_stall: this file gives it different values", "a large layer that keeps moving never hits it"],
        },
        Row {
            nginx: "server { listen 443 ssl; proxy_read_timeout 0; client_header_timeout 10s; }",
            keys: &[("timeouts.response_headers", "-"), ("timeouts.client_headers", r#""10s""#)],
            says: &["not a time dockgate can use"],
        },
        // Headers: the Nexus double port, and the upstream's own Host.
        Row {
            nginx: "server { listen 443 ssl; proxy_set_header X-Forwarded-Port $server_port;
                      proxy_set_header Host $host:$server_port; proxy_set_header X-Real-IP $remote_addr; }",
            keys: &[("headers.forwarded_host", "false"), ("headers.upstream_host", "false")],
            says: &["appends the port a second time (host:8443:8443)", "always sends X-Forwarded-Proto"],
        },
        Row {
            nginx: "server { listen 443 ssl; proxy_set_header Host $proxy_host; proxy_set_header Authorization x; }",
            keys: &[("headers.upstream_host", "true"), ("headers.forwarded_host", "-")],
            says: &["this one is not sent"],
        },
        // What is dropped and what is not carried over, each with its reason.
        Row {
            nginx: "include /etc/nginx/conf.d/*.conf; server { listen 443 ssl; proxy_buffering off;
                      proxy_request_buffering off; chunked_transfer_encoding on; client_max_body_size 0;
                      if ($http_user_agent ~ curl) { return 403; } allow 10.0.0.0/8; lua_code_cache off;
                      location /static { root /srv; } }",
            keys: &[],
            says: &[
                "not followed: if it holds server or upstream blocks",
                "proxy_buffering off;\n#     always off",
                "proxy_request_buffering off;\n#     always off",
                "framing is kept",
                "never limits a body's size",
                "firewall",
                "lua_code_cache off;\n#     dockgate has no equivalent",
                "location /static: dockgate's routing table decides",
                "# Not carried over",
            ],
        },
        // Another server whose location / leads to a third upstream gives web (the seed's
        // plain-HTTP server for the Nexus UI); its own listen is not imported.
        Row {
            nginx: "server { listen 443 ssl; location /v2 { proxy_pass http://a:1; } }
                    server { listen 8000; location / { proxy_pass http://b:1; proxy_buffering off; } }",
            keys: &[("listen", r#"["0.0.0.0:443"]"#), ("upstreams.put", r#""http://a:1""#), ("upstreams.web", r#""http://b:1""#)],
            says: &["location / of the server on line 2: web", "listen 8000;\n#     the web server's own", "proxy_buffering off;\n#     always off"],
        },
        // A second server that adds no upstream is named, not merged.
        Row {
            nginx: "server { listen 443 ssl; location /v2 { proxy_pass http://a:1; } }
                    server { listen 8443 ssl; location / { proxy_pass http://a:1; } }
                    server { listen 80; return 301 https://$host$request_uri; }",
            keys: &[("listen", r#"["0.0.0.0:443"]"#), ("upstreams.web", "-")],
            says: &["another TLS server: not imported", "a plain-HTTP server: not imported"],
        },
        // Control characters in quoted words stay inside the comment.
        Row {
            nginx: "server { listen 443 ssl; add_header X \"a\nput = 'oops'\"; }",
            keys: &[("upstreams.put", "-")],
            says: &["a\\nput = 'oops'"],
        },
        // No server at all: dockgate's defaults, said so.
        Row {
            nginx: "events { worker_connections 512; }",
            keys: &[("listen", "-"), ("upstreams.put", "-")],
            says: &["no server block"],
        },
    ]
}

#[test]
fn mapping_table() {
    for row in rows() {
        let nginx = format!("{}\n", row.nginx);
        let out = import("test.conf", &nginx, &|_| None).expect("parses");
        Config::from_toml(&out, None)
            .unwrap_or_else(|e| panic!("check-config refuses the output ({e}) of\n{nginx}\n{out}"));
        let table: toml::Table = toml::from_str(&out).expect("TOML");
        for (path, want) in row.keys {
            let got = lookup(&table, path).map(|v| v.to_string());
            let want = (*want != "-").then(|| want.to_string());
            assert_eq!(got, want, "{path} of\n{nginx}\n{out}");
        }
        for words in row.says {
            assert!(
                out.contains(words),
                "no {words:?} in the output of\n{nginx}\n{out}"
            );
        }
    }
}

#[test]
fn certificates_are_kept_when_they_exist_and_commented_out_when_not() {
    let nginx =
        "server { listen 443 ssl; ssl_certificate certs/r.crt; ssl_certificate_key certs/r.key; }";
    let here = |p: &str| Some(format!("/etc/nginx/{p}"));
    let out = import("t.conf", nginx, &here).expect("parses");
    assert!(
        out.contains("cert = \"/etc/nginx/certs/r.crt\"\nkey = \"/etc/nginx/certs/r.key\"\n"),
        "{out}"
    );
    assert!(
        out.contains("Your certificate and key, served as given"),
        "{out}"
    );

    let out = import("t.conf", nginx, &|_| None).expect("parses");
    assert!(
        out.contains("# cert = \"certs/r.crt\"\n# key = \"certs/r.key\"\n"),
        "{out}"
    );
    assert!(
        out.contains("certs/r.crt and certs/r.key not found on this machine"),
        "{out}"
    );
    let table: toml::Table = toml::from_str(&out).expect("TOML");
    assert_eq!(lookup(&table, "tls.cert"), None);

    let only_cert = "server { listen 443 ssl; ssl_certificate r.crt; }";
    let out = import("t.conf", only_cert, &here).expect("parses");
    assert!(
        out.contains("Only one of ssl_certificate and ssl_certificate_key"),
        "{out}"
    );
}

#[test]
fn a_syntax_error_names_its_line() {
    let e = import("t.conf", "server {\n  listen 443 ssl\n}\n", &|_| None).expect_err("bad");
    assert_eq!(e.line, 3);
    assert!(e.to_string().starts_with("3: unexpected \"}\""), "{e}");
}

fn lookup<'t>(table: &'t toml::Table, path: &str) -> Option<&'t toml::Value> {
    let mut parts = path.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}
