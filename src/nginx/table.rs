//! Directives that need no dockgate key: what dockgate does instead, or why the directive
//! does not carry over. The directives that do become keys are `mapping`'s.

use self::Fate::{Dropped, Unknown};

/// What becomes of a directive that maps to no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// dockgate does this itself, always, or it does not apply to a proxy that serves no files.
    Dropped(&'static str),
    /// dockgate has no equivalent: a reader should check whether it mattered.
    Unknown(&'static str),
}

/// The fate of a directive by name; a name ending in `*` covers every name it starts.
pub fn fate(name: &str) -> Fate {
    TABLE
        .iter()
        .find(|(pattern, _)| match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == *pattern,
        })
        .map(|(_, f)| *f)
        .unwrap_or(Fate::Unknown(
            "dockgate has no equivalent; check whether it mattered",
        ))
}

const NO_FILES: Fate = Dropped("dockgate serves no files");
const STREAMED: Fate = Dropped("bodies stream both ways; nothing is buffered or written to disk");
const RUSTLS: Fate = Dropped(
    "TLS is rustls: TLS 1.2 and 1.3 with its safe cipher suites and session \
     handling; nothing to choose",
);
const ROUTING: Fate = Unknown(
    "dockgate's routing table decides where a request goes; a [[rules]] entry can change that",
);

/// Ordered: the first match wins, so exact names come before the prefixes that cover them.
const TABLE: &[(&str, Fate)] = &[
    (
        "user",
        Dropped("dockgate runs as the user that starts it (a systemd unit's User=)"),
    ),
    (
        "worker_processes",
        Dropped("dockgate is one process with a thread per core"),
    ),
    (
        "worker_connections",
        Dropped(
            "open connections are bounded by [limits] max_connections (default: half \
             the open-file limit)",
        ),
    ),
    (
        "worker_rlimit_nofile",
        Dropped("dockgate raises its open-file limit to the hard limit at start"),
    ),
    (
        "multi_accept",
        Dropped("dockgate accepts as fast as connections arrive"),
    ),
    ("use", Dropped("dockgate uses epoll")),
    (
        "pid",
        Dropped("dockgate writes no pid file; a systemd unit or container tracks it"),
    ),
    (
        "error_log",
        Dropped("errors go to stderr; RUST_LOG sets the level"),
    ),
    (
        "access_log",
        Dropped("one access line per request on stderr (--log-format json for machines)"),
    ),
    (
        "log_format",
        Dropped("the access line is fixed: text, or JSON with --log-format json"),
    ),
    ("sendfile", NO_FILES),
    ("tcp_nopush", NO_FILES),
    ("aio", NO_FILES),
    ("directio", NO_FILES),
    ("open_file_cache*", NO_FILES),
    ("root", NO_FILES),
    ("alias", NO_FILES),
    ("index", NO_FILES),
    ("autoindex", NO_FILES),
    ("types", NO_FILES),
    ("types_hash_*", NO_FILES),
    ("default_type", NO_FILES),
    ("charset", NO_FILES),
    ("tcp_nodelay", Dropped("always on")),
    (
        "server_tokens",
        Dropped("nginx's version banner; not applicable"),
    ),
    ("server_names_hash_*", Dropped("no hash tables to size")),
    ("variables_hash_*", Dropped("no hash tables to size")),
    ("proxy_headers_hash_*", Dropped("no hash tables to size")),
    ("map_hash_*", Dropped("no hash tables to size")),
    (
        "keepalive_timeout",
        Dropped("an idle client connection is kept for timeouts.client_headers (30s)"),
    ),
    (
        "keepalive_requests",
        Dropped("HTTP/2 connections get [limits] h2_max_requests_per_connection requests"),
    ),
    (
        "reset_timedout_connection",
        Dropped("a timed-out connection is closed at once"),
    ),
    (
        "lingering_*",
        Dropped(
            "an answer sent before the request body was read is followed by reading \
             that body for timeouts.early_response_drain",
        ),
    ),
    (
        "gzip*",
        Dropped(
            "no compression: layers are compressed already, and digests cover the \
             bytes as sent",
        ),
    ),
    (
        "client_max_body_size",
        Dropped(
            "dockgate never limits a body's size: a push of any size streams through, \
             so no 413",
        ),
    ),
    ("client_body_buffer_size", STREAMED),
    ("client_body_temp_path", STREAMED),
    ("client_body_in_*", STREAMED),
    (
        "proxy_buffering",
        Dropped("always off: responses stream, with backpressure"),
    ),
    (
        "proxy_request_buffering",
        Dropped("always off: request bodies stream, with backpressure"),
    ),
    ("proxy_buffer_size", STREAMED),
    ("proxy_buffers", STREAMED),
    ("proxy_busy_buffers_size", STREAMED),
    ("proxy_max_temp_file_size", STREAMED),
    ("proxy_temp_*", STREAMED),
    (
        "chunked_transfer_encoding",
        Dropped("always: the framing is kept as sent, chunked or sized"),
    ),
    (
        "proxy_http_version",
        Dropped("dockgate speaks HTTP/1.1 with keep-alive to upstreams"),
    ),
    (
        "proxy_redirect",
        Dropped(
            "Location, Link and the token realm that point at an upstream are \
             rewritten to the public host:port, always",
        ),
    ),
    (
        "proxy_cache*",
        Dropped("dockgate caches nothing: the group repository is the cache"),
    ),
    (
        "proxy_next_upstream*",
        Dropped(
            "a request without a body is tried on the next server of a pool; one \
             whose body has started is never sent twice",
        ),
    ),
    (
        "proxy_ignore_client_abort",
        Dropped("a client that leaves ends its upstream request"),
    ),
    (
        "proxy_intercept_errors",
        Dropped("upstream errors pass through as the registry sent them"),
    ),
    (
        "proxy_socket_keepalive",
        Dropped("upstream connections are pooled and kept alive"),
    ),
    (
        "proxy_hide_header",
        Unknown("dockgate removes hop-by-hop headers and passes every other"),
    ),
    (
        "proxy_pass_header",
        Unknown("dockgate removes hop-by-hop headers and passes every other"),
    ),
    (
        "proxy_ssl_trusted_certificate",
        Unknown("an https:// upstream's CA bundle is upstreams.ca = \"<file>\""),
    ),
    (
        "proxy_ssl_*",
        Unknown(
            "https:// upstreams are always verified (system trust store or \
             upstreams.ca), with SNI",
        ),
    ),
    ("ssl", Dropped("every dockgate listen address is TLS")),
    ("http2", Dropped("HTTP/2 is always offered (ALPN)")),
    ("ssl_protocols", RUSTLS),
    ("ssl_ciphers", RUSTLS),
    ("ssl_prefer_server_ciphers", RUSTLS),
    ("ssl_ecdh_curve", RUSTLS),
    ("ssl_dhparam", RUSTLS),
    ("ssl_conf_command", RUSTLS),
    ("ssl_session_*", RUSTLS),
    ("ssl_buffer_size", RUSTLS),
    ("ssl_early_data", RUSTLS),
    (
        "ssl_stapling*",
        Dropped("no OCSP stapling: docker and containerd do not ask for it"),
    ),
    (
        "ssl_trusted_certificate",
        Dropped("no OCSP stapling: docker and containerd do not ask for it"),
    ),
    (
        "ssl_client_certificate",
        Unknown(
            "client certificates are not checked; the registry's own login \
             authenticates",
        ),
    ),
    (
        "ssl_verify_*",
        Unknown(
            "client certificates are not checked; the registry's own login \
             authenticates",
        ),
    ),
    (
        "resolver",
        Dropped("upstream names are resolved with the system resolver"),
    ),
    (
        "resolver_timeout",
        Dropped("upstream names are resolved with the system resolver"),
    ),
    (
        "large_client_header_buffers",
        Dropped("[limits] max_header_bytes (32 KiB) bounds the request head"),
    ),
    (
        "client_header_buffer_size",
        Dropped("[limits] max_header_bytes (32 KiB) bounds the request head"),
    ),
    (
        "underscores_in_headers",
        Dropped(
            "[limits] underscore_headers = true forwards such headers (off, as in \
             nginx, by default)",
        ),
    ),
    // In an upstream block.
    (
        "keepalive",
        Dropped("upstream connections are pooled and kept alive"),
    ),
    (
        "keepalive_time",
        Dropped("upstream connections are pooled and kept alive"),
    ),
    (
        "least_conn",
        Dropped(
            "a pool spreads requests round-robin over its healthy servers; an upload \
             stays on the server that started it",
        ),
    ),
    (
        "ip_hash",
        Dropped(
            "a pool spreads requests round-robin over its healthy servers; an upload \
             stays on the server that started it",
        ),
    ),
    (
        "hash",
        Dropped(
            "a pool spreads requests round-robin over its healthy servers; an upload \
             stays on the server that started it",
        ),
    ),
    (
        "random",
        Dropped(
            "a pool spreads requests round-robin over its healthy servers; an upload \
             stays on the server that started it",
        ),
    ),
    ("zone", Dropped("upstream state is kept in the one process")),
    ("return", ROUTING),
    ("rewrite", ROUTING),
    ("try_files", ROUTING),
    ("error_page", ROUTING),
    (
        "add_header",
        Unknown("dockgate adds no response headers; the registry's own pass through"),
    ),
    (
        "more_set_headers",
        Unknown("dockgate adds no response headers; the registry's own pass through"),
    ),
    (
        "allow",
        Unknown("dockgate has no address-based access control; keep it in a firewall"),
    ),
    (
        "deny",
        Unknown("dockgate has no address-based access control; keep it in a firewall"),
    ),
    (
        "auth_*",
        Unknown(
            "dockgate does not authenticate: every request reaches the registry, so a registry \
             without a login of its own (Docker Distribution without auth) would be open. Turn \
             on the registry's own auth (Nexus realms, htpasswd or token) first",
        ),
    ),
    (
        "limit_req*",
        Unknown("see [limits] max_requests_in_flight and max_connections_per_ip"),
    ),
    (
        "limit_conn*",
        Unknown("see [limits] max_requests_in_flight and max_connections_per_ip"),
    ),
    (
        "real_ip_*",
        Unknown(
            "dockgate sees the client's own address; behind a load balancer it does \
             not read PROXY protocol or X-Forwarded-For",
        ),
    ),
    (
        "set_real_ip_from",
        Unknown(
            "dockgate sees the client's own address; behind a load balancer it does \
             not read PROXY protocol or X-Forwarded-For",
        ),
    ),
    ("map", Unknown("variables from a map are not followed")),
    ("geo", Unknown("variables from a map are not followed")),
    (
        "split_clients",
        Unknown("variables from a map are not followed"),
    ),
    ("stream", Unknown("TCP proxying is not HTTP: not imported")),
    ("mail", Unknown("mail proxying: not imported")),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// (directive, dropped?, words its reason must contain) — the directives the seed posts use.
    #[test]
    fn seed_directives() {
        let rows: &[(&str, bool, &str)] = &[
            ("client_max_body_size", true, "never limits"),
            ("chunked_transfer_encoding", true, "framing is kept"),
            ("proxy_buffering", true, "always off"),
            ("proxy_request_buffering", true, "always off"),
            ("ssl_protocols", true, "rustls"),
            ("ssl_session_cache", true, "rustls"),
            ("ssl_session_timeout", true, "rustls"),
            ("ssl_ciphers", true, "rustls"),
            ("ssl_prefer_server_ciphers", true, "rustls"),
            ("access_log", true, "stderr"),
            ("user", true, "user that starts it"),
            ("worker_processes", true, "thread per core"),
            ("worker_connections", true, "max_connections"),
            ("proxy_redirect", true, "rewritten"),
            ("keepalive", true, "pooled"),
            ("gzip_types", true, "compress"),
            ("return", false, "[[rules]]"),
            ("allow", false, "firewall"),
            ("proxy_ssl_verify", false, "always verified"),
            ("proxy_ssl_trusted_certificate", false, "upstreams.ca"),
            ("some_module_directive", false, "no equivalent"),
        ];
        for (name, dropped, words) in rows {
            let (is_dropped, why) = match fate(name) {
                Fate::Dropped(w) => (true, w),
                Fate::Unknown(w) => (false, w),
            };
            assert_eq!(is_dropped, *dropped, "{name}: {why}");
            assert!(why.contains(words), "{name}: {why}");
        }
    }
}
